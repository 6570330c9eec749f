"""Parameters and FLOPs of registered models, counted without allocating their weights.

Models are built on the ``meta`` device and ``torch.utils.flop_counter`` counts one forward pass
at the default input (batch 1). Papers report "GFLOPs" that are multiply-accumulates; the table
gives both: GMACs = FLOPs / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from tubelet.models.registry import create_model, get_entry, list_models
from tubelet.models.video_transformer import as_pair


@dataclass(frozen=True)
class ModelCost:
    name: str
    params: int
    flops: int
    input_size: tuple[int, int, int, int]  # C, T, H, W

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9


def default_input_size(name: str, **overrides) -> tuple[int, int, int, int]:
    args = {**get_entry(name).defaults, **overrides}
    height, width = as_pair(args.get("img_size", 224))
    return args.get("in_chans", 3), args.get("num_frames", 8), height, width


def model_cost(name: str, **overrides) -> ModelCost:
    """Parameters and forward FLOPs of ``create_model(name, **overrides)`` for one clip."""
    size = default_input_size(name, **overrides)
    with torch.device("meta"):
        model = create_model(name, **overrides).eval()
        video = torch.empty(1, *size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(video)
    return ModelCost(name, params, counter.get_total_flops(), size)


def print_model_table(filter: str = "") -> None:
    names = list_models(filter)
    if not names:
        raise ValueError(f"no registered model name contains {filter!r}")
    print(f"{'model':<46} {'input CxTxHxW':>15} {'params (M)':>11} {'GFLOPs':>9} {'GMACs':>9}")
    for name in names:
        cost = model_cost(name)
        shape = "x".join(str(s) for s in cost.input_size)
        print(f"{name:<46} {shape:>15} {cost.params / 1e6:>11.2f} {cost.flops / 1e9:>9.4g} {cost.gmacs:>9.4g}")
