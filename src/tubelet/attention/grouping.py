"""Groupings of the token grid: which tokens attend to which.

Every scheme in this package is attention restricted to groups of the ``(t, h, w)`` patch grid,
one residual step per grouping. A grouping is one of

| name | the group of a patch at ``(t, h, w)`` | used by |
| --- | --- | --- |
| ``joint`` | the whole clip | ViViT 1, TimeSformer ST, LVT joint |
| ``frame`` | its frame ``(t, :, :)`` | TimeSformer S, ViViT 3, XViT, LVT |
| ``tube`` | its position in every frame ``(:, h, w)`` | TimeSformer T+S, ViViT 3, LVT |
| ``row`` | ``(t, h, :)`` | TimeSformer T+W+H ("width") |
| ``column`` | ``(t, :, w)`` | TimeSformer T+W+H ("height") |
| ``window`` | its block of a ``T/a x H/b x W/c`` tiling, ``splits = (a, b, c)`` | TimeSformer L+G (local) |
| ``stride`` | the sub-grid of tokens equal to it modulo ``stride`` | TimeSformer L+G (sparse global) |
| ``band`` | the patches of frames ``t - radius .. t + radius`` | LVT windowed, XViT's local window |

The first seven are partitions of the grid: one reshape and one permute of ``[B, M, T*H*W, C]``
(``M`` any middle dimensions, usually heads). ``band`` overlaps, so it is not a partition; a core
that supports it offers ``attend_band`` (see ``tubelet.attention.core``).

Prefix tokens (the class token) are global in every grouping: each group's queries also attend
to them, and they attend to every token of the clip (TimeSformer's code and the LVT code both do
this for their global class token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tubelet.attention.layout import from_groups, to_groups, uses_views, view_split
from tubelet.layers.shape import VideoShape

Factors = tuple[int, int, int]

PARTITIONS = ("joint", "frame", "tube", "row", "column", "window", "stride")
GROUPINGS = PARTITIONS + ("band",)


def _check_divides(shape: VideoShape, factors: Factors, what: str) -> None:
    """ValueError unless every factor divides its axis; ``what`` formats as ``what.format(factor)``."""
    for size, factor, axis in zip(shape, factors, "THW"):
        if factor < 1 or size % factor:
            raise ValueError(f"{axis}={size} tokens cannot be cut {what.format(factor)}")


def partition(x: torch.Tensor, shape: VideoShape, factors: Factors, strided: bool = False) -> torch.Tensor:
    """``[B, *M, T*H*W, C] -> [B * groups, *M, S, C]``.

    ``factors = (a, b, c)``: groups are blocks of ``a x b x c`` tokens, or, if ``strided``, the
    sub-grids of tokens whose coordinates agree modulo ``(a, b, c)`` (then a group's grid is
    ``(T/a, H/b, W/c)``). Group order and the order inside a group are both time-major.
    """
    _check_divides(shape, factors, "into groups of {}")
    middle, channels = x.shape[1:-2], x.shape[-1]
    a, b, c = factors
    # [B, M, T/a, a, H/b, b, W/c, c, C]: axes 2, 4, 6 are outer indices, 3, 5, 7 inner ones.
    grid = x.reshape(x.shape[0], -1, shape.t // a, a, shape.h // b, b, shape.w // c, c, channels)
    order = (0, 3, 5, 7, 1, 2, 4, 6, 8) if strided else (0, 2, 4, 6, 1, 3, 5, 7, 8)
    grouped = grid.permute(order)  # [B, G1, G2, G3, M, S1, S2, S3, C]
    size = grouped.shape[5] * grouped.shape[6] * grouped.shape[7]
    return grouped.reshape(-1, *middle, size, channels)


def unpartition(groups: torch.Tensor, shape: VideoShape, factors: Factors, strided: bool = False) -> torch.Tensor:
    """Inverse of ``partition``: ``[B * groups, *M, S, C] -> [B, *M, T*H*W, C]``."""
    a, b, c = factors
    middle, channels = groups.shape[1:-2], groups.shape[-1]
    outer = (shape.t // a, shape.h // b, shape.w // c)
    num_groups = (a * b * c) if strided else outer[0] * outer[1] * outer[2]
    batch = groups.shape[0] // num_groups
    if strided:  # group index = residue, position = outer index
        grid = groups.reshape(batch, a, b, c, -1, *outer, channels).permute(0, 4, 5, 1, 6, 2, 7, 3, 8)
    else:
        grid = groups.reshape(batch, *outer, -1, a, b, c, channels).permute(0, 4, 1, 5, 2, 6, 3, 7, 8)
    return grid.reshape(batch, *middle, shape.num_patches, channels)


@dataclass(frozen=True)
class Grouping:
    """A named grouping of the token grid (see the module docstring).

    ``splits`` belongs to ``window`` (how many windows along T, H, W), ``stride`` to ``stride``
    and ``radius`` to ``band``; each is ignored by the other groupings.
    """

    name: str
    splits: Factors = (1, 2, 2)
    stride: Factors = (2, 2, 2)
    radius: int = 1

    def __post_init__(self):
        if self.name not in GROUPINGS:
            raise ValueError(f"unknown grouping {self.name!r}; expected one of {GROUPINGS}")
        if self.radius < 0:
            raise ValueError(f"band radius must be >= 0, got {self.radius}")

    def factors(self, shape: VideoShape) -> tuple[Factors, bool]:
        """``(block or stride, strided)`` of this partition on ``shape``."""
        t, h, w = shape
        if self.name == "window":
            _check_divides(shape, self.splits, "into {} local windows (local_splits)")
            return (t // self.splits[0], h // self.splits[1], w // self.splits[2]), False
        if self.name == "stride":
            _check_divides(shape, self.stride, "into sub-grids of stride {} (global_stride)")
            return tuple(self.stride), True
        if self.name == "band":
            raise ValueError("the band grouping overlaps and is no partition of the grid")
        blocks = {"joint": (t, h, w), "frame": (1, h, w), "tube": (t, 1, 1), "row": (1, 1, w), "column": (1, h, 1)}
        return blocks[self.name], False

    def group_grid(self, shape: VideoShape) -> VideoShape:
        """The patch grid of one group on ``shape``."""
        if self.name == "band":
            return VideoShape(min(2 * self.radius + 1, shape.t), shape.h, shape.w)
        factors, strided = self.factors(shape)
        if strided:
            return VideoShape(shape.t // factors[0], shape.h // factors[1], shape.w // factors[2])
        return VideoShape(*factors)

    def __repr__(self) -> str:
        option = {"window": f", splits={self.splits}", "stride": f", stride={self.stride}", "band": f", radius={self.radius}"}
        return f"Grouping({self.name!r}{option.get(self.name, '')})"


def _with_prefix(prefix: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``[B, *M, P, C]`` prefix tokens put before each of the ``[B * G, *M, S, C]`` groups.

    Without prefix tokens the groups are returned as they are: ``torch.onnx`` translates
    ``repeat_interleave`` of a tensor with an empty axis into a ``Reshape`` whose target holds that
    0, which ONNX reads as "keep the input's size", so the empty prefix gains rows and ``Concat``
    adds them (wrong outputs from onnxruntime when the exporter's optimiser does not fold it away).
    """
    if prefix.shape[-2] == 0:
        return groups
    return torch.cat([prefix.repeat_interleave(num_groups, dim=0), groups], dim=-2)


def attend_in_groups(
    core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    shape: VideoShape,
    grouping: Grouping,
    shared: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of ``core`` within the groups of ``grouping``.

    ``q, k [B, heads, P + T*H*W, m]``, ``v [B, heads, P + T*H*W, e]`` -> ``[B, heads, P + T*H*W, e]``.
    Each group's queries see ``[shared, prefix, group patches]``; prefix queries see the shared
    tokens and every token of the clip. ``shared = (k_s, v_s)``, ``[B, heads, R, .]``, are keys and
    values added to every group (XViT's summary tokens); to the core they are prefix tokens.
    Under the ``view`` layout (``tubelet.attention.layout``) groups without prefix tokens that are
    views of the tokens go to the core as those views, not as ``partition`` copies.
    """
    p = shape.num_prefix(q.shape[-2])
    if shared is not None:
        k, v = torch.cat([shared[0], k], dim=-2), torch.cat([shared[1], v], dim=-2)
    key_prefix = k.shape[-2] - shape.num_patches  # shared + prefix
    if grouping.name == "band":
        return core.attend_band(q, k, v, shape, grouping.radius)
    factors, strided = grouping.factors(shape)
    group_grid = grouping.group_grid(shape)
    if factors == tuple(shape) and not strided:  # one group: the clip
        return core(q, k, v, prefix=key_prefix, grid=group_grid)
    batch = q.shape[0]
    split = view_split(shape, factors) if uses_views(q.shape[0], q.shape[-2]) and not strided else None
    if split is not None and p == key_prefix == 0 and core.groups_on_head_axis:
        out = core(*(to_groups(t, split) for t in (q, k, v)), prefix=0, grid=group_grid)  # [B*before, after*heads, S, e]
        return from_groups(out, batch, q.shape[1])
    patches = [partition(t[..., p_len:, :], shape, factors, strided) for t, p_len in ((q, p), (k, key_prefix), (v, key_prefix))]
    num_groups = patches[0].shape[0] // batch
    q_g, k_g, v_g = (_with_prefix(t[..., :length, :], g, num_groups) for t, g, length in zip((q, k, v), patches, (p, key_prefix, key_prefix)))
    out = core(q_g, k_g, v_g, prefix=key_prefix, grid=group_grid)  # [B*G, heads, P + S, e]
    out = unpartition(out[..., p:, :], shape, factors, strided)  # [B, heads, T*H*W, e]
    if p == 0:
        return out
    prefix = core(q[..., :p, :], k, v, prefix=key_prefix, grid=shape)  # [B, heads, P, e]
    return torch.cat([prefix, out], dim=-2)
