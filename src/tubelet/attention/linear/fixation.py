"""Feature fixation: re-weighting the kernel features of Q and K before linear attention
(LVT paper, seed 003, Sec. 4.1-4.2, Eq. 4-5, Table 4).

With ``Q~ = rho(Q)``, ``K~ = rho(K)`` ``[..., L, m]`` and ``V`` ``[..., L, e]`` of one head:

- separate (Eq. 4): ``gamma_q = sigmoid(phi_q(Q~))``, ``gamma_k = sigmoid(phi_k(K~))``;
- cooperative (Eq. 5): ``gamma = sigmoid(phi(agg(Q~, K~[, V])))``, where ``agg`` is channel
  concatenation (the paper's choice), element-wise addition or multiplication of the inputs
  ``Q, K`` or ``Q, K, V`` (Table 4 "Targets");

then ``Q^ = gamma_q * Q~`` and ``K^ = gamma_k * K~``. "Shared" ratios (Table 4 "FS") use one
``phi`` for Q and K (so ``gamma_q = gamma_k`` in cooperative mode); otherwise Q and K have their
own ``phi_q``, ``phi_k``.

Each ``phi`` is one ``Linear`` over a head's channels, shared by all heads, as in the LVT code
(``nn.Linear(3 * head_dim, head_dim)``); the ``D x D`` of the paper is per head (its footnote 1
describes a single head). V enters as it is (the LVT code concatenates raw ``v``); addition and
multiplication with V therefore need ``m == e``.

Parameters per fixation module, ``m = e = d``: concatenation of Q, K, V costs ``3d^2 + d`` per
``phi`` and addition ``d^2 + d``; sharing drops one ``phi``. See ``tests/attention/
test_linear_fixation.py`` for how this compares with the paper's "~0.1M" and "~0.05M".
"""

from __future__ import annotations

import torch
from torch import nn

FIXATION_MODES = ("separate", "cooperative")
FIXATION_INPUTS = ("qk", "qkv")
FIXATION_AGGREGATIONS = ("concat", "add", "mul")


def _aggregate(parts: list[torch.Tensor], aggregation: str) -> torch.Tensor:
    if aggregation == "concat":
        return torch.cat(parts, dim=-1)
    out = parts[0]
    for part in parts[1:]:
        out = out + part if aggregation == "add" else out * part
    return out


class FeatureFixation(nn.Module):
    """``forward(q_feat [..., L, m], k_feat [..., L, m], v [..., L, e]) -> (Q^, K^)``, Eq. 4 or 5.

    ``feature_dim`` is ``m`` (the kernel's feature count), ``value_dim`` is ``e``.
    """

    def __init__(
        self,
        feature_dim: int,
        value_dim: int,
        *,
        mode: str = "cooperative",
        inputs: str = "qkv",
        aggregation: str = "concat",
        shared: bool = True,
    ):
        super().__init__()
        if mode not in FIXATION_MODES:
            raise ValueError(f"unknown feature fixation mode {mode!r}; expected one of {FIXATION_MODES}")
        if inputs not in FIXATION_INPUTS:
            raise ValueError(f"unknown feature fixation inputs {inputs!r}; expected one of {FIXATION_INPUTS}")
        if aggregation not in FIXATION_AGGREGATIONS:
            raise ValueError(f"unknown feature fixation aggregation {aggregation!r}; expected one of {FIXATION_AGGREGATIONS}")
        if mode == "separate" and (inputs != "qk" or aggregation != "concat"):
            raise ValueError(
                f"separate feature fixation (Eq. 4) re-weights Q from Q and K from K: inputs must be 'qk' and "
                f"aggregation left at 'concat', got inputs={inputs!r}, aggregation={aggregation!r}"
            )
        if aggregation != "concat" and inputs == "qkv" and feature_dim != value_dim:
            raise ValueError(
                f"feature fixation by {aggregation!r} of Q, K, V needs as many kernel features as value "
                f"channels, got {feature_dim} features and {value_dim} value channels; use aggregation='concat'"
            )
        self.mode = mode
        self.inputs = inputs
        self.aggregation = aggregation
        self.shared = shared
        if mode == "separate" or aggregation != "concat":
            in_dim = feature_dim
        else:
            in_dim = 2 * feature_dim + (value_dim if inputs == "qkv" else 0)
        if shared:
            self.gate = nn.Linear(in_dim, feature_dim)
        else:
            self.q_gate = nn.Linear(in_dim, feature_dim)
            self.k_gate = nn.Linear(in_dim, feature_dim)

    def forward(self, q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "separate":
            q_in, k_in = q_feat, k_feat
        else:
            parts = [q_feat, k_feat, v] if self.inputs == "qkv" else [q_feat, k_feat]
            q_in = k_in = _aggregate(parts, self.aggregation)
        q_phi = self.gate if self.shared else self.q_gate
        k_phi = self.gate if self.shared else self.k_gate
        gamma_q = torch.sigmoid(q_phi(q_in))
        gamma_k = gamma_q if (self.shared and q_in is k_in) else torch.sigmoid(k_phi(k_in))
        return gamma_q * q_feat, gamma_k * k_feat

    def extra_repr(self) -> str:
        return f"mode={self.mode}, inputs={self.inputs}, aggregation={self.aggregation}, shared={self.shared}"
