"""Exponential moving average of model weights: ``w_ema <- d * w_ema + (1 - d) * w``."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of ``model`` whose floating-point weights trail the trained ones.

    Integer buffers (counters) are copied, not averaged. ``module`` is the averaged model, used for
    validation and saved beside the raw weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for averaged, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if averaged.is_floating_point():
                averaged.lerp_(current.detach(), 1.0 - self.decay)
            else:
                averaged.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
