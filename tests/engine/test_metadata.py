"""Model metadata: saved with the model, validated on load, and what `tubelet predict` and
`tubelet eval` prepare the input with when no recipe or flag says otherwise."""

from __future__ import annotations

import io
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

CUSTOM = dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), sampling="dense", frame_interval=2, views=(2, 1),
              multi_label=True)


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
    ({"multi_label": "yes"}, "multi_label='yes' must be true or false"),
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


def _init_folder(root, **metadata):
    """A saved model that fits ``tiny_overrides``' architecture, its metadata recording ``metadata``."""
    torch.manual_seed(1)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=12, depth=1, embed_dim=32,
                                 num_heads=2, num_frames=4, img_size=16)
    model.metadata = model.metadata.replace(**metadata)
    tubelet.save_model(model, root)
    return root


OFFICIAL = dict(mean=(0.45,) * 3, std=(0.225,) * 3, source={"format": "timesformer", "path": "x.pyth"})


@pytest.mark.parametrize("overrides, mean, std, note", [
    ([], (0.45,) * 3, (0.225,) * 3, "data.mean=[0.45, 0.45, 0.45] data.std=[0.225, 0.225, 0.225]: the normalisation "
                                    "recorded with the train.init weights {init} (set data.mean and data.std to choose another)"),
    (["data.mean=[0.45,0.45,0.45]", "data.std=[0.225,0.225,0.225]"], (0.45,) * 3, (0.225,) * 3, None),
    (["data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]"], (0.5,) * 3, (0.5,) * 3,
     "WARNING: data.mean=[0.5, 0.5, 0.5] data.std=[0.5, 0.5, 0.5] differ from the normalisation recorded with the "
     "train.init weights {init} (mean=[0.45, 0.45, 0.45] std=[0.225, 0.225, 0.225]): the model starts on inputs "
     "scaled unlike those it learnt from; unset data.mean and data.std to adopt the recorded ones"),
    (["data.mean=[0.5,0.5,0.5]"], (0.5,) * 3, (0.225,) * 3, "WARNING: data.mean=[0.5, 0.5, 0.5] data.std=[0.225, 0.225, 0.225] differ"),
])
def test_train_init_weights_bring_their_normalisation_unless_the_recipe_sets_one(overrides, mean, std, note, tmp_path):
    init = _init_folder(tmp_path / "official", **OFFICIAL)
    config, notes = ckpt.adopt_init_normalisation(load_config(None, [f"train.init={init}", *overrides]))
    assert (config.data.mean, config.data.std) == (mean, std)
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith(note.format(init=init))


def test_weights_that_record_no_normalisation_leave_it_to_the_data(tmp_path):
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    image_vit = tmp_path / "vit.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, image_vit)
    timm_init = _init_folder(tmp_path / "timm", mean=(0.5,) * 3, std=(0.5,) * 3, source={"format": "timm"})
    old = _init_folder(tmp_path / "old", **OFFICIAL)
    record = read_config(old)
    del record["metadata"]  # saved before metadata existed
    (old / "config.json").write_text(json.dumps(record))
    for init in (None, image_vit, timm_init, old):
        overrides = [f"train.init={init}"] if init else []
        config, notes = ckpt.adopt_init_normalisation(load_config(None, overrides))
        assert (config.data.mean, config.data.std, notes) == (*imagenet, []), init
        config, notes = ckpt.adopt_init_normalisation(load_config(None, overrides + ["data.mean=[0.5,0.5,0.5]"]))
        assert (config.data.mean, config.data.std, notes) == ((0.5,) * 3, imagenet[1], []), init


def test_a_run_from_converted_weights_trains_evaluates_and_records_their_normalisation(tmp_path, tiny_synth):
    init = _init_folder(tmp_path / "official", **OFFICIAL)
    base = [o for o in tiny_overrides(tiny_synth) if not o.startswith("train.epochs")] + ["train.epochs=1", "train.max_steps=1"]
    log = io.StringIO()
    fit(load_config(None, base + [f"train.init={init}"]), tmp_path / "run", stream=log)
    assert f"the normalisation recorded with the train.init weights {init}" in log.getvalue()
    assert load_config(str(tmp_path / "run" / "config.yaml")).data.mean == (0.45,) * 3  # a resume keeps it
    model, config = ckpt.load_inference_model(tmp_path / "run")  # what eval and predict use
    assert (config.data.mean, config.data.std) == (model.metadata.mean, model.metadata.std) == ((0.45,) * 3, (0.225,) * 3)
    # a run from that run's weights adopts them again: the record travels with the weights
    config, notes = ckpt.adopt_init_normalisation(load_config(None, base + [f"train.init={tmp_path / 'run'}"]))
    assert (config.data.mean, config.data.std) == ((0.45,) * 3, (0.225,) * 3) and len(notes) == 1


# The recipes that follow an official configuration feed its normalisation, the one that
# `tubelet convert` records for that code's released checkpoints.
OFFICIAL_RECIPES = {"timesformer_divided_k400_8x224": "timesformer", "mvitv2_small_k400_16x224": "slowfast-mvit",
                    "xvit_ssv2_16x224": "xvit", "lvt_ssv2_16x224": "lvt", "vivit_joint_k400_32x224": "scenic-vivit"}


@pytest.mark.parametrize("recipe, fmt", OFFICIAL_RECIPES.items())
def test_recipes_of_official_configs_feed_clips_as_the_converted_checkpoints_are_fed(recipe, fmt):
    from tubelet.convert import PREPROCESSING

    config = load_config(recipe)
    official = PREPROCESSING[fmt]
    assert (config.data.mean, config.data.std) == (official["mean"], official["std"])
    assert (config.data.sampling, config.eval.views) == (official["sampling"], official["views"])
    if config.data.sampling == "dense":
        assert config.data.frame_interval == official["frame_interval"]


def test_training_on_multi_label_data_records_it(tiny_synth):
    from tubelet.engine.train import build_model

    config = load_config(None, tiny_overrides(tiny_synth))
    assert build_model(config, 12, [str(k) for k in range(12)], multi_label=True).metadata.multi_label
    assert not build_model(config, 12, [str(k) for k in range(12)]).metadata.multi_label
