"""Importing weights from other implementations, one module per foreign format.

``FORMATS`` maps a ``tubelet convert --from`` name to a function ``path, **options -> tubelet
model`` (built by ``create_model``, so that ``save_model`` can write it); ``options`` are the
loader's keyword arguments (``--set key=value``).
Each loader sets the metadata of how the format's checkpoints are fed (normalisation,
sampling, test views); ``load_foreign_model`` adds where the weights came from.
"""

from __future__ import annotations

import inspect
import os

from torch import nn

from tubelet.convert.hf import load_hf_model
from tubelet.convert.imagenet import load_image_initialised
from tubelet.convert.lvt import load_lvt_official
from tubelet.convert.scenic_vivit import load_scenic_vivit
from tubelet.convert.slowfast_mvit import load_slowfast_mvit
from tubelet.convert.timesformer import load_timesformer_official
from tubelet.convert.torchvision_mvit import load_torchvision_mvit
from tubelet.convert.xvit import load_xvit_official
from tubelet.suggest import check_keys
from tubelet.models.metadata import file_source
from tubelet.models.serialization import for_input

FORMATS = {
    "hf": load_hf_model, "torchvision-mvit": load_torchvision_mvit, "slowfast-mvit": load_slowfast_mvit,
    "timesformer": load_timesformer_official, "xvit": load_xvit_official, "lvt": load_lvt_official, "scenic-vivit": load_scenic_vivit,
    "timm": load_image_initialised,
}


def load_foreign_model(source: str | os.PathLike, fmt: str, *, num_frames: int | None = None,
                       img_size: int | None = None, **options) -> nn.Module:
    """The tubelet model converted from ``source``, a checkpoint in format ``fmt``, its metadata
    naming the source; ``options`` go to the format's loader (an option it does not take is a
    ValueError naming it); ``num_frames`` / ``img_size`` rebuild it for another input as
    ``tubelet.load_model`` does."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(sorted(FORMATS))}")
    loader = FORMATS[fmt]
    if fmt != "timm":  # timm's loader passes the rest to create_model, which checks them itself
        check_keys(options, list(inspect.signature(loader).parameters)[1:], f"--from {fmt} has no option")
    model = loader(source, **options)
    model.metadata = model.metadata.replace(source=file_source(fmt, source))
    return for_input(model, num_frames, img_size)
