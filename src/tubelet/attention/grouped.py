"""Softmax attention restricted to groups of the token grid: joint, space-only, sparse local-global,
axial and ViViT's factorised self-attention are all sequences of such steps.

A step is one residual sublayer ``x + drop_path(attention(norm(x)))`` in which each patch token
attends to the tokens of its own group (see ``partition``). Prefix tokens (the class token) are
global: every token also attends to them, and they attend to every token. Each step has its own
norm and attention weights.

Schemes (TimeSformer, Bertasius et al. 2021, Sec. 3 and Fig. 2; ViViT, Arnab et al. 2021, Sec. 3.3):
- ``joint``: one step over all ``T*H*W`` tokens (ViViT model 1, TimeSformer ST);
- ``space``: attention within each frame (TimeSformer S as a scheme of the joint backbone);
- ``local_global``: local attention in ``T x H/2 x W/2`` windows, then sparse global attention over
  the sub-grids of stride 2 in T, H and W (TimeSformer L+G);
- ``axial``: time, then width, then height (TimeSformer T+W+H);
- ``factorised_self``: space, then time (ViViT model 3, factorised self-attention).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from tubelet.attention.base import MultiHeadAttention
from tubelet.attention.partition import partition, unpartition
from tubelet.attention.registry import register_attention
from tubelet.layers.drop_path import DropPath
from tubelet.layers.shape import VideoShape

GROUPINGS = ("joint", "space", "time", "width", "height", "local", "dilated")


class GroupedAttentionStep(nn.Module):
    """One residual attention sublayer over the groups named by ``grouping``.

    ``local_splits`` cuts the (T, H, W) axes into that many windows for ``local``;
    ``global_stride`` is the (T, H, W) stride of the ``dilated`` sub-grids.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grouping: str,
        *,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        drop_path: float,
        norm_eps: float,
        local_splits: tuple[int, int, int],
        global_stride: tuple[int, int, int],
    ):
        super().__init__()
        if grouping not in GROUPINGS:
            raise ValueError(f"unknown grouping {grouping!r}; expected one of {GROUPINGS}")
        self.grouping = grouping
        self.local_splits = tuple(local_splits)
        self.global_stride = tuple(global_stride)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path)

    def factors(self, shape: VideoShape) -> tuple[tuple[int, int, int], bool]:
        """``(window or stride, dilated)`` of this step on ``shape``."""
        t, h, w = shape
        if self.grouping == "local":
            for size, splits, axis in zip(shape, self.local_splits, "THW"):
                if size % splits:
                    raise ValueError(f"local attention cannot cut {axis}={size} tokens into {splits} windows")
            return (t // self.local_splits[0], h // self.local_splits[1], w // self.local_splits[2]), False
        if self.grouping == "dilated":
            return self.global_stride, True
        windows = {"joint": (t, h, w), "space": (1, h, w), "time": (t, 1, 1), "width": (1, 1, w), "height": (1, h, 1)}
        return windows[self.grouping], False

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        factors, dilated = self.factors(shape)
        h = self.norm(x)
        if factors == tuple(shape) and not dilated:  # one group: plain attention, prefix included
            return x + self.drop_path(self.attn(h))
        return x + self.drop_path(self._grouped(h, shape, factors, dilated))

    def _grouped(self, h: torch.Tensor, shape: VideoShape, factors, dilated: bool) -> torch.Tensor:
        batch, p = h.shape[0], shape.num_prefix(h.shape[1])
        groups = partition(h[:, p:], shape, factors, dilated)  # [B*G, S, D]
        q, k, v = self.attn.split_heads(groups)  # [B*G, heads, S, d]
        if p == 0:
            out = self.attn.merge_heads(self.attn.attend(q, k, v))  # [B*G, S, D]
            return unpartition(out, shape, factors, dilated)
        num_groups = groups.shape[0] // batch
        pq, pk, pv = self.attn.split_heads(h[:, :p])  # [B, heads, P, d]
        # Prefix queries see every token: gather all groups' keys per sample.
        all_k = torch.cat([pk, _flatten_groups(k, batch)], dim=2)  # [B, heads, P + L, d]
        all_v = torch.cat([pv, _flatten_groups(v, batch)], dim=2)
        prefix_out = self.attn.merge_heads(self.attn.attend(pq, all_k, all_v))  # [B, P, D]
        # Patch queries see their group and the prefix tokens.
        k = torch.cat([pk.repeat_interleave(num_groups, dim=0), k], dim=2)  # [B*G, heads, P + S, d]
        v = torch.cat([pv.repeat_interleave(num_groups, dim=0), v], dim=2)
        out = self.attn.merge_heads(self.attn.attend(q, k, v))  # [B*G, S, D]
        return torch.cat([prefix_out, unpartition(out, shape, factors, dilated)], dim=1)


def _flatten_groups(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B*G, heads, S, d] -> [B, heads, G*S, d]`` (order inside a sample does not matter to attention)."""
    _, heads, size, dim = t.shape
    return t.reshape(batch, -1, heads, size, dim).transpose(1, 2).reshape(batch, heads, -1, dim)


class GroupedAttention(nn.Module):
    """A sequence of ``GroupedAttentionStep`` s: ``steps`` names their groupings in order.

    ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``, residuals included.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        steps: tuple[str, ...],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        local_splits: tuple[int, int, int] = (1, 2, 2),
        global_stride: tuple[int, int, int] = (2, 2, 2),
    ):
        super().__init__()
        self.steps = nn.ModuleList(
            GroupedAttentionStep(
                dim, num_heads, grouping,
                qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, drop_path=drop_path,
                norm_eps=norm_eps, local_splits=local_splits, global_stride=global_stride,
            )
            for grouping in steps
        )

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        for step in self.steps:
            x = step(x, shape)
        return x, shape


for _name, _steps in {
    "joint": ("joint",),
    "space": ("space",),
    "local_global": ("local", "dilated"),
    "axial": ("time", "width", "height"),
    "factorised_self": ("space", "time"),
}.items():
    register_attention(_name)(partial(GroupedAttention, steps=_steps))
