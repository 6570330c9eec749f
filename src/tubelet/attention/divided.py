"""TimeSformer's divided space-time attention (T+S), Bertasius et al. 2021, Eq. 7-8."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.base import MultiHeadAttention
from tubelet.attention.grouping import Grouping, attend_in_groups, partition, unpartition
from tubelet.attention.layout import uses_views
from tubelet.attention.registry import register_attention
from tubelet.layers.drop_path import DropPath
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape, split_prefix

TUBES = Grouping("tube")


@register_attention("divided")
class DividedSpaceTimeAttention(nn.Module):
    """Temporal attention, then spatial attention, each with its own norm and weights.

    Temporal (Eq. 7): each patch attends to the patches at the same position in every frame; the
    class token takes no part. The update passes through ``temporal_fc`` before the residual, as
    in TimeSformer's code (zero-initialised in every block but the first, so that a network
    initialised from an image model starts as that image model).
    Spatial (Eq. 8): each frame attends over its patches plus its own copy of the prefix tokens;
    the prefix tokens' updates are averaged over frames.
    ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``, residuals included, in the layout that
    ``tubelet.attention.layout.ATTENTION_LAYOUT`` chooses (``forward_permuted``, ``forward_views``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.temporal_norm = LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm = LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path)

    def init_residual(self, layer_index: int) -> None:
        if layer_index > 0:
            nn.init.zeros_(self.temporal_fc.weight)
            nn.init.zeros_(self.temporal_fc.bias)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        if uses_views(x.shape[0], x.shape[1]):
            return self.forward_views(x, shape), shape
        return self.forward_permuted(x, shape), shape

    def forward_permuted(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The ``permute`` layout: the tubes as ``partition`` copies, norm and projections on them."""
        batch, dim = x.shape[0], x.shape[-1]
        p = shape.num_prefix(x.shape[1])
        prefix, patches = split_prefix(x, p)

        tubes = partition(patches, shape, (shape.t, 1, 1))  # [B*H*W, T, D]
        update = self.drop_path(self.temporal_attn(self.temporal_norm(tubes)))
        patches = patches + self.temporal_fc(unpartition(update, shape, (shape.t, 1, 1)))  # [B, T*H*W, D]

        frames = patches.reshape(batch * shape.t, shape.spatial, dim)  # [B*T, H*W, D]
        frame_prefix = prefix.unsqueeze(1).expand(-1, shape.t, -1, -1).reshape(batch * shape.t, p, dim)
        update = self.drop_path(self.attn(self.norm(torch.cat([frame_prefix, frames], dim=1))))  # [B*T, P+H*W, D]
        prefix_update, patch_update = split_prefix(update, p)
        prefix = prefix + prefix_update.reshape(batch, shape.t, p, dim).mean(dim=1)
        patches = patches + patch_update.reshape(batch, shape.num_patches, dim)
        return torch.cat([prefix, patches], dim=1)

    def forward_views(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        """The ``view`` layout (``tubelet.attention.layout``): the temporal step's norm and
        projections run on the tokens in their own order and its tubes are views; the spatial
        step's only copy puts each frame's prefix before its patches (none without prefix)."""
        batch, dim = x.shape[0], x.shape[-1]
        p = shape.num_prefix(x.shape[1])
        attn = self.temporal_attn
        # the prefix tokens are normed and projected too: x stays contiguous (LayerNorm copies a slice)
        q, k, v = (split_prefix(t, p, dim=2)[1] for t in attn.split_heads(self.temporal_norm(x), separate=True))  # [B, heads, T*H*W, d]
        out = attend_in_groups(attn.core, q, k, v, shape, TUBES)  # [B, heads, T*H*W, d], a view
        update = attn.merge_heads(out).view(batch, shape.t, shape.spatial, dim)  # [B, T, H*W, D]
        update = self.drop_path(update, samples=(batch, 1, shape.spatial, 1))  # per tube, as forward_permuted
        prefix, patches = split_prefix(x, p)
        patches = patches + self.temporal_fc(update.view(batch, shape.num_patches, dim))  # [B, T*H*W, D]

        frames = patches.view(batch * shape.t, shape.spatial, dim)  # [B*T, H*W, D]
        if p == 0:
            return frames.add(self.drop_path(self.attn(self.norm(frames)))).view(batch, shape.num_patches, dim)
        frame_prefix = prefix.unsqueeze(1).expand(-1, shape.t, -1, -1).reshape(batch * shape.t, p, dim)
        update = self.drop_path(self.attn(self.norm(torch.cat([frame_prefix, frames], dim=1))))  # [B*T, P+H*W, D]
        prefix_update, patch_update = split_prefix(update, p)
        prefix = prefix + prefix_update.unflatten(0, (batch, shape.t)).mean(dim=1)  # [B, P, D]
        patches = (frames + patch_update).view(batch, shape.num_patches, dim)  # the add reads the slice in place
        return torch.cat([prefix, patches], dim=1)
