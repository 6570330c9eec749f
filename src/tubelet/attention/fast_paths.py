"""The fast-path switches (issue 12), each a ``tubelet.switch.Switch``; every setting computes the
same function within the tolerance its tests state.

| switch | module | names |
| --- | --- | --- |
| ``SDPA_BACKEND`` | ``tubelet.attention.sdpa`` | auto, flash, cudnn, efficient, math |
| ``LINEAR_BACKEND`` | ``tubelet.attention.linear.functional`` | torch, triton |
| ``LAYER_NORM_BACKEND`` | ``tubelet.layers.norm`` | torch, triton |

``fast_paths(sdpa=..., linear=..., norm=...)`` sets them for a block and restores them after.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from tubelet.attention.linear.functional import LINEAR_BACKEND
from tubelet.attention.sdpa import SDPA_BACKEND
from tubelet.layers.norm import LAYER_NORM_BACKEND


@contextmanager
def fast_paths(*, sdpa: str | None = None, linear: str | None = None, norm: str | None = None) -> Iterator[None]:
    """Softmax attention's kernel, linear attention's and LayerNorm's backends for a block (None: unchanged)."""
    with SDPA_BACKEND.using(sdpa), LINEAR_BACKEND.using(linear), LAYER_NORM_BACKEND.using(norm):
        yield
