"""Saving and loading models: ``DIR/model.safetensors`` + ``DIR/config.json``.

The config holds the architecture name, the full constructor arguments, the class names and the
model's metadata (``tubelet.models.metadata``: input, normalisation, sampling, test views, where
the weights came from), so that a saved model rebuilds, and is fed correctly, without the code
that trained it. A folder written before metadata existed loads with the defaults of its
constructor arguments.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tubelet.files import atomic_folder
from tubelet.models.metadata import ModelMetadata
from tubelet.models.registry import create_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_model(model: nn.Module, path: str | os.PathLike, class_names: list[str] | None = None) -> Path:
    """Write ``model`` (made by ``create_model``) to the folder ``path``, atomically as a whole: a
    failed or killed save leaves the folder as it was (or absent), never weights without a config.
    ``class_names`` (default: ``model.class_names``) must name every class of the head."""
    if not hasattr(model, "config"):
        raise ValueError("save_model needs a model made by tubelet.create_model (it has no .config)")
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names is not None and len(names) != model.num_classes:
        raise ValueError(f"class_names has {len(names)} names but the model has {model.num_classes} classes")
    config = model_record(model, None if names is None else list(names))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_folder(path) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(path)


def model_record(model: nn.Module, class_names: list[str] | None) -> dict:
    """What ``config.json`` holds for ``model``: architecture, constructor arguments, class names, metadata."""
    return {**model.config, "class_names": class_names, "metadata": model.metadata.to_dict()}


def read_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a saved-model folder, checked for what ``load_model`` needs."""
    config_file = Path(path) / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: not a folder written by tubelet.save_model")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str) \
            or not isinstance(config.get("args"), dict):
        raise ValueError(f"{config_file} must hold an object with 'architecture' (a name) and 'args' (a mapping)")
    names = config.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{config_file}: 'class_names' must be a list of strings or null")
    return config


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or damaged file is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (the folder has no weights)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or damaged: {error})") from None


def load_model(path: str | os.PathLike, *, num_frames: int | None = None, img_size: int | None = None, **overrides) -> nn.Module:
    """Rebuild a saved model. ``num_frames`` / ``img_size`` rebuild it for another input, with the
    positional embeddings resized (bicubic in space, linear in time), MViT's relative-position
    tables interpolated, and the metadata's input updated."""
    config = read_config(path)
    try:
        model = create_model(config["architecture"], **config["args"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{Path(path) / CONFIG} describes no model tubelet can build: {error}") from None
    weights = read_weights(Path(path) / WEIGHTS)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        summary = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(f"{Path(path) / WEIGHTS} does not fit {config['architecture']} as {CONFIG} describes it: "
                         f"{summary}") from None
    names = config.get("class_names")
    if names is not None and len(names) != model.num_classes:
        raise ValueError(f"{Path(path) / CONFIG} names {len(names)} classes but the model has {model.num_classes}")
    model.class_names = names
    if config.get("metadata") is not None:
        model.metadata = ModelMetadata.from_dict(config["metadata"], f"{Path(path) / CONFIG} metadata")
    return for_input(model, num_frames, img_size, **overrides)


def for_input(model: nn.Module, num_frames: int | None = None, img_size: int | None = None, **overrides) -> nn.Module:
    """``model`` itself, or rebuilt (``rebuild``) for the frames, size and other arguments given (not None)."""
    resize = {k: v for k, v in (("num_frames", num_frames), ("img_size", img_size)) if v is not None}
    return rebuild(model, **resize, **overrides) if resize or overrides else model


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
    new.metadata = model.metadata.resized(new.metadata.num_frames, new.metadata.img_size)  # the new input, the old rest
    return new
