"""Triton kernels for non-causal, row-normalised linear attention, forward and backward.

Eq. 3 of Lu et al. 2022 ("Linear Video Transformer with Feature Fixation"), with features
``rho(Q)``, ``rho(K)`` already applied:

    S = rho(K)^T V,  z = sum_j rho(K_j),  Y_i = rho(Q_i) S / max(rho(Q_i) . z, eps)

One program per (batch, head) sequence keeps the ``[m, e]`` state ``S`` and the ``[m]`` key sum
``z`` in registers (float32) and makes two passes: over the keys to build the state, then over
the queries to write ``Y``. No ``[L, L]`` matrix and no state ever reach device memory. The
backward pass rebuilds the state the same way (cheaper than storing ``S`` for the short
sequences of factorised attention), then, with ``D_i = max(rho(Q_i) . z, eps)`` and the output
gradient ``G``:

    dN_i = G_i / D_i                          (gradient of the numerator rho(Q_i) S)
    dD_i = -(G_i . Y_i) / D_i  where rho(Q_i) . z >= eps, else 0
    dQ_i = dN_i S^T + dD_i z
    dS = sum_i rho(Q_i)^T dN_i,  dz = sum_i dD_i rho(Q_i)
    dK_j = V_j dS^T + dz,  dV_j = rho(K_j) dS

Tensors: leading dimensions ``[..., H]`` (the last of them is taken as heads and kept as a strided
dimension, so the head-major views that attention modules pass need no copy), then ``[L, m]`` or
``[L, e]`` with unit stride in the last dimension. Float32 inputs use exact float32 products;
16-bit inputs are upcast and multiplied in tf32 (at least the precision of a bf16 matmul), with
float32 accumulation throughout and outputs in the inputs' dtype. On a CPU tensor the kernels run
only under Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tubelet.kernels.dtypes import common_dtype
from tubelet.kernels.interpreter import INTERPRETED

MIN_BLOCK = 16  # tl.dot needs every dimension >= 16


@triton.jit
def _kv_state(k_base, v_base, stride_kl, stride_vl, length, m, e,
              BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr):
    """``S = rho(K)^T V`` ``[BLOCK_M, BLOCK_E]`` and ``z = sum rho(K)`` ``[BLOCK_M]``, float32."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    state = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    k_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, length, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)
        rows = offs_l[:, None] < length
        k = tl.load(k_base + offs_l[:, None] * stride_kl + offs_m[None, :], mask=rows & (offs_m[None, :] < m), other=0.0).to(tl.float32)
        v = tl.load(v_base + offs_l[:, None] * stride_vl + offs_e[None, :], mask=rows & (offs_e[None, :] < e), other=0.0).to(tl.float32)
        state = tl.dot(tl.trans(k), v, state, input_precision=PRECISION)
        k_sum += tl.sum(k, axis=0)
    return state, k_sum


@triton.jit
def _forward_kernel(
    Q, K, V, O,
    sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, so_b, so_h, so_l,
    heads, len_q, len_k, m, e, eps,
    BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b, h = pid // heads, pid % heads
    q_base = Q + b * sq_b + h * sq_h
    o_base = O + b * so_b + h * so_h
    state, k_sum = _kv_state(K + b * sk_b + h * sk_h, V + b * sv_b + h * sv_h, sk_l, sv_l, len_k, m, e,
                             BLOCK_L, BLOCK_M, BLOCK_E, PRECISION)
    offs_m = tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    for start in range(0, len_q, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)
        rows = offs_l[:, None] < len_q
        q = tl.load(q_base + offs_l[:, None] * sq_l + offs_m[None, :], mask=rows & (offs_m[None, :] < m), other=0.0).to(tl.float32)
        numerator = tl.dot(q, state, input_precision=PRECISION)  # [BLOCK_L, BLOCK_E]
        denominator = tl.maximum(tl.sum(q * k_sum[None, :], axis=1), eps).to(tl.float32)  # [BLOCK_L]; fp32 even for an fp64 eps (inductor passes one)
        out = numerator / denominator[:, None]
        tl.store(o_base + offs_l[:, None] * so_l + offs_e[None, :], out.to(O.dtype.element_ty), mask=rows & (offs_e[None, :] < e))


@triton.jit
def _backward_kernel(
    Q, K, V, G, DQ, DK, DV,
    sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sg_b, sg_h, sg_l,
    sdq_b, sdq_h, sdq_l, sdk_b, sdk_h, sdk_l, sdv_b, sdv_h, sdv_l,
    heads, len_q, len_k, m, e, eps,
    BLOCK_L: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b, h = pid // heads, pid % heads
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    state, k_sum = _kv_state(k_base, v_base, sk_l, sv_l, len_k, m, e, BLOCK_L, BLOCK_M, BLOCK_E, PRECISION)
    offs_m = tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    d_state = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    d_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, len_q, BLOCK_L):  # queries: dQ, and the gradients of S and z
        offs_l = start + tl.arange(0, BLOCK_L)
        rows = offs_l[:, None] < len_q
        cols_m = rows & (offs_m[None, :] < m)
        cols_e = rows & (offs_e[None, :] < e)
        q = tl.load(Q + b * sq_b + h * sq_h + offs_l[:, None] * sq_l + offs_m[None, :], mask=cols_m, other=0.0).to(tl.float32)
        g = tl.load(G + b * sg_b + h * sg_h + offs_l[:, None] * sg_l + offs_e[None, :], mask=cols_e, other=0.0).to(tl.float32)
        raw = tl.sum(q * k_sum[None, :], axis=1)  # [BLOCK_L]
        denominator = tl.maximum(raw, eps).to(tl.float32)
        out = tl.dot(q, state, input_precision=PRECISION) / denominator[:, None]  # [BLOCK_L, BLOCK_E]
        d_num = g / denominator[:, None]
        d_den = tl.where(raw >= eps, -tl.sum(g * out, axis=1) / denominator, 0.0)  # [BLOCK_L]
        dq = tl.dot(d_num, tl.trans(state), input_precision=PRECISION) + d_den[:, None] * k_sum[None, :]
        tl.store(DQ + b * sdq_b + h * sdq_h + offs_l[:, None] * sdq_l + offs_m[None, :], dq.to(DQ.dtype.element_ty), mask=cols_m)
        d_state = tl.dot(tl.trans(q), d_num, d_state, input_precision=PRECISION)
        d_sum += tl.sum(q * d_den[:, None], axis=0)
    for start in range(0, len_k, BLOCK_L):  # keys and values
        offs_l = start + tl.arange(0, BLOCK_L)
        rows = offs_l[:, None] < len_k
        cols_m = rows & (offs_m[None, :] < m)
        cols_e = rows & (offs_e[None, :] < e)
        k = tl.load(k_base + offs_l[:, None] * sk_l + offs_m[None, :], mask=cols_m, other=0.0).to(tl.float32)
        v = tl.load(v_base + offs_l[:, None] * sv_l + offs_e[None, :], mask=cols_e, other=0.0).to(tl.float32)
        dk = tl.dot(v, tl.trans(d_state), input_precision=PRECISION) + d_sum[None, :]
        dv = tl.dot(k, d_state, input_precision=PRECISION)
        tl.store(DK + b * sdk_b + h * sdk_h + offs_l[:, None] * sdk_l + offs_m[None, :], dk.to(DK.dtype.element_ty), mask=cols_m)
        tl.store(DV + b * sdv_b + h * sdv_h + offs_l[:, None] * sdv_l + offs_e[None, :], dv.to(DV.dtype.element_ty), mask=cols_e)


def _as_4d(x: torch.Tensor) -> torch.Tensor:
    """``[..., H, L, c] -> [B, H, L, c]`` (a view where the leading dimensions allow), unit stride in ``c``."""
    if x.dim() < 4:
        x = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))
    x = x.reshape(-1, *x.shape[-3:])
    return x if x.stride(-1) == 1 else x.contiguous()


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _config(m: int, e: int, length: int, dtype: torch.dtype) -> dict:
    """Block sizes, warps and dot precision for features ``m``, values ``e`` and the longer sequence."""
    block_m = max(MIN_BLOCK, triton.next_power_of_2(m))
    block_e = max(MIN_BLOCK, triton.next_power_of_2(e))
    block_l = max(MIN_BLOCK, min(64, triton.next_power_of_2(max(length, 1))))
    return dict(
        BLOCK_L=block_l, BLOCK_M=block_m, BLOCK_E=block_e,
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
        num_warps=8 if block_m * block_e > 64 * 64 else 4,
    )


def _check_device(*tensors: torch.Tensor) -> None:
    if not all(t.is_cuda for t in tensors) and not INTERPRETED:
        raise RuntimeError("the 'triton' linear attention backend needs CUDA tensors (on CPU, set TRITON_INTERPRET=1 before tubelet imports it)")


# The forward and the backward are custom operators, opaque to torch.compile: it calls them, it
# does not trace into the kernels (as with the fused step, ``tubelet.kernels.linear_step``).
@torch.library.custom_op("tubelet::linear_attention", mutates_args=())
def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """``[B, H, Lq, m], [B, H, Lk, m], [B, H, Lk, e] -> [B, H, Lq, e]``."""
    batch, heads, len_q, m = q.shape
    len_k, e = v.shape[-2], v.shape[-1]
    out = torch.empty(batch, heads, len_q, e, dtype=q.dtype, device=q.device)
    if out.numel():
        _forward_kernel[(batch * heads,)](
            q, k, v, out, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            heads, len_q, len_k, m, e, eps, **_config(m, e, max(len_q, len_k), q.dtype),
        )
    return out


@_attend.register_fake
def _attend_shape(q, k, v, eps):
    return q.new_empty(*q.shape[:-1], v.shape[-1])


@torch.library.custom_op("tubelet::linear_attention_backward", mutates_args=())
def _attend_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dq, dk, dv`` like ``q, k, v``, from the output gradient ``grad [B, H, Lq, e]``."""
    batch, heads, len_q, m = q.shape
    len_k, e = v.shape[-2], v.shape[-1]
    grad = grad if grad.stride(-1) == 1 else grad.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if dq.numel() or dk.numel():
        _backward_kernel[(batch * heads,)](
            q, k, v, grad, dq, dk, dv,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad), *_strides(dq), *_strides(dk), *_strides(dv),
            heads, len_q, len_k, m, e, eps, **_config(m, e, max(len_q, len_k), q.dtype),
        )
    return dq, dk, dv


@_attend_backward.register_fake
def _attend_backward_shapes(q, k, v, grad, eps):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _keep_for_backward(ctx, inputs, output) -> None:
    q, k, v, eps = inputs
    ctx.save_for_backward(q, k, v)
    ctx.eps = eps


def _backward(ctx, grad):
    return (*_attend_backward(*ctx.saved_tensors, grad, ctx.eps), None)


_attend.register_autograd(_backward, setup_context=_keep_for_backward)


def linear_attention(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 3: ``[..., Lq, m], [..., Lk, m], [..., Lk, e] -> [..., Lq, e]``; the three must share
    their leading dimensions (no broadcasting). Differentiable in all three."""
    lead = q_feat.shape[:-2]
    if k_feat.shape[:-2] != lead or v.shape[:-2] != lead:
        raise ValueError(f"the triton linear attention kernels need equal leading dimensions, got "
                         f"{tuple(q_feat.shape)}, {tuple(k_feat.shape)}, {tuple(v.shape)}")
    _check_device(q_feat, k_feat, v)
    dtype = common_dtype(q_feat, k_feat, v)
    q, k, values = (_as_4d(t.to(dtype)) for t in (q_feat, k_feat, v))
    out = _attend(q, k, values, float(eps))  # [B, H, Lq, e]
    return out.reshape(*lead, *out.shape[-2:])
