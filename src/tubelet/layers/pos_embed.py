"""Positional embeddings for video tokens, resized on the fly to other frame counts and sizes.

Four kinds, one contract ``forward(x [B, P + T*H*W, D], shape) -> x + embedding``:
- ``SeparatePosEmbed``: TimeSformer's spatial table (class token included) plus a temporal table;
- ``TemporalPosEmbed``: a temporal table only (the LVT code: its overlapping, zero-padded patch
  convolution is left to tell positions within a frame apart);
- ``JointPosEmbed``: one learned table over all space-time positions (ViViT model 1);
- ``SinCosPosEmbed``: the fixed sinusoid table of "Attention is all you need" over the flattened
  token index, as VideoMAE uses it.
When the input grid differs from the constructed one, learned grid tables are resized: bicubic in
space, linear in time (TimeSformer's code uses nearest; interpolation keeps neighbouring positions
smooth); the sinusoid table is computed afresh for the new number of tokens, as VideoMAE's code
builds it for any input, so a model rebuilt for that input computes the same.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from tubelet.layers.shape import VideoShape


def resize_grid_table(table: torch.Tensor, old: VideoShape, new: VideoShape) -> torch.Tensor:
    """Resize a ``[1, t*h*w, D]`` table laid out on grid ``old`` to grid ``new``."""
    if old == new:
        return table
    dim = table.shape[-1]
    grid = table.reshape(1, old.t, old.h, old.w, dim).permute(0, 4, 1, 2, 3)  # [1, D, t, h, w]
    if (old.h, old.w) != (new.h, new.w):
        frames = grid.permute(0, 2, 1, 3, 4).reshape(old.t, dim, old.h, old.w)  # [t, D, h, w]
        frames = F.interpolate(frames.float(), size=(new.h, new.w), mode="bicubic", align_corners=False)
        grid = frames.to(table.dtype).reshape(1, old.t, dim, new.h, new.w).permute(0, 2, 1, 3, 4)
    if old.t != new.t:
        grid = F.interpolate(grid, size=(new.t, new.h, new.w), mode="trilinear", align_corners=False)
    return grid.permute(0, 2, 3, 4, 1).reshape(1, new.num_patches, dim)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """``[1, num_positions, dim]``: sin on even channels, cos on odd ones, frequency 10000^(-2i/dim)."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * (torch.arange(dim) // 2) / dim
    angles = position / torch.pow(10000.0, exponent).to(torch.float64)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


class SeparatePosEmbed(nn.Module):
    """TimeSformer: ``spatial`` ``[1, P + h*w, D]`` (prefix tokens get their own rows, no time) and
    ``temporal`` ``[1, t, D]`` added to every patch of a frame."""

    def __init__(self, shape: VideoShape, dim: int, num_prefix: int):
        super().__init__()
        self.shape = shape
        self.num_prefix = num_prefix
        self.spatial = nn.Parameter(torch.zeros(1, num_prefix + shape.spatial, dim))
        self.temporal = nn.Parameter(torch.zeros(1, shape.t, dim))
        nn.init.trunc_normal_(self.spatial, std=0.02)
        nn.init.trunc_normal_(self.temporal, std=0.02)

    def _resized(self, shape: VideoShape) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid tables for ``shape``: spatial ``[1, h*w, D]`` (prefix rows left out), temporal ``[1, t, D]``."""
        spatial = resize_grid_table(self.spatial[:, self.num_prefix :], VideoShape(1, self.shape.h, self.shape.w), VideoShape(1, shape.h, shape.w))
        temporal = resize_grid_table(self.temporal, VideoShape(self.shape.t, 1, 1), VideoShape(shape.t, 1, 1))
        return spatial, temporal

    def resized_state(self, shape: VideoShape) -> dict[str, torch.Tensor]:
        """The tables resized to grid ``shape``."""
        spatial, temporal = self._resized(shape)
        return {"spatial": torch.cat([self.spatial[:, : self.num_prefix], spatial], dim=1), "temporal": temporal}

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        spatial, temporal = self._resized(shape)
        grid = (spatial.unsqueeze(1) + temporal.unsqueeze(2)).reshape(1, shape.num_patches, x.shape[-1])  # [1, t*h*w, D]
        return x + torch.cat([self.spatial[:, : self.num_prefix], grid], dim=1)


class FramePosEmbed(SeparatePosEmbed):
    """XViT: every frame has its own class token. ``spatial`` ``[1, 1 + h*w, D]`` (row 0 for the
    frame's class token) plus ``temporal`` ``[1, t, D]`` added to every token of a frame, class
    token included. Input frame-major, ``[B, t*(1 + h*w), D]``, each frame's class token first."""

    def __init__(self, shape: VideoShape, dim: int):
        super().__init__(shape, dim, num_prefix=1)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        spatial, temporal = self._resized(shape)
        frame = torch.cat([self.spatial[:, :1], spatial], dim=1)  # [1, 1 + h*w, D]
        return x + (frame.unsqueeze(1) + temporal.unsqueeze(2)).reshape(1, -1, x.shape[-1])  # [1, t*(1 + h*w), D]


class TemporalPosEmbed(nn.Module):
    """The LVT code's ``temp_embed``: ``temporal`` ``[1, t, D]`` added to every patch of a frame;
    prefix tokens get nothing."""

    def __init__(self, shape: VideoShape, dim: int, num_prefix: int):
        super().__init__()
        self.shape = shape
        self.num_prefix = num_prefix
        self.temporal = nn.Parameter(torch.zeros(1, shape.t, dim))
        nn.init.trunc_normal_(self.temporal, std=0.02)

    def resized_state(self, shape: VideoShape) -> dict[str, torch.Tensor]:
        """The table resized to ``shape.t`` frames."""
        return {"temporal": resize_grid_table(self.temporal, VideoShape(self.shape.t, 1, 1), VideoShape(shape.t, 1, 1))}

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        temporal = self.resized_state(shape)["temporal"]  # [1, t, D]
        grid = temporal.unsqueeze(2).expand(-1, -1, shape.spatial, -1).reshape(1, shape.num_patches, x.shape[-1])
        return x + F.pad(grid, (0, 0, self.num_prefix, 0))


class JointPosEmbed(nn.Module):
    """ViViT model 1: one learned table ``[1, P + t*h*w, D]``."""

    def __init__(self, shape: VideoShape, dim: int, num_prefix: int):
        super().__init__()
        self.shape = shape
        self.num_prefix = num_prefix
        self.weight = nn.Parameter(torch.zeros(1, num_prefix + shape.num_patches, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def resized_state(self, shape: VideoShape) -> dict[str, torch.Tensor]:
        """The table resized to grid ``shape``."""
        p = self.num_prefix
        return {"weight": torch.cat([self.weight[:, :p], resize_grid_table(self.weight[:, p:], self.shape, shape)], dim=1)}

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        return x + self.resized_state(shape)["weight"]


class SinCosPosEmbed(nn.Module):
    """VideoMAE: fixed sinusoids over the flattened patch index; prefix tokens get none."""

    def __init__(self, shape: VideoShape, dim: int, num_prefix: int):
        super().__init__()
        self.shape = shape
        self.num_prefix = num_prefix
        self.register_buffer("table", sinusoid_table(shape.num_patches, dim), persistent=False)

    def resized_state(self, shape: VideoShape) -> dict[str, torch.Tensor]:
        return {}  # the table is not a parameter: a model built for ``shape`` makes its own

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        table = self.table if shape == self.shape else sinusoid_table(shape.num_patches, x.shape[-1]).to(x.device)
        grid = table.to(x.dtype)  # [1, t*h*w, D]
        # Zero rows for the prefix tokens: one addition over x, no slicing and concatenating of x.
        return x + F.pad(grid, (0, 0, self.num_prefix, 0))


POS_EMBEDS = {"separate": SeparatePosEmbed, "temporal": TemporalPosEmbed, "joint": JointPosEmbed, "sincos": SinCosPosEmbed}


def make_pos_embed(kind: str, shape: VideoShape, dim: int, num_prefix: int) -> nn.Module:
    if kind not in POS_EMBEDS:
        raise ValueError(f"unknown positional embedding {kind!r}; expected one of {sorted(POS_EMBEDS)}")
    return POS_EMBEDS[kind](shape, dim, num_prefix)
