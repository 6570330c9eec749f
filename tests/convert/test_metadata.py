"""Converted models carry their metadata: normalisation, input, sampling, views and source;
``tubelet convert --frames --size`` rebuilds them for another input."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

import tubelet  # noqa: E402
from tests.convert.test_hf import CASES, hf_model, saved  # noqa: E402
from tubelet.cli import main  # noqa: E402
from tubelet.convert import load_foreign_model  # noqa: E402
from tubelet.convert.hf import hf_preprocessing  # noqa: E402
from tubelet.models.serialization import read_config  # noqa: E402


def test_hf_image_processor_becomes_the_same_normalisation(tmp_path):
    # ViViT's processor: x / 127.5 - 1, then (y - 0.5) / 0.5 -> tubelet's (x / 255 - 0.75) / 0.25.
    vivit = hf_preprocessing(None, "vivit", 224)
    pixels = torch.arange(0, 256, 15, dtype=torch.float64)
    hf = (pixels / 127.5 - 1 - 0.5) / 0.5
    torch.testing.assert_close((pixels / 255 - vivit["mean"][0]) / vivit["std"][0], hf)
    assert vivit["resize_to"] == 256 and vivit["views"] == (4, 3)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.45, 0.45, 0.45], "image_std": [0.225, 0.225, 0.225], "rescale_factor": 1 / 255,
         "size": {"shortest_edge": 224}}))
    timesformer = hf_preprocessing(tmp_path, "timesformer", 224)
    assert timesformer["mean"] == (0.45,) * 3 and timesformer["std"] == (0.225,) * 3 and timesformer["resize_to"] is None
    assert (timesformer["sampling"], timesformer["frame_interval"], timesformer["views"]) == ("dense", 32, (1, 3))


def test_converted_model_records_source_and_preprocessing(tmp_path, capsys):
    family, config = CASES["videomae"]
    folder = saved(hf_model(family, config), tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": {"shortest_edge": 256}}))
    assert main(["convert", folder, "--from", "hf", "--out", str(tmp_path / "t")]) == 0
    assert "input 4x16, test views 5x3" in capsys.readouterr().out
    meta = read_config(tmp_path / "t")["metadata"]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["views"] == [5, 3] and meta["frame_interval"] == 4
    assert meta["resize_to"] == round(256 * 16 / 224)  # the processor's 256 for 224, at this model's 16 pixels
    assert meta["source"]["format"] == "hf" and meta["source"]["path"] == folder and len(meta["source"]["sha256"]) == 64


def test_convert_rebuilds_for_frames_and_size(tmp_path, capsys):
    family, config = CASES["videomae"]
    folder = saved(hf_model(family, config), tmp_path / "hf")
    code = main(["convert", folder, "--from", "hf", "--out", str(tmp_path / "t"), "--frames", "8", "--size", "24"])
    assert code == 0, capsys.readouterr().err
    assert "input 8x24" in capsys.readouterr().out
    saved_config = read_config(tmp_path / "t")
    assert saved_config["args"]["num_frames"] == 8 and saved_config["args"]["img_size"] == 24
    assert saved_config["metadata"]["num_frames"] == 8 and saved_config["metadata"]["img_size"] == 24
    assert saved_config["metadata"]["resize_to"] is None  # the processor's 224 short side for a 224 crop: the crop size
    converted = tubelet.load_model(tmp_path / "t").eval()
    plain = load_foreign_model(folder, "hf").eval()
    clip = torch.randn(1, 3, 8, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(converted(clip), plain(clip), rtol=1e-5, atol=1e-5)


def test_each_format_records_how_its_checkpoints_are_fed(tmp_path, capsys):
    from tests.convert.test_mvit import TINY, slowfast_layout, torchvision_layout

    state = torchvision_layout(TINY, frames=8, size=32, num_classes=7)
    torch.save(state, tmp_path / "mvit.pth")
    torch.save({"model_state": slowfast_layout(state)}, tmp_path / "mvit.pyth")
    for name, fmt, resize_to in (("mvit.pth", "torchvision-mvit", 256), ("mvit.pyth", "slowfast-mvit", None)):
        out = tmp_path / f"out_{fmt}"
        assert main(["convert", str(tmp_path / name), "--from", fmt, "--out", str(out), "--size", "64"]) == 0
        assert "input 8x64, test views 5x1" in capsys.readouterr().out
        meta = tubelet.load_model(out).metadata
        assert meta.mean == (0.45,) * 3 and meta.std == (0.225,) * 3 and (meta.sampling, meta.frame_interval) == ("dense", 4)
        # torchvision's 256 short side for 224 crops, kept in ratio at 64 pixels
        assert meta.resize_to == (None if resize_to is None else round(resize_to * 64 / 224))
        assert meta.source["format"] == fmt and meta.source["path"] == str(tmp_path / name)
