"""Orthoformer: softmax attention through orthogonal landmarks (Patrick et al. 2021, Motionformer,
Sec. 3.3 and Algorithm 1), the seed's throughput baseline (Table 8).

``M`` landmarks are chosen among the (scaled) queries, greedily, each the query least aligned
with those already chosen (smallest largest absolute cosine similarity). Attention then goes
through them:

    Y = softmax(Q L^T / sqrt(d)) (softmax(L K^T / sqrt(d)) V),

two products of cost ``O(L M d)``; the ``L x L`` matrix ``softmax(Q L^T) softmax(L K^T)`` is
never formed. Landmark selection runs without gradients, as in Motionformer.

Choices: Motionformer picks the first landmark at random; here it is the query with the largest
norm, so that evaluation is deterministic. When a sequence has fewer than ``M`` queries (a
temporal attention over 8 frames, say), every query is a landmark. Landmarks are shared across
the whole sequence (Motionformer's ``shared_landmarks=True``, the variant the LVT code uses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def orthogonal_landmark_indices(q: torch.Tensor, num_landmarks: int) -> torch.Tensor:
    """Indices ``[..., M]`` (``M = min(num_landmarks, L)``) of near-orthogonal rows of ``q [..., L, d]``,
    in the order chosen."""
    directions = F.normalize(q, dim=-1)  # [..., L, d]
    count = min(num_landmarks, q.shape[-2])
    index = q.norm(dim=-1).argmax(dim=-1, keepdim=True)  # [..., 1]
    chosen = [index]
    # Largest |cos| of every query to the landmarks so far; chosen queries are excluded with +inf.
    worst = torch.zeros(q.shape[:-1], dtype=q.dtype, device=q.device)  # [..., L]
    for _ in range(count - 1):
        landmark = directions.gather(-2, index.unsqueeze(-1).expand(*index.shape, q.shape[-1]))  # [..., 1, d]
        worst = torch.maximum(worst, (directions @ landmark.transpose(-2, -1)).squeeze(-1).abs())
        worst = worst.scatter(-1, index, float("inf"))
        index = worst.argmin(dim=-1, keepdim=True)
        chosen.append(index)
    return torch.cat(chosen, dim=-1)


def orthoformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_landmarks: int = 64) -> torch.Tensor:
    """``[..., Lq, d], [..., Lk, d], [..., Lk, e] -> [..., Lq, e]`` through orthogonal landmarks of ``q``."""
    index = orthogonal_landmark_indices(q, num_landmarks)  # [..., M]
    landmarks = q.gather(-2, index.unsqueeze(-1).expand(*index.shape, q.shape[-1])).detach()  # [..., M, d]
    return landmark_attention(q, k, v, landmarks)


def landmark_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """``softmax(Q L^T / sqrt(d)) (softmax(L K^T / sqrt(d)) V)`` for given landmarks ``[..., M, d]``."""
    scale = q.shape[-1] ** -0.5
    query_to_landmark = torch.softmax(q @ landmarks.transpose(-2, -1) * scale, dim=-1)  # [..., Lq, M]
    landmark_to_key = torch.softmax(landmarks @ k.transpose(-2, -1) * scale, dim=-1)  # [..., M, Lk]
    return query_to_landmark @ (landmark_to_key @ v)


class OrthoformerAttention(nn.Module):
    """``forward(q, k, v [B, heads, L, d], *, prefix, grid) -> [B, heads, L, d]`` (``prefix``
    and ``grid`` are unused: landmarks need no grid)."""

    supports_band = False
    groups_on_head_axis = False

    def __init__(self, num_landmarks: int = 64):
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"Orthoformer needs at least one landmark, got num_landmarks={num_landmarks}")
        self.num_landmarks = num_landmarks

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, prefix: int, grid: tuple[int, int, int]) -> torch.Tensor:
        return orthoformer_attention(q, k, v, self.num_landmarks)

    def extra_repr(self) -> str:
        return f"num_landmarks={self.num_landmarks}"
