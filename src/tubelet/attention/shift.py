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

from tubelet.layers.shape import VideoShape

Offset = tuple[int, int, int]


def _shift_axis(x: torch.Tensor, offset: int, dim: int) -> torch.Tensor:
    """``out[i] = x[i + offset]`` along ``dim``, zero where ``i + offset`` leaves the axis."""
    if offset == 0:
        return x
    size = x.shape[dim]
    if abs(offset) >= size:
        return torch.zeros_like(x)
    kept = x.narrow(dim, max(offset, 0), size - abs(offset))
    zeros = torch.zeros_like(x.narrow(dim, 0, abs(offset)))
    return torch.cat([kept, zeros] if offset > 0 else [zeros, kept], dim=dim)


def shift_channels(grid: torch.Tensor, offsets: list[Offset], fold: int) -> torch.Tensor:
    """``[B, T, H, W, C] -> [B, T, H, W, C]``: channels ``[g*fold, (g+1)*fold)`` at ``(t, h, w)``
    take the value at ``(t, h, w) + offsets[g]`` (zero outside the grid); channels from
    ``len(offsets) * fold`` on are unchanged."""
    if fold < 1 or len(offsets) * fold > grid.shape[-1]:
        raise ValueError(f"cannot shift {len(offsets)} groups of {fold} channels within {grid.shape[-1]} channels")
    pieces = []
    for group, (dt, dh, dw) in enumerate(offsets):
        part = grid[..., group * fold : (group + 1) * fold]
        pieces.append(_shift_axis(_shift_axis(_shift_axis(part, dt, 1), dh, 2), dw, 3))
    pieces.append(grid[..., len(offsets) * fold :])
    return torch.cat(pieces, dim=-1)


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
        batch, channels = x.shape[0], x.shape[-1]
        p = shape.num_prefix(x.shape[1])
        grid = x[:, p:].reshape(batch, shape.t, shape.h, shape.w, channels)  # [B, T, H, W, C]
        shifted = shift_channels(grid, self.offsets, self.fold(channels)).reshape(batch, -1, channels)  # [B, N, C]
        return torch.cat([x[:, :p], shifted], dim=1)

    def on_heads(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The shift of ``[B, heads, L, c]`` over its ``heads * c`` channels, head-major."""
        batch, heads, length, channels = x.shape
        flat = x.transpose(1, 2).reshape(batch, length, heads * channels)  # [B, L, heads*c]
        return self(flat, shape).reshape(batch, length, heads, channels).transpose(1, 2)

    def __repr__(self) -> str:
        return f"ChannelShift(kind={self.kind!r}, size={self.size}, div={self.div})"
