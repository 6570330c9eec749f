"""How attention steps lay out their groups of tokens (issue 12's fast paths): ``ATTENTION_LAYOUT``,
a ``tubelet.switch.Switch``.

| name | groups of tokens are | copies per TimeSformer divided block (class token) |
| --- | --- | --- |
| ``permute`` | reshape + permute copies (``grouping.partition`` / ``unpartition``) | 5 activation-sized |
| ``view`` | strided views of the tokens in their own (time-major) order | 2 (the frames' class token) |
| ``auto`` (default) | ``view`` for steps over at least ``VIEW_MIN_TOKENS`` tokens (``B * L``), else ``permute`` | |

``auto`` is measured (H200, bf16, ``benchmarks/gpu_throughput.py --sections layout``, BENCHMARKS.md):
``view`` made TimeSformer-B 8x224 1.08x faster at batch 32 (50k tokens a step), its training step
1.04x at batch 16, ViViT-B factorised self-attention 1.14x at batch 8 (25k), and TimeSformer-B
0.87x at batch 1 (1.6k tokens), where launches bound the time and three projections launch more
than one. ``torch.export`` takes ``permute``, so that no guard on the batch size enters the program.

LayerNorm and the ``qkv`` and ``proj`` linears act on each token alone, so they commute with any
regrouping of tokens: under ``view`` they run on ``[B, T*H*W, D]`` in the clip's order, with Q, K
and V from the three row blocks of ``qkv`` (``MultiHeadAttention.split_heads(separate=True)``), each
a contiguous ``[B, L, D]``. A grouping whose group is one run of consecutive axes of the
``(T, H, W)`` grid (``tube``, ``frame``, ``row``, ``column``; ``view_split``) is then a view: with
``[T*H*W] = [before, size, after]``, each group is one ``(before, after)`` index and its ``size``
tokens lie ``after * D`` apart, so

    x [B, heads, L, d] (a view of [B, L, heads, d])
      -> [B * before, size, after * heads, d] -> transpose -> [B * before, after * heads, size, d]

is a 4-D input of SDPA whose "head" axis holds heads and groups (tube: ``[B, H*W*heads, T, d]``).
SDPA's fused kernels take such strided inputs and write ``[N, Lq, heads, e]``, so the way back is
a view too. The head axis then holds up to ``H*W*heads`` sequences, which ``sdpa.attention`` cuts
into launchable chunks as it does ``N``. Only cores that treat the head axis as one more batch axis
(``groups_on_head_axis``; the softmax core) take these views.

Both layouts compute the same function (tests hold them to each other in float64, forward and
backward; on the GPU, TimeSformer-B's float32 logits at batch 8); their speeds are the measurement
above (benchmarks/NOTES.md, "Copy-free temporal layout").
"""

from __future__ import annotations

import math

import torch

from tubelet.layers.shape import VideoShape
from tubelet.switch import Switch

ATTENTION_LAYOUT = Switch("attention layout", ["auto", "permute", "view"], "auto")
VIEW_MIN_TOKENS = 8192  # auto: between batch 1's 1.6k tokens (permute faster) and 25k (view faster)


def uses_views(batch: int, length: int) -> bool:
    """Whether a step over ``batch`` sequences of ``length`` tokens lays out its groups as views now."""
    layout = ATTENTION_LAYOUT.get()
    if layout == "auto":
        return not torch.compiler.is_exporting() and batch * length >= VIEW_MIN_TOKENS
    return layout == "view"


def view_split(shape: VideoShape, factors: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """``(before, size, after)`` with ``[T*H*W] = [before, size, after]`` and the groups of blocks
    of ``factors`` tokens the ``size`` axis, or None when they are no such view (``window``)."""
    axes = []  # (extent, inside a group), in memory order: T/a, a, H/b, b, W/c, c
    for extent, factor in zip(shape, factors):
        axes += [(extent // factor, False), (factor, True)]
    axes = [(extent, inner) for extent, inner in axes if extent > 1]
    inner = [i for i, (_, is_inner) in enumerate(axes) if is_inner] or [len(axes)]
    start, stop = inner[0], inner[-1] + 1
    if stop - start != len(inner):
        return None
    extents = [extent for extent, _ in axes]
    return math.prod(extents[:start]), math.prod(extents[start:stop]), math.prod(extents[stop:])


def to_groups(x: torch.Tensor, split: tuple[int, int, int]) -> torch.Tensor:
    """``[B, heads, before*size*after, d] -> [B*before, after*heads, size, d]`` (a view when ``x``
    is a view of ``[B, L, heads, d]``; a copy otherwise)."""
    before, size, after = split
    batch, heads, _, d = x.shape
    return x.transpose(1, 2).reshape(batch * before, size, after * heads, d).transpose(1, 2)


def from_groups(out: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """Inverse of ``to_groups``: ``[B*before, after*heads, size, e] -> [B, heads, L, e]`` (a view of
    ``[B, L, heads, e]`` when ``out`` is one of ``[N, size, after*heads, e]``, as SDPA writes it)."""
    e = out.shape[-1]
    return out.transpose(1, 2).reshape(batch, -1, heads, e).transpose(1, 2)
