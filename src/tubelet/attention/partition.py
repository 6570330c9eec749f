"""Grouping patch tokens so that attention runs inside each group.

Every factorised scheme is attention within groups of the ``(t, h, w)`` grid:
- windows: the grid cut into blocks of ``window = (wt, wh, ww)`` tokens; a frame is ``(1, H, W)``,
  a tube through time is ``(T, 1, 1)``, a row ``(1, 1, W)``, the whole clip ``(T, H, W)``;
- dilated: tokens whose coordinates agree modulo ``stride = (st, sh, sw)``, i.e. a sparse
  sub-grid taking every ``st``-th frame and every ``sh``-th / ``sw``-th patch (TimeSformer's
  sparse global attention).
Both are one reshape and one permute of ``[B, T*H*W, C]``; groups of whole rows or whole frames need
no copy at all.
"""

from __future__ import annotations

import torch

from tubelet.layers.shape import VideoShape

# Axes of [B, T/a, a, H/b, b, W/c, c, C]: which are group indices and which are positions in a group.
_WINDOW_ORDER = (0, 1, 3, 5, 2, 4, 6, 7)
_DILATED_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _split(x: torch.Tensor, shape: VideoShape, factors: tuple[int, int, int]) -> torch.Tensor:
    for size, factor, axis in zip(shape, factors, "THW"):
        if factor < 1 or size % factor:
            raise ValueError(f"{axis}={size} tokens cannot be grouped by {factor}")
    a, b, c = factors
    return x.reshape(x.shape[0], shape.t // a, a, shape.h // b, b, shape.w // c, c, x.shape[-1])


def partition(x: torch.Tensor, shape: VideoShape, factors: tuple[int, int, int], dilated: bool = False) -> torch.Tensor:
    """``[B, T*H*W, C] -> [B * groups, group size, C]``; ``factors`` is the window, or the stride if dilated."""
    order = _DILATED_ORDER if dilated else _WINDOW_ORDER
    grouped = _split(x, shape, factors).permute(order)
    group_size = grouped.shape[4] * grouped.shape[5] * grouped.shape[6]
    return grouped.reshape(-1, group_size, x.shape[-1])


def unpartition(groups: torch.Tensor, shape: VideoShape, factors: tuple[int, int, int], dilated: bool = False) -> torch.Tensor:
    """Inverse of ``partition``: ``[B * groups, group size, C] -> [B, T*H*W, C]``."""
    a, b, c = factors
    outer = (shape.t // a, shape.h // b, shape.w // c)
    if dilated:
        inner_first = (a, b, c) + outer  # group index = residue, position = outer index
        order = (0, 4, 1, 5, 2, 6, 3, 7)
    else:
        inner_first = outer + (a, b, c)
        order = (0, 1, 4, 2, 5, 3, 6, 7)
    channels = groups.shape[-1]
    grid = groups.reshape(-1, *inner_first, channels).permute(order)
    return grid.reshape(grid.shape[0], shape.num_patches, channels)
