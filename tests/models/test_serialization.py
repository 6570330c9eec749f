"""Saved-model folders: written whole or not at all, readable by others, damage reported as one line."""

import errno
import json
import os

import pytest
import torch

import tubelet
from tubelet.models import serialization

from full_disk import filling_disk


def _tiny(num_classes=3):
    torch.manual_seed(0)
    return tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=num_classes, depth=1, embed_dim=32,
                                num_heads=2)


def test_a_full_disk_during_save_leaves_the_previous_model(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    tubelet.save_model(_tiny(), folder, class_names=["a", "b", "c"])
    expected = tubelet.load_model(folder).state_dict()
    monkeypatch.setattr(serialization, "save_file", filling_disk(serialization.save_file, keep_bytes=1000))
    other = _tiny()
    with torch.no_grad():
        other.head.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        tubelet.save_model(other, folder, class_names=["a", "b", "c"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no half-written sibling left
    for key, value in tubelet.load_model(folder).state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_failed_first_save_leaves_no_folder(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(serialization, "save_file", fails)
    with pytest.raises(OSError):
        tubelet.save_model(_tiny(), tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_class_names_must_name_every_class(tmp_path):
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 3 classes"):
        tubelet.save_model(_tiny(), tmp_path / "model", class_names=["a", "b"])
    tubelet.save_model(_tiny(), tmp_path / "model", class_names=["a", "b", "c"])
    config = json.loads((tmp_path / "model/config.json").read_text())
    config["class_names"] = ["a"]
    (tmp_path / "model/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names 1 classes but the model has 3"):
        tubelet.load_model(tmp_path / "model")


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tubelet.save_model(_tiny(), tmp_path / "model")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "model" / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is not a readable safetensors file"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
     "model.safetensors is not a readable safetensors file"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors does not exist"),
    (lambda d: (d / "config.json").write_text('{"architecture":\n'), "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text('[1, 2]'), "config.json must hold an object with 'architecture'"),
    (lambda d: (d / "config.json").write_text('{"architecture": "nope", "args": {}}'),
     "config.json describes no model tubelet can build"),
])
def test_damaged_files_are_errors_naming_them(tmp_path, damage, message):
    folder = tmp_path / "model"
    tubelet.save_model(_tiny(), folder)
    damage(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        tubelet.load_model(folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)
