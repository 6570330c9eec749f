"""Importing weights from other implementations, one module per foreign format.

``FORMATS`` maps a ``tubelet convert --from`` name to a function ``path, **options -> tubelet
model`` (built by ``create_model``, so that ``save_model`` can write it); ``options`` are the
loader's keyword arguments (``--set key=value``).
``load_foreign_model`` sets the converted model's metadata: how the format's checkpoints are fed
(``PREPROCESSING``; Hugging Face's loader reads its folder's processor) and where the weights came from.
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


# How each format's released checkpoints are fed: their configs' normalisation, sampling and test
# views, as the metadata of the converted model. Hugging Face folders say it themselves
# (``tubelet.convert.hf.hf_preprocessing``); ``timm`` weights initialise a model that is yet to train.
_PYSLOWFAST_NORM = dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))  # PySlowFast's DATA.MEAN / DATA.STD
PREPROCESSING = {
    # torchvision's MViT_V2_S_Weights.KINETICS400_V1: short side 256, 224 crop; 5 clips of 16 frames at 7.5 fps.
    "torchvision-mvit": dict(_PYSLOWFAST_NORM, resize_to=256, sampling="dense", frame_interval=4, views=(5, 1)),
    # PySlowFast's MViTv2_S_16x4 Kinetics config: 16 frames every 4th, 5 clips x 1 crop, short side = crop.
    "slowfast-mvit": dict(_PYSLOWFAST_NORM, sampling="dense", frame_interval=4, views=(5, 1)),
    # The official TimeSformer_divST_8x32_224 Kinetics config (a PySlowFast config): 8 frames every 32nd, 1 x 3 views.
    "timesformer": dict(_PYSLOWFAST_NORM, sampling="dense", frame_interval=32, views=(1, 3)),
    # The official XViT and LVT SSv2 configs (xvit_B16_16x16.yaml, lxvitv2_B16_16x16.yaml): DATA.MEAN / STD 0.5,
    # frames from equal segments, NUM_ENSEMBLE_VIEWS 2 x 3 spatial crops.
    "xvit": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), sampling="uniform", views=(2, 3)),
    "lvt": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), sampling="uniform", views=(2, 3)),
    # scenic's ViViT Kinetics configs: pixels zero-centred to [-1, 1], 32 frames at stride 2, 4 x 3 views.
    "scenic-vivit": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), sampling="dense", frame_interval=2, views=(4, 3)),
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
    model = for_input(loader(source, **options), num_frames, img_size)
    fields = dict(PREPROCESSING.get(fmt, {}))
    if fields.get("resize_to"):  # the table's short sides are for 224-pixel crops
        fields["resize_to"] = round(fields["resize_to"] * model.metadata.img_size / 224)
    model.metadata = model.metadata.replace(**fields, source=file_source(fmt, source))
    return model
