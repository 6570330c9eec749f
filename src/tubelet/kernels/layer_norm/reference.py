"""Plain PyTorch form of what the LayerNorm kernel computes, for its tests: LayerNorm over the
last dimension in float32 (input, weight and bias promoted), the result rounded once to
``out_dtype`` — what autocast's float32 LayerNorm followed by the next matmul's cast gives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``[..., N] -> [..., N]`` in ``out_dtype``."""
    wide = torch.promote_types(x.dtype, torch.float32)
    return F.layer_norm(x.to(wide), x.shape[-1:], weight.to(wide), bias.to(wide), eps).to(out_dtype)
