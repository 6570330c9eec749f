"""Stochastic depth."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops the whole residual branch per sample with probability ``p`` during training
    (Huang et al., 2016), scaling kept samples by ``1 / (1 - p)``. Input ``[B, ...]``; ``samples``,
    the shape of the mask (broadcast against the input; default ``[B, 1, ..., 1]``), makes other
    axes samples too (TimeSformer's tubes in a ``[B, T, H*W, D]`` view: ``(B, 1, H*W, 1)``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, samples: tuple[int, ...] | None = None) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(samples or (x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
