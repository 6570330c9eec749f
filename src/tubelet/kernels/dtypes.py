"""The dtype a kernel computes in, as the PyTorch operator it replaces would."""

from __future__ import annotations

import functools

import torch


# Devices asked about autocast: a fixed list, since torch.compile on torch 2.11 cannot trace
# torch.amp.is_autocast_available (a graph break); others take autocast's own casts.
AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast_matmul_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast ``x`` to for a matmul now (None where it would not: autocast
    off, a device outside ``AUTOCAST_DEVICES``, e.g. ``meta``, or a float64 ``x``), so that a caller can
    cast once, before a copy or before several products."""
    device = x.device.type
    if x.dtype != torch.float64 and device in AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def common_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Autocast's dtype where autocast is on for the tensors' device (as for a matmul or SDPA), else
    the promoted dtype of the inputs."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))
