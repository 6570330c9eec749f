"""Plain PyTorch form of what the short-sequence softmax kernels compute, for their tests: scores,
softmax and the weighted sum in float32 (inputs promoted), the result in the inputs' dtype."""

from __future__ import annotations

import math

import torch


def short_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``[N, heads, Lq, d], [N, heads, Lk, d], [N, heads, Lk, e] -> [N, heads, Lq, e]``."""
    wide = torch.promote_types(q.dtype, torch.float32)
    scores = q.to(wide) @ k.to(wide).transpose(-2, -1) / math.sqrt(q.shape[-1])
    return (scores.softmax(-1) @ v.to(wide)).to(q.dtype)
