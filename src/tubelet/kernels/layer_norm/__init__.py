"""LayerNorm with a 16-bit output as Triton kernels, forward and backward.

``triton_layer_norm(x, weight, bias, eps, out_dtype)`` imports Triton only when first called, so
``import tubelet`` never needs Triton and tests can choose Triton's interpreter
(``TRITON_INTERPRET=1``) before the kernel is compiled. ``reference.layer_norm_reference`` is the
same computation in plain PyTorch.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _kernels():
    """``tubelet.kernels.layer_norm.triton``, imported on the first call and kept (an import
    statement per LayerNorm call costs the host)."""
    try:
        from tubelet.kernels.layer_norm import triton as kernels
    except ImportError as error:
        raise RuntimeError(f"the 'triton' LayerNorm backend needs the triton package ({error})") from error
    return kernels


def triton_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``[..., N] -> [..., N]`` in ``out_dtype`` through the Triton kernels (differentiable)."""
    return _kernels().layer_norm(x, weight, bias, eps, out_dtype)
