"""Multi-head attention: the projections around an inner attention core."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.core import SoftmaxCore


class MultiHeadAttention(nn.Module):
    """``proj(core(split(qkv(x))))``: a fused ``qkv`` projection, an inner attention ``core``
    (``tubelet.attention.core``; softmax by default) and an output projection ``proj``.

    ``[B, L, D] -> [B, L, D]``. Keyword arguments of ``forward`` and ``attend`` go to the core
    (``mask=`` for the softmax core, used by tests and references).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        core: nn.Module | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.core = SoftmaxCore(attn_drop) if core is None else core
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, L, D] -> q, k, v``, each ``[B, heads, L, d]``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, D] -> [B, heads, L, d]`` (a view)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **core_args) -> torch.Tensor:
        """``[..., Lq, d], [..., Lk, d], [..., Lk, e] -> [..., Lq, e]`` through the core, all keys one group."""
        return self.core(q, k, v, **core_args)

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        """``[B, heads, L, d] -> proj([B, L, D])``."""
        b, _, n, _ = o.shape
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, -1)))

    def forward(self, x: torch.Tensor, **core_args) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend(q, k, v, **core_args))
