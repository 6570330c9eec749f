"""LayerNorm over the last dimension as one Triton kernel that reads the input in its own dtype
and writes a 16-bit output:

    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias      (statistics and affine map in float32)

Each program normalises ``ROWS`` rows of ``N`` values held as one ``[ROWS, BLOCK]`` tile
(``BLOCK`` the power of two at or above ``N``), so short rows (MViT's per-head norms of 96) still
give each program a few KB to move. Rows are read with a row stride (any 2D view whose last
dimension is contiguous); other layouts are copied first. Under autocast PyTorch's LayerNorm
writes float32, which the next matmul reads and casts back: this kernel writes the cast result
directly, a quarter of the bytes of that float32 write and read, in one launch instead of two.
On a CPU tensor it runs only under Triton's interpreter (``TRITON_INTERPRET=1`` set before this
module is imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_ELEMENTS = 4096  # values a program normalises (ROWS x BLOCK)


@triton.jit
def _layer_norm_forward(X, W, B, Y, rows, stride_x, stride_y, n, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    first = tl.program_id(0).to(tl.int64) * ROWS
    offs_r = first + tl.arange(0, ROWS)
    offs_n = tl.arange(0, BLOCK)
    mask = (offs_r[:, None] < rows) & (offs_n[None, :] < n)
    x = tl.load(X + offs_r[:, None] * stride_x + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / n
    centred = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / n + eps)
    w = tl.load(W + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)
    b = tl.load(B + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + offs_r[:, None] * stride_y + offs_n[None, :], y.to(Y.dtype.element_ty), mask=mask)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``[..., N] -> [..., N]`` in ``out_dtype`` (see the module docstring)."""
    n = x.shape[-1]
    if weight.shape != (n,) or bias.shape != (n,):
        raise ValueError(f"LayerNorm of width {n} needs weight and bias of shape ({n},), got {tuple(weight.shape)} and {tuple(bias.shape)}")
    rows_view = x.reshape(-1, n)
    if rows_view.stride(-1) != 1:
        rows_view = rows_view.contiguous()
    out = torch.empty(rows_view.shape, dtype=out_dtype, device=x.device)
    block = triton.next_power_of_2(n)
    rows_per_program = max(1, TILE_ELEMENTS // block)
    grid = (triton.cdiv(rows_view.shape[0], rows_per_program),)
    _layer_norm_forward[grid](rows_view, weight, bias, out, rows_view.shape[0], rows_view.stride(0), out.stride(0), n, eps,
                              ROWS=rows_per_program, BLOCK=block)
    return out.view(x.shape)
