"""Saving and loading models: ``DIR/model.safetensors`` + ``DIR/config.json``.

The config holds the architecture name, the full constructor arguments and the class names, so
that a saved model rebuilds without the code that trained it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from tubelet.engine.files import atomic_write_bytes, atomic_write_json
from tubelet.models.registry import create_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_model(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Write ``model`` (made by ``create_model``) to the folder ``path``."""
    if not hasattr(model, "config"):
        raise ValueError("save_model needs a model made by tubelet.create_model (it has no .config)")
    folder = Path(path)
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    config = {**model.config, "class_names": names}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS, save(state))
    atomic_write_json(folder / CONFIG, config)
    return folder


def read_config(path: str | os.PathLike) -> dict:
    config_file = Path(path) / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: not a folder written by tubelet.save_model")
    return json.loads(config_file.read_text())


def load_model(path: str | os.PathLike, *, num_frames: int | None = None, img_size: int | None = None, **overrides) -> nn.Module:
    """Rebuild a saved model. ``num_frames`` / ``img_size`` rebuild it for another input, with the
    positional embeddings resized (bicubic in space, linear in time)."""
    config = read_config(path)
    model = create_model(config["architecture"], **config["args"])
    model.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
    model.class_names = config.get("class_names")
    resize = {k: v for k, v in (("num_frames", num_frames), ("img_size", img_size)) if v is not None}
    if resize or overrides:
        model = rebuild(model, **resize, **overrides)
    return model


def rebuild(model: nn.Module, **overrides) -> nn.Module:
    """A new model with some constructor arguments changed and the weights carried over;
    grid-shaped positional tables are resized to the new input."""
    new = create_model(model.config["architecture"], **{**model.config["args"], **overrides})
    state = model.state_dict()
    with torch.no_grad():
        for name, module in new.named_modules():
            if hasattr(module, "resized_state"):
                old_module = model.get_submodule(name)
                for key, value in old_module.resized_state(module.shape).items():
                    state[f"{name}.{key}"] = value
    new.load_state_dict(state)
    new.class_names = model.class_names
    return new
