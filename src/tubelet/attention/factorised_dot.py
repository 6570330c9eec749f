"""ViViT model 4, factorised dot-product attention (Arnab et al. 2021, Sec. 3.3, Eq. 8)."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.base import MultiHeadAttention
from tubelet.attention.registry import register_attention
from tubelet.layers.drop_path import DropPath
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape


@register_attention("factorised_dot")
class FactorisedDotProductAttention(nn.Module):
    """Half of the heads attend within each frame, the other half along time at each position;
    the heads' outputs are concatenated and projected, as in one multi-head attention layer.

    The paper splits the heads equally (``num_heads`` must be even), and like ViViT's factorised
    models it pools by averaging, so the sequence has no prefix tokens.
    ``forward(x [B, T*H*W, D], shape) -> (x, shape)``, residual included.
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
        if num_heads % 2:
            raise ValueError(f"factorised dot-product attention splits heads in two; num_heads={num_heads} is odd")
        self.norm = LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        if shape.num_prefix(x.shape[1]):
            raise ValueError("factorised dot-product attention takes no class token; build the model with class_token=False")
        q, k, v = self.attn.split_heads(self.norm(x))  # [B, heads, T*H*W, d]
        batch, heads, _, dim = q.shape
        half = heads // 2
        grid = (batch, half, shape.t, shape.spatial, dim)

        # Groups of sequences are folded into one leading axis: attention takes [N, M, L, d]
        # (torch.onnx translates scaled_dot_product_attention of 4D tensors only).
        def spatial(t: torch.Tensor) -> torch.Tensor:  # [B, heads/2 * T, H*W, d]
            return t[:, :half].reshape(batch, half * shape.t, shape.spatial, dim)

        def temporal(t: torch.Tensor) -> torch.Tensor:  # [B, heads/2 * H*W, T, d]
            return t[:, half:].reshape(grid).transpose(2, 3).reshape(batch, half * shape.spatial, shape.t, dim)

        space_out = self.attn.attend(spatial(q), spatial(k), spatial(v)).reshape(batch, half, -1, dim)
        time_out = self.attn.attend(temporal(q), temporal(k), temporal(v))  # [B, heads/2 * H*W, T, d]
        time_out = time_out.unflatten(1, (half, shape.spatial)).transpose(2, 3).reshape(batch, half, -1, dim)
        out = self.attn.merge_heads(torch.cat([space_out, time_out], dim=1))  # [B, T*H*W, D]
        return x + self.drop_path(out), shape
