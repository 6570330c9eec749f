"""Plain PyTorch form of what the Triton kernels compute, for their tests.

Row-normalised non-causal linear attention, Eq. 3 of Lu et al. 2022 ("Linear Video Transformer
with Feature Fixation"), right to left (Eq. 2), with the kernels' numerics: the inputs are
promoted to float32 (the kernels accumulate in float32 whatever the input type), the normaliser
is clamped below at ``eps``, and the result is cast back to the inputs' type.

    S = rho(K)^T V            [..., m, e]
    z = sum_j rho(K_j)        [..., m]
    Y_i = rho(Q_i) S / max(rho(Q_i) . z, eps)
"""

from __future__ import annotations

import torch


def linear_attention_reference(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """``[..., Lq, m], [..., Lk, m], [..., Lk, e] -> [..., Lq, e]`` in the inputs' (common) dtype."""
    dtype = torch.promote_types(torch.promote_types(q_feat.dtype, k_feat.dtype), v.dtype)
    wide = torch.promote_types(dtype, torch.float32)
    q, k, v32 = q_feat.to(wide), k_feat.to(wide), v.to(wide)
    state = k.transpose(-2, -1) @ v32  # [..., m, e]
    k_sum = k.sum(dim=-2)  # [..., m]
    normaliser = (q @ k_sum.unsqueeze(-1)).clamp_min(eps)  # [..., Lq, 1]
    return ((q @ state) / normaliser).to(dtype)
