"""LayerNorm with a 16-bit output as Triton kernels, forward and backward.

``triton_layer_norm(x, weight, bias, eps, out_dtype)`` imports Triton only when first called, so
``import tubelet`` never needs Triton and tests can choose Triton's interpreter
(``TRITON_INTERPRET=1``) before the kernel is compiled. ``reference.layer_norm_reference`` is the
same computation in plain PyTorch.
"""

from __future__ import annotations

import torch


_kernels = None  # tubelet.kernels.layer_norm.triton, once imported


def triton_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``[..., N] -> [..., N]`` in ``out_dtype`` through the Triton kernels (differentiable)."""
    global _kernels
    if _kernels is None:  # imported on the first call; the module is kept, as an import statement per call costs the host
        try:
            from tubelet.kernels.layer_norm import triton as kernels
        except ImportError as error:
            raise RuntimeError(f"the 'triton' LayerNorm backend needs the triton package ({error})") from error
        _kernels = kernels
    return _kernels.layer_norm(x, weight, bias, eps, out_dtype)
