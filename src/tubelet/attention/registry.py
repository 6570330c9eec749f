"""Attention schemes by name: the ``attention`` constructor argument of the video models."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from tubelet.suggest import check_keys, did_you_mean

_SCHEMES: dict[str, Callable[..., nn.Module]] = {}


def register_attention(name: str):
    """Class (or factory) decorator: make a scheme available as ``attention=name``."""

    def add(factory):
        if name in _SCHEMES:
            raise ValueError(f"attention scheme {name!r} is registered twice")
        _SCHEMES[name] = factory
        return factory

    return add


def list_attention() -> list[str]:
    _import_schemes()
    return sorted(_SCHEMES)


def get_attention(name: str) -> Callable[..., nn.Module]:
    _import_schemes()
    if name not in _SCHEMES:
        hint = did_you_mean(name, _SCHEMES)
        raise ValueError(f"unknown attention scheme {name!r}{hint} (known: {', '.join(sorted(_SCHEMES))})")
    return _SCHEMES[name]


def build_attention(name: str, dim: int, num_heads: int, **options) -> nn.Module:
    """The scheme ``name`` built with ``options``; an option it does not take is a ValueError
    naming the option and the closest valid ones."""
    factory = get_attention(name)
    valid = [p for p in inspect.signature(factory).parameters if p not in ("self", "dim", "num_heads")]
    check_keys(options, valid, f"attention scheme {name!r} has no option")
    return factory(dim, num_heads, **options)


def _import_schemes() -> None:
    """Importing the package registers every scheme defined in it."""
    import tubelet.attention  # noqa: F401
