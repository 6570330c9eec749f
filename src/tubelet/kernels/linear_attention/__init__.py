"""Non-causal, row-normalised linear attention (Eq. 3 of Lu et al. 2022, "Linear Video Transformer
with Feature Fixation") as Triton kernels, forward and backward.

``triton_linear_attention(q_feat, k_feat, v, eps)`` has the signature of a
``tubelet.attention.linear.functional`` backend and imports Triton only when first called, so
``import tubelet`` never needs Triton and tests can choose Triton's interpreter
(``TRITON_INTERPRET=1``) before the kernels are compiled.
"""

from __future__ import annotations

import torch


def triton_linear_attention(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """``[..., Lq, m], [..., Lk, m], [..., Lk, e] -> [..., Lq, e]`` through the Triton kernels."""
    try:
        from tubelet.kernels.linear_attention import triton as kernels
    except ImportError as error:
        raise RuntimeError(f"the 'triton' linear attention backend needs the triton package ({error})") from error
    return kernels.linear_attention(q_feat, k_feat, v, eps)
