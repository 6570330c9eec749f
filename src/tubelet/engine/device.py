"""Where a command runs and at what precision, the same rules for ``tubelet train`` (``train.device``,
``train.precision``), ``tubelet eval`` and ``tubelet predict`` (``--device``, ``--precision``).

``auto`` is the process's GPU when CUDA is available, else the CPU; precision ``auto`` is bf16
autocast on a GPU and float32 on the CPU. Weights stay float32 either way: autocast runs the
matrix multiplies in the lower precision.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(device: str, local_rank: int = 0, *, what: str = "train.device") -> torch.device:
    """``"auto"``: ``cuda:local_rank`` when CUDA is available, else the CPU; ``"cuda"`` without an
    index: ``cuda:local_rank``. ``what`` names the setting in the error of a device that is not there."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{what} is {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} is {device!r} but CUDA is not available (use 'cpu' or 'auto')")
        if resolved.index is None:
            resolved = torch.device(f"cuda:{local_rank}")
        if resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{what} is {device!r} but there are {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type != "cpu":
        raise ValueError(f"{what} is {device!r}; expected auto, cpu, cuda or cuda:N")
    return resolved


def autocast_dtype(precision: str, device: torch.device, *, what: str = "train.precision") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: full float32)."""
    choices = {"auto": torch.bfloat16 if device.type == "cuda" else None, "bf16": torch.bfloat16,
               "fp16": torch.float16, "fp32": None}
    if precision not in choices:
        raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{what}=fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return choices[precision]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``amp_dtype`` on ``device``'s type; a no-op for None."""
    return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
