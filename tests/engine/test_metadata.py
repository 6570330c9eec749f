"""Model metadata: saved with the model, validated on load, and what `tubelet predict` and
`tubelet eval` prepare the input with when no recipe or flag says otherwise."""

from __future__ import annotations

import json

import pytest
import torch

import tubelet
from tubelet.cli import main
from tubelet.engine import checkpoint as ckpt
from tubelet.engine.predict import predict_videos
from tubelet.engine.config import load_config
from tubelet.engine.train import fit
from tubelet.models.metadata import ModelMetadata
from tubelet.models.serialization import read_config

from .synth_fixture import tiny_overrides

CUSTOM = dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), sampling="dense", frame_interval=2, views=(2, 1))


def _saved(root, tiny_synth, **metadata):
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=12, depth=1, num_frames=4, img_size=16)
    model.metadata = model.metadata.replace(**metadata, source={"format": "test"})
    model.class_names = (tiny_synth / "classes.txt").read_text().split()
    tubelet.save_model(model, root)
    return model


def test_metadata_is_saved_and_loaded(tmp_path, tiny_synth):
    model = _saved(tmp_path / "m", tiny_synth, **CUSTOM)
    saved = read_config(tmp_path / "m")["metadata"]
    assert saved == {**model.metadata.to_dict(), "views": [2, 1], "mean": [0.45] * 3, "std": [0.225] * 3}
    assert saved["source"] == {"format": "test"}
    loaded = tubelet.load_model(tmp_path / "m")
    assert loaded.metadata == model.metadata and loaded.metadata.source == {"format": "test"}
    resized = tubelet.load_model(tmp_path / "m", num_frames=8, img_size=32)
    assert resized.metadata == model.metadata.replace(num_frames=8, img_size=32)


def test_a_folder_without_metadata_loads_with_defaults(tmp_path, tiny_synth):
    _saved(tmp_path / "m", tiny_synth)
    config = read_config(tmp_path / "m")
    del config["metadata"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert tubelet.load_model(tmp_path / "m").metadata == ModelMetadata(num_frames=4, img_size=16)


@pytest.mark.parametrize("change, message", [
    ({"meen": [0.5] * 3}, "metadata has no field 'meen'; did you mean mean"),
    ({"std": [0.5, 0.0, 0.5]}, r"std=\[0.5, 0.0, 0.5\] must be positive"),
    ({"views": [2]}, r"views=\[2\] must be \[temporal clips, spatial crops\]"),
    ({"sampling": "random"}, "sampling='random' must be one of uniform, dense"),
    ({"num_frames": "8"}, "num_frames='8' must be a positive integer"),
])
def test_bad_metadata_is_an_error_naming_the_file_and_field(change, message, tmp_path, tiny_synth):
    _saved(tmp_path / "m", tiny_synth)
    config = read_config(tmp_path / "m")
    config["metadata"].update(change)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message) as error:
        tubelet.load_model(tmp_path / "m")
    assert str(tmp_path / "m" / "config.json") in str(error.value)


def test_predict_and_eval_prepare_input_as_the_metadata_says(tmp_path, tiny_synth, capsys):
    model = _saved(tmp_path / "m", tiny_synth, **CUSTOM)
    _, config = ckpt.load_inference_model(tmp_path / "m")
    assert (config.data.mean, config.data.std, config.data.sampling, config.data.frame_interval) == (
        CUSTOM["mean"], CUSTOM["std"], "dense", 2)
    assert config.eval.views == (2, 1) and (config.data.num_frames, config.data.img_size) == (4, 16)

    video = sorted((tiny_synth / "videos").rglob("*.mp4"))[0]
    assert main(["predict", str(video), "--checkpoint", str(tmp_path / "m"), "--json", "--topk", "12"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]["top"]
    explicit = predict_videos(model.eval(), [video], config.data, views=(2, 1), topk=12)[0]["top"]
    assert printed == explicit
    imagenet = config.data.__class__(**{**vars(config.data), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
    assert predict_videos(model, [video], imagenet, views=(2, 1), topk=12)[0]["top"] != printed  # the normalisation matters

    assert main(["eval", str(tmp_path / "m"), "--data", str(tiny_synth / "val.csv")]) == 0
    assert "videos x 2 views" in capsys.readouterr().out


def test_training_checkpoints_carry_the_recipe_as_metadata(tmp_path, tiny_synth):
    overrides = [o for o in tiny_overrides(tiny_synth) if not o.startswith(("train.epochs", "eval.views"))]
    overrides += ["train.epochs=1", "train.max_steps=1", "eval.views=[2,3]", "data.sampling=dense",
                  "data.frame_interval=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]
    fit(load_config(None, overrides), tmp_path / "run", stream=open(tmp_path / "log.txt", "w"))
    latest = ckpt.latest_checkpoint(tmp_path / "run")
    meta = tubelet.load_model(latest).metadata
    assert (meta.num_frames, meta.img_size, meta.views, meta.sampling, meta.frame_interval) == (4, 16, (2, 3), "dense", 3)
    assert meta.mean == (0.5,) * 3 and meta.std == (0.25,) * 3
    assert meta.source == {"format": "tubelet train", "init": None}
