"""Triton kernels for softmax attention over a few keys, forward and backward:

    O = softmax(Q K^T / sqrt(d)) V,  per sequence Q [Lq, d], K [Lk, d], V [Lk, e],  Lq, Lk <= 32

The temporal steps of divided, factorised and axial attention attend over 8-32 frames in tens of
thousands of sequences (TimeSformer-B 8x224 at batch 32: 75,264 of 8 keys). A flash kernel pads
such a sequence to its 64 x 64 (or 64 x 128) tiles and runs one tile per sequence and head, so it
computes and moves several times the useful data (H200: 0.80-1.2 ms forward for what 4 TB/s
moves in 0.08 ms; BENCHMARKS.md). Here one program takes ``BLOCK_S`` sequences at once. With
``SHORT_ATTENTION_TILES`` set to ``sequences`` it holds their queries ``[BLOCK_S, Lq, d]`` in
registers and walks the keys one by one (the loop unrolled:
``Lk`` is a compile-time constant) with an online softmax; products are float32 on the CUDA cores,
no tensor-core tiles to pad. The sequences a program takes are neighbours on the head axis, which
under the ``view`` layout (``tubelet.attention.layout``) are neighbouring patches of one frame, so
each key row it loads is one contiguous run of memory.

The backward pass recomputes each key's probabilities from the saved log-sum-exp ``lse`` (one
float32 per query) and, with ``delta_i = dO_i . O_i``:

    P_ij = exp(s_ij - lse_i),  s_ij = Q_i . K_j / sqrt(d)
    dV_j = sum_i P_ij dO_i,  dS_ij = P_ij (dO_i . V_j - delta_i)
    dQ_i = sum_j dS_ij K_j / sqrt(d),  dK_j = sum_i dS_ij Q_i / sqrt(d)

in the same single pass over the keys, so every input is read once and every gradient written once.

With ``block-diagonal`` (the default) the same equations run as tensor-core products instead: a
program lays its ``BLOCK_S`` sequences' query rows end to end (``BLOCK_ROWS``
rows, e.g. 8 sequences of 8 frames) and their key rows likewise, computes every query row against
every key row in one ``[Rq, d] x [d, Rk]`` product, and masks the scores of rows from different
sequences to -inf, so P is block-diagonal; the output and the backward's five products
(``dO V^T``, ``P^T dO``, ``dS K``, ``dS^T Q``) are whole-tile products too. It computes
``BLOCK_S`` times the useful scores, which at these lengths costs less than the bytes take;
16-bit inputs multiply as ``tf32x3`` (float32-accurate), float32 ones in IEEE float32.

Tensors are ``[N, heads, L, c]`` with any strides but a unit stride in ``c``; the output is laid out
``[N, Lq, heads, e]`` in memory, as PyTorch's flash and memory-efficient kernels lay theirs, so a
caller that transposes it back to tokens gets a view. 16-bit inputs are computed in float32 and
rounded once. On a CPU tensor the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this module is imported).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from tubelet.kernels.dtypes import common_dtype
from tubelet.kernels.interpreter import INTERPRETED
from tubelet.kernels.short_attention import SHORT_ATTENTION_TILES, why_not

TILE_ELEMENTS = 4096  # values of a program's query tile, BLOCK_S x Lq x d (padded to powers of two)
BLOCK_ROWS = 64  # block-diagonal tiles: query (and key) rows a program takes, BLOCK_S sequences end to end
DOT_MIN = 16  # the smallest side of a tensor-core product


@triton.jit
def _row(base, offs_s, stride_s, offs_c, live_s, width):
    """One key or value row of each of the program's sequences: ``[BLOCK_S, BLOCK_C]`` float32."""
    mask = live_s[:, None] & (offs_c[None, :] < width)
    return tl.load(base + offs_s[:, None] * stride_s + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _tile(base, offs_s, stride_s, offs_l, stride_l, offs_c, rows, width):
    """The program's ``[BLOCK_S, BLOCK_Q, BLOCK_C]`` query-side tile (queries, outputs or their gradients)."""
    mask = rows[:, :, None] & (offs_c[None, None, :] < width)
    pointers = base + offs_s[:, None, None] * stride_s + offs_l[None, :, None] * stride_l + offs_c[None, None, :]
    return tl.load(pointers, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _program(heads, len_q, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    """This program's sequence batch index ``n``, its sequences (``offs_s``, ``live_s``: those that
    exist), the offsets of queries and widths, and its live query rows ``[BLOCK_S, BLOCK_Q]``."""
    n = tl.program_id(0).to(tl.int64)
    offs_s = tl.program_id(1).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_q = tl.arange(0, BLOCK_Q)
    live_s = offs_s < heads
    rows = live_s[:, None] & (offs_q[None, :] < len_q)
    return n, offs_s, offs_q, tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_E), live_s, rows


@triton.jit
def _forward_kernel(
    Q, K, V, O, LSE,
    sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, so_n, so_h, so_l, slse_n, slse_h,
    heads, len_q, d, e, scale,
    LEN_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    n, offs_s, offs_q, offs_d, offs_e, live_s, rows = _program(heads, len_q, BLOCK_S, BLOCK_Q, BLOCK_D, BLOCK_E)
    q = _tile(Q + n * sq_n, offs_s, sq_h, offs_q, sq_l, offs_d, rows, d) * scale
    top = tl.full([BLOCK_S, BLOCK_Q], float("-inf"), tl.float32)  # running maximum of each query's scores
    total = tl.zeros([BLOCK_S, BLOCK_Q], tl.float32)  # running sum of exp(score - top)
    acc = tl.zeros([BLOCK_S, BLOCK_Q, BLOCK_E], tl.float32)
    for j in tl.static_range(LEN_K):
        k_j = _row(K + n * sk_n + j * sk_l, offs_s, sk_h, offs_d, live_s, d)
        v_j = _row(V + n * sv_n + j * sv_l, offs_s, sv_h, offs_e, live_s, e)
        score = tl.sum(q * k_j[:, None, :], axis=2)  # [BLOCK_S, BLOCK_Q]
        new_top = tl.maximum(top, score)
        rescale = tl.exp(top - new_top)
        p = tl.exp(score - new_top)
        total = total * rescale + p
        acc = acc * rescale[:, :, None] + p[:, :, None] * v_j[:, None, :]
        top = new_top
    out = acc / total[:, :, None]
    o_pointers = O + n * so_n + offs_s[:, None, None] * so_h + offs_q[None, :, None] * so_l + offs_e[None, None, :]
    tl.store(o_pointers, out.to(O.dtype.element_ty), mask=rows[:, :, None] & (offs_e[None, None, :] < e))
    tl.store(LSE + n * slse_n + offs_s[:, None] * slse_h + offs_q[None, :], top + tl.log(total), mask=rows)


@triton.jit
def _backward_kernel(
    Q, K, V, O, G, LSE, DQ, DK, DV,
    sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, so_n, so_h, so_l, sg_n, sg_h, sg_l, slse_n, slse_h,
    sdq_n, sdq_h, sdq_l, sdk_n, sdk_h, sdk_l, sdv_n, sdv_h, sdv_l,
    heads, len_q, d, e, scale,
    LEN_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):
    n, offs_s, offs_q, offs_d, offs_e, live_s, rows = _program(heads, len_q, BLOCK_S, BLOCK_Q, BLOCK_D, BLOCK_E)
    q = _tile(Q + n * sq_n, offs_s, sq_h, offs_q, sq_l, offs_d, rows, d) * scale
    grad = _tile(G + n * sg_n, offs_s, sg_h, offs_q, sg_l, offs_e, rows, e)
    delta = tl.sum(grad * _tile(O + n * so_n, offs_s, so_h, offs_q, so_l, offs_e, rows, e), axis=2)  # [BLOCK_S, BLOCK_Q]
    lse = tl.load(LSE + n * slse_n + offs_s[:, None] * slse_h + offs_q[None, :], mask=rows, other=0.0)
    dq = tl.zeros([BLOCK_S, BLOCK_Q, BLOCK_D], tl.float32)
    for j in tl.static_range(LEN_K):
        k_j = _row(K + n * sk_n + j * sk_l, offs_s, sk_h, offs_d, live_s, d)
        v_j = _row(V + n * sv_n + j * sv_l, offs_s, sv_h, offs_e, live_s, e)
        p = tl.where(rows, tl.exp(tl.sum(q * k_j[:, None, :], axis=2) - lse), 0.0)  # [BLOCK_S, BLOCK_Q]
        dv_j = tl.sum(p[:, :, None] * grad, axis=1)  # [BLOCK_S, BLOCK_E]
        d_score = p * (tl.sum(grad * v_j[:, None, :], axis=2) - delta)
        dq += d_score[:, :, None] * k_j[:, None, :]
        dk_j = tl.sum(d_score[:, :, None] * q, axis=1)  # q carries the scale already
        tl.store(DK + n * sdk_n + j * sdk_l + offs_s[:, None] * sdk_h + offs_d[None, :], dk_j.to(DK.dtype.element_ty),
                 mask=live_s[:, None] & (offs_d[None, :] < d))
        tl.store(DV + n * sdv_n + j * sdv_l + offs_s[:, None] * sdv_h + offs_e[None, :], dv_j.to(DV.dtype.element_ty),
                 mask=live_s[:, None] & (offs_e[None, :] < e))
    dq_pointers = DQ + n * sdq_n + offs_s[:, None, None] * sdq_h + offs_q[None, :, None] * sdq_l + offs_d[None, None, :]
    tl.store(dq_pointers, (dq * scale).to(DQ.dtype.element_ty), mask=rows[:, :, None] & (offs_d[None, None, :] < d))


# ----- block-diagonal tiles: many sequences in one tensor-core product -----

@triton.jit
def _rows_of(first, ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
    """Each of a tile's ``ROWS`` rows (the program's sequences end to end, ``BLOCK_L`` rows a
    sequence): its sequence and its position in it."""
    offs_r = tl.arange(0, ROWS)
    return first + offs_r // BLOCK_L, offs_r % BLOCK_L


@triton.jit
def _load_block(base, first, stride_s, stride_l, heads, length, offs_c, width, ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
    """The float32 tile ``[ROWS, BLOCK_C]`` of the program's rows, each row's sequence, and
    whether the row exists."""
    sequence, position = _rows_of(first, ROWS, BLOCK_L)
    live = (sequence < heads) & (position < length)
    pointers = base + sequence[:, None] * stride_s + position[:, None] * stride_l + offs_c[None, :]
    return tl.load(pointers, mask=live[:, None] & (offs_c[None, :] < width), other=0.0).to(tl.float32), sequence, live


@triton.jit
def _store_block(base, values, live, first, stride_s, stride_l, offs_c, width, ROWS: tl.constexpr, BLOCK_L: tl.constexpr):
    sequence, position = _rows_of(first, ROWS, BLOCK_L)
    pointers = base + sequence[:, None] * stride_s + position[:, None] * stride_l + offs_c[None, :]
    tl.store(pointers, values.to(base.dtype.element_ty), mask=live[:, None] & (offs_c[None, :] < width))


@triton.jit
def _block_start(Q, K, V, sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, heads, len_q, d, e, scale,
                 LEN_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr):
    """This program's sequence batch ``n`` and first sequence, the offsets of the widths, its
    query, key and value tiles with their live rows, and the ``[Rq, Rk]`` scores of every query row
    against every key row, -inf where the two belong to different sequences or the key does not
    exist: a block-diagonal matrix."""
    n = tl.program_id(0).to(tl.int64)
    first = tl.program_id(1).to(tl.int64) * BLOCK_S
    offs_d, offs_e = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_E)
    q, q_sequence, q_live = _load_block(Q + n * sq_n, first, sq_h, sq_l, heads, len_q, offs_d, d, BLOCK_S * BLOCK_Q, BLOCK_Q)
    k, k_sequence, k_live = _load_block(K + n * sk_n, first, sk_h, sk_l, heads, LEN_K, offs_d, d, BLOCK_S * BLOCK_K, BLOCK_K)
    v, _, _ = _load_block(V + n * sv_n, first, sv_h, sv_l, heads, LEN_K, offs_e, e, BLOCK_S * BLOCK_K, BLOCK_K)
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    scores = tl.where((q_sequence[:, None] == k_sequence[None, :]) & k_live[None, :], scores, float("-inf"))
    return n, first, offs_d, offs_e, q, q_live, k, k_live, v, scores


@triton.jit
def _block_forward_kernel(
    Q, K, V, O, LSE,
    sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, so_n, so_h, so_l, slse_n, slse_h,
    heads, len_q, d, e, scale,
    LEN_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr,
):
    n, first, offs_d, offs_e, q, q_live, k, k_live, v, scores = _block_start(
        Q, K, V, sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, heads, len_q, d, e, scale,
        LEN_K, BLOCK_S, BLOCK_Q, BLOCK_K, BLOCK_D, BLOCK_E, PRECISION)
    top = tl.max(scores, axis=1)
    top = tl.where(top == float("-inf"), 0.0, top)  # rows of sequences that do not exist
    p = tl.exp(scores - top[:, None])
    total = tl.sum(p, axis=1)
    total = tl.where(total == 0.0, 1.0, total)
    out = tl.dot(p, v, input_precision=PRECISION) / total[:, None]
    _store_block(O + n * so_n, out, q_live, first, so_h, so_l, offs_e, e, BLOCK_S * BLOCK_Q, BLOCK_Q)
    sequence, position = _rows_of(first, BLOCK_S * BLOCK_Q, BLOCK_Q)
    tl.store(LSE + n * slse_n + sequence * slse_h + position, top + tl.log(total), mask=q_live)


@triton.jit
def _block_backward_kernel(
    Q, K, V, O, G, LSE, DQ, DK, DV,
    sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, so_n, so_h, so_l, sg_n, sg_h, sg_l, slse_n, slse_h,
    sdq_n, sdq_h, sdq_l, sdk_n, sdk_h, sdk_l, sdv_n, sdv_h, sdv_l,
    heads, len_q, d, e, scale,
    LEN_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, PRECISION: tl.constexpr,
):
    n, first, offs_d, offs_e, q, q_live, k, k_live, v, scores = _block_start(
        Q, K, V, sq_n, sq_h, sq_l, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, heads, len_q, d, e, scale,
        LEN_K, BLOCK_S, BLOCK_Q, BLOCK_K, BLOCK_D, BLOCK_E, PRECISION)
    grad, _, _ = _load_block(G + n * sg_n, first, sg_h, sg_l, heads, len_q, offs_e, e, BLOCK_S * BLOCK_Q, BLOCK_Q)
    out, _, _ = _load_block(O + n * so_n, first, so_h, so_l, heads, len_q, offs_e, e, BLOCK_S * BLOCK_Q, BLOCK_Q)
    sequence, position = _rows_of(first, BLOCK_S * BLOCK_Q, BLOCK_Q)
    lse = tl.load(LSE + n * slse_n + sequence * slse_h + position, mask=q_live, other=0.0)
    delta = tl.sum(grad * out, axis=1)
    p = tl.where(q_live[:, None], tl.exp(scores - lse[:, None]), 0.0)  # [Rq, Rk], zero off the diagonal blocks
    d_score = p * (tl.dot(grad, tl.trans(v), input_precision=PRECISION) - delta[:, None])
    dv = tl.dot(tl.trans(p), grad, input_precision=PRECISION)  # [Rk, e]
    dq = tl.dot(d_score, k, input_precision=PRECISION) * scale  # [Rq, d]
    dk = tl.dot(tl.trans(d_score), q, input_precision=PRECISION) * scale  # [Rk, d]
    _store_block(DQ + n * sdq_n, dq, q_live, first, sdq_h, sdq_l, offs_d, d, BLOCK_S * BLOCK_Q, BLOCK_Q)
    _store_block(DK + n * sdk_n, dk, k_live, first, sdk_h, sdk_l, offs_d, d, BLOCK_S * BLOCK_K, BLOCK_K)
    _store_block(DV + n * sdv_n, dv, k_live, first, sdv_h, sdv_l, offs_e, e, BLOCK_S * BLOCK_K, BLOCK_K)


def _strides(x: torch.Tensor) -> tuple[int, ...]:
    return x.stride(0), x.stride(1), x.stride(2)


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[tuple[int, int], dict, bool]:
    """The grid (sequence batch, blocks of heads), the compile-time sizes of a call, and whether
    it runs the block-diagonal kernels (``SHORT_ATTENTION_TILES``)."""
    n, heads, len_q, d = q.shape
    len_k, e = v.shape[-2:]
    block_q, block_d, block_e = (triton.next_power_of_2(size) for size in (len_q, d, e))
    if SHORT_ATTENTION_TILES.get() == "block-diagonal":
        block_k = triton.next_power_of_2(len_k)
        block_s = max(1, BLOCK_ROWS // max(block_q, block_k), triton.cdiv(DOT_MIN, min(block_q, block_k)))
        precision = "ieee" if q.dtype == torch.float32 else "tf32x3"  # float32-accurate products, as the other tiling
        sizes = dict(LEN_K=len_k, BLOCK_S=block_s, BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_D=max(DOT_MIN, block_d),
                     BLOCK_E=max(DOT_MIN, block_e), PRECISION=precision, num_warps=4)
        return (n, triton.cdiv(heads, block_s)), sizes, True
    block_s = min(triton.next_power_of_2(heads), max(1, TILE_ELEMENTS // (block_q * max(block_d, block_e))))
    sizes = dict(LEN_K=len_k, BLOCK_S=block_s, BLOCK_Q=block_q, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=4)
    return (n, triton.cdiv(heads, block_s)), sizes, False


# The forward and the backward are custom operators, opaque to torch.compile: it calls them, it
# does not trace into the kernels (as with the linear attention kernels).
@torch.library.custom_op("tubelet::short_attention", mutates_args=())
def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, H, Lq, d], [N, H, Lk, d], [N, H, Lk, e] -> out [N, H, Lq, e], lse [N, H, Lq]`` (float32)."""
    n, heads, len_q, d = q.shape
    out = q.new_empty(n, len_q, heads, v.shape[-1]).transpose(1, 2)
    lse = q.new_empty(n, heads, len_q, dtype=torch.float32)
    if out.numel():
        grid, sizes, block_diagonal = _launch(q, k, v)
        kernel = _block_forward_kernel if block_diagonal else _forward_kernel
        kernel[grid](q, k, v, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                              lse.stride(0), lse.stride(1), heads, len_q, d, v.shape[-1], 1.0 / math.sqrt(d), **sizes)
    return out, lse


@_attend.register_fake
def _attend_shapes(q, k, v):
    n, heads, len_q, _ = q.shape
    return q.new_empty(n, len_q, heads, v.shape[-1]).transpose(1, 2), q.new_empty(n, heads, len_q, dtype=torch.float32)


@torch.library.custom_op("tubelet::short_attention_backward", mutates_args=())
def _attend_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, grad: torch.Tensor, lse: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dq, dk, dv`` like ``q, k, v``, from the output gradient ``grad [N, H, Lq, e]``."""
    heads, len_q, d = q.shape[1:]
    grad = grad if grad.stride(-1) == 1 else grad.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if dq.numel() or dk.numel():
        grid, sizes, block_diagonal = _launch(q, k, v)
        kernel = _block_backward_kernel if block_diagonal else _backward_kernel
        kernel[grid](
            q, k, v, out, grad, lse, dq, dk, dv,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out), *_strides(grad), lse.stride(0), lse.stride(1),
            *_strides(dq), *_strides(dk), *_strides(dv),
            heads, len_q, d, v.shape[-1], 1.0 / math.sqrt(d), **sizes,
        )
    return dq, dk, dv


@_attend_backward.register_fake
def _attend_backward_shapes(q, k, v, out, grad, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _keep_for_backward(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, *output)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    return _attend_backward(q, k, v, out, grad, lse)


_attend.register_autograd(_backward, setup_context=_keep_for_backward)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if not all(t.is_cuda for t in (q, k, v)) and not INTERPRETED:
        raise RuntimeError("the 'triton' softmax attention backend needs CUDA tensors (on CPU, set TRITON_INTERPRET=1 before tubelet imports it)")
    reason = why_not(q, k, v)
    if reason:
        raise ValueError(f"the 'triton' softmax attention backend {reason}")


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V``: ``[N, heads, Lq, d], [N, heads, Lk, d], [N, heads, Lk, e]
    -> [N, heads, Lq, e]``, at most ``MAX_LENGTH`` queries and keys. Differentiable in all three."""
    _check(q, k, v)
    dtype = common_dtype(q, k, v)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return _attend(q, k, v)[0]
