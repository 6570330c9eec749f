"""The dtype a kernel computes in, as the PyTorch operator it replaces would."""

from __future__ import annotations

import functools

import torch


def common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Autocast's dtype where autocast is on for the tensors' device (as for a matmul or SDPA), else
    the promoted dtype of the inputs."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))
