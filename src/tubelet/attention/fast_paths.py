"""The fast-path switches (issue 12), each a ``tubelet.switch.Switch``; every setting computes the
same function within the tolerance its tests state.

| switch | module | names |
| --- | --- | --- |
| ``SDPA_BACKEND`` | ``tubelet.attention.sdpa`` | auto, flash, cudnn, efficient, math, triton |
| ``SHORT_KEY_KERNEL`` | ``tubelet.attention.sdpa`` (what ``auto`` runs for short sequences on CUDA) | triton, efficient |
| ``LINEAR_BACKEND`` | ``tubelet.attention.linear.functional`` | torch, triton |
| ``LAYER_NORM_BACKEND`` | ``tubelet.layers.norm`` | auto, torch, triton |
| ``ATTENTION_LAYOUT`` | ``tubelet.attention.layout`` (groups of tokens as copies or views) | auto, permute, view |
| ``STEP_DOT_OPERANDS`` | ``tubelet.kernels.linear_step`` (the fused step kernel's dots) | tf32, bf16 |
| ``STEP_KEY_SPLIT`` | ``tubelet.kernels.linear_step`` (the fused step kernel's programs) | off, auto |
| ``CUDA_GRAPHS`` | ``tubelet.engine.graphs`` (evaluation and prediction replaying small batches) | auto, on, off |

``fast_paths(sdpa=..., linear=..., norm=..., layout=...)`` sets the first four for a block and
restores them after; the fused step kernel's two and ``CUDA_GRAPHS`` are set with their own ``using``
(``tubelet predict`` and ``tubelet eval`` take ``--cuda-graphs``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.attention.linear.functional import LINEAR_BACKEND
from tubelet.attention.sdpa import SDPA_BACKEND
from tubelet.layers.norm import LAYER_NORM_BACKEND


@contextmanager
def fast_paths(
    *, sdpa: str | None = None, linear: str | None = None, norm: str | None = None, layout: str | None = None
) -> Iterator[None]:
    """Softmax attention's kernel, linear attention's and LayerNorm's backends and the attention
    layout for a block (None: unchanged)."""
    with SDPA_BACKEND.using(sdpa), LINEAR_BACKEND.using(linear), LAYER_NORM_BACKEND.using(norm), ATTENTION_LAYOUT.using(layout):
        yield
