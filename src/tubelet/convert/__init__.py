"""Importing weights from other implementations, one module per foreign format.

``FORMATS`` maps a ``tubelet convert --from`` name to a function ``folder -> tubelet model``
(built by ``create_model``, so that ``save_model`` can write it).
"""

from __future__ import annotations

import os

from torch import nn

from tubelet.convert.hf import load_hf_model

FORMATS = {"hf": load_hf_model}


def load_foreign_model(source: str | os.PathLike, fmt: str) -> nn.Module:
    """The tubelet model converted from ``source``, a checkpoint in format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt](source)
