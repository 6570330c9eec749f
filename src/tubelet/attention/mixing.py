"""XViT's space-time mixing attention and the TSM-ViT baseline (Bulat et al., "Space-time Mixing
Attention for Video Transformer", NeurIPS 2021, Sec. 3.2-3.3 and supplement Eq. 1-3).

``xvit``: each query attends within its own frame, to keys and values whose channels are taken
from frames ``t - s .. t + s`` (``s = temporal_shift_size``, the paper's local temporal window
``t_w``): for each ``s`` a share ``1 / temporal_shift_div`` of the ``heads * d`` channels comes
from frame ``t + s`` and one from ``t - s``; the rest stay with frame ``t``. The cost is that of
spatial attention. The default share, 1/4 from each neighbour, is the official code's SSv2
configuration (``SHIFT_DIV: 4``); its Kinetics default is 1/8. ``summary=True`` adds the paper's
summary tokens: the mean of each frame's keys and values, appended to the keys and values of
every frame, so that each query also sees every frame in summary (Sec. 3.3, global
temporal-only attention).

``tsm``: TSM-ViT. The whole token stream is shifted in time before the attention step (``1 /
temporal_shift_div`` of the channels from ``t + 1``, as much from ``t - 1``; TSM's default is 1/8),
then spatial attention and the MLP run as in ViT (supplement Eq. 1-3).

Both shift every token on the grid and never prefix tokens; in the XViT models each frame's class
token is part of its frame (see ``tubelet.models.xvit``), so it is shifted too, as in the
official code.
"""

from __future__ import annotations

import torch

from tubelet.attention.grouping import Grouping
from tubelet.attention.registry import register_attention
from tubelet.attention.shift import ChannelShift
from tubelet.attention.step import AttentionStep, GroupedAttention
from tubelet.layers.shape import VideoShape


def temporal_mixing_shift(dim: int, size: int, div: int) -> ChannelShift:
    """The temporal shift of XViT / TSM over ``dim`` channels; a one-line ValueError naming the
    argument when the split cannot be made."""
    if size < 1:
        raise ValueError(f"temporal_shift_size must be >= 1, got {size}")
    if div < 1 or dim % div:
        raise ValueError(f"temporal_shift_div={div} does not divide the width {dim} into equal channel shares")
    if 2 * size * (dim // div) > dim:
        raise ValueError(
            f"temporal_shift_size={size} with temporal_shift_div={div} moves {2 * size} shares of 1/{div}: more than the width {dim}"
        )
    return ChannelShift("temporal", size, div)


def _check_window(shift: ChannelShift, shape: VideoShape) -> None:
    if 2 * shift.size + 1 > shape.t:
        raise ValueError(
            f"temporal_shift_size={shift.size} mixes a window of {2 * shift.size + 1} frames, wider than the clip's {shape.t}"
        )


@register_attention("xvit")
class SpaceTimeMixingAttention(GroupedAttention):
    """``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``: one step of frame attention over
    temporally shifted keys and values (+ summary tokens)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        temporal_shift_size: int = 1,
        temporal_shift_div: int = 4,
        summary: bool = False,
    ):
        mixing = temporal_mixing_shift(dim, temporal_shift_size, temporal_shift_div)
        super().__init__([
            AttentionStep(
                dim, num_heads, Grouping("frame"), qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                drop_path=drop_path, norm_eps=norm_eps, shifts=(mixing,), summary=summary,
            )
        ])
        self.mixing = mixing

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        _check_window(self.mixing, shape)
        return super().forward(x, shape)


@register_attention("tsm")
class TemporalShiftAttention(GroupedAttention):
    """TSM-ViT: ``x = SHIFT(x)`` (Eq. 1), then ``x + MSA(LN(x))`` within each frame (Eq. 2).
    ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        temporal_shift_div: int = 8,
    ):
        residual_shift = temporal_mixing_shift(dim, 1, temporal_shift_div)
        super().__init__([
            AttentionStep(
                dim, num_heads, Grouping("frame"), qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                drop_path=drop_path, norm_eps=norm_eps,
            )
        ])
        self.residual_shift = residual_shift

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        _check_window(self.residual_shift, shape)
        return super().forward(self.residual_shift(x, shape), shape)
