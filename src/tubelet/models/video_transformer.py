"""The one backbone: ViT over space-time tokens with a swappable attention scheme.

TimeSformer (all its schemes), ViViT models 1, 3 and 4, VideoMAE's fine-tuned classifier and the
linear video transformers are this module with different arguments.
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.layers.norm import LayerNorm
from tubelet.layers.patch_embed import PatchEmbed
from tubelet.layers.pos_embed import make_pos_embed
from tubelet.layers.shape import VideoShape
from tubelet.models.base import VideoClassifier
from tubelet.models.blocks import drop_path_rates, make_blocks
from tubelet.models.heads import Prefix, make_head


def as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


class VideoTransformer(VideoClassifier):
    """``[B, C, T, H, W] -> [B, num_classes]``.

    patch or tubelet embedding -> (class token) -> positional embedding -> ``depth`` blocks of
    ``attention`` + MLP -> the aggregation head named by ``head`` (``tubelet.models.heads``: ``cls``
    the class token, ``mean`` the average of the patch tokens, ``frame_mean``, ``taa``; it applies
    ``norm``) -> dropout -> ``head`` Linear. Normalising after pooling equals the usual final
    LayerNorm for the class token and is VideoMAE's ``fc_norm`` for the mean.
    ``head_norm_eps`` is that norm's eps when it differs from the blocks' ``norm_eps`` (Hugging
    Face's VideoMAE: 1e-12 in the blocks, LayerNorm's default 1e-5 in ``fc_norm``).
    Inputs of other frame counts or sizes than constructed get resized positional embeddings.
    ``patch_stride`` / ``patch_norm``: overlapping patches and a LayerNorm after the embedding
    (``tubelet.layers.patch_embed``); ``mlp``: the blocks' feed-forward sublayer
    (``tubelet.layers.mlp.MLPS``); ``pos_embed``: ``separate``, ``temporal``, ``joint``, ``sincos``.
    """

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int] = 224,
        num_frames: int = 8,
        patch_size: int = 16,
        tubelet_size: int = 1,
        patch_stride: int | None = None,
        patch_norm: bool = False,
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
        attention: str = "divided",
        attention_options: dict | None = None,
        pos_embed: str = "separate",
        class_token: bool = True,
        head: str = "cls",
        head_options: dict | None = None,
        norm_eps: float = 1e-6,
        head_norm_eps: float | None = None,
        act: str = "gelu",
        mlp: str = "plain",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = depth
        self.patch_embed = PatchEmbed(patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=embed_dim,
                                      stride=patch_stride, norm=patch_norm)
        self.grid = self.patch_embed.grid((num_frames, *as_pair(img_size)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        num_prefix = 1 if class_token else 0
        self.pos_embed = make_pos_embed(pos_embed, self.grid, embed_dim, num_prefix)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = make_blocks(
            drop_path_rates(depth, drop_path_rate), dim=embed_dim, num_heads=num_heads, attention=attention,
            attention_options=attention_options, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
            attn_drop=attn_drop_rate, norm_eps=norm_eps, act=act, mlp=mlp,
        )
        self.norm = LayerNorm(embed_dim, eps=norm_eps if head_norm_eps is None else head_norm_eps)
        self.pool = make_head(head, embed_dim, Prefix(class_token), num_heads=num_heads, options=head_options)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.pool.out_dim, num_classes) if num_classes else nn.Identity()
        self.initialise()

    def tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, VideoShape]:
        """Embedded tokens ``[B, P + T'*H'*W', D]`` before the blocks, and their grid."""
        x, shape = self.patch_embed(video)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(self.pos_embed(x, shape)), shape

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, D]``: pooled, normalised features."""
        x, shape = self.run_blocks(self.blocks, *self.tokens(video))
        return self.pool(x, shape, self.norm)
