"""Parameter-free shifts of channels across the token grid (the "shift trick" of TSM, Lin et al.
2019, and Shift, Wu et al. 2018), used three ways:

- neighbourhood association of the linear video transformer: temporal and spatial shifts of K
  and V (LVT paper, seed 003, Sec. 4.3 and Table 3);
- XViT's space-time mixing: a temporal shift of K and V, so that attention within a frame sees
  channels of frames t-1 and t+1 (Bulat et al. 2021, Sec. 3.2);
- TSM-ViT: a temporal shift of the whole token stream before each block (Bulat et al. 2021,
  supplement Eq. 1).

Each key and value is rebuilt from its neighbours by moving channel groups across the token
grid, zero-filled at the borders:

- temporal shift: for ``s = 1..size``, a group of ``C // div`` channels comes from frame
  ``t + s`` and one from frame ``t - s``; the rest stay (the LVT code: ``size=1``, ``div=8``,
  so 1/4 of the channels move);
- spatial shift: each of the ``(2 size + 1)^2 - 1`` offsets ``(dh, dw) != (0, 0)`` of the
  window around a token brings ``C // (2 * offsets)`` channels from position ``(h + dh, w + dw)``
  of the same frame, so half of the channels move (the LVT code's "eight-neighbour" shift for
  ``size=1``; its ``size=2`` covers the 24 offsets of the 5x5 window, as here). The order in
  which offsets take channel groups is ``itertools.product`` order, not the LVT code's.

Channels are the full ``heads * d`` width, head-major, as in the LVT code. Prefix tokens (the
class token) have no grid position and are never shifted.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from tubelet.layers.shape import VideoShape, split_prefix

Offset = tuple[int, int, int]


def shift_channels(grid: torch.Tensor, offsets: list[Offset], fold: int) -> torch.Tensor:
    """``[B, T, H, W, *M, C] -> [B, T, H, W, *M, C]``: channels ``[g*fold, (g+1)*fold)`` at ``(t, h, w)``
    take the value at ``(t, h, w) + offsets[g]`` (zero outside the grid); channels from
    ``len(offsets) * fold`` on are unchanged.

    One zero-padding of the moved channels and one concatenation of windows into it (views):
    two kernels whatever the number of offsets, where shifting each group alone takes several.
    """
    if fold < 1 or len(offsets) * fold > grid.shape[-1]:
        raise ValueError(f"cannot shift {len(offsets)} groups of {fold} channels within {grid.shape[-1]} channels")
    moved = len(offsets) * fold
    pad = [max(abs(offset[axis]) for offset in offsets) for axis in range(3)]  # per T, H, W
    # F.pad pads the last dimensions first: C and the middle dimensions M unpadded, then W, H, T.
    unpadded = (0, 0) * (grid.ndim - 4)
    padded = F.pad(grid[..., :moved], (*unpadded, pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]))  # [B, T+2pt, H+2ph, W+2pw, *M, moved]
    t, h, w = grid.shape[1:4]
    pieces = [
        padded[:, pad[0] + dt : pad[0] + dt + t, pad[1] + dh : pad[1] + dh + h, pad[2] + dw : pad[2] + dw + w, ..., g * fold : (g + 1) * fold]
        for g, (dt, dh, dw) in enumerate(offsets)
    ]
    return torch.cat([*pieces, grid[..., moved:]], dim=-1)


def temporal_offsets(size: int) -> list[Offset]:
    """``(+1, 0, 0), (-1, 0, 0), ..., (+size, 0, 0), (-size, 0, 0)``."""
    return [(sign * s, 0, 0) for s in range(1, size + 1) for sign in (1, -1)]


def spatial_offsets(size: int) -> list[Offset]:
    """Every ``(0, dh, dw)`` with ``|dh|, |dw| <= size`` except ``(0, 0, 0)``."""
    span = range(-size, size + 1)
    return [(0, dh, dw) for dh, dw in itertools.product(span, span) if (dh, dw) != (0, 0)]


class ChannelShift:
    """One shift of the patch tokens of ``[B, P + T*H*W, C]``: ``kind`` is ``"temporal"`` or
    ``"spatial"``, ``size`` the neighbourhood radius, ``div`` the temporal fold divisor
    (``C // div`` channels per temporal offset). Parameter-free; a plain callable."""

    KINDS = ("temporal", "spatial")

    def __init__(self, kind: str, size: int = 1, div: int = 8):
        if kind not in self.KINDS:
            raise ValueError(f"unknown channel shift {kind!r}; expected one of {self.KINDS}")
        if size < 1:
            raise ValueError(f"{kind} shift size must be >= 1, got {size}")
        if div < 1:
            raise ValueError(f"temporal shift divisor must be >= 1, got {div}")
        self.kind = kind
        self.size = size
        self.div = div
        self.offsets = temporal_offsets(size) if kind == "temporal" else spatial_offsets(size)

    def fold(self, channels: int) -> int:
        """Channels per offset for a ``channels``-wide input; ValueError if that is none."""
        fold = channels // self.div if self.kind == "temporal" else channels // (2 * len(self.offsets))
        if fold < 1 or len(self.offsets) * fold > channels:
            raise ValueError(
                f"{self.kind} shift of size {self.size} needs more than {channels} channels "
                f"({len(self.offsets)} offsets, fold divisor {self.div if self.kind == 'temporal' else 2 * len(self.offsets)})"
            )
        return fold

    def __call__(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """``[B, P + T*H*W, *M, C] -> [B, P + T*H*W, *M, C]`` (``M``: e.g. K and V stacked)."""
        batch, middle, channels = x.shape[0], x.shape[2:-1], x.shape[-1]
        p = shape.num_prefix(x.shape[1])
        prefix, patches = split_prefix(x, p)
        grid = patches.reshape(batch, shape.t, shape.h, shape.w, *middle, channels)  # [B, T, H, W, *M, C]
        shifted = shift_channels(grid, self.offsets, self.fold(channels)).reshape(batch, -1, *middle, channels)  # [B, N, *M, C]
        return torch.cat([prefix, shifted], dim=1) if p else shifted

    def on_heads(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The shift of ``[B, heads, L, c]`` over its ``heads * c`` channels, head-major."""
        batch, heads, length, channels = x.shape
        flat = x.transpose(1, 2).reshape(batch, length, heads * channels)  # [B, L, heads*c]
        return self(flat, shape).reshape(batch, length, heads, channels).transpose(1, 2)

    def __repr__(self) -> str:
        return f"ChannelShift(kind={self.kind!r}, size={self.size}, div={self.div})"
