"""Linformer attention (Wang et al. 2020, Eq. 7): softmax attention over keys and values
compressed along the sequence by learned projections ``E`` and ``F``,

    Y = softmax(Q (E K)^T / sqrt(d)) (F V),    E, F: [k, S],

so each query sees ``k`` mixed keys instead of ``S`` tokens: ``O(S k)`` time and memory.

Video choices (the paper fixes ``S``; a video model meets other frame counts and sizes):
- ``E`` and ``F`` are ``k`` learned maps over the patch grid of one attention group (a frame
  ``(1, H, W)``, a tube ``(T, 1, 1)`` or the clip ``(T, H, W)``), sized for a reference grid.
  On another grid they are resampled (trilinear) and scaled by ``reference size / size``, so
  each compressed token stays a weighted sum of the same total weight.
- Prefix tokens (the class token) are not compressed: they are appended to the ``k`` mixed
  keys as themselves.
- One ``E`` and one ``F`` per attention layer, shared by all heads (Linformer's "headwise
  sharing"), initialised ``N(0, 1 / S)``.
- ``k = 256`` by default, the Linformer paper's choice; with 16 x 17 x 17 tokens (the LVT
  code's overlapping patches) this gives Table 1's ~+1.8M parameters over linear attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.attention.sdpa import attention

Grid = tuple[int, int, int]


class LinformerAttention(nn.Module):
    """``forward(q, k, v [B, heads, P + S, d], *, prefix=P, grid=(t, h, w)) -> [B, heads, P + S, d]``.

    ``reference_group`` is the grid ``(t, h, w)`` of one attention group that ``E`` and ``F``
    are sized for; ``proj_len`` is ``k``.
    """

    supports_band = False
    groups_on_head_axis = False

    def __init__(self, reference_group: Grid, proj_len: int = 256):
        super().__init__()
        if proj_len < 1 or any(size < 1 for size in reference_group):
            raise ValueError(f"Linformer needs proj_len >= 1 and a positive grid, got {proj_len} and {reference_group}")
        size = math.prod(reference_group)
        self.key_proj = nn.Parameter(torch.randn(proj_len, *reference_group) * size**-0.5)  # E
        self.value_proj = nn.Parameter(torch.randn(proj_len, *reference_group) * size**-0.5)  # F

    def projections(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        """``E``, ``F`` as ``[k, t*h*w]`` for a group grid ``(t, h, w)``."""
        reference = tuple(self.key_proj.shape[1:])
        if tuple(grid) == reference:
            return self.key_proj.flatten(1), self.value_proj.flatten(1)
        scale = math.prod(reference) / math.prod(grid)
        maps = torch.stack([self.key_proj, self.value_proj], dim=1)  # [k, 2, t0, h0, w0]
        resized = F.interpolate(maps, size=tuple(grid), mode="trilinear", align_corners=False) * scale
        return resized[:, 0].flatten(1), resized[:, 1].flatten(1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, prefix: int, grid: Grid) -> torch.Tensor:
        if k.shape[-2] - prefix != math.prod(grid):
            raise ValueError(f"Linformer got {k.shape[-2] - prefix} patch keys for a group grid {tuple(grid)}")
        key_proj, value_proj = self.projections(grid)  # [k, S] each
        keys = torch.cat([k[..., :prefix, :], key_proj.to(k.dtype) @ k[..., prefix:, :]], dim=-2)  # [B, heads, P + k, d]
        values = torch.cat([v[..., :prefix, :], value_proj.to(v.dtype) @ v[..., prefix:, :]], dim=-2)
        return attention(q, keys, values)

    def extra_repr(self) -> str:
        return f"proj_len={self.key_proj.shape[0]}, reference_group={tuple(self.key_proj.shape[1:])}"
