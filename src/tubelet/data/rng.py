"""Scalar draws from a ``torch.Generator``, so that every augmentation is reproducible.

Each function takes ``generator=None`` to mean torch's global generator. Transforms draw their
parameters once per clip with these and then apply them to all frames as a batch.
"""

from __future__ import annotations

import numpy as np
import torch


def uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    """A float drawn uniformly from ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An int drawn uniformly from ``[low, high)`` (``high`` excluded, as ``torch.randint``)."""
    return int(torch.randint(low, high, (), generator=generator))


def coin(probability: float, generator: torch.Generator | None) -> bool:
    """True with the given probability."""
    return uniform(0.0, 1.0, generator) < probability


def normal(mean: float, std: float, generator: torch.Generator | None) -> float:
    """A float drawn from ``N(mean, std^2)``."""
    return mean + std * float(torch.randn((), generator=generator, dtype=torch.float64))


def beta(alpha: float, generator: torch.Generator | None) -> float:
    """A float drawn from ``Beta(alpha, alpha)``.

    torch's Beta sampler takes no generator, so numpy draws it from a seed that the torch
    generator provides; the result stays a function of the generator's state.
    """
    seed = randint(0, 2**62, generator)
    return float(np.random.default_rng(seed).beta(alpha, alpha))
