"""``LayerNorm``: ``nn.LayerNorm`` with a fast path under autocast.

Under autocast PyTorch runs LayerNorm in float32 and returns float32, and the matmul that reads
the result casts it back to 16 bits: a float32 write, a float32 read and a cast kernel between
two matmuls (profiled: 18 of MViTv2-S's 91 ms at batch 32 on an H200, BENCHMARKS.md); in training
the backward casts the 16-bit output gradient to float32 again before its own kernels.
``LAYER_NORM_BACKEND`` (a ``tubelet.switch.Switch``) picks the implementation:

- ``auto`` (default): ``triton`` for inputs of at least ``KERNEL_MIN_ELEMENTS`` values on CUDA
  where no gradient is needed, ``torch`` otherwise. Measured on an H200 (BENCHMARKS.md,
  ``gpu_throughput.py --sections norm``): the kernel makes TimeSformer-B 8x224 1.10x and MViTv2-S
  16x224 1.29x faster at batch 32, and both slower at batch 1 (0.77x, 0.87x), where the time is the
  CPU's and a Triton launch costs more of it than ATen's. Batch 32's smallest LayerNorm input is
  MViTv2-S's last stage, 9.6M values; batch 1's largest is 2.4M. In training steps (``--sections
  norm-train norm-launch``) the kernels made MViTv2-S 16x224 1.14-1.15x faster at batch 16 with
  1.3 GiB less memory and ViViT-B factorised 32x224 1.12x at batch 8, but TimeSformer-B 8x224
  0.97-1.07x at batch 16 (two calls) and 0.75x at 8, ViViT-B 0.64-0.77x at batch 4, where the host
  bounds the step: a LayerNorm's forward and backward cost the host 566 us through the kernels
  against 259 through ATen (204.6 and 465.3 after the launch path was trimmed, 18:05). A rule
  taking the kernels in training from 16.8M values measured 1.01-1.12x in one call (17:50) and
  0.83-0.91x for TimeSformer-B at batch 16 in the next two (18:05-18:10: 169, 174, 160 against
  ATen's 192-193), the intermittent slowdown seen once before (0.69x) and not yet explained. So
  ``auto`` leaves training to ATen;
- ``torch``: ``nn.LayerNorm`` as it is;
- ``triton``: when autocast is on for the input's device and the module is not being compiled
  (inductor fuses LayerNorm itself), Triton kernels (``tubelet.kernels.layer_norm``) compute it
  in float32 and write autocast's dtype, the numbers the next matmul sees either way; under
  autograd a backward kernel reads the 16-bit output gradient and gives the input's gradient in
  the input's dtype and float32 gradients of weight and bias, as ``nn.LayerNorm`` under autocast
  does. Elsewhere (autocast off, a float64 input, compiling) it is ``nn.LayerNorm``.

Weights, state-dict keys and ``isinstance(m, nn.LayerNorm)`` are those of ``nn.LayerNorm``.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.kernels.dtypes import autocast_matmul_dtype
from tubelet.kernels.layer_norm import triton_layer_norm
from tubelet.switch import Switch

LAYER_NORM_BACKEND = Switch("LayerNorm backend", ["auto", "torch", "triton"], "auto")
KERNEL_MIN_ELEMENTS = 1 << 22  # auto: 4.2M values, between batch 1's largest input and batch 32's smallest


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, ``[..., D] -> [..., D]``, with the fast path above."""

    def kernel_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The 16-bit dtype the Triton kernel writes if ``forward(x)`` runs it now, else None."""
        if (torch.compiler.is_compiling() or self.weight is None or self.bias is None
                or len(self.normalized_shape) != 1):
            return None
        dtype = autocast_matmul_dtype(x)
        if dtype is None:  # no autocast here, e.g. "meta" (FLOP counts), or float64
            return None
        backend = LAYER_NORM_BACKEND.get()
        if backend == "auto":
            training = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
            return dtype if x.is_cuda and not training and x.numel() >= KERNEL_MIN_ELEMENTS else None
        return dtype if backend == "triton" else None

    def uses_kernel(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs the Triton kernel now."""
        return self.kernel_dtype(x) is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.kernel_dtype(x)
        if dtype is None:
            return super().forward(x)
        return triton_layer_norm(x, self.weight, self.bias, self.eps, dtype)
