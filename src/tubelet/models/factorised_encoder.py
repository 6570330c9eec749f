"""ViViT model 2, the factorised encoder (Arnab et al. 2021, Sec. 3.3), and TimeSformer's
space-only model as its special case without a temporal encoder."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.layers.norm import LayerNorm
from tubelet.layers.patch_embed import PatchEmbed
from tubelet.layers.pos_embed import JointPosEmbed
from tubelet.layers.shape import VideoShape
from tubelet.models.base import VideoClassifier
from tubelet.models.blocks import drop_path_rates, make_blocks
from tubelet.models.heads import Prefix, make_head
from tubelet.models.video_transformer import as_pair

DROP_PATH_RAMPS = ("across", "per_encoder")


class FactorisedEncoder(VideoClassifier):
    """``[B, C, T, H, W] -> [B, num_classes]`` in two stages.

    1. Spatial encoder: each frame (or tubelet slice) on its own, ``[B*T', 1 + H'*W', D]`` with its
       own class token and a spatial positional table shared by all frames; ``depth`` blocks of
       joint attention within the frame; ``spatial_norm``; the class tokens ``[B, T', D]`` are the
       frames' summaries.
    2. Temporal encoder: ``temporal_depth`` blocks over the frame summaries with a temporal class
       token and a temporal positional table; ``norm``; the temporal class token is pooled.
       With ``temporal_depth=0`` an aggregation head over the frames takes its place
       (``tubelet.models.heads``; ``head=None`` is ``frame_mean``, averaging the summaries):
       TimeSformer's space-only model ("S"), which classifies each frame and averages.
    Stochastic depth rises linearly to ``drop_path_rate``: ``drop_path_ramp="across"`` over the
    ``depth + temporal_depth`` blocks as one stack, ``"per_encoder"`` from 0 in each encoder's
    first block to the rate in its last, as scenic's ViViT builds each ``Encoder``.
    """

    block_groups = ("blocks", "temporal_blocks")
    embedding_prefixes = ("patch_embed", "pos_embed", "cls_token", "temporal_pos_embed", "temporal_cls_token")

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 8,
        patch_size: int = 16,
        tubelet_size: int = 1,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        temporal_depth: int = 4,
        head: str | None = None,
        head_options: dict | None = None,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_ramp: str = "across",
        norm_eps: float = 1e-6,
        act: str = "gelu",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = depth + temporal_depth
        self.patch_embed = PatchEmbed(patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=embed_dim)
        self.grid = self.patch_embed.grid((num_frames, *as_pair(img_size)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = JointPosEmbed(VideoShape(1, self.grid.h, self.grid.w), embed_dim, num_prefix=1)
        self.pos_drop = nn.Dropout(drop_rate)
        if drop_path_ramp not in DROP_PATH_RAMPS:
            raise ValueError(f"unknown drop_path_ramp {drop_path_ramp!r}; expected one of {DROP_PATH_RAMPS}")
        if drop_path_ramp == "across":
            rates = drop_path_rates(self.num_layers, drop_path_rate)
        else:
            rates = drop_path_rates(depth, drop_path_rate) + drop_path_rates(temporal_depth, drop_path_rate)
        block_args = dict(
            dim=embed_dim, num_heads=num_heads, attention="joint", mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop=drop_rate, attn_drop=attn_drop_rate, norm_eps=norm_eps, act=act,
        )
        self.blocks = make_blocks(rates[:depth], **block_args)
        self.spatial_norm = LayerNorm(embed_dim, eps=norm_eps)
        self.temporal_blocks = make_blocks(rates[depth:], **block_args)
        if temporal_depth and head is not None:
            raise ValueError(f"head={head!r}: ViViT model 2 pools its temporal encoder's class token; head= applies with temporal_depth=0")
        self.pool = None if temporal_depth else make_head(
            head or "frame_mean", embed_dim, Prefix(class_token=False, frame_tokens=True), num_heads=num_heads, options=head_options,
        )
        if temporal_depth:
            self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.temporal_pos_embed = JointPosEmbed(VideoShape(self.grid.t, 1, 1), embed_dim, num_prefix=1)
            self.norm = LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        width = embed_dim if self.pool is None else self.pool.out_dim
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.initialise()

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, D]``."""
        x, shape = self.patch_embed(video)  # [B, T'*H'*W', D]
        batch, dim = x.shape[0], x.shape[-1]
        frame_shape = VideoShape(1, shape.h, shape.w)
        frames = x.reshape(batch * shape.t, shape.spatial, dim)  # [B*T', H'*W', D]
        frames = torch.cat([self.cls_token.expand(frames.shape[0], -1, -1), frames], dim=1)
        frames = self.pos_drop(self.pos_embed(frames, frame_shape))
        frames, _ = self.run_blocks(self.blocks, frames, frame_shape)
        if self.pool is not None:  # [B, T' + T'*H'*W', D]: the frames' class tokens, then their patches
            tokens = torch.cat([frames[:, 0].reshape(batch, shape.t, dim), frames[:, 1:].reshape(batch, -1, dim)], dim=1)
            return self.pool(tokens, shape, self.spatial_norm)
        summaries = self.spatial_norm(frames[:, 0]).reshape(batch, shape.t, dim)  # [B, T', D]
        time_shape = VideoShape(shape.t, 1, 1)
        seq = torch.cat([self.temporal_cls_token.expand(batch, -1, -1), summaries], dim=1)  # [B, 1 + T', D]
        seq, _ = self.run_blocks(self.temporal_blocks, self.temporal_pos_embed(seq, time_shape), time_shape)
        return self.norm(seq[:, 0])
