"""MViTv2, the improved multiscale vision transformer (Li et al., CVPR 2022), for video.

A strided, overlapping 3D convolution embeds the clip (``3 x 7 x 7``, stride ``2 x 4 x 4``: a
16 x 224 x 224 clip becomes an 8 x 56 x 56 token grid); a class token is prepended; then stages
of ``MultiscaleBlock``s, each stage wider than the one before and on a coarser grid (MViT,
Fan et al. 2021, Sec. 3.2). The first block of a stage pools ``Q`` by the stage's
stride (which shrinks the grid for the rest of the network), changes the width in its attention
(as MViTv2 does; PySlowFast's ``DIM_MUL_IN_ATT``) and max-pools and projects its skip connection to match.
Keys and values are pooled everywhere, by ``kv_stride`` in the first block and by that stride
divided by the grid reduction so far afterwards (PySlowFast's "adaptive" KV stride), so that
every block attends to about the same number of keys. The class token, normalised, feeds the head.

Sizes (K400, "GFLOPs" in the paper are multiply-accumulates):

| model | stages (blocks x width, heads) | frames x size | params | GMACs |
| --- | --- | --- | --- | --- |
| ``mvitv2_small_16x224`` (MViTv2-S, torchvision ``mvit_v2_s``) | 1x96 h1, 2x192 h2, 11x384 h4, 2x768 h8 | 16 x 224 | 34.5M | 64 |
| ``mvitv2_base_32x224`` (MViTv2-B 32x3) | 2x96 h1, 3x192 h2, 16x384 h4, 3x768 h8 | 32 x 224 | 51.2M | 225 |

Weights of torchvision's ``mvit_v2_s`` and of PySlowFast's MViTv2 checkpoints convert exactly
(``tubelet.convert.torchvision_mvit``, ``tubelet.convert.slowfast_mvit``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from torch import nn

from tubelet.attention.pooling import Factors, PoolingAttention, pool_tokens, pooled_shape
from tubelet.layers.drop_path import DropPath
from tubelet.layers.mlp import Mlp
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape
from tubelet.models.base import VideoClassifier
from tubelet.models.blocks import drop_path_rates
from tubelet.models.registry import register_model
from tubelet.models.video_transformer import as_pair
from tubelet.suggest import check_keys


@dataclass(frozen=True)
class MViTStage:
    """``depth`` blocks of width ``dim`` with ``num_heads`` heads; the first block pools ``Q``
    (and the skip connection) by ``stride`` over ``(t, h, w)``."""

    depth: int
    dim: int
    num_heads: int
    stride: Factors = (1, 2, 2)

    def __post_init__(self):
        object.__setattr__(self, "stride", tuple(self.stride))
        if self.depth < 1 or self.dim % self.num_heads or len(self.stride) != 3:
            raise ValueError(f"{self}: needs depth >= 1, dim divisible by num_heads and a (t, h, w) stride")

    @classmethod
    def parse(cls, value: MViTStage | Mapping) -> MViTStage:
        """A stage from itself or from a mapping of its fields (recipes, saved configs)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"an MViT stage is a mapping of {[f.name for f in fields(cls)]}, got {value!r}")
        check_keys(value, [f.name for f in fields(cls)], "MViT stage has no field")
        return cls(**value)


@dataclass(frozen=True)
class BlockPlan:
    """One block of the network as the stages lay it out."""

    dim: int
    dim_out: int
    num_heads: int
    stride_q: Factors
    stride_kv: Factors
    grid: VideoShape  # the block's input token grid at the constructed input


def plan_blocks(stages: list[MViTStage], grid: VideoShape, kv_stride: Factors, kernel: Factors) -> list[BlockPlan]:
    """Every block's widths, heads, strides and input grid; the KV stride of each block is
    ``kv_stride`` divided by the ``Q`` strides so far (at least 1)."""
    plans, dim, kv = [], stages[0].dim, tuple(kv_stride)
    for stage in stages:
        for index in range(stage.depth):
            stride_q = stage.stride if index == 0 else (1, 1, 1)
            kv = tuple(max(s // q, 1) for s, q in zip(kv, stride_q))
            plans.append(BlockPlan(dim, stage.dim, stage.num_heads, stride_q, kv, grid))
            grid = pooled_shape(grid, kernel, stride_q)
            dim = stage.dim
    return plans


class MultiscaleBlock(nn.Module):
    """MViTv2 block (Li et al. 2022, Sec. 4): ``([B, P + T*H*W, dim], shape) ->
    ([B, P + T'*H'*W', dim_out], shape')``.

        h = norm1(x)
        x = pool_skip(proj(h) if dim != dim_out else x) + drop_path(attn(h))
        x = x + drop_path(mlp(norm2(x)))

    The skip connection is max-pooled (kernel ``s + 1`` where the stride ``s > 1``) to the grid of
    the pooled queries.
    """

    def __init__(
        self,
        plan: BlockPlan,
        *,
        kernel: Factors,
        mode: str,
        mlp_ratio: float,
        qkv_bias: bool,
        rel_pos: bool,
        residual_pool: bool,
        attn_drop: float,
        drop_path: float,
        norm_eps: float,
    ):
        super().__init__()
        self.norm1 = LayerNorm(plan.dim, eps=norm_eps)
        self.attn = PoolingAttention(
            plan.dim, plan.dim_out, plan.num_heads, input_grid=plan.grid, kernel_q=kernel, stride_q=plan.stride_q,
            kernel_kv=kernel, stride_kv=plan.stride_kv, mode=mode, qkv_bias=qkv_bias, rel_pos=rel_pos,
            residual_pool=residual_pool, attn_drop=attn_drop, norm_eps=norm_eps,
        )
        self.proj = nn.Linear(plan.dim, plan.dim_out) if plan.dim != plan.dim_out else None
        self.stride_skip = plan.stride_q if math.prod(plan.stride_q) > 1 else None
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(plan.dim_out, eps=norm_eps)
        self.mlp = Mlp(plan.dim_out, int(plan.dim_out * mlp_ratio))

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        h = self.norm1(x)
        attended, new_shape = self.attn(h, shape)
        skip = self.proj(h) if self.proj is not None else x
        if self.stride_skip is not None:
            kernel = tuple(s + 1 if s > 1 else s for s in self.stride_skip)
            skip, _ = pool_tokens(skip, shape, shape.num_prefix(x.shape[1]), "max", kernel, self.stride_skip)
        x = skip + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x))), new_shape


class ConvPatchEmbed(nn.Module):
    """Overlapping 3D convolution stem: ``[B, C, T, H, W] -> ([B, T'*H'*W', D], (T', H', W'))``."""

    def __init__(self, in_chans: int, dim: int, kernel: Factors, stride: Factors, padding: Factors):
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)

    def grid(self, frames: int, height: int, width: int) -> VideoShape:
        conv = self.proj
        sizes = (frames, height, width)
        return VideoShape(*((n + 2 * p - k) // s + 1 for n, k, s, p in zip(sizes, conv.kernel_size, conv.stride, conv.padding)))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, VideoShape]:
        if video.ndim != 5 or video.shape[1] != self.in_chans:
            raise ValueError(f"expected a video of shape [B, {self.in_chans}, T, H, W], got {list(video.shape)}")
        x = self.proj(video)  # [B, D, T', H', W']
        return x.flatten(2).transpose(1, 2), VideoShape(*x.shape[2:])


class MViT(VideoClassifier):
    """``[B, C, T, H, W] -> [B, num_classes]``: MViTv2 (see the module docstring).

    ``stages``: ``MViTStage``s or mappings of their fields. ``pool_kernel`` is the Q/K/V pooling
    kernel of every block, ``pool_mode`` ``"conv"`` (MViTv2), ``"max"`` or ``"avg"``;
    ``kv_stride`` the KV pooling stride of the first block. ``drop_rate`` is the dropout before
    the classifier (0.5 in the papers), ``attn_drop_rate`` the dropout on attention weights.
    ``rel_pos`` and ``residual_pool`` switch MViTv2's two changes to the attention (its ablations).
    Frames and sizes must be divisible by the strides of the stem and every pooling
    (``fit_multiples``); relative-position tables are interpolated for other inputs.
    """

    embedding_prefixes = ("patch_embed", "cls_token")

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        in_chans: int = 3,
        num_classes: int = 400,
        stages: list[MViTStage | dict] | None = None,
        patch_kernel: tuple[int, int, int] = (3, 7, 7),
        patch_stride: tuple[int, int, int] = (2, 4, 4),
        patch_padding: tuple[int, int, int] = (1, 3, 3),
        pool_kernel: tuple[int, int, int] = (3, 3, 3),
        pool_mode: str = "conv",
        kv_stride: tuple[int, int, int] = (1, 8, 8),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        rel_pos: bool = True,
        residual_pool: bool = True,
        drop_rate: float = 0.5,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if not stages:
            raise ValueError("MViT needs at least one stage")
        self.stages = [MViTStage.parse(stage) for stage in stages]
        self.num_classes = num_classes
        self.patch_embed = ConvPatchEmbed(in_chans, self.stages[0].dim, patch_kernel, patch_stride, patch_padding)
        self.pool_kernel = tuple(pool_kernel)
        self.kv_stride = tuple(kv_stride)
        self.multiples = self.fit_multiples()
        self.grid = self.check_fits(num_frames, *as_pair(img_size))
        self.plans = plan_blocks(self.stages, self.grid, self.kv_stride, self.pool_kernel)
        self.num_layers = len(self.plans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.stages[0].dim))
        self.blocks = nn.ModuleList(
            MultiscaleBlock(
                plan, kernel=self.pool_kernel, mode=pool_mode, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, rel_pos=rel_pos,
                residual_pool=residual_pool, attn_drop=attn_drop_rate, drop_path=rate, norm_eps=norm_eps,
            )
            for plan, rate in zip(self.plans, drop_path_rates(self.num_layers, drop_path_rate))
        )
        width = self.stages[-1].dim
        self.norm = LayerNorm(width, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.initialise()

    def fit_multiples(self) -> tuple[int, int]:
        """``(frames, pixels)``: inputs must be multiples of these, so that the stem and every
        pooling of the stages divide their grids exactly."""
        plans = plan_blocks(self.stages, VideoShape(1, 1, 1), self.kv_stride, (1, 1, 1))
        multiples, reduced = [1, 1, 1], [1, 1, 1]
        for plan in plans:
            for axis in range(3):
                need = reduced[axis] * math.lcm(plan.stride_q[axis], plan.stride_kv[axis])
                multiples[axis] = math.lcm(multiples[axis], need)
                reduced[axis] *= plan.stride_q[axis]
        stride = self.patch_embed.proj.stride
        return stride[0] * multiples[0], math.lcm(stride[1] * multiples[1], stride[2] * multiples[2])

    def check_fits(self, frames: int, height: int, width: int) -> VideoShape:
        """The token grid of a ``frames x height x width`` clip, or a ValueError saying what does not fit."""
        frame_multiple, pixel_multiple = self.multiples
        if frames % frame_multiple or height % pixel_multiple or width % pixel_multiple:
            raise ValueError(
                f"a {frames}x{height}x{width} clip does not fit this MViT's strides: frames must be a multiple "
                f"of {frame_multiple} and height and width multiples of {pixel_multiple}"
            )
        return self.patch_embed.grid(frames, height, width)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, D]``: the normalised class token after the last stage."""
        if video.ndim == 5:
            self.check_fits(*video.shape[2:])
        x, shape = self.patch_embed(video)  # [B, T'*H'*W', D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x, shape = self.run_blocks(self.blocks, x, shape)
        return self.norm(x[:, 0])


def _stages(*rows: tuple[int, int, int]) -> list[dict]:
    """``(depth, dim, num_heads)`` per stage; the first keeps the grid, the others halve H and W."""
    return [dict(depth=d, dim=c, num_heads=n, stride=(1, 1, 1) if i == 0 else (1, 2, 2)) for i, (d, c, n) in enumerate(rows)]


register_model("mvitv2_small_16x224", MViT, num_frames=16, img_size=224, stages=_stages((1, 96, 1), (2, 192, 2), (11, 384, 4), (2, 768, 8)))
register_model(
    "mvitv2_base_32x224", MViT, num_frames=32, img_size=224, drop_path_rate=0.3,
    stages=_stages((2, 96, 1), (3, 192, 2), (16, 384, 4), (3, 768, 8)),
)
register_model("mvitv2_tiny_8x32", MViT, num_frames=8, img_size=32, kv_stride=(1, 4, 4), stages=_stages((1, 16, 1), (1, 32, 2), (1, 64, 4)))
