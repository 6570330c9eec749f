"""Softmax attention over a few keys (at most ``MAX_LENGTH``: the temporal steps of divided,
factorised and axial attention) as one Triton kernel forward and one backward.

``triton_short_attention(q, k, v)`` has the signature of ``tubelet.attention.sdpa.attention``
without mask and dropout, and imports Triton only when first called, so ``import tubelet`` never
needs Triton and tests can choose Triton's interpreter (``TRITON_INTERPRET=1``) before the kernels
are compiled. ``reference.short_attention_reference`` is the same computation in plain PyTorch.
"""

from __future__ import annotations

import torch

from tubelet.switch import Switch

MAX_LENGTH = 32  # queries and keys a call may have: the kernels unroll their loop over the keys
# How the kernels hold a program's sequences: ``sequences``, a [sequences, L, d] tile and a loop
# over the keys on the CUDA cores; ``block-diagonal``, the sequences' rows end to end as one
# [rows, d] tile, every query row against every key row in one tensor-core product, the products
# across sequences masked out (``BLOCK_ROWS`` rows: 8 sequences of 8 frames, 2 of 32). Measured on an
# H200 (BENCHMARKS.md): block-diagonal tiles take 0.73x the sequence tiles' forward and backward
# time at 8 keys and 0.34x at 16, the same forward time at 8 and 0.90x at 16.
SHORT_ATTENTION_TILES = Switch("short-attention tiles", ["sequences", "block-diagonal"], "block-diagonal")


def why_not(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the kernels cannot take these queries, keys and values (None: they can)."""
    shapes = f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    if not q.dim() == k.dim() == v.dim() == 4:
        return f"takes [N, heads, L, d] queries, keys and values, got {shapes}"
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1] or v.shape[-2] != k.shape[-2]:
        return f"needs matching queries, keys and values (no broadcasting), got {shapes}"
    if max(q.shape[-2], k.shape[-2]) > MAX_LENGTH:
        return f"takes at most {MAX_LENGTH} queries and keys, got {q.shape[-2]} and {k.shape[-2]}"
    return None


def triton_short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V``: ``[N, heads, Lq, d], [N, heads, Lk, d], [N, heads, Lk, e]
    -> [N, heads, Lq, e]`` through the Triton kernels."""
    try:
        from tubelet.kernels.short_attention import triton as kernels
    except ImportError as error:
        raise RuntimeError(f"the 'triton' softmax attention backend needs the triton package ({error})") from error
    return kernels.short_attention(q, k, v)
