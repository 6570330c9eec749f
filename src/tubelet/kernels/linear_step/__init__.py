"""The kernel-attention part of one linear video attention step as one fused Triton kernel
(forward) and one (backward, plus a shift of the gradients and a sum of the gate's partial
gradients): kernel feature map, neighbourhood shift of K and V, cooperative feature fixation and
row-normalised linear attention within groups of the token grid (Lu et al. 2022, "Linear Video
Transformer with Feature Fixation", Sec. 3.2, 4.1-4.3, Eq. 3 and 5).

``triton_linear_step`` imports Triton only when first called, so ``import tubelet`` never needs
Triton and tests can choose Triton's interpreter (``TRITON_INTERPRET=1``) before the kernels are
compiled. ``reference.linear_step_reference`` is the same computation in plain PyTorch.
"""

from __future__ import annotations

import torch

from tubelet.switch import Switch

FEATURES = ("relu", "elu", "sigmoid")  # rho: ReLU + offset, ELU + 1, sigmoid
# How the kernels compute, never what (each setting agrees with the reference within the tests'
# tolerances); read when a kernel is launched.
# For 16-bit inputs, the dots' operands: tf32, or rounded to bf16 (half the registers and shared
# memory, twice the tensor-core rate); float32 inputs always multiply exactly. bf16 by default:
# measured on the H200 (gpu_throughput.py --sections step, BENCHMARKS.md), the kernel 1.24x faster
# at 96x448 and up to 1.9x at 16x224 batch 8, with the same error against the torch step (9e-5).
STEP_DOT_OPERANDS = Switch("fused linear step dot operands", ("tf32", "bf16"), "bf16")
# The key pass (S = K^T V, z) of each group: one program per group and head (off), or, where
# groups x heads are fewer than the device has room for (the joint grouping, or frames at batch
# 1), split over several programs per group, partial states summed, then the queries likewise
# split (auto; forward and backward). Measured: no faster at 96x448, mixed at 16x224; off stays.
STEP_KEY_SPLIT = Switch("fused linear step key split", ("off", "auto"), "off")


def triton_linear_step(qkv: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, **options) -> torch.Tensor:
    """``qkv [B, L, 3, heads, d] -> [B, L, heads, d]`` through the fused kernels; the options are
    those of ``tubelet.kernels.linear_step.triton.linear_step``."""
    try:
        from tubelet.kernels.linear_step import triton as kernels
    except ImportError as error:
        raise RuntimeError(f"the fused linear attention step needs the triton package ({error})") from error
    return kernels.linear_step(qkv, weight, bias, **options)
