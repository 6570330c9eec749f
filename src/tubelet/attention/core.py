"""The one contract of every inner attention ("core") in tubelet.

A core maps one head-split sequence batch to its attention output:

    core(q, k, v, *, prefix, grid) -> out
    q   [N, heads, Lq, m]      queries (for kernel cores: feature-mapped, ``rho(Q)``)
    k   [N, heads, Lk, m]      keys, ``Lk = prefix + grid.t * grid.h * grid.w``
    v   [N, heads, Lk, e]      values
    out [N, heads, Lq, e]

``prefix`` is the number of leading key tokens that sit on no grid position (class tokens,
XViT's summary tokens); ``grid`` is the ``(t, h, w)`` grid of the remaining keys, the group that
``tubelet.attention.grouping`` cut out. Cores that need neither ignore them.

| core | where | computes |
| --- | --- | --- |
| ``SoftmaxCore`` | here | ``softmax(Q K^T / sqrt(d)) V`` through SDPA, ``sdpa.py`` (every softmax scheme, XViT) |
| ``KernelAttention`` | ``linear/kernel.py`` | row-normalised linear attention, LVT Eq. 3 (+ cosFormer) |
| ``LinformerAttention`` | ``linear/linformer.py`` | softmax over keys compressed along ``grid`` |
| ``OrthoformerAttention`` | ``linear/orthoformer.py`` | softmax through orthogonal landmarks |

One optional method: ``attend_band(q, k, v, shape, radius)`` over the whole clip, for the
overlapping ``band`` grouping; ``supports_band`` says whether a core has it.
``groups_on_head_axis`` says whether the head axis is one more batch axis to the core (no
per-head parameters), so that it may also hold groups (the ``view`` layout,
``tubelet.attention.layout``).
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.sdpa import attention
from tubelet.layers.shape import VideoShape


class SoftmaxCore(nn.Module):
    """``softmax(Q K^T / sqrt(d) + bias) V`` via ``tubelet.attention.sdpa`` (SDPA, the kernel
    chosen by its switch), with attention dropout ``attn_drop`` in training.

    ``mask`` (boolean, True = may attend) or ``bias`` (float, added to the scores), broadcastable
    to ``[N, heads, Lq, Lk]``, serve references in tests and additive position terms.
    """

    supports_band = False
    groups_on_head_axis = True

    def __init__(self, attn_drop: float = 0.0):
        super().__init__()
        self.attn_drop = attn_drop

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        prefix: int = 0,
        grid: VideoShape | None = None,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if mask is not None and bias is not None:
            raise ValueError("give SoftmaxCore a boolean mask or an additive bias, not both")
        drop = self.attn_drop if self.training else 0.0
        return attention(q, k, v, mask if bias is None else bias, drop)

    def extra_repr(self) -> str:
        return f"attn_drop={self.attn_drop}"
