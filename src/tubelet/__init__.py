"""tubelet: video transformers in PyTorch.

    import tubelet
    model = tubelet.create_model("timesformer_divided_base_p16_8x224", num_classes=10)
    logits = model(video)  # video: float [B, C, T, H, W]

The names below, and the subpackages (``tubelet.attention``, ``tubelet.data``, ...), are imported
on first use: ``import tubelet`` alone does not import torch, so that the ``tubelet`` command
answers ``--help`` and argument errors at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "tubelet.models.registry",
    "list_models": "tubelet.models.registry",
    "load_model": "tubelet.models.serialization",
    "save_model": "tubelet.models.serialization",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    else:
        try:
            value = importlib.import_module(f"tubelet.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tubelet.{name}":
                raise  # a subpackage that exists but needs something missing
            raise AttributeError(f"module 'tubelet' has no attribute {name!r}") from None
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
