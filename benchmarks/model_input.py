"""What the one-model scripts (``profile_model.py``, ``count_ops.py``) share: the model, its
constructor overrides and its input on the command line, and the model and a random clip they name."""

from __future__ import annotations

import argparse

import torch

from tubelet.bench.run import parse_overrides
from tubelet.models.registry import create_model
from tubelet.models.summary import default_input_size


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL [key=value ...] [--frames T] [--size S] [--batch B]``."""
    parser.add_argument("model")
    parser.add_argument("overrides", nargs="*", help="model constructor overrides, key=value")
    parser.add_argument("--frames", type=int, help="frames (default: the model's)")
    parser.add_argument("--size", type=int, help="frame size in pixels (default: the model's)")
    parser.add_argument("--batch", type=int, default=1)


def model_and_video(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The registered model at the chosen input (seed 0) and a random video ``[B, C, T, H, W]``, on ``device``."""
    channels, frames, height, width = default_input_size(args.model)
    frames, height, width = args.frames or frames, args.size or height, args.size or width
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model(args.model, num_frames=frames, img_size=height, **parse_overrides(args.overrides))
        video = torch.randn(args.batch, channels, frames, height, width)
    return model, video
