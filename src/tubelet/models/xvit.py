"""XViT (Bulat et al., "Space-time Mixing Attention for Video Transformer", NeurIPS 2021) and the
TSM-ViT baseline of its supplement (Table 2): a ViT run over every frame, with one class token
per frame, whose blocks exchange information across frames only through channel shifts.

- ``xvit_*``: space-time mixing attention in every block (``attention="xvit"``: frame attention
  over keys and values with 1/4 of the channels from frame t-1 and 1/4 from t+1, the official
  SSv2 configuration), temporal attention aggregation head (``head="taa"``);
- ``tsm_vit_*``: the token stream shifted in time before each block (``attention="tsm"``, 1/8 of
  the channels each way, TSM's default), then ViT's spatial attention; temporal average pooling
  (``head="frame_mean"``, as TSM proposes). The supplement's Table 2 rows are the four
  combinations ``attention`` in {``xvit``, ``tsm``} x ``head`` in {``frame_mean``, ``taa``}.

Layout (as the official code): frame ``t``'s tokens are ``[cls_t, patches of t]``; every class
token starts from the same learned vector; the spatial table covers ``1 + H*W`` rows and a
temporal table is added to every token of a frame. In the blocks the grid is ``(T, 1, 1 + H*W)``:
each frame's class token is one of its frame's tokens, so it attends within its frame and is
shifted in time with the patches, as in the official code. The heads then see the per-frame class
tokens as the prefix (``tubelet.models.heads``, ``frame_tokens``).
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.layers.norm import LayerNorm
from tubelet.layers.patch_embed import PatchEmbed
from tubelet.layers.pos_embed import FramePosEmbed
from tubelet.layers.shape import VideoShape
from tubelet.models.base import VideoClassifier
from tubelet.models.blocks import drop_path_rates, make_blocks
from tubelet.models.heads import Prefix, make_head
from tubelet.models.registry import register_model
from tubelet.models.video_transformer import as_pair


class FrameTokenTransformer(VideoClassifier):
    """``[B, C, T, H, W] -> [B, num_classes]``: patch embedding -> a class token per frame ->
    ``FramePosEmbed`` -> ``depth`` blocks of ``attention`` + MLP over the grid ``(T, 1, 1 + H*W)``
    -> the aggregation head ``head`` (applying ``norm``) -> dropout -> ``head`` Linear."""

    embedding_prefixes = ("patch_embed", "pos_embed", "cls_token")

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 8,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attention: str = "xvit",
        attention_options: dict | None = None,
        head: str = "taa",
        head_options: dict | None = None,
        norm_eps: float = 1e-6,
        act: str = "gelu",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = depth
        self.patch_embed = PatchEmbed(patch_size=patch_size, tubelet_size=1, in_chans=in_chans, embed_dim=embed_dim)
        self.grid = self.patch_embed.grid((num_frames, *as_pair(img_size)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))
        self.pos_embed = FramePosEmbed(self.grid, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = make_blocks(
            drop_path_rates(depth, drop_path_rate), dim=embed_dim, num_heads=num_heads, attention=attention,
            attention_options=attention_options, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
            attn_drop=attn_drop_rate, norm_eps=norm_eps, act=act,
        )
        self.norm = LayerNorm(embed_dim, eps=norm_eps)
        self.pool = make_head(head, embed_dim, Prefix(class_token=False, frame_tokens=True), num_heads=num_heads, options=head_options)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.pool.out_dim, num_classes) if num_classes else nn.Identity()
        self.initialise()

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, D']``."""
        x, shape = self.patch_embed(video)  # [B, T*H*W, D]
        batch, dim = x.shape[0], x.shape[-1]
        frames = x.reshape(batch, shape.t, shape.spatial, dim)
        tokens = torch.cat([self.cls_token.expand(batch, shape.t, -1, -1), frames], dim=2).reshape(batch, -1, dim)  # [B, T*(1+H*W), D]
        tokens = self.pos_drop(self.pos_embed(tokens, shape))
        tokens, _ = self.run_blocks(self.blocks, tokens, VideoShape(shape.t, 1, 1 + shape.spatial))
        tokens = tokens.reshape(batch, shape.t, 1 + shape.spatial, dim)
        standard = torch.cat([tokens[:, :, 0], tokens[:, :, 1:].reshape(batch, -1, dim)], dim=1)  # [B, T + T*H*W, D]
        return self.pool(standard, shape, self.norm)


BASE = dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224)
TINY = dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, img_size=32, num_frames=8)
XVIT = dict(attention="xvit", head="taa")
TSM_VIT = dict(attention="tsm", head="frame_mean")

for frames in (8, 16):
    register_model(f"xvit_base_p16_{frames}x224", FrameTokenTransformer, num_frames=frames, **XVIT, **BASE)
register_model("tsm_vit_base_p16_8x224", FrameTokenTransformer, num_frames=8, **TSM_VIT, **BASE)
register_model("xvit_tiny_p8_8x32", FrameTokenTransformer, **XVIT, **TINY)
register_model("tsm_vit_tiny_p8_8x32", FrameTokenTransformer, **TSM_VIT, **TINY)
