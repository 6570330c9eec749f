"""LayerNorm over the last dimension as Triton kernels that read the input in its own dtype and
write a 16-bit output, forward and backward:

    y = (x - mean(x)) * rstd * weight + bias,    rstd = 1 / sqrt(var(x) + eps)

    backward, with x^ = (x - mean) * rstd and g = dy * weight:
    dx = rstd * (g - mean(g * x^) x^ - mean(g)),   dweight = sum over rows of dy x^,   dbias = sum of dy

(statistics, affine map and gradients in float32). The forward normalises ``ROWS`` rows of ``N``
values a program as one ``[ROWS, BLOCK]`` tile (``BLOCK`` the power of two at or above ``N``), so
short rows (MViT's per-head norms of 96) still give each program a few KB to move; under autograd
it also stores each row's mean and rstd (8 bytes a row) for the backward. The backward runs a
fixed number of programs (a few per multiprocessor), each walking tiles of rows and keeping its
share of ``dweight`` and ``dbias`` in registers; the partial sums, ``[programs, N]``, are added at
the end. Rows are read with a row stride (any 2D view whose last dimension is contiguous); other
layouts are copied first.

Under autocast PyTorch's LayerNorm writes float32, which the next matmul reads and casts back, and
its backward casts the 16-bit output gradient to float32 first: these kernels write the cast result
directly and read the 16-bit gradient as it is, about half of the bytes of forward and backward
together, in two launches instead of four. On a CPU tensor they run only under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from tubelet.kernels.interpreter import INTERPRETED

TILE_ELEMENTS = 4096  # values a program normalises at once (ROWS x BLOCK)
BACKWARD_PROGRAMS_PER_SM = 4
INTERPRETED_BACKWARD_PROGRAMS = 3  # on the CPU: few enough that programs walk several tiles


@triton.jit
def _layer_norm_forward(X, W, B, Y, MEAN, RSTD, rows, stride_x, stride_y, n, eps,
                        ROWS: tl.constexpr, BLOCK: tl.constexpr, STATS: tl.constexpr):
    offs_r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
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
    if STATS:
        tl.store(MEAN + offs_r, mean, mask=offs_r < rows)
        tl.store(RSTD + offs_r, rstd, mask=offs_r < rows)


@triton.jit
def _layer_norm_backward(X, W, DY, MEAN, RSTD, DX, DW, DB, rows, stride_x, stride_dy, stride_dx, n,
                         ROWS: tl.constexpr, BLOCK: tl.constexpr):
    program = tl.program_id(0)
    offs_n = tl.arange(0, BLOCK)
    live_n = offs_n < n
    w = tl.load(W + offs_n, mask=live_n, other=0.0).to(tl.float32)
    d_weight = tl.zeros([BLOCK], dtype=tl.float32)
    d_bias = tl.zeros([BLOCK], dtype=tl.float32)
    for tile in range(program, tl.cdiv(rows, ROWS), tl.num_programs(0)):
        offs_r = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)  # int64 before the strides multiply
        live_r = offs_r < rows
        mask = live_r[:, None] & live_n[None, :]
        x = tl.load(X + offs_r[:, None] * stride_x + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs_r[:, None] * stride_dy + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + offs_r, mask=live_r, other=0.0)
        rstd = tl.load(RSTD + offs_r, mask=live_r, other=0.0)
        x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]
        mean_g_x_hat = tl.sum(g * x_hat, axis=1) / n
        mean_g = tl.sum(g, axis=1) / n
        dx = (g - x_hat * mean_g_x_hat[:, None] - mean_g[:, None]) * rstd[:, None]
        tl.store(DX + offs_r[:, None] * stride_dx + offs_n[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        d_weight += tl.sum(dy * x_hat, axis=0)
        d_bias += tl.sum(dy, axis=0)
    tl.store(DW + program * n + offs_n, d_weight, mask=live_n)
    tl.store(DB + program * n + offs_n, d_bias, mask=live_n)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` as ``[rows, N]`` with a contiguous last dimension (a view where one exists)."""
    rows_view = x.reshape(-1, x.shape[-1])
    return rows_view if rows_view.stride(-1) == 1 else rows_view.contiguous()


@functools.cache
def _tile(n: int) -> tuple[int, int]:
    """``(ROWS, BLOCK)`` of a tile for rows of ``n`` values (cached: the host's time per call
    counts, BENCHMARKS.md's ``norm-launch``)."""
    block = triton.next_power_of_2(n)
    return max(1, TILE_ELEMENTS // block), block


def _forward(rows_view: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype,
             *, stats: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``y [rows, N]`` in ``out_dtype``, and with ``stats`` each row's float32 mean and rstd ``[rows]``."""
    rows, n = rows_view.shape
    out = torch.empty(rows_view.shape, dtype=out_dtype, device=rows_view.device)
    mean, rstd = torch.empty(2, rows, dtype=torch.float32, device=rows_view.device) if stats else (out, out)
    rows_per_program, block = _tile(n)
    _layer_norm_forward[(triton.cdiv(rows, rows_per_program),)](
        rows_view, weight, bias, out, mean, rstd, rows, rows_view.stride(0), out.stride(0), n, eps,
        ROWS=rows_per_program, BLOCK=block, STATS=stats)
    return out, (mean if stats else None), (rstd if stats else None)


@functools.cache
def _most_backward_programs(device: torch.device) -> int:
    if INTERPRETED:
        return INTERPRETED_BACKWARD_PROGRAMS
    return BACKWARD_PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


class _TrainableLayerNorm(torch.autograd.Function):
    """The forward kernel with statistics, and the backward kernel for ``x``, ``weight`` and ``bias``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        rows_view = _rows(x)
        out, mean, rstd = _forward(rows_view, weight, bias, eps, out_dtype, stats=True)
        ctx.save_for_backward(rows_view, weight, mean, rstd)
        ctx.input_shape, ctx.bias_dtype = x.shape, bias.dtype
        return out.view(x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rows_view, weight, mean, rstd = ctx.saved_tensors
        bias_dtype = ctx.bias_dtype
        rows, n = rows_view.shape
        grad_rows = _rows(grad)
        d_x = torch.empty_like(rows_view)
        rows_per_program, block = _tile(n)
        programs = min(triton.cdiv(rows, rows_per_program), _most_backward_programs(rows_view.device))
        partial_sums = torch.empty(2, programs, n, dtype=torch.float32, device=rows_view.device)  # weight's, bias's
        _layer_norm_backward[(programs,)](
            rows_view, weight, grad_rows, mean, rstd, d_x, partial_sums[0], partial_sums[1],
            rows, rows_view.stride(0), grad_rows.stride(0), d_x.stride(0), n, ROWS=rows_per_program, BLOCK=block)
        d_weight, d_bias = partial_sums.sum(1)
        return d_x.view(ctx.input_shape), d_weight.to(weight.dtype), d_bias.to(bias_dtype), None, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    """``[..., N] -> [..., N]`` in ``out_dtype`` (see the module docstring); differentiable in
    ``x``, ``weight`` and ``bias`` when autograd is on and any of them needs a gradient."""
    n = x.shape[-1]
    if weight.shape != (n,) or bias.shape != (n,):
        raise ValueError(f"LayerNorm of width {n} needs weight and bias of shape ({n},), got {tuple(weight.shape)} and {tuple(bias.shape)}")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _TrainableLayerNorm.apply(x, weight, bias, eps, out_dtype)
    out, _, _ = _forward(_rows(x), weight, bias, eps, out_dtype, stats=False)
    return out.view(x.shape)
