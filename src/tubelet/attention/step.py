"""One residual attention step: the sublayer every grouped scheme is a sequence of.

    h = LayerNorm(x);  Q, K, V = split(qkv(h))                         [B, heads, P + T*H*W, d]
    [shift K and V across the grid]                                    (XViT mixing; LVT Sec. 4.3)
    [Q~, K~ = rho(Q), rho(K); feature fixation; feature dropout]       (linear cores; LVT Eq. 4-5)
    [shift K~ and V after fixation]                                    (LVT's ordering ablation)
    [summary tokens: per-frame means of K and V shared by all groups]  (XViT Sec. 3.3)
    Y = attend_in_groups(core, Q, K, V, grouping)                      (tubelet.attention.grouping)
    x = x + DropPath(proj(Y))

Softmax schemes use only the first and last lines; XViT adds the shift and the summary tokens;
the linear schemes add the kernel features and fixation. Which parts a scheme has is decided
when it is built, never by branching on a scheme name here.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.base import MultiHeadAttention
from tubelet.attention.grouping import Grouping, attend_in_groups
from tubelet.attention.layout import uses_views
from tubelet.attention.shift import ChannelShift
from tubelet.layers.drop_path import DropPath
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape


def frame_summaries(x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
    """XViT's summary tokens: ``[B, P + T*H*W, *M, C] -> [B, T, *M, C]``, the mean of each frame's
    patch tokens (the paper's ``phi`` = spatial averaging, ``R = 1`` per frame)."""
    p = shape.num_prefix(x.shape[1])
    return x[:, p:].unflatten(1, (shape.t, shape.spatial)).mean(dim=2)


class AttentionStep(nn.Module):
    """``forward(x [B, P + T*H*W, D], shape) -> [B, P + T*H*W, D]``, residual included.

    ``core`` is the inner attention (``tubelet.attention.core``; None = softmax). ``features``
    (a kernel feature map), ``fixation`` and ``feature_drop`` exist only for linear cores.
    ``shifts`` apply to K and V, after fixation if ``shift_after_fixation``. ``summary`` adds
    XViT's per-frame summary tokens to every group's keys and values.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grouping: Grouping,
        *,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        drop_path: float,
        norm_eps: float,
        core: nn.Module | None = None,
        features: nn.Module | None = None,
        fixation: nn.Module | None = None,
        shifts: tuple[ChannelShift, ...] = (),
        shift_after_fixation: bool = False,
        summary: bool = False,
    ):
        super().__init__()
        if core is not None and features is None and attn_drop:
            raise ValueError("attention dropout of a non-softmax core needs kernel features to drop")
        if summary and features is not None:
            raise ValueError("summary tokens are softmax keys; they do not combine with kernel features")
        self.grouping = grouping
        self.shifts = tuple(shifts)
        self.shift_after_fixation = shift_after_fixation
        self.summary = summary
        self.norm = LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, core=core)
        self.features = features
        self.fixation = fixation
        self.feature_drop = nn.Dropout(attn_drop) if features is not None else None
        self.drop_path = DropPath(drop_path)
        self.plain_softmax = self.attn.core.groups_on_head_axis and features is None and not shifts and not summary

    def shift(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """Every shift of this step applied to ``[B, heads, L, c]`` in order (the order ablation's
        shifts of fixed features; before fixation the step shifts K and V in ``[B, L, 2, D]``)."""
        for shift in self.shifts:
            x = shift.on_heads(x, shape)
        return x

    def queries_keys_values(self, x: torch.Tensor, shape: VideoShape):
        """What the core sees, before grouping: ``Q^, K^ [B, heads, L, m]``, ``V [B, heads, L, d]``,
        and the summary keys and values ``[B, heads, T, d]`` (None without ``summary``), which
        average the frames' unshifted K and V. Under the ``view`` layout (``tubelet.attention.layout``)
        a softmax step without shifts and summaries computes Q, K and V apart."""
        if uses_views(x.shape[0], x.shape[1]) and self.plain_softmax:
            q, k, v = self.attn.split_heads(self.norm(x), separate=True)  # [B, heads, L, d], views of [B, L, D]
            return q, k, v, None
        qkv = self.attn.qkv(self.norm(x)).unflatten(-1, (3, -1))  # [B, L, 3, D]
        q, kv = qkv[:, :, 0], qkv[:, :, 1:]  # [B, L, D], [B, L, 2, D]: K and V shift together
        shared = None
        if self.summary:
            summaries = frame_summaries(kv, shape)  # [B, T, 2, D]
            shared = (self.attn.to_heads(summaries[:, :, 0]), self.attn.to_heads(summaries[:, :, 1]))
        if not self.shift_after_fixation:
            for shift in self.shifts:
                kv = shift(kv, shape)
        q, k, v = self.attn.to_heads(q), self.attn.to_heads(kv[:, :, 0]), self.attn.to_heads(kv[:, :, 1])  # [B, heads, L, d]
        if self.features is not None:
            q, k = self.features(q, is_query=True), self.features(k, is_query=False)  # [B, heads, L, m]
            if self.fixation is not None:
                q, k = self.fixation(q, k, v)
            q, k = self.feature_drop(q), self.feature_drop(k)
        if self.shift_after_fixation:
            k, v = self.shift(k, shape), self.shift(v, shape)
        return q, k, v, shared

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        q, k, v, shared = self.queries_keys_values(x, shape)
        out = attend_in_groups(self.attn.core, q, k, v, shape, self.grouping, shared)  # [B, heads, L, e]
        return x + self.drop_path(self.attn.merge_heads(out))

    def extra_repr(self) -> str:
        return f"grouping={self.grouping}, shifts={self.shifts}, shift_after_fixation={self.shift_after_fixation}, summary={self.summary}"


class GroupedAttention(nn.Module):
    """A sequence of ``AttentionStep`` s (the mixer contract of the video blocks):
    ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``, residuals included."""

    def __init__(self, steps: list[AttentionStep]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        for step in self.steps:
            x = step(x, shape)
        return x, shape
