"""Softmax attention within groupings of the token grid: joint, space-only, sparse local-global,
axial and ViViT's factorised self-attention, each a sequence of ``AttentionStep`` s (one residual
sublayer per grouping, each with its own norm and weights).

Schemes (TimeSformer, Bertasius et al. 2021, Sec. 3 and Fig. 2; ViViT, Arnab et al. 2021, Sec. 3.3):
- ``joint``: one step over all ``T*H*W`` tokens (ViViT model 1, TimeSformer ST);
- ``space``: attention within each frame (TimeSformer S as a scheme of the joint backbone);
- ``local_global``: local attention in ``T x H/2 x W/2`` windows (``local_splits`` windows along
  T, H, W), then sparse global attention over the sub-grids of stride ``global_stride``
  (TimeSformer L+G);
- ``axial``: time, then width, then height (TimeSformer T+W+H);
- ``factorised_self``: space, then time (ViViT model 3, factorised self-attention).
"""

from __future__ import annotations

from tubelet.attention.grouping import Grouping
from tubelet.attention.registry import register_attention
from tubelet.attention.step import AttentionStep, GroupedAttention


def softmax_steps(dim: int, num_heads: int, groupings: list[Grouping], **step_args) -> GroupedAttention:
    """One softmax ``AttentionStep`` per grouping, in order."""
    return GroupedAttention([AttentionStep(dim, num_heads, grouping, **step_args) for grouping in groupings])


def _register_fixed(name: str, groupings: tuple[str, ...]) -> None:
    """A scheme whose groupings take no options."""

    def build(dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
              drop_path: float = 0.0, norm_eps: float = 1e-6) -> GroupedAttention:
        return softmax_steps(
            dim, num_heads, [Grouping(g) for g in groupings], qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=proj_drop, drop_path=drop_path, norm_eps=norm_eps,
        )

    build.__doc__ = f"Softmax attention within the groupings {groupings}, one residual step each."
    register_attention(name)(build)


for _name, _groupings in {
    "joint": ("joint",),
    "space": ("frame",),
    "axial": ("tube", "row", "column"),
    "factorised_self": ("frame", "tube"),
}.items():
    _register_fixed(_name, _groupings)


@register_attention("local_global")
def local_global(
    dim: int,
    num_heads: int,
    *,
    qkv_bias: bool = True,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
    drop_path: float = 0.0,
    norm_eps: float = 1e-6,
    local_splits: tuple[int, int, int] = (1, 2, 2),
    global_stride: tuple[int, int, int] = (2, 2, 2),
) -> GroupedAttention:
    """TimeSformer L+G: local windows (``local_splits`` along T, H, W), then the stride sub-grids."""
    groupings = [Grouping("window", splits=tuple(local_splits)), Grouping("stride", stride=tuple(global_stride))]
    return softmax_steps(
        dim, num_heads, groupings, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
        drop_path=drop_path, norm_eps=norm_eps,
    )
