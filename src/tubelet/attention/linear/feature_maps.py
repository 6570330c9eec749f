"""Kernel feature maps ``rho`` of linear attention (LVT paper, seed 003, Sec. 3.2 and Table 5).

Each map takes one head's queries or keys ``[..., L, e]`` and returns non-negative features
``[..., L, m]``; ``num_features`` is ``m``. ``is_query`` matters only to Performer's numerical
stabiliser. Maps:

- ``ReLUFeatures``: ``ReLU(x) + offset`` (the paper's default, Eq. 3). The LVT code adds
  ``offset = e ** -0.5`` (``F.relu(q) + self.scale``) so that no normaliser is ever zero; we keep
  that default, and ``offset=0`` gives Eq. 3 literally.
- ``EluPlusOneFeatures``: ``ELU(x) + 1`` (Linear Transformer, Katharopoulos et al. 2020, Eq. 7).
- ``SigmoidFeatures``: ``sigmoid(x)`` (Table 5).
- ``IdentityFeatures``: ``x`` unchanged, for the softmax-based approximations (Linformer,
  Orthoformer) that compute their own similarities; feature fixation then acts on raw Q and K,
  as in the LVT code for ``LINEAR_TYPE: orthoformer``.
- ``PerformerFeatures``: FAVOR+ positive orthogonal random features (Choromanski et al. 2021,
  Lemma 1 and Sec. 2.4) for the softmax kernel ``exp(q.k / sqrt(e))``.

cosFormer's re-weighting (Qin et al. 2022, Eq. 9-11) depends on positions along the attended
axis, so it is not a pointwise map; ``cos_reweight`` applies it to ReLU features once tokens are
grouped into the sequences that attend.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn


class ReLUFeatures(nn.Module):
    """``ReLU(x) + offset``; ``offset=None`` means ``head_dim ** -0.5`` as in the LVT code."""

    def __init__(self, head_dim: int, offset: float | None = None):
        super().__init__()
        self.num_features = head_dim
        self.offset = head_dim**-0.5 if offset is None else float(offset)
        if self.offset < 0:
            raise ValueError(f"ReLU kernel offset must be >= 0 to keep features non-negative, got {offset}")

    def forward(self, x: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        return F.relu(x) + self.offset

    def extra_repr(self) -> str:
        return f"offset={self.offset:.4g}"


class EluPlusOneFeatures(nn.Module):
    """``ELU(x) + 1`` (Katharopoulos et al. 2020)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.num_features = head_dim

    def forward(self, x: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        return F.elu(x) + 1.0


class SigmoidFeatures(nn.Module):
    """``sigmoid(x)``."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.num_features = head_dim

    def forward(self, x: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        return torch.sigmoid(x)


class IdentityFeatures(nn.Module):
    """``x`` unchanged (softmax-based approximations compute their own similarities)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.num_features = head_dim

    def forward(self, x: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        return x


def orthogonal_gaussian(num_features: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[num_features, dim]`` random projections: stacked blocks of ``dim`` orthonormal rows
    (QR of a Gaussian matrix), each row rescaled to the norm of a ``dim``-dimensional Gaussian
    vector (chi(dim) lengths), so that each row is marginally ``N(0, I)`` (FAVOR+, Sec. 2.4)."""
    num_blocks = -(-num_features // dim)
    gaussian = torch.randn(num_blocks, dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)  # columns of each block orthonormal
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-uniform blocks (Mezzadri 2007)
    rows = q.transpose(-2, -1).reshape(num_blocks * dim, dim)[:num_features]  # [m, d]
    lengths = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (rows * lengths).float()


class PerformerFeatures(nn.Module):
    """FAVOR+ positive random features: ``phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)``,
    ``x' = x e^(-1/4)``, so that ``E[phi(q) . phi(k)] = exp(q . k / sqrt(e))``.

    ``num_features`` (``m``, default ``e``) rows of ``W`` are orthogonal random features
    (``orthogonal_gaussian``); ``W`` is a buffer, so it travels with checkpoints. With
    ``redraw_interval = n`` a fresh ``W`` is drawn every ``n`` optimiser steps, as Performer does
    during training; ``None`` keeps ``W`` fixed. The training loop drives the redraws through
    ``after_optimizer_step``, never ``forward``, so the recompute of gradient checkpointing sees
    the ``W`` of the first pass. The steps since the last redraw are a buffer too (a resumed run
    redraws when the uninterrupted one would), and each ``W`` is drawn from a generator seeded by
    the one before it, so every DDP rank, holding the same ``W``, draws the same next one.

    Numerical stabiliser (as in the Performer and Motionformer code): query features subtract
    their row maximum of ``W x'`` and key features the maximum over all tokens of one sample and
    head; both are constant over the keys a query sees, so they cancel in the row normalisation.
    """

    def __init__(self, head_dim: int, num_features: int | None = None, redraw_interval: int | None = None):
        super().__init__()
        self.num_features = head_dim if num_features is None else int(num_features)
        if self.num_features < 1:
            raise ValueError(f"Performer needs at least one random feature, got num_features={num_features}")
        if redraw_interval is not None and redraw_interval < 1:
            raise ValueError(f"Performer redraw_interval must be >= 1 or None, got {redraw_interval}")
        self.head_dim = head_dim
        self.redraw_interval = redraw_interval
        self.register_buffer("projection", orthogonal_gaussian(self.num_features, head_dim))
        self.register_buffer("steps_since_redraw", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw a fresh projection ``W`` in place (default generator: one seeded by the current ``W``)."""
        if generator is None:
            digest = hashlib.blake2b(self.projection.detach().cpu().numpy().tobytes(), digest_size=8).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        fresh = orthogonal_gaussian(self.num_features, self.head_dim, generator)
        self.projection.copy_(fresh.to(self.projection))
        self.steps_since_redraw.zero_()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Count one optimiser step; redraw ``W`` when ``redraw_interval`` steps have passed."""
        if self.redraw_interval is None:
            return
        self.steps_since_redraw += 1
        if int(self.steps_since_redraw) >= self.redraw_interval:
            self.redraw()

    def forward(self, x: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        x = x * self.head_dim**-0.25
        projected = x @ self.projection.to(x.dtype).T  # [..., L, m]
        half_norm = 0.5 * (x * x).sum(dim=-1, keepdim=True)  # [..., L, 1]
        if is_query:
            stabiliser = projected.amax(dim=-1, keepdim=True)
        else:
            stabiliser = projected.amax(dim=(-2, -1), keepdim=True)
        return torch.exp(projected - half_norm - stabiliser.detach()) / math.sqrt(self.num_features)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, redraw_interval={self.redraw_interval}"


def cos_reweight(features: torch.Tensor, positions: torch.Tensor, num_positions: int) -> torch.Tensor:
    """cosFormer re-weighting along the attended axis (Qin et al. 2022, Eq. 9-11).

    ``[..., L, m] -> [..., L, 2m]``: the token at position ``p`` (``positions`` ``[L]``, counted
    from 1 as in the cosFormer code) becomes ``[x sin(pi p / 2M), x cos(pi p / 2M)]`` with
    ``M = num_positions`` (the longer of the query and key sequences), so that feature products
    carry ``cos(pi (p_i - p_j) / 2M)``, which favours nearby tokens.
    """
    angle = (math.pi / (2 * num_positions)) * positions.to(features.dtype).unsqueeze(-1)  # [L, 1]
    return torch.cat([features * angle.sin(), features * angle.cos()], dim=-1)


def sequence_positions(length: int, device: torch.device) -> torch.Tensor:
    """Positions ``1..length`` of a sequence's tokens, for ``cos_reweight``."""
    return torch.arange(1, length + 1, device=device)
