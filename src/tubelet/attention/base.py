"""Multi-head attention: the projections around an inner attention core."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.attention.core import SoftmaxCore
from tubelet.kernels.dtypes import autocast_matmul_dtype


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

    def split_heads(self, x: torch.Tensor, separate: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, L, D] -> q, k, v``, each ``[B, heads, L, d]``.

        ``separate``: one linear per row block of ``qkv.weight`` (``[3D, D]``: Q's rows, K's, V's),
        so that each of q, k, v is a view of its own contiguous ``[B, L, D]``, in which any
        regrouping of tokens along one run of grid axes is a view (``tubelet.attention.layout``);
        otherwise they are slices of one ``[B, L, 3D]`` output.
        """
        if separate:
            weight, bias = self.qkv.weight, self.qkv.bias
            dtype = autocast_matmul_dtype(x)
            if dtype is not None:
                # cast once here: autocast would cast x, and each block of the weight and bias, once per linear
                x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
            biases = (None,) * 3 if bias is None else bias.chunk(3)
            q, k, v = (F.linear(x, w, b) for w, b in zip(weight.chunk(3), biases))  # [B, L, D] each
            return self.to_heads(q), self.to_heads(k), self.to_heads(v)
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
