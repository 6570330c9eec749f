"""Named model configurations: ``create_model(name, **overrides)``.

A registered name is data: a model class and its default constructor arguments. Overrides are
checked against the class's constructor, so a misspelt argument is an error naming it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from torch import nn

from tubelet.models.metadata import default_metadata
from tubelet.suggest import check_keys, did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    defaults: dict = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, cls: type[nn.Module], **defaults) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    check_arguments(cls, defaults, f"model {name!r}")
    _MODELS[name] = ModelEntry(name, cls, defaults)


def _import_families() -> None:
    import tubelet.models  # noqa: F401  (each family module registers its names)


def list_models(filter: str = "") -> list[str]:
    """Registered architecture names containing ``filter``, sorted."""
    _import_families()
    return sorted(name for name in _MODELS if filter in name)


def get_entry(name: str) -> ModelEntry:
    _import_families()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}{did_you_mean(name, _MODELS, '; `tubelet models` lists them')}")
    return _MODELS[name]


def constructor_arguments(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def check_arguments(cls: type, args: dict, owner: str) -> None:
    """ValueError naming each argument ``cls`` does not take, with the closest valid ones."""
    check_keys(args, constructor_arguments(cls), f"{owner} has no constructor argument")


def model_arguments(name: str, overrides: dict) -> dict:
    """The full constructor arguments of ``name`` with ``overrides`` applied (checked)."""
    entry = get_entry(name)
    check_arguments(entry.cls, overrides, f"model {name!r}")
    return {**entry.defaults, **overrides}


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its defaults
    (``num_classes``, ``num_frames``, ``img_size``, ``attention``, ``depth``, ...)."""
    args = model_arguments(name, overrides)
    model = get_entry(name).cls(**args)
    model.config = {"architecture": name, "args": args}
    model.class_names = None
    model.metadata = default_metadata(args)
    return model
