"""Which tokens attend to which (LVT paper, seed 003, Table 6): the steps of the attention patterns.

- ``GroupStep("space")``: each frame's patches attend within the frame;
- ``GroupStep("time")``: each patch attends to the same position in every frame;
- ``GroupStep("joint")``: every token attends to every token;
- ``WindowStep(radius)``: a patch in frame ``t`` attends to the patches of frames
  ``t - radius .. t + radius`` (the local temporal window of XViT, Bulat et al. 2021).

Patterns: ``factorised`` = space then time (the paper's default, as in TimeSformer and ViViT),
``joint``, ``windowed``. Prefix tokens (the class token) are global in every step, as in
``tubelet.attention.grouped``: each group's patches also attend to them, and they attend to every
token.

A step calls the attention core with queries, keys and values ``[B', heads, P + S, .]`` whose
first ``P`` tokens are the prefix and the rest the group's patches in grid order.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.partition import partition, unpartition
from tubelet.layers.shape import VideoShape

PATTERNS = {"factorised": ("space", "time"), "joint": ("joint",), "windowed": ("window",)}


def _to_groups(x: torch.Tensor, shape: VideoShape, factors: tuple[int, int, int]) -> torch.Tensor:
    """``[B, heads, N, c] -> [B*G, heads, S, c]``."""
    batch, heads, n, channels = x.shape
    flat = x.transpose(1, 2).reshape(batch, n, heads * channels)  # [B, N, heads*c]
    groups = partition(flat, shape, factors)  # [B*G, S, heads*c]
    return groups.reshape(groups.shape[0], groups.shape[1], heads, channels).transpose(1, 2)


def _from_groups(x: torch.Tensor, shape: VideoShape, factors: tuple[int, int, int], batch: int) -> torch.Tensor:
    """``[B*G, heads, S, c] -> [B, heads, N, c]``."""
    _, heads, size, channels = x.shape
    flat = unpartition(x.transpose(1, 2).reshape(-1, size, heads * channels), shape, factors)  # [B, N, heads*c]
    return flat.reshape(batch, shape.num_patches, heads, channels).transpose(1, 2)


class GroupStep:
    """Attention within the groups named by ``kind`` (``space``, ``time``, ``joint``)."""

    KINDS = ("space", "time", "joint")

    def __init__(self, kind: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown attention group {kind!r}; expected one of {self.KINDS}")
        self.kind = kind

    def factors(self, shape: VideoShape) -> tuple[int, int, int]:
        return {"space": (1, shape.h, shape.w), "time": (shape.t, 1, 1), "joint": tuple(shape)}[self.kind]

    def __call__(self, core: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """``q, k [B, heads, P + N, m]``, ``v [B, heads, P + N, e]`` -> ``[B, heads, P + N, e]``."""
        batch, p = q.shape[0], shape.num_prefix(q.shape[-2])
        factors = self.factors(shape)
        if factors == tuple(shape):
            return core(q, k, v, prefix=p, group=factors)
        groups = [_to_groups(t[..., p:, :], shape, factors) for t in (q, k, v)]  # [B*G, heads, S, .]
        num_groups = groups[0].shape[0] // batch
        # Each group's sequence is [prefix, group patches]; the prefix queries' outputs from the
        # groups are dropped, they attend to the whole clip below.
        q_g, k_g, v_g = (torch.cat([t[..., :p, :].repeat_interleave(num_groups, dim=0), g], dim=-2) for t, g in zip((q, k, v), groups))
        patches = _from_groups(core(q_g, k_g, v_g, prefix=p, group=factors)[..., p:, :], shape, factors, batch)
        if p == 0:
            return patches
        prefix = core(q[..., :p, :], k, v, prefix=p, group=tuple(shape))  # [B, heads, P, e]
        return torch.cat([prefix, patches], dim=-2)

    def __repr__(self) -> str:
        return f"GroupStep({self.kind!r})"


class WindowStep:
    """Local temporal window of ``radius`` frames either side (kernel attention cores only)."""

    kind = "window"

    def __init__(self, radius: int):
        if radius < 0:
            raise ValueError(f"temporal window radius must be >= 0, got {radius}")
        self.radius = radius

    def __call__(self, core: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        return core.windowed(q, k, v, shape, self.radius)

    def __repr__(self) -> str:
        return f"WindowStep(radius={self.radius})"
