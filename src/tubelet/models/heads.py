"""Aggregation heads: how a backbone's final tokens become one feature vector per video, chosen
by name (``head=`` of the models, ``model.head`` in recipes) from ``HEADS``.

Every head reads the standard token layout ``x [B, P + T*H*W, D]`` with its grid ``shape`` and
the backbone's final LayerNorm ``norm``, and returns ``[B, out_dim]`` for the classifier. A
backbone says at construction what its prefix holds: one class token for the clip
(``class_token``), none, or one class token per frame (``frame_tokens``: then ``P = T`` and
token ``t`` belongs to frame ``t``, as in XViT and TimeSformer's space-only model).

| name | feature | paper |
| --- | --- | --- |
| ``cls`` | the clip's class token, normalised | ViT, TimeSformer, ViViT 1 |
| ``mean`` | the mean of the patch tokens, normalised (VideoMAE's ``fc_norm``) | ViViT 3-4, VideoMAE, LVT |
| ``frame_mean`` | the temporal average of the normalised per-frame features | TSN / TSM consensus |
| ``frame_mean_norm`` | the temporal average of the per-frame features, then normalised | TimeSformer's official space-only code |
| ``norm_mean`` | the mean of the normalised patch tokens | scenic's ViViT 1-4 (``encoder_norm``, then global average pooling) |
| ``norm_mean_mlp`` | ``norm_mean``, then LayerNorm -> Linear -> GELU | the official LVT code (``VVTHead``) |
| ``taa`` | temporal attention aggregation over the per-frame features | XViT (Bulat et al. 2021, Sec. 3.3) |

``mean`` and ``norm_mean``, like ``frame_mean`` and ``frame_mean_norm``, are one pool with averaging
and normalising in the two orders; LayerNorm is not linear, so their features differ. The papers
do not say which; the official codes use the forms the table names, and the converters of those
codes build them.

Per-frame features are the frames' class tokens where the backbone has them, otherwise the mean
of each frame's patch tokens. XViT's other global mechanism, the summary token, acts inside the
attention layers, not on the final tokens: it is the ``summary`` option of ``attention="xvit"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape
from tubelet.models.blocks import make_blocks
from tubelet.suggest import check_keys, did_you_mean


@dataclass(frozen=True)
class Prefix:
    """What a backbone's prefix tokens are: a clip class token, per-frame class tokens, or none."""

    class_token: bool
    frame_tokens: bool = False


def frame_features(x: torch.Tensor, shape: VideoShape, norm: nn.Module, prefix: Prefix) -> torch.Tensor:
    """``[B, P + T*H*W, D] -> [B, T, D]``: normalised per-frame features."""
    if prefix.frame_tokens:
        return norm(x[:, : shape.t])
    patches = x[:, shape.num_prefix(x.shape[1]) :]
    return norm(patches.reshape(x.shape[0], shape.t, shape.spatial, x.shape[-1]).mean(dim=2))


class ClassTokenHead(nn.Module):
    """The clip's class token, normalised."""

    def __init__(self, dim: int, prefix: Prefix):
        super().__init__()
        if prefix.frame_tokens:
            raise ValueError("head='cls' reads the clip's class token; this backbone has one per frame: use 'frame_mean' or 'taa'")
        if not prefix.class_token:
            raise ValueError("head='cls' needs class_token=True; use head='mean' without a class token")
        self.out_dim = dim

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return norm(x[:, 0])


class PatchMeanHead(nn.Module):
    """The mean of the patch tokens, normalised."""

    def __init__(self, dim: int, prefix: Prefix):
        super().__init__()
        self.out_dim = dim

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return norm(x[:, shape.num_prefix(x.shape[1]) :].mean(dim=1))


class FrameMeanHead(nn.Module):
    """Temporal average pooling of the normalised per-frame features: averaging per-frame
    predictions (TSN, TSM), since the classifier is linear."""

    def __init__(self, dim: int, prefix: Prefix):
        super().__init__()
        self.prefix = prefix
        self.out_dim = dim

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return frame_features(x, shape, norm, self.prefix).mean(dim=1)


class FrameMeanNormHead(nn.Module):
    """The per-frame features averaged over time, then normalised: TimeSformer's official
    space-only model averages every token over the frames, normalises, and reads the class token."""

    def __init__(self, dim: int, prefix: Prefix):
        super().__init__()
        self.prefix = prefix
        self.out_dim = dim

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return norm(frame_features(x, shape, nn.Identity(), self.prefix).mean(dim=1))


class NormMeanHead(nn.Module):
    """The mean of the normalised patch tokens (scenic: ``encoder_norm`` on every token, then
    global average pooling)."""

    def __init__(self, dim: int, prefix: Prefix):
        super().__init__()
        self.out_dim = dim

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return norm(x[:, shape.num_prefix(x.shape[1]) :]).mean(dim=1)


class NormMeanMlpHead(NormMeanHead):
    """The official LVT head: ``norm_mean``, then ``LayerNorm`` (eps 1e-5) -> ``Linear(D,
    mlp_dim)`` -> GELU; the model's dropout and classifier follow (``VVTHead``'s last two layers)."""

    def __init__(self, dim: int, prefix: Prefix, *, mlp_dim: int | None = None):
        super().__init__(dim, prefix)
        self.out_dim = dim if mlp_dim is None else mlp_dim
        self.mlp_norm = LayerNorm(dim)
        self.fc = nn.Linear(dim, self.out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        return self.act(self.fc(self.mlp_norm(super().forward(x, shape, norm))))


class TemporalAttentionAggregation(nn.Module):
    """XViT's temporal attention aggregation: a light transformer over the per-frame features.

    ``[cls, f_1 .. f_T]`` -> ``depth`` blocks of joint attention (no positional table: the
    frames' features carry the backbone's temporal embedding) -> ``LayerNorm(cls)`` -> ``Linear(D,
    mlp_dim)`` -> GELU; the model's dropout and classifier follow. As in the official code's
    ``VitHead``: one block of ``num_heads`` heads without q/k/v bias, LayerNorm eps 1e-5,
    ``mlp_dim = D``.
    """

    def __init__(self, dim: int, prefix: Prefix, *, num_heads: int, depth: int = 1, mlp_dim: int | None = None,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"temporal attention aggregation needs depth >= 1, got {depth}")
        self.prefix = prefix
        self.out_dim = dim if mlp_dim is None else mlp_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = make_blocks(
            [drop_path] * depth, dim=dim, num_heads=num_heads, attention="joint", mlp_ratio=mlp_ratio,
            qkv_bias=False, drop=drop, attn_drop=attn_drop, norm_eps=1e-5,
        )
        self.norm = LayerNorm(dim)
        self.fc = nn.Linear(dim, self.out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, shape: VideoShape, norm: nn.Module) -> torch.Tensor:
        frames = frame_features(x, shape, norm, self.prefix)  # [B, T, D]
        seq = torch.cat([self.cls_token.expand(frames.shape[0], -1, -1), frames], dim=1)  # [B, 1 + T, D]
        time_shape = VideoShape(shape.t, 1, 1)
        for block in self.blocks:
            seq, _ = block(seq, time_shape)
        return self.act(self.fc(self.norm(seq[:, 0])))


HEADS = {
    "cls": ClassTokenHead, "mean": PatchMeanHead, "frame_mean": FrameMeanHead, "frame_mean_norm": FrameMeanNormHead,
    "norm_mean": NormMeanHead, "norm_mean_mlp": NormMeanMlpHead, "taa": TemporalAttentionAggregation,
}
HEAD_OPTIONS = {"taa": ("depth", "mlp_dim", "mlp_ratio", "drop", "attn_drop", "drop_path"), "norm_mean_mlp": ("mlp_dim",)}


def make_head(name: str, dim: int, prefix: Prefix, *, num_heads: int, options: dict | None = None) -> nn.Module:
    """The head ``name`` for a ``dim``-wide backbone whose prefix is ``prefix``; ``options``
    (``head_options``) are checked against the head's own."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}{did_you_mean(name, HEADS)} (known: {', '.join(HEADS)})")
    options = dict(options or {})
    check_keys(options, list(HEAD_OPTIONS.get(name, ())), f"head {name!r} has no option")
    if name == "taa":
        return TemporalAttentionAggregation(dim, prefix, num_heads=num_heads, **options)
    return HEADS[name](dim, prefix, **options)
