"""Importing weights from other implementations, one module per foreign format.

``FORMATS`` maps a ``tubelet convert --from`` name to a function ``path -> tubelet model``
(built by ``create_model``, so that ``save_model`` can write it).
"""

from __future__ import annotations

import os

from torch import nn

from tubelet.convert.hf import load_hf_model
from tubelet.convert.slowfast_mvit import load_slowfast_mvit
from tubelet.convert.torchvision_mvit import load_torchvision_mvit

FORMATS = {"hf": load_hf_model, "torchvision-mvit": load_torchvision_mvit, "slowfast-mvit": load_slowfast_mvit}


def load_foreign_model(source: str | os.PathLike, fmt: str) -> nn.Module:
    """The tubelet model converted from ``source``, a checkpoint in format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt](source)
