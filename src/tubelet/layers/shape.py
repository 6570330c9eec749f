"""The token grid of a video."""

from __future__ import annotations

from typing import NamedTuple

import torch


class VideoShape(NamedTuple):
    """Size of the patch-token grid: ``t`` temporal positions, ``h`` x ``w`` spatial ones.

    Tokens are stored time-major, ``[B, P + t*h*w, D]``: P prefix tokens (the class token) first,
    then patch tokens in ``(t, h, w)`` order, so that one frame's tokens are contiguous.
    """

    t: int
    h: int
    w: int

    @property
    def num_patches(self) -> int:
        return self.t * self.h * self.w

    @property
    def spatial(self) -> int:
        return self.h * self.w

    def num_prefix(self, num_tokens: int) -> int:
        """Prefix tokens in a sequence of ``num_tokens`` tokens on this grid."""
        prefix = num_tokens - self.num_patches
        if prefix < 0:
            raise ValueError(f"{num_tokens} tokens cannot hold a {self.t}x{self.h}x{self.w} grid")
        return prefix


def split_prefix(x: torch.Tensor, prefix: int, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x[..., :prefix, ...], x[..., prefix:, ...])`` along ``dim``, both views, as one ``split``.

    The same values as two slices, and under autograd cheaper: each slice's backward fills a
    zero tensor of ``x``'s whole size and copies its gradient into it, and the two are added,
    while a split's backward concatenates the pieces' gradients once (zeros only for a piece that
    gets none, such as the prefix of queries that only the patches use)."""
    return x.split([prefix, x.shape[dim] - prefix], dim=dim)
