"""Kernel attention over token sequences, with optional cosFormer re-weighting: the attention
"core" behind the ReLU, ELU+1, sigmoid, cosFormer and Performer variants.

The core receives kernel features (``rho`` already applied, and fixed by feature fixation) and
values, and computes Eq. 3 of the LVT paper through ``functional.linear_attention`` (the
swappable inner function). Two ways to see a sequence:

- ``forward``: every query attends to every key of its sequence (a frame, a tube, the clip);
- ``attend_band``: a query in frame ``t`` attends to the prefix tokens and to the patches of frames
  ``t - radius .. t + radius``; prefix queries attend to everything. Per-frame key-value states
  ``sum rho(K)^T V`` are summed over each window, so the cost stays linear and no mask exists.

cosFormer (Qin et al. 2022) positions count along the sequence the core is given, prefix tokens
first; in ``attend_band`` they are positions in the whole clip, ``M = P + T*H*W``.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.linear.feature_maps import cos_reweight, sequence_positions
from tubelet.attention.linear.functional import DEFAULT_EPS, attend_state, kv_state, linear_attention
from tubelet.layers.shape import VideoShape


def _window_sum(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """``out[t] = sum_{|s - t| <= radius} x[s]`` along ``dim``, summing shifted slices (no cancellation)."""
    size = x.shape[dim]
    pad_shape = list(x.shape)
    pad_shape[dim] = radius
    zeros = x.new_zeros(pad_shape)
    padded = torch.cat([zeros, x, zeros], dim=dim)
    return sum(padded.narrow(dim, start, size) for start in range(2 * radius + 1))


class KernelAttention(nn.Module):
    """Row-normalised linear attention of features ``[B, heads, L, m]`` and values ``[B, heads, L, e]``.

    ``cos_reweighting`` turns on cosFormer's position re-weighting (features become ``2m`` wide).
    A core of the contract in ``tubelet.attention.core``, with ``attend_band``.
    """

    supports_band = True
    groups_on_head_axis = False

    def __init__(self, *, cos_reweighting: bool = False, eps: float = DEFAULT_EPS):
        super().__init__()
        self.cos_reweighting = cos_reweighting
        self.eps = eps

    def _positions(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cos_reweighting:
            return q, k
        length = max(q.shape[-2], k.shape[-2])
        q = cos_reweight(q, sequence_positions(q.shape[-2], q.device), length)
        k = cos_reweight(k, sequence_positions(k.shape[-2], k.device), length)
        return q, k

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, prefix: int, grid: VideoShape) -> torch.Tensor:
        """``[..., Lq, m], [..., Lk, m], [..., Lk, e] -> [..., Lq, e]`` (``prefix``, ``grid`` unused)."""
        q, k = self._positions(q, k)
        return linear_attention(q, k, v, self.eps)

    def attend_band(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: VideoShape, radius: int) -> torch.Tensor:
        """Band attention over the whole clip: ``q [B, heads, P + T*H*W, m]``, ``k`` and ``v``
        ``[B, heads, P' + T*H*W, .]`` (``P' >= P`` leading global keys) -> ``[B, heads, P + T*H*W, e]``."""
        q, k = self._positions(q, k)
        batch, heads, length, _ = q.shape
        p, key_prefix = shape.num_prefix(length), shape.num_prefix(k.shape[-2])
        kv_prefix, ksum_prefix = kv_state(k[..., :key_prefix, :], v[..., :key_prefix, :])  # [B, heads, m, e], [B, heads, m]
        frames = (batch, heads, shape.t, shape.spatial)
        kv_frames, ksum_frames = kv_state(
            k[..., key_prefix:, :].reshape(*frames, -1), v[..., key_prefix:, :].reshape(*frames, -1)
        )  # [B, heads, T, m, e], [B, heads, T, m]
        kv_window = _window_sum(kv_frames, radius, dim=2) + kv_prefix.unsqueeze(2)
        ksum_window = _window_sum(ksum_frames, radius, dim=2) + ksum_prefix.unsqueeze(2)  # [B, heads, T, m]
        patches = attend_state(q[..., p:, :].reshape(*frames, -1), kv_window, ksum_window, self.eps)  # [B, heads, T, H*W, e]
        prefix = attend_state(q[..., :p, :], kv_frames.sum(2) + kv_prefix, ksum_frames.sum(2) + ksum_prefix, self.eps)
        return torch.cat([prefix, patches.reshape(batch, heads, shape.num_patches, -1)], dim=-2)

    def extra_repr(self) -> str:
        return f"cos_reweighting={self.cos_reweighting}, eps={self.eps}"
