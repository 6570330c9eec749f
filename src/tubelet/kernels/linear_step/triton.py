"""Triton kernels for the kernel-attention part of a linear video attention step, forward and
backward (Lu et al. 2022, "Linear Video Transformer with Feature Fixation", Eq. 3 and 5).

From ``qkv [B, L, 3, heads, d]`` (the output of the step's qkv projection, unchanged) to the
attention output ``[B, L, heads, d]``, for one token row of one head:

    k, v = K, V read through the shift table (channel c from token (t, h, w) + shift[c], zero
           outside the grid: the neighbourhood shift as offset loads, never materialised)
    q~, k~ = rho(q), rho(k);  gamma_q = sigmoid(W_q q~ + W_k k~ + W_v v + b)  (W = [W_q W_k W_v])
    gamma_k = gamma_q (one shared gate) or sigmoid(U_q q~ + U_k k~ + U_v v + c) (the key's own gate U, c)
    q^, k^ = gamma_q q~, gamma_k k~
    S = sum_j k^_j^T v_j,  z = sum_j k^_j  over the row's group;  y = q^ S / max(q^ . z, eps)

Each program takes one head and a strided share of the groups (about two programs per SM in
all), loading the gate's weights once for all of them.

Forward: per group, pass 1 over its tokens builds ``S [d, d]`` and ``z [d]`` in float32
registers, pass 2 recomputes ``q^`` (the gate needs the token's k and v too) and writes ``y``.
Nothing but ``y`` is written.

Backward: per group, three passes: ``S, z``; then ``dS = sum_i q^_i^T dN_i`` and ``dz = sum_i dD_i q^_i`` with
``dN_i = g_i / D_i`` and ``dD_i = -(g_i . y_i) / D_i`` (0 where the clamp is active); then, per
token (each is a query and a key),

    dq^ = dN S^T + dD z,  dk^ = v dS^T + dz,  dv = k^ dS
    da = (dq^ q~ + dk^ k~) gamma (1 - gamma)                          (one shared gate)
    dq~ = dq^ gamma + da W_q,  dk~ = dk^ gamma + da W_k,  dv += da W_v,  dW += da^T [q~ k~ v]
    dq = dq~ rho'(q), dk = dk~ rho'(k)

and with two gates ``da = dq^ q~ gamma_q (1 - gamma_q)``, ``dc = dk^ k~ gamma_k (1 - gamma_k)``,
each gate's terms as above (``dq~ = dq^ gamma_q + da W_q + dc U_q``, ..., ``dU += dc^T [q~ k~ v]``).

With ``STEP_KEY_SPLIT`` at ``auto`` and too few groups to fill the device (batch 1, the joint
grouping), each group's members are cut into chunks with a program each: ``_state_kernel``
writes each chunk's partial ``S, z`` (backward: then ``dS, dz``), summed outside, and the forward
and backward kernels' programs each finish their chunk from the summed states.

``dW`` and ``db`` are float32 per-program partial sums in registers, written once per program
and summed afterwards (deterministic, no atomics). The gradients of the shifted K and V are then
moved back to the tokens they were read from by the same table with the offsets negated (the
adjoint of a gather through a bijection), one elementwise kernel over the whole ``[B, L, 3D]``
gradient (it copies dq), so that each kernel writes one tensor.

Float32 inputs use exact float32 products; 16-bit inputs are upcast and multiplied in tf32 (or,
with ``STEP_DOT_OPERANDS`` set to ``bf16``, rounded to bfloat16 for the dots, as autocast's own matmuls
are), accumulating in float32; the backward of separate query and key gates always takes bf16
operands (see ``_config``). On a CPU tensor the kernels run only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this module is imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tubelet.kernels.interpreter import INTERPRETED
from tubelet.kernels.linear_step import FEATURES, STEP_DOT_OPERANDS, STEP_KEY_SPLIT

MIN_BLOCK = 16  # tl.dot needs every dimension >= 16
TARGET_PROGRAMS = 256  # programs to aim for off CUDA (on CUDA: two per SM)
SPLIT_MIN = 64  # fewest members of a group per program when the key pass is split
SPLIT_ALIGN = 32  # chunks are whole forward blocks
SHORT_GROUP = 128  # groups of at most this many tokens take the forward block that pads least


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    """``a @ b (+ acc)``, accumulating in float32, with float32 operands (``ieee``: exact products;
    ``tf32``) or operands rounded to bfloat16 (``bf16``; ``bf16-rounded``: the same numbers, as
    exact float32 products of the rounded operands, for the interpreter)."""
    if PRECISION == "bf16":
        c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PRECISION == "bf16-rounded":
        c = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc, input_precision="ieee")
    else:
        c = tl.dot(a, b, acc, input_precision=PRECISION)
    return c


@triton.jit
def _rho(x, offset, FEATURE: tl.constexpr):
    """The feature map ``rho(x)`` in float32 for float32 ``x``, also where ``offset`` comes as
    float64 (as inductor passes Python floats to kernels it compiles itself; the custom operators
    below keep it from tracing these, but a float64 offset must not change the key sums' type)."""
    if FEATURE == 0:
        f = tl.maximum(x, 0.0) + tl.cast(offset, tl.float32)
    elif FEATURE == 1:
        f = tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))
    else:
        f = tl.sigmoid(x)
    return f


@triton.jit
def _rho_grad(x, f, FEATURE: tl.constexpr):
    """``rho'(x)`` from ``x`` and ``f = rho(x)``."""
    if FEATURE == 0:
        g = tl.where(x > 0, 1.0, 0.0)
    elif FEATURE == 1:
        g = tl.where(x > 0, 1.0, f)
    else:
        g = f * (1.0 - f)
    return g


@triton.jit
def _gate_weights(W, Bias, d, HAS_GATE: tl.constexpr, BLOCK_D: tl.constexpr):
    """``W_q^T, W_k^T, W_v^T`` ``[BLOCK_D (in), BLOCK_D (out)]`` and ``b`` ``[BLOCK_D]``, float32, zero-padded."""
    offs_i = tl.arange(0, BLOCK_D)[:, None]
    offs_o = tl.arange(0, BLOCK_D)[None, :]
    mask = (offs_i < d) & (offs_o < d)
    if HAS_GATE:
        base = W + offs_o * (3 * d) + offs_i
        wq = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        wk = tl.load(base + d, mask=mask, other=0.0).to(tl.float32)
        wv = tl.load(base + 2 * d, mask=mask, other=0.0).to(tl.float32)
        bias = tl.load(Bias + tl.arange(0, BLOCK_D), mask=tl.arange(0, BLOCK_D) < d, other=0.0).to(tl.float32)
    else:
        wq = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
        wk = wq
        wv = wq
        bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    return wq, wk, wv, bias


@triton.jit
def _shift_table(SHIFT, h, d, SHIFT_RUN: tl.constexpr, BLOCK_D: tl.constexpr):
    """This head's channels' offsets ``(dt, dh, dw)``, each ``[BLOCK_D]`` int32, from the table's
    rows of ``SHIFT_RUN`` channels each (0: no shift)."""
    offs_d = tl.arange(0, BLOCK_D)
    if SHIFT_RUN:
        rows = SHIFT + (h * d + offs_d) // SHIFT_RUN * 3
        cols = offs_d < d
        dt = tl.load(rows, mask=cols, other=0)
        dh = tl.load(rows + 1, mask=cols, other=0)
        dw = tl.load(rows + 2, mask=cols, other=0)
    else:
        dt = tl.zeros([BLOCK_D], dtype=tl.int32)
        dh = dt
        dw = dt
    return dt, dh, dw


@triton.jit
def _shifted_source(tokens, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w):
    """The token each ``[tokens, channel]`` reads from, ``(t, h, w) + shift[channel]``, clamped into the
    grid, and whether it is inside (the caller zeroes what is not). Clamping keeps every address
    valid, so the loads need no per-channel mask and a run of channels with one offset (one
    source) loads as one contiguous vector."""
    st = (tokens // (grid_h * grid_w))[:, None] + shift_t[None, :]
    sh = ((tokens // grid_w) % grid_h)[:, None] + shift_h[None, :]
    sw = (tokens % grid_w)[:, None] + shift_w[None, :]
    inside = (st >= 0) & (st < grid_t) & (sh >= 0) & (sh < grid_h) & (sw >= 0) & (sw < grid_w)
    st = tl.minimum(tl.maximum(st, 0), grid_t - 1)
    sh = tl.minimum(tl.maximum(sh, 0), grid_h - 1)
    sw = tl.minimum(tl.maximum(sw, 0), grid_w - 1)
    return (st * grid_h + sh) * grid_w + sw, inside


@triton.jit
def _runs(offsets, SHIFT_RUN: tl.constexpr):
    """``offsets [rows, channels]`` marked contiguous in aligned runs of ``SHIFT_RUN`` channels
    (true when the runs share an offset), so that the compiler loads each run as vectors."""
    if SHIFT_RUN > 1:
        offsets = tl.max_contiguous(tl.multiple_of(offsets, [1, SHIFT_RUN]), [1, SHIFT_RUN])
    return offsets


@triton.jit
def _tile(Q, K, V, token0, start, end, member_stride, s_l, d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w,
          wq, wk, wv, bias, uq, uk, uv, ubias, offset,
          FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr,
          BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """The block of a group's members from ``start`` (those before ``end``), ``[BLOCK_L, BLOCK_D]``
    float32 each: the raw ``q, k, v``
    (k and v shifted), ``rho(q), rho(k)``, the features ``q~, k~`` (zero in padding) and the
    ratios ``gamma_q, gamma_k`` (the same tensor with one shared gate); also the tokens
    ``[BLOCK_L]`` and the mask of real rows and channels."""
    offs_l = start + tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    tokens = token0 + offs_l * member_stride
    mask = (offs_l < end)[:, None] & (offs_d < d)[None, :]
    q = tl.load(Q + tokens[:, None] * s_l + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if SHIFT_RUN:
        source, inside = _shifted_source(tokens, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w)
        kv_offsets = _runs(source * s_l + offs_d[None, :], SHIFT_RUN)
        columns = (offs_d < d)[None, :]
        inside = inside & mask
        k = tl.where(inside, tl.load(K + kv_offsets, mask=columns, other=0.0).to(tl.float32), 0.0)
        v = tl.where(inside, tl.load(V + kv_offsets, mask=columns, other=0.0).to(tl.float32), 0.0)
    else:
        kv_offsets = tokens[:, None] * s_l + offs_d[None, :]
        k = tl.load(K + kv_offsets, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(V + kv_offsets, mask=mask, other=0.0).to(tl.float32)
    fq = _rho(q, offset, FEATURE)
    fk = _rho(k, offset, FEATURE)
    q_feat = tl.where(mask, fq, 0.0)
    k_feat = tl.where(mask, fk, 0.0)
    if HAS_GATE:
        a = _dot(q_feat, wq, None, PRECISION)
        a = _dot(k_feat, wk, a, PRECISION)
        a = _dot(v, wv, a, PRECISION)
        gamma_q = tl.sigmoid(a + bias[None, :])
        if TWO_GATES:
            c = _dot(q_feat, uq, None, PRECISION)
            c = _dot(k_feat, uk, c, PRECISION)
            c = _dot(v, uv, c, PRECISION)
            gamma_k = tl.sigmoid(c + ubias[None, :])
        else:
            gamma_k = gamma_q
    else:
        gamma_q = tl.full([BLOCK_L, BLOCK_D], 1.0, dtype=tl.float32)
        gamma_k = gamma_q
    return tokens, mask, q, k, v, fq, fk, q_feat, k_feat, gamma_q, gamma_k


@triton.jit
def _state(Q, K, V, token0, begin, end, member_stride, s_l, d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w,
           wq, wk, wv, bias, uq, uk, uv, ubias, offset,
           FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr,
           BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """``S = sum k^^T v`` ``[BLOCK_D, BLOCK_D]`` and ``z = sum k^`` ``[BLOCK_D]`` over the members
    ``[begin, end)`` of one group."""
    state = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    k_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(begin, end, BLOCK_L):
        _, _, _, _, v, _, _, _, k_feat, _, gamma_k = _tile(
            Q, K, V, token0, start, end, member_stride, s_l, d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w,
            wq, wk, wv, bias, uq, uk, uv, ubias, offset, FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        k_hat = gamma_k * k_feat
        state = _dot(tl.trans(k_hat), v, state, PRECISION)
        k_sum += tl.sum(k_hat, axis=0)
    return state, k_sum


@triton.jit
def _output_grads(q_hat, g, state, k_sum, eps, PRECISION: tl.constexpr):
    """``dN = g / D`` ``[BLOCK_L, BLOCK_D]`` and ``dD = -(g . y) / D`` ``[BLOCK_L]`` (0 where the
    clamp ``D = max(q^ . z, eps)`` is active) for output gradients ``g``."""
    raw = tl.sum(q_hat * k_sum[None, :], axis=1)
    denominator = tl.maximum(raw, eps).to(tl.float32)
    out = _dot(q_hat, state, None, PRECISION) / denominator[:, None]
    d_num = g / denominator[:, None]
    d_den = tl.where(raw >= eps, -tl.sum(g * out, axis=1) / denominator, 0.0)
    return d_num, d_den


@triton.jit
def _state_grads(Q, K, V, G, token0, begin, end, member_stride, s_l, sg_l, d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w,
                 wq, wk, wv, bias, uq, uk, uv, ubias, offset, eps, state, k_sum,
                 FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr,
                 BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """``dS = sum q^^T dN`` ``[BLOCK_D, BLOCK_D]`` and ``dz = sum dD q^`` ``[BLOCK_D]`` over the
    queries ``[begin, end)`` of one group."""
    offs_d = tl.arange(0, BLOCK_D)
    d_state = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    d_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(begin, end, BLOCK_L):
        tokens, mask, _, _, _, _, _, q_feat, _, gamma_q, _ = _tile(
            Q, K, V, token0, start, end, member_stride, s_l, d, shift_t, shift_h, shift_w,
            grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
            FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        q_hat = gamma_q * q_feat
        g = tl.load(G + tokens[:, None] * sg_l + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        d_num, d_den = _output_grads(q_hat, g, state, k_sum, eps, PRECISION)
        d_state = _dot(tl.trans(q_hat), d_num, d_state, PRECISION)
        d_sum += tl.sum(q_hat * d_den[:, None], axis=0)
    return d_state, d_sum


@triton.jit
def _work_item(item, chunks, chunk_len, length, groups, group_stride):
    """Work item ``item`` (chunk ``item % chunks`` of group ``item // chunks``, over the batch):
    its group, batch index, first token and member range ``[begin, end)``."""
    group = item // chunks
    begin = (item % chunks) * chunk_len
    end = tl.minimum(begin + chunk_len, length)
    return group, (group // groups).to(tl.int64), (group % groups) * group_stride, begin, end


@triton.jit
def _store_state(STATE, row, d, state, k_sum, BLOCK_D: tl.constexpr):
    """``S [d, d]`` then ``z [d]`` as row ``row`` of ``STATE [rows, d * d + d]`` (float32)."""
    offs_i = tl.arange(0, BLOCK_D)[:, None]
    offs_j = tl.arange(0, BLOCK_D)[None, :]
    base = STATE + row.to(tl.int64) * (d * d + d)
    tl.store(base + offs_i * d + offs_j, state, mask=(offs_i < d) & (offs_j < d))
    tl.store(base + d * d + tl.arange(0, BLOCK_D), k_sum, mask=tl.arange(0, BLOCK_D) < d)


@triton.jit
def _load_state(STATE, row, d, BLOCK_D: tl.constexpr):
    """Row ``row`` of ``STATE [rows, d * d + d]``: ``S [BLOCK_D, BLOCK_D]``, ``z [BLOCK_D]``, zero-padded."""
    offs_i = tl.arange(0, BLOCK_D)[:, None]
    offs_j = tl.arange(0, BLOCK_D)[None, :]
    base = STATE + row.to(tl.int64) * (d * d + d)
    state = tl.load(base + offs_i * d + offs_j, mask=(offs_i < d) & (offs_j < d), other=0.0)
    k_sum = tl.load(base + d * d + tl.arange(0, BLOCK_D), mask=tl.arange(0, BLOCK_D) < d, other=0.0)
    return state, k_sum


@triton.jit
def _state_kernel(
    Q, K, V, W, Bias, U, UBias, SHIFT, G, STATE, OUT,
    s_b, s_l, s_h, sg_b, sg_l, sg_h,
    total_groups, groups, length, group_stride, member_stride, chunks, chunk_len, d, offset, eps, grid_t, grid_h, grid_w,
    FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr, GRADS: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """Each group's ``chunks`` chunks of ``chunk_len`` members in parallel (the key pass split over
    programs): ``OUT [groups * chunks * heads, d * d + d]`` gets each chunk's partial ``S, z``, or
    with ``GRADS`` its partial ``dS, dz`` (then ``STATE [groups * heads, d * d + d]`` holds the
    whole groups' ``S, z``)."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    heads = tl.num_programs(1)
    wq, wk, wv, bias = _gate_weights(W, Bias, d, HAS_GATE, BLOCK_D)
    uq, uk, uv, ubias = _gate_weights(U, UBias, d, TWO_GATES, BLOCK_D)
    shift_t, shift_h, shift_w = _shift_table(SHIFT, h, d, SHIFT_RUN, BLOCK_D)
    for item in range(pid, total_groups * chunks, tl.num_programs(0)):
        group, b, token0, begin, end = _work_item(item, chunks, chunk_len, length, groups, group_stride)
        q_ptr = Q + b * s_b + h * s_h
        k_ptr = K + b * s_b + h * s_h
        v_ptr = V + b * s_b + h * s_h
        if GRADS:
            state, k_sum = _load_state(STATE, group * heads + h, d, BLOCK_D)
            part, part_sum = _state_grads(q_ptr, k_ptr, v_ptr, G + b * sg_b + h * sg_h, token0, begin, end, member_stride, s_l, sg_l,
                                          d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias,
                                          offset, eps, state, k_sum, FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        else:
            part, part_sum = _state(q_ptr, k_ptr, v_ptr, token0, begin, end, member_stride, s_l, d, shift_t, shift_h, shift_w,
                                    grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
                                    FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        _store_state(OUT, item * heads + h, d, part, part_sum, BLOCK_D)


@triton.jit
def _forward_kernel(
    Q, K, V, W, Bias, U, UBias, SHIFT, STATE, O,
    s_b, s_l, s_h, so_b, so_l, so_h,
    total_groups, groups, length, group_stride, member_stride, chunks, chunk_len, d, offset, eps, grid_t, grid_h, grid_w,
    FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """The outputs of each group's ``chunks`` chunks of queries; ``S, z`` from ``STATE`` with
    ``SPLIT`` (the key pass done by ``_state_kernel``), else computed here (then ``chunks`` is 1)."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    programs = tl.num_programs(0)
    wq, wk, wv, bias = _gate_weights(W, Bias, d, HAS_GATE, BLOCK_D)
    uq, uk, uv, ubias = _gate_weights(U, UBias, d, TWO_GATES, BLOCK_D)
    shift_t, shift_h, shift_w = _shift_table(SHIFT, h, d, SHIFT_RUN, BLOCK_D)
    offs_d = tl.arange(0, BLOCK_D)
    for item in range(pid, total_groups * chunks, programs):
        group, b, token0, begin, end = _work_item(item, chunks, chunk_len, length, groups, group_stride)
        q_ptr = Q + b * s_b + h * s_h
        k_ptr = K + b * s_b + h * s_h
        v_ptr = V + b * s_b + h * s_h
        o_ptr = O + b * so_b + h * so_h
        if SPLIT:
            state, k_sum = _load_state(STATE, group * tl.num_programs(1) + h, d, BLOCK_D)
        else:
            state, k_sum = _state(q_ptr, k_ptr, v_ptr, token0, 0, length, member_stride, s_l, d, shift_t, shift_h, shift_w,
                                  grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
                                  FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        for start in range(begin, end, BLOCK_L):
            tokens, mask, _, _, _, _, _, q_feat, _, gamma_q, _ = _tile(
                q_ptr, k_ptr, v_ptr, token0, start, end, member_stride, s_l, d, shift_t, shift_h, shift_w,
                grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
                FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
            q_hat = gamma_q * q_feat
            numerator = _dot(q_hat, state, None, PRECISION)
            denominator = tl.maximum(tl.sum(q_hat * k_sum[None, :], axis=1), eps).to(tl.float32)
            out = numerator / denominator[:, None]
            tl.store(o_ptr + tokens[:, None] * so_l + offs_d[None, :], out.to(O.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    Q, K, V, W, Bias, U, UBias, SHIFT, G, STATE, DSTATE, DQKV, DW, DB,
    s_b, s_l, s_h, sg_b, sg_l, sg_h, sd_b, sd_l, sd_part, sd_h,
    total_groups, groups, length, group_stride, member_stride, chunks, chunk_len, d, offset, eps, grid_t, grid_h, grid_w,
    FEATURE: tl.constexpr, HAS_GATE: tl.constexpr, TWO_GATES: tl.constexpr, SHIFT_RUN: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):
    """The gradients of each group's ``chunks`` chunks of tokens; ``S, z`` and ``dS, dz`` from
    ``STATE`` and ``DSTATE`` with ``SPLIT``, else computed here (then ``chunks`` is 1)."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    programs = tl.num_programs(0)
    wq, wk, wv, bias = _gate_weights(W, Bias, d, HAS_GATE, BLOCK_D)
    uq, uk, uv, ubias = _gate_weights(U, UBias, d, TWO_GATES, BLOCK_D)
    shift_t, shift_h, shift_w = _shift_table(SHIFT, h, d, SHIFT_RUN, BLOCK_D)
    offs_d = tl.arange(0, BLOCK_D)
    d_wq = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)  # [in, out], as the weights are held
    d_wk = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    d_wv = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    d_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_uq = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)  # the key gate's, with two gates
    d_uk = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    d_uv = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    d_ubias = tl.zeros([BLOCK_D], dtype=tl.float32)
    for item in range(pid, total_groups * chunks, programs):
        group, b, token0, begin, end = _work_item(item, chunks, chunk_len, length, groups, group_stride)
        q_ptr = Q + b * s_b + h * s_h
        k_ptr = K + b * s_b + h * s_h
        v_ptr = V + b * s_b + h * s_h
        g_ptr = G + b * sg_b + h * sg_h
        if SPLIT:
            state, k_sum = _load_state(STATE, group * tl.num_programs(1) + h, d, BLOCK_D)
            d_state, d_sum = _load_state(DSTATE, group * tl.num_programs(1) + h, d, BLOCK_D)
        else:
            state, k_sum = _state(q_ptr, k_ptr, v_ptr, token0, 0, length, member_stride, s_l, d, shift_t, shift_h, shift_w,
                                  grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
                                  FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
            d_state, d_sum = _state_grads(q_ptr, k_ptr, v_ptr, g_ptr, token0, 0, length, member_stride, s_l, sg_l,
                                          d, shift_t, shift_h, shift_w, grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias,
                                          offset, eps, state, k_sum, FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
        for start in range(begin, end, BLOCK_L):  # every token as query and key: dq, dk, dv, dW
            tokens, mask, q, k, v, fq, fk, q_feat, k_feat, gamma_q, gamma_k = _tile(
                q_ptr, k_ptr, v_ptr, token0, start, end, member_stride, s_l, d, shift_t, shift_h, shift_w,
                grid_t, grid_h, grid_w, wq, wk, wv, bias, uq, uk, uv, ubias, offset,
                FEATURE, HAS_GATE, TWO_GATES, SHIFT_RUN, BLOCK_L, BLOCK_D, PRECISION)
            q_hat = gamma_q * q_feat
            k_hat = gamma_k * k_feat
            g = tl.load(g_ptr + tokens[:, None] * sg_l + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
            d_num, d_den = _output_grads(q_hat, g, state, k_sum, eps, PRECISION)
            d_q_hat = _dot(d_num, tl.trans(state), None, PRECISION) + d_den[:, None] * k_sum[None, :]
            d_k_hat = _dot(v, tl.trans(d_state), None, PRECISION) + d_sum[None, :]
            dv = _dot(k_hat, d_state, None, PRECISION)
            if HAS_GATE:
                if TWO_GATES:  # d_a, d_c: the gradients of the query and key gates' pre-activations
                    d_a = d_q_hat * q_feat * gamma_q * (1.0 - gamma_q)
                    d_c = d_k_hat * k_feat * gamma_k * (1.0 - gamma_k)
                else:
                    d_a = (d_q_hat * q_feat + d_k_hat * k_feat) * gamma_q * (1.0 - gamma_q)
                d_q_feat = d_q_hat * gamma_q + _dot(d_a, tl.trans(wq), None, PRECISION)
                d_k_feat = d_k_hat * gamma_k + _dot(d_a, tl.trans(wk), None, PRECISION)
                dv = _dot(d_a, tl.trans(wv), dv, PRECISION)
                d_wq = _dot(tl.trans(q_feat), d_a, d_wq, PRECISION)
                d_wk = _dot(tl.trans(k_feat), d_a, d_wk, PRECISION)
                d_wv = _dot(tl.trans(v), d_a, d_wv, PRECISION)
                d_bias += tl.sum(d_a, axis=0)
                if TWO_GATES:
                    d_q_feat = _dot(d_c, tl.trans(uq), d_q_feat, PRECISION)
                    d_k_feat = _dot(d_c, tl.trans(uk), d_k_feat, PRECISION)
                    dv = _dot(d_c, tl.trans(uv), dv, PRECISION)
                    d_uq = _dot(tl.trans(q_feat), d_c, d_uq, PRECISION)
                    d_uk = _dot(tl.trans(k_feat), d_c, d_uk, PRECISION)
                    d_uv = _dot(tl.trans(v), d_c, d_uv, PRECISION)
                    d_ubias += tl.sum(d_c, axis=0)
            else:
                d_q_feat = d_q_hat
                d_k_feat = d_k_hat
            dq = d_q_feat * _rho_grad(q, fq, FEATURE)
            dk = d_k_feat * _rho_grad(k, fk, FEATURE)
            d_ptr = DQKV + b * sd_b + h * sd_h + tokens[:, None] * sd_l + offs_d[None, :]
            tl.store(d_ptr, dq.to(DQKV.dtype.element_ty), mask=mask)
            tl.store(d_ptr + sd_part, dk.to(DQKV.dtype.element_ty), mask=mask)
            tl.store(d_ptr + 2 * sd_part, dv.to(DQKV.dtype.element_ty), mask=mask)
    if HAS_GATE:  # this program's share of dW [gates, d, 3d] and db [gates, d]
        gates = 2 if TWO_GATES else 1
        part = (pid * tl.num_programs(1) + h) * gates
        offs_i = tl.arange(0, BLOCK_D)[:, None]
        offs_o = tl.arange(0, BLOCK_D)[None, :]
        wmask = (offs_i < d) & (offs_o < d)
        base = DW + part * (3 * d * d) + offs_o * (3 * d) + offs_i
        tl.store(base, d_wq, mask=wmask)
        tl.store(base + d, d_wk, mask=wmask)
        tl.store(base + 2 * d, d_wv, mask=wmask)
        tl.store(DB + part * d + offs_d, d_bias, mask=offs_d < d)
        if TWO_GATES:
            base += 3 * d * d
            tl.store(base, d_uq, mask=wmask)
            tl.store(base + d, d_uk, mask=wmask)
            tl.store(base + 2 * d, d_uv, mask=wmask)
            tl.store(DB + (part + 1) * d + offs_d, d_ubias, mask=offs_d < d)


@triton.jit
def _unshift_kernel(X, Y, SHIFT, sx_b, sx_l, sy_b, sy_l, length, channels, grid_t, grid_h, grid_w,
                    SHIFT_RUN: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """``Y[b, x, c] = X[b, x - shift[c], c]`` (zero outside the grid) over ``[B, L, 3 * channels]``
    (Q, K, V; the Q channels are copied, K's and V's share the table). A program moves
    ``[BLOCK_L, BLOCK_C / SHIFT_RUN, SHIFT_RUN]``: tokens, runs, the channels of a run, whose
    last axis is contiguous in both tensors, so that each run moves as vectors."""
    RUNS: tl.constexpr = BLOCK_C // SHIFT_RUN
    b = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    runs = tl.program_id(2) * RUNS + tl.arange(0, RUNS)  # runs of Q, then K, then V
    part = channels // SHIFT_RUN  # runs in each of Q, K, V
    real = runs < 3 * part
    table = SHIFT + (runs % part) * 3
    negated = [-tl.load(table + axis, mask=(runs >= part) & real, other=0) for axis in (0, 1, 2)]
    source, inside = _shifted_source(offs_l, negated[0], negated[1], negated[2], grid_t, grid_h, grid_w)
    offs_c = (runs * SHIFT_RUN)[:, None] + tl.arange(0, SHIFT_RUN)[None, :]  # [RUNS, SHIFT_RUN]
    x = tl.load(X + b * sx_b + source[:, :, None] * sx_l + offs_c[None, :, :], mask=real[None, :, None], other=0.0)
    mask = (offs_l < length)[:, None, None] & real[None, :, None]
    tl.store(Y + b * sy_b + offs_l[:, None, None] * sy_l + offs_c[None, :, :], tl.where(inside[:, :, None] & mask, x, 0.0), mask=mask)


def _precision(dtype: torch.dtype, shared_tf32: bool = True) -> str:
    """The dots' operands: exact float32 products for float32 inputs; for 16-bit inputs
    ``STEP_DOT_OPERANDS`` (tf32 or bf16), or bf16 where the tf32 operands do not fit
    (``shared_tf32`` False)."""
    if dtype == torch.float32:
        return "ieee"
    if STEP_DOT_OPERANDS.get() == "tf32" and shared_tf32:
        return "tf32"
    # Triton 3.9's interpreter multiplies bfloat16 dot operands wrongly (relative errors ~1e9);
    # bf16 x bf16 products are exact in float32, so rounding first gives the same numbers.
    return "bf16-rounded" if INTERPRETED else "bf16"


def _config(d: int, length: int, dtype: torch.dtype, *, backward: bool, two_gates: bool) -> dict:
    """Token block, warps, software-pipelining stages and dot precision of one launch.

    With bf16 dot operands, one gate (or none) and d <= 64 (LVT base): blocks of 64 tokens
    forward and 16 backward, 4 warps, one stage. Measured on the H200
    (``benchmarks/linear_step_launch.py``, BENCHMARKS.md), against the earlier 8 warps, 3 stages
    and blocks of 32 / 16: forward 1.9-2.4x at 96 frames and 1.3-1.5x at 16x448, backward and
    forward 1.3-1.5x; ncu had put the earlier forward at one program (2 warps a scheduler) per
    SM, stalled on its loads. A group of at most ``SHORT_GROUP`` tokens takes the half block
    where that pads less (the tube step's 96 frames: three blocks of 32, not two of 64 with a
    third of the second empty): 1.16x and 1.18x on that forward at 96x224 and 96x448, where the
    frame step's long groups (196, 784 tokens) lose 10-12% with blocks of 32.

    Otherwise (float32 inputs with exact products, tf32 operands, two gates): 8 warps, 3 stages,
    blocks of 32 tokens forward (16 for float32) and 16 backward. Compiled for sm_90 at d = 64
    (Triton 3.9, ptxas's resource usage), 8 warps: the tf32 forward takes 178 registers and no
    spills with blocks of 32 (245 with 64); the tf32 backward, which holds eight ``[d, d]`` float32
    tiles besides its token blocks, 255 registers and 32 bytes of spills with blocks of 16 (408
    with 32); float32 inputs spill 48 bytes with forward blocks of 16. Separate query and key
    gates (three more ``[d, d]`` tiles, and backward their gradients): forward 187 registers, 128
    KB of shared memory; the backward would need 240 KB of shared memory with tf32 operands, more
    than the 227 KB a program may have, so it always takes bf16 operands (134 KB, 255 registers,
    68 bytes of spills)."""
    precision = _precision(dtype, shared_tf32=not (backward and two_gates))
    block_d = max(MIN_BLOCK, triton.next_power_of_2(d))
    measured = precision in ("bf16", "bf16-rounded") and not two_gates and block_d <= 64
    if measured:
        max_block, warps, stages = (16 if backward else 64), 4, 1
    else:
        max_block = 16 if backward or dtype == torch.float32 else 32
        warps, stages = (8 if block_d >= 64 else 4), 3
    block_l = max(MIN_BLOCK, min(max_block, triton.next_power_of_2(max(length, 1))))
    if measured and not backward and length <= SHORT_GROUP and _padded(length, block_l // 2) < _padded(length, block_l):
        block_l //= 2
    return dict(
        BLOCK_L=block_l,
        BLOCK_D=block_d,
        PRECISION=precision,
        num_warps=warps,
        num_stages=stages,
    )


def _padded(length: int, block: int) -> int:
    """Tokens a loop over ``length`` tokens in blocks of ``block`` touches, padding included."""
    return triton.cdiv(length, block) * block


def _target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return TARGET_PROGRAMS


def _split(total_groups: int, heads: int, length: int, device: torch.device) -> tuple[int, int]:
    """``(chunks, chunk_len)``: with ``STEP_KEY_SPLIT`` at ``auto`` and at most half as many groups
    x heads as the device wants programs, each group's members in as many chunks (of at least
    ``SPLIT_MIN``, a multiple of ``SPLIT_ALIGN``) as keep groups x chunks x heads within that
    number, so that every chunk has a program of its own; else one chunk of the whole group."""
    if STEP_KEY_SPLIT.get() == "off" or total_groups * heads == 0:
        return 1, length
    chunks = min(_target_programs(device) // (total_groups * heads), length // SPLIT_MIN)
    if chunks <= 1:
        return 1, length
    chunk_len = triton.cdiv(triton.cdiv(length, chunks), SPLIT_ALIGN) * SPLIT_ALIGN
    return triton.cdiv(length, chunk_len), chunk_len


def _programs(total_groups: int, heads: int, device: torch.device) -> int:
    """Programs per head, each taking every ``programs``-th group: enough to fill the device, few
    enough that each program's load of the gate's ``[d, 3d]`` weights (and, backward, its
    partial gradients) serves several short groups (the tube step's 16 tokens)."""
    return max(1, min(total_groups, _target_programs(device) // heads))


def _launch(qkv, weight, bias, key_weight, key_bias, shift, feature: str, offset: float, eps: float,
            layout: list[int], grid: list[int], *, backward: bool) -> tuple[tuple[torch.Tensor, ...], dict, int]:
    """What a pass launches with: the kernels' pointer arguments (the Q, K, V views of ``qkv``
    first, then the gates and the shift table or placeholders), their keyword arguments (sizes,
    flags, block config, and ``total_groups`` = batch x groups and ``chunks`` of the key pass), and
    the programs per head."""
    batch, _, _, heads, d = qkv.shape
    groups, size, group_stride, member_stride = layout
    total = batch * groups
    chunks, chunk_len = _split(total, heads, size, qkv.device)
    q, k, v = qkv.unbind(2)  # [B, L, heads, d] views
    args = dict(
        total_groups=total, chunks=chunks, chunk_len=chunk_len, offset=offset, eps=eps,
        groups=groups, length=size, group_stride=group_stride, member_stride=member_stride, d=d,
        grid_t=grid[0], grid_h=grid[1], grid_w=grid[2],
        **_flags(feature, weight, key_weight, shift, heads * d),
        **_config(d, size, qkv.dtype, backward=backward, two_gates=key_weight is not None),
    )
    return (q, k, v, *_or(q, weight, bias, key_weight, key_bias, shift)), args, _programs(total * chunks, heads, qkv.device)


# The forward and the backward are custom operators, opaque to torch.compile: it calls them, it
# does not trace into them. Traced, the kernels (whose arguments are views of one qkv tensor, and
# placeholders that alias it) had the compiled backward write into qkv and give wrong gradients.
@torch.library.custom_op("tubelet::linear_step", mutates_args=())
def _step(
    qkv: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, key_weight: torch.Tensor | None,
    key_bias: torch.Tensor | None, shift: torch.Tensor | None, feature: str, offset: float, eps: float,
    layout: list[int], grid: list[int],
) -> torch.Tensor:
    """The attention output ``[B, L, heads, d]`` of ``qkv [B, L, 3, heads, d]``."""
    batch, length, _, heads, d = qkv.shape
    out = torch.empty(batch, length, heads, d, dtype=qkv.dtype, device=qkv.device)
    if out.numel():
        pointers, args, programs = _launch(qkv, weight, bias, key_weight, key_bias, shift, feature, offset, eps,
                                           layout, grid, backward=False)
        q, total, chunks = pointers[0], args["total_groups"], args["chunks"]
        state = _key_pass(pointers, q, None, None, total, chunks, heads, args) if chunks > 1 else q
        _forward_kernel[(programs, heads)](
            *pointers, state, out, q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
            SPLIT=chunks > 1, **args,
        )
    return out


@_step.register_fake
def _step_shape(qkv, weight, bias, key_weight, key_bias, shift, feature, offset, eps, layout, grid):
    batch, length, _, heads, d = qkv.shape
    return qkv.new_empty(batch, length, heads, d)


@torch.library.custom_op("tubelet::linear_step_backward", mutates_args=())
def _step_backward(
    grad: torch.Tensor, qkv: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    key_weight: torch.Tensor | None, key_bias: torch.Tensor | None, shift: torch.Tensor | None, feature: str,
    offset: float, eps: float, layout: list[int], grid: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``d_qkv`` like ``qkv``, and the gates' gradients ``[gates, d, 3d]`` and ``[gates, d]``
    float32 (gates: 0, 1, or 2 with a key gate)."""
    batch, length, _, heads, d = qkv.shape
    grad = grad if grad.stride(-1) == 1 else grad.contiguous()
    # The kernel writes dq and the gradients of the shifted K and V, which the shift's adjoint
    # then moves back (one output tensor per kernel).
    d_qkv = torch.empty(batch, length, 3, heads, d, dtype=qkv.dtype, device=qkv.device)
    d_shifted = d_qkv if shift is None else torch.empty_like(d_qkv)
    pointers, args, programs = _launch(qkv, weight, bias, key_weight, key_bias, shift, feature, offset, eps,
                                       layout, grid, backward=True)
    q, total, chunks = pointers[0], args["total_groups"], args["chunks"]
    gates = _gates(weight, key_weight)
    parts = programs * heads if gates else 1
    alloc = torch.empty if d_qkv.numel() else torch.zeros  # no tokens: no kernel, zero gradients
    d_weight = alloc(parts, gates, d, 3 * d, dtype=torch.float32, device=qkv.device)
    d_bias = alloc(parts, gates, d, dtype=torch.float32, device=qkv.device)
    if d_qkv.numel():
        state = d_state = q
        if chunks > 1:
            state = _key_pass(pointers, q, None, None, total, chunks, heads, args)
            d_state = _key_pass(pointers, q, grad, state, total, chunks, heads, args)
        _backward_kernel[(programs, heads)](
            *pointers, grad, state, d_state, d_shifted, d_weight, d_bias,
            q.stride(0), q.stride(1), q.stride(2), grad.stride(0), grad.stride(1), grad.stride(2), *d_shifted.stride()[:4],
            SPLIT=chunks > 1, **args,
        )
        if shift is not None:
            _unshift(d_shifted, d_qkv, shift, grid)
    return d_qkv, d_weight.sum(0), d_bias.sum(0)


@_step_backward.register_fake
def _step_backward_shapes(grad, qkv, weight, bias, key_weight, key_bias, shift, feature, offset, eps, layout, grid):
    d, gates = qkv.shape[-1], _gates(weight, key_weight)
    return qkv.new_empty(qkv.shape), qkv.new_empty(gates, d, 3 * d, dtype=torch.float32), qkv.new_empty(gates, d, dtype=torch.float32)


def _gates(weight: torch.Tensor | None, key_weight: torch.Tensor | None) -> int:
    """Fixation gates: none, one shared by Q and K, or the query's and the key's."""
    return 0 if weight is None else 2 if key_weight is not None else 1


def _keep_for_backward(ctx, inputs, output) -> None:
    qkv, weight, bias, key_weight, key_bias, shift, *options = inputs
    ctx.save_for_backward(qkv, weight, bias, key_weight, key_bias, shift)
    ctx.options = options


def _backward(ctx, grad):
    saved = ctx.saved_tensors
    d_qkv, d_weight, d_bias = _step_backward(grad, *saved, *ctx.options)
    gate_parts = zip(saved[1:5], (d_weight, d_bias, d_weight, d_bias), (0, 0, 1, 1))
    gate_grads = [part[i].to(t.dtype) if t is not None else None for t, part, i in gate_parts]
    return d_qkv, *gate_grads, None, None, None, None, None, None


_step.register_autograd(_backward, setup_context=_keep_for_backward)


def _flags(feature: str, weight, key_weight, shift, channels: int) -> dict:
    return dict(FEATURE=FEATURES.index(feature), HAS_GATE=weight is not None, TWO_GATES=key_weight is not None,
                SHIFT_RUN=_shift_run(shift, channels))


def _shift_run(shift: torch.Tensor | None, channels: int) -> int:
    """Channels per row of the shift table ``[channels / run, 3]``; 0 without a shift."""
    return 0 if shift is None else channels // shift.shape[0]


def _key_pass(pointers, q, grad, state, total: int, chunks: int, heads: int, args: dict) -> torch.Tensor:
    """The key pass split over ``chunks`` programs per group and head: ``S, z`` of every group and
    head ``[groups * heads, d * d + d]`` float32, or, given ``grad`` and those ``state`` s, ``dS,
    dz``; the chunks' partial sums are added here."""
    d = q.shape[-1]
    partial = torch.empty(total, chunks, heads, d * d + d, dtype=torch.float32, device=q.device)
    g = q if grad is None else grad
    _state_kernel[(_programs(total * chunks, heads, q.device), heads)](
        *pointers, g, q if state is None else state, partial,
        q.stride(0), q.stride(1), q.stride(2), g.stride(0), g.stride(1), g.stride(2), GRADS=grad is not None, **args,
    )
    return partial.sum(1).reshape(total * heads, d * d + d)


def _or(placeholder: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor]:
    """The kernels' pointer arguments: an absent tensor becomes a placeholder its flags never read."""
    return [placeholder if t is None else t for t in tensors]


def _unshift(shifted: torch.Tensor, out: torch.Tensor, shift: torch.Tensor, grid) -> None:
    """``out [B, L, 3, heads, d]`` = ``shifted``'s Q part, and the adjoint of the shift applied to its K and V parts."""
    batch, length, _, heads, d = shifted.shape
    block_l, block_c = 16, min(256, triton.next_power_of_2(3 * heads * d))
    launch = (batch, triton.cdiv(length, block_l), triton.cdiv(3 * heads * d, block_c))
    _unshift_kernel[launch](
        shifted, out, shift, shifted.stride(0), shifted.stride(1), out.stride(0), out.stride(1),
        length, heads * d, *grid, SHIFT_RUN=_shift_run(shift, heads * d), BLOCK_L=block_l, BLOCK_C=block_c,
    )


def _check(qkv, weight, bias, key_weight, key_bias, feature, layout, grid, shift) -> None:
    if not qkv.is_cuda and not INTERPRETED:
        raise RuntimeError("the fused linear attention step needs CUDA tensors (on CPU, set TRITON_INTERPRET=1 before tubelet imports it)")
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"the fused linear attention step needs qkv [B, L, 3, heads, d], got {tuple(qkv.shape)}")
    if feature not in FEATURES:
        raise ValueError(f"unknown feature map {feature!r}; expected one of {FEATURES}")
    d = qkv.shape[-1]
    for name, (w, b) in (("fixation gate", (weight, bias)), ("key fixation gate", (key_weight, key_bias))):
        if (w is None) != (b is None) or (w is not None and (tuple(w.shape) != (d, 3 * d) or tuple(b.shape) != (d,))):
            raise ValueError(f"the {name} needs weight [{d}, {3 * d}] and bias [{d}] (or neither)")
    if key_weight is not None and weight is None:
        raise ValueError("a key fixation gate needs the query gate (weight, bias) as well")
    groups, size, _, _ = layout
    if groups * size != qkv.shape[1] or grid[0] * grid[1] * grid[2] != qkv.shape[1]:
        raise ValueError(f"{qkv.shape[1]} tokens are neither {groups} groups of {size} nor a {grid} grid")
    if shift is not None:
        rows = shift.shape[0] if shift.dim() == 2 else 0
        run = qkv.shape[3] * d // rows if rows else 0
        if shift.dim() != 2 or shift.shape[1] != 3 or not run or rows * run != qkv.shape[3] * d or d % run or run & (run - 1):
            raise ValueError(f"the shift table must be [{qkv.shape[3] * d} / run, 3] for a power of two run that divides "
                             f"the head width {d} (a row per run of channels), got {tuple(shift.shape)}")
        if shift.device != qkv.device:
            raise ValueError(f"the shift table is on {shift.device} and qkv on {qkv.device}: build the table on qkv's device "
                             f"(a copy in every call would cost a transfer and break CUDA graph capture)")


def linear_step(
    qkv: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    feature: str,
    offset: float,
    eps: float,
    layout: tuple[int, int, int, int],
    grid: tuple[int, int, int],
    shift: torch.Tensor | None = None,
    key_weight: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``qkv [B, L, 3, heads, d] -> [B, L, heads, d]`` (see the module docstring and
    ``tubelet.kernels.linear_step.reference``). ``weight [d, 3d]``, ``bias [d]``: the fixation
    gate shared by Q and K, or, with ``key_weight``, ``key_bias`` (the same shapes), the query's
    gate beside the key's. Under autocast ``qkv`` is computed in autocast's dtype; the gates'
    parameters are read in their own. Differentiable in ``qkv`` and the gates' parameters."""
    _check(qkv, weight, bias, key_weight, key_bias, feature, layout, grid, shift)
    device = qkv.device.type
    if torch.is_autocast_enabled(device):
        qkv = qkv.to(torch.get_autocast_dtype(device))
    if qkv.stride(-1) != 1 or qkv.stride(-2) != qkv.shape[-1]:
        qkv = qkv.contiguous()
    if shift is not None:
        shift = shift.to(torch.int32).contiguous()
    return _step(qkv, weight, bias, key_weight, key_bias, shift, feature, float(offset), float(eps), list(layout), list(grid))
