"""The transformer block shared by the plain video models: a space-time mixer, then an MLP."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.registry import build_attention
from tubelet.layers.drop_path import DropPath
from tubelet.layers.mlp import MLPS
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape


class Block(nn.Module):
    """``x, shape = attn(x, shape)`` (the scheme adds its own residuals), then
    ``x + drop_path(mlp(mlp_norm(x)))``. ``[B, P + T*H*W, D] -> [B, P + T'*H'*W', D]``. ``mlp``
    names the feed-forward sublayer (``tubelet.layers.mlp.MLPS``: ``plain``, ``dwconv``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        attention: str,
        attention_options: dict | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        act: str = "gelu",
        mlp: str = "plain",
    ):
        super().__init__()
        if mlp not in MLPS:
            raise ValueError(f"unknown mlp {mlp!r}; expected one of {sorted(MLPS)}")
        self.attn = build_attention(
            attention, dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
            drop_path=drop_path, norm_eps=norm_eps, **(attention_options or {}),
        )
        self.mlp_norm = LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPS[mlp](dim, int(dim * mlp_ratio), act=act, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        x, shape = self.attn(x, shape)
        return x + self.drop_path(self.mlp(self.mlp_norm(x), shape)), shape


def drop_path_rates(depth: int, drop_path_rate: float) -> list[float]:
    """Stochastic depth rising linearly from 0 in the first block to ``drop_path_rate`` in the last."""
    return [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]


def make_blocks(rates: list[float], **block_args) -> nn.ModuleList:
    """One block per drop-path rate in ``rates``."""
    return nn.ModuleList(Block(drop_path=rate, **block_args) for rate in rates)
