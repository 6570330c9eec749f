"""The inner computation of kernel ("linear") attention, Eq. 2-3 of the LVT paper (seed 003).

With feature maps ``q_feat = rho(Q)``, ``k_feat = rho(K)`` (non-negative), row-normalised linear
attention is (Eq. 3)

    Y_i = rho(Q_i) sum_j rho(K_j)^T V_j / (rho(Q_i) sum_j rho(K_j)^T),

computed right to left (Eq. 2): first the ``[m, e]`` key-value state ``sum_j rho(K_j)^T V_j`` and
the ``[m]`` key sum, then one product per query. No ``[Lq, Lk]`` matrix exists; cost and memory
are ``O(L m e)``.

Shapes: leading dimensions (batch, heads, ...) are free; the last two are ``[L, m]`` for features
and ``[L, e]`` for values.

``linear_attention`` is the one entry point that the attention modules call. It dispatches to the
backend chosen with ``set_backend``: ``"torch"``, the plain PyTorch code below (the default), or
``"triton"``, the fused kernels of ``tubelet.kernels.linear_attention``; a fused kernel registers itself with ``register_backend`` and must agree with
``reference_linear_attention`` (the explicit quadratic form, used only by tests). The backend
chooses an implementation, never a result.
"""

from __future__ import annotations

from typing import Callable

import torch

from tubelet.switch import Switch
from tubelet.kernels.linear_attention import triton_linear_attention

LinearAttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

DEFAULT_EPS = 1e-6


def kv_state(k_feat: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rho(K)^T V`` ``[..., m, e]`` and ``sum_j rho(K_j)`` ``[..., m]`` from ``[..., L, m]``, ``[..., L, e]``."""
    return k_feat.transpose(-2, -1) @ v, k_feat.sum(dim=-2)


def attend_state(q_feat: torch.Tensor, kv: torch.Tensor, k_sum: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Eq. 3 for queries ``[..., Lq, m]`` against a state ``[..., m, e]``, ``[..., m]``: ``[..., Lq, e]``.

    The normaliser is clamped below at ``eps`` (as in cosFormer), so a query whose features are
    all zero gets a zero output instead of a division by zero; above ``eps`` the result is exact.
    """
    numerator = q_feat @ kv  # [..., Lq, e]
    denominator = (q_feat @ k_sum.unsqueeze(-1)).clamp_min(eps)  # [..., Lq, 1]
    return numerator / denominator


def _linear_attention_torch(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    kv, k_sum = kv_state(k_feat, v)
    return attend_state(q_feat, kv, k_sum, eps)


_BACKENDS: dict[str, LinearAttentionFn] = {"torch": _linear_attention_torch}
LINEAR_BACKEND = Switch("linear attention backend", _BACKENDS, "torch")
set_backend, get_backend, backend = LINEAR_BACKEND.set, LINEAR_BACKEND.get, LINEAR_BACKEND.using


def register_backend(name: str, fn: LinearAttentionFn) -> None:
    """Make ``fn(q_feat, k_feat, v, eps)`` selectable as ``set_backend(name)``."""
    LINEAR_BACKEND.add(name)
    _BACKENDS[name] = fn


def linear_attention(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Row-normalised linear attention (Eq. 3): ``[..., Lq, m], [..., Lk, m], [..., Lk, e] -> [..., Lq, e]``."""
    if q_feat.shape[-1] != k_feat.shape[-1] or k_feat.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"linear attention needs q_feat [..., Lq, m], k_feat [..., Lk, m], v [..., Lk, e]; "
            f"got {tuple(q_feat.shape)}, {tuple(k_feat.shape)}, {tuple(v.shape)}"
        )
    return _BACKENDS[LINEAR_BACKEND.get()](q_feat, k_feat, v, eps)


def reference_linear_attention(
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    v: torch.Tensor,
    eps: float = DEFAULT_EPS,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The explicit quadratic form, for tests only: ``A = rho(Q) rho(K)^T`` ``[..., Lq, Lk]``,
    optionally zeroed where the boolean ``mask`` is False, rows divided by their sums, times ``V``."""
    scores = q_feat @ k_feat.transpose(-2, -1)  # [..., Lq, Lk]
    if mask is not None:
        scores = scores * mask
    return scores / scores.sum(dim=-1, keepdim=True).clamp_min(eps) @ v


# The fused Triton kernels (forward and backward); Triton is imported on their first call.
register_backend("triton", triton_linear_attention)
