"""Softmax attention through ``F.scaled_dot_product_attention``, with the kernel chosen by one
process-wide switch (issue 12's fast paths), and the sequence batch cut into chunks that CUDA can
launch.

    attention(q [N, heads, Lq, d], k [N, heads, Lk, d], v [N, heads, Lk, e], mask, dropout_p)
        -> [N, heads, Lq, e]

``set_sdpa_backend(name)`` (or the ``sdpa_backend(name)`` block; both are ``SDPA_BACKEND``, a
``tubelet.switch.Switch``) picks the kernel:

| name | kernel | when it applies |
| --- | --- | --- |
| ``auto`` (default) | PyTorch's choice, except on CUDA ``triton`` for at most 8 queries and keys (from 4M query values) and ``efficient`` for at most 16 keys otherwise | always |
| ``flash`` | FlashAttention-2 | CUDA, fp16/bf16, no mask; also the CPU flash kernel |
| ``cudnn`` | cuDNN's fused attention | CUDA (Hopper: its flash kernel) |
| ``efficient`` | memory-efficient attention (xFormers) | CUDA, any dtype, masks |
| ``math`` | the unfused reference (``softmax(QK^T/sqrt(d))V`` as matmuls) | always |
| ``triton`` | tubelet's kernel for a few keys (``tubelet.kernels.short_attention``) | CUDA, at most 32 queries and keys, no mask, no dropout |

``auto``'s exceptions are measured (H200, bf16, ``benchmarks/gpu_throughput.py --sections sdpa``,
BENCHMARKS.md): at 8 and 16 keys, TimeSformer's temporal steps, the memory-efficient kernel takes
0.66x the time of PyTorch's choice there (cuDNN) and of flash, while at 197 and 785 keys cuDNN is
fastest. tubelet's kernel for short sequences (``tubelet.kernels.short_attention``, block-diagonal
tiles) takes 0.40x the memory-efficient kernel's time forward and 0.45x forward and backward at 8
keys, which made TimeSformer-B 8x224 1.18x faster at batch 32 and its training step 1.12x. At 16
keys the kernel alone is faster too (0.68x, 0.78x), but the models' training steps did not show it
(TimeSformer-B 16x224 0.98x; ViViT-B factorised 32x224 0.84x at batch 4, a host-bound step that
varies as much between runs), and at 32 keys it is slower (1.2-1.4x),
so ``auto`` takes it for at most 8 queries and keys;
``SHORT_KEY_KERNEL`` (``triton`` or ``efficient``) says which of the two ``auto`` takes there.
Under ``torch.compile`` ``auto`` leaves the choice to the compiler.

A named kernel that cannot run a call is an error from PyTorch naming why, never a silent
fallback. Every setting computes the same function: tests hold each to a float64 reference at
sequence lengths 8, 16, 197 and 785 (the temporal steps of 8 and 16 frames, a frame of 14 x 14
patches with its class token, a 28 x 28 frame), forward and backward, within a bf16 tolerance on
the GPU (``tests/gpu/test_sdpa_backends.py``) and float32/float64 on the CPU.

Chunks: the CUDA kernels put the sequence batch ``N`` and the heads on grid axes that hold at
most 65,535 blocks each (pytorch/pytorch#142228: "invalid configuration argument"). Temporal
attention has one sequence per patch position and clip, ``N = B * H * W`` (784 per clip at
448 px), so a large batch reaches it; under the ``view`` layout (``tubelet.attention.layout``) the
positions sit on the head axis instead, ``H * W * heads`` of them. Such calls are cut along ``N``,
then along the heads, into chunks below the limit, which changes nothing in the result (sequences
are independent).
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch.backends.cuda import SDPAParams, can_use_efficient_attention
from torch.nn.attention import SDPBackend, sdpa_kernel

from tubelet.kernels.short_attention import triton_short_attention, why_not
from tubelet.switch import Switch

PYTORCH_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
SDPA_BACKENDS = ("auto", *PYTORCH_KERNELS, "triton")
MAX_GRID_SEQUENCES = 65535  # CUDA's limit on a grid's y and z extents
SHORT_KEYS = 16  # at most this many keys: "auto" prefers the memory-efficient kernel on CUDA

SDPA_BACKEND = Switch("softmax attention backend", SDPA_BACKENDS, "auto")
TRITON_KEYS = 8  # at most this many queries and keys: "auto" takes tubelet's Triton kernel on CUDA,
# for queries of at least TRITON_MIN_ELEMENTS values: at batch 1 (TimeSformer-B 8x224's temporal
# queries: 1.2M) the host bounds the step, and a Triton launch from Python costs it more than the
# memory-efficient kernel's launch (H200: 0.91-1.8x at batch 1 in two runs, 1.16x at batch 32).
TRITON_MIN_ELEMENTS = 4 * 2**20
# What ``auto`` runs on CUDA for short sequences: tubelet's Triton kernel (at most TRITON_KEYS
# queries and keys), or the memory-efficient kernel alone (at most SHORT_KEYS keys).
SHORT_KEY_KERNEL = Switch("short-sequence softmax kernel of auto", ("triton", "efficient"), "triton")
set_sdpa_backend, get_sdpa_backend, sdpa_backend = SDPA_BACKEND.set, SDPA_BACKEND.get, SDPA_BACKEND.using


@functools.cache
def _triton_imports() -> bool:
    return importlib.util.find_spec("triton") is not None


def _auto_kernel(q, k, v, mask, dropout_p) -> str | None:
    """``auto``'s choice for one call: a name of ``SDPA_BACKENDS``, or None for PyTorch's choice.

    On CUDA, in eager mode, a call of at most ``TRITON_KEYS`` queries and keys, at least
    ``TRITON_MIN_ELEMENTS`` query values and without mask or dropout goes to ``SHORT_KEY_KERNEL``
    (tubelet's Triton kernel where Triton imports); otherwise the memory-efficient kernel takes
    at most ``SHORT_KEYS`` keys where it can run the call. Under ``torch.compile`` and
    ``torch.export`` the choice is the compiler's (an exported program keeps PyTorch's operator,
    which any runtime can load).

    The choice depends on the call alone. It used to be a priority order set for the call
    (``sdpa_kernel(order, set_priority=True)``); on torch 2.11 the first call in such a block ran
    with the previous order, so activation checkpointing's recompute chose the memory-efficient
    kernel where the forward had run cuDNN's, and the backward stopped with a ``CheckpointError``
    (H200, BENCHMARKS.md)."""
    if not q.is_cuda or k.shape[-2] > SHORT_KEYS or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return None
    if (SHORT_KEY_KERNEL.get() == "triton" and max(q.shape[-2], k.shape[-2]) <= TRITON_KEYS
            and q.numel() >= TRITON_MIN_ELEMENTS and mask is None
            and not dropout_p and why_not(q, k, v) is None and _triton_imports()):
        return "triton"
    fits = can_use_efficient_attention(SDPAParams(q, k, v, mask, dropout_p, False, False))
    return "efficient" if fits else None


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    name = SDPA_BACKEND.get()
    if name == "auto":
        name = _auto_kernel(q, k, v, mask, dropout_p)
    if name == "triton":
        if mask is not None or dropout_p:
            raise ValueError("the 'triton' softmax attention backend takes no mask and no dropout; choose another backend")
        return triton_short_attention(q, k, v)
    if name is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    with sdpa_kernel(PYTORCH_KERNELS[name]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d) + mask) V``: ``[N, heads, Lq, d], [N, heads, Lk, d], [N, heads, Lk, e]
    -> [N, heads, Lq, e]``; ``mask`` boolean (True: may attend) or additive, broadcastable to
    ``[N, heads, Lq, Lk]``."""
    # An exported program (dynamic batch) keeps one call: comparing its symbolic N with the limit
    # would make torch.export specialise the batch; the runtime that runs it launches its own kernels.
    if q.dim() != 4 or torch.compiler.is_exporting() or max(q.shape[0], q.shape[1]) <= MAX_GRID_SEQUENCES:
        return _sdpa(q, k, v, mask, dropout_p)
    axis = 0 if q.shape[0] > MAX_GRID_SEQUENCES else 1  # N first; each chunk then cuts its head axis

    def chunk(x: torch.Tensor | None, start: int) -> torch.Tensor | None:
        dim = None if x is None else x.dim() - 4 + axis  # the axis of ``x`` that broadcasts against q's
        if dim is None or dim < 0 or x.shape[dim] == 1:
            return x  # broadcast along it
        return x[(slice(None),) * dim + (slice(start, start + MAX_GRID_SEQUENCES),)]

    return torch.cat([
        attention(chunk(q, start), chunk(k, start), chunk(v, start), chunk(mask, start), dropout_p)
        for start in range(0, q.shape[axis], MAX_GRID_SEQUENCES)
    ], dim=axis)
