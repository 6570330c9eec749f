"""Multi-head self-attention, the building block every softmax scheme shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """``softmax(Q K^T / sqrt(d)) V`` per head through ``F.scaled_dot_product_attention``.

    ``[B, L, D] -> [B, L, D]``; a fused ``qkv`` projection and an output projection ``proj``.
    The optional boolean ``mask`` ``[L, L]`` (True = may attend) exists for tests and references.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, L, D] -> q, k, v``, each ``[B, heads, L, d]``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., Lq, d], [..., Lk, d], [..., Lk, d] -> [..., Lq, d]``."""
        drop = self.attn_drop if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        """``[B, heads, L, d] -> proj([B, L, D])``."""
        b, _, n, _ = o.shape
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, -1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend(q, k, v, mask))
