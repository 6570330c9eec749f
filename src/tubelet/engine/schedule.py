"""Learning-rate schedule: linear warm-up, then cosine decay, advanced once per optimiser step.

    lr(s) = base * (s + 1) / W                                              for s < W
    lr(s) = min + (base - min) * (1 + cos(pi * (s - W) / (S - W))) / 2     for W <= s < S

(SGDR, Loshchilov and Hutter 2016, without restarts), with S total steps and W warm-up steps.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, *, total_steps: int, warmup_steps: int, min_factor: float) -> float:
    """The multiplier of the base lr at optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_factor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR``: each parameter group's lr is its initial lr times the factor, so
    layer-wise lr scales set by the optimiser survive. ``min_factor`` is ``min_lr / lr``."""
    if warmup_steps > total_steps:
        raise ValueError(f"warm-up of {warmup_steps} steps is longer than the {total_steps} steps of training")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(
            step, total_steps=total_steps, warmup_steps=warmup_steps, min_factor=min_factor
        ),
    )
