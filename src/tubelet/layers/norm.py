"""``LayerNorm``: ``nn.LayerNorm`` with a fast path for inference under autocast.

Under autocast PyTorch runs LayerNorm in float32 and returns float32, and the matmul that reads
the result casts it back to 16 bits: a float32 write, a float32 read and a cast kernel between
two matmuls (profiled: 18 of MViTv2-S's 91 ms at batch 32 on an H200, BENCHMARKS.md).
``LAYER_NORM_BACKEND`` (a ``tubelet.switch.Switch``) picks the implementation:

- ``torch`` (default): ``nn.LayerNorm`` as it is;
- ``triton``: when autograd is off, autocast is on for the input's device and the module is not
  being compiled (inductor fuses LayerNorm itself), one Triton kernel
  (``tubelet.kernels.layer_norm``) computes it in float32 and writes autocast's dtype: the numbers
  the next matmul sees either way. Elsewhere (training, float32, compiling) it is ``nn.LayerNorm``.

Weights, state-dict keys and ``isinstance(m, nn.LayerNorm)`` are those of ``nn.LayerNorm``.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.kernels.layer_norm import triton_layer_norm
from tubelet.switch import Switch

LAYER_NORM_BACKEND = Switch("LayerNorm backend", ["torch", "triton"], "torch")
KERNEL_DEVICES = ("cuda", "cpu")  # the CPU through Triton's interpreter, in tests


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, ``[..., D] -> [..., D]``, with the fast path above."""

    def uses_kernel(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs the Triton kernel now."""
        return (
            LAYER_NORM_BACKEND.get() == "triton"
            and self.weight is not None and self.bias is not None and len(self.normalized_shape) == 1
            and not torch.is_grad_enabled()
            and x.device.type in KERNEL_DEVICES  # autocast has no state for others, e.g. "meta" (FLOP counts)
            and torch.is_autocast_enabled(x.device.type)
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_kernel(x):
            return super().forward(x)
        return triton_layer_norm(x, self.weight, self.bias, self.eps, torch.get_autocast_dtype(x.device.type))
