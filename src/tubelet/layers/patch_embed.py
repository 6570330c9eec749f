"""Turning a video into patch tokens: per-frame 2D patches or 3D tubelets (ViViT, Sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.kernels.dtypes import autocast_matmul_dtype
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape

TUBELET_INITS = ("central_frame", "average")


def inflate_patch_weight(weight_2d: torch.Tensor, depth: int, method: str = "central_frame") -> torch.Tensor:
    """Turn a 2D patch filter ``[D, C, P, P]`` into a tubelet filter ``[D, C, depth, P, P]``.

    ViViT (Arnab et al., 2021, Sec. 3.4): "average" replicates the filter over time and divides it by
    ``depth`` (the I3D inflation, same response on a static clip); "central_frame" puts the filter at
    the central temporal position and zeros elsewhere, so at initialisation the model sees each
    tubelet's central frame exactly like the image model did.
    """
    if method not in TUBELET_INITS:
        raise ValueError(f"unknown tubelet initialisation {method!r}; expected one of {TUBELET_INITS}")
    if method == "average":
        return weight_2d.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    inflated = weight_2d.new_zeros(weight_2d.shape[:2] + (depth,) + weight_2d.shape[2:])
    inflated[:, :, depth // 2] = weight_2d
    return inflated


class PatchEmbed(nn.Module):
    """Linear embedding of ``tubelet_size x patch_size x patch_size`` tubelets.

    ``tubelet_size=1`` is the per-frame 2D patch embedding of TimeSformer and ViT; larger values are
    ViViT's tubelet embedding. ``[B, C, T, H, W] -> ([B, T' * H' * W', D], VideoShape(T', H', W'))``
    with ``T' = T / tubelet_size``; tokens are time-major.

    ``stride=None``: patches do not overlap, ``H' = H / patch_size``. A ``stride`` below the patch
    size gives overlapping patches padded by ``patch_size // 2``, ``H' = (H + 2 * (patch_size // 2)
    - patch_size) // stride + 1`` (the LVT code: 16 px patches every 14 px, 17 x 17 = 289 tokens a
    frame at 224 px). ``norm=True`` adds a LayerNorm (eps 1e-5) over the embedded tokens, as the
    LVT code's ``OverlapPatchEmbed`` does.

    The filter is the weight of ``proj``, an ``nn.Conv3d`` (the layout of every checkpoint). Without
    overlap the convolution is one matrix product of the tubelets, each a row of ``C * t * p * p``
    values, with the flattened filter: tokens come out in their order with no transposing copy, and
    the product runs at the GPU's matmul rate, where cuDNN's 3D convolution took 2.35 ms of
    TimeSformer-B's 37.8 ms at batch 32 (H200, BENCHMARKS.md).
    """

    def __init__(self, *, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int, stride: int | None = None,
                 norm: bool = False):
        super().__init__()
        if stride is not None and not 0 < stride <= patch_size:
            raise ValueError(f"patch stride {stride} must be between 1 and the patch size {patch_size}")
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.stride = stride
        self.padding = 0 if stride is None else patch_size // 2
        kernel = (tubelet_size, patch_size, patch_size)
        step = kernel if stride is None else (tubelet_size, stride, stride)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=step, padding=(0, self.padding, self.padding))
        if norm:
            self.norm = LayerNorm(embed_dim)

    def grid(self, video_size: tuple[int, int, int]) -> VideoShape:
        """The token grid for a ``(T, H, W)`` input, or a ValueError saying which size does not fit."""
        t, h, w = video_size
        if t % self.tubelet_size:
            raise ValueError(f"{t} frames are not divisible by the tubelet depth {self.tubelet_size}")
        if self.stride is not None:
            return VideoShape(t // self.tubelet_size, *((size + 2 * self.padding - self.patch_size) // self.stride + 1 for size in (h, w)))
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"resolution {h}x{w} is not divisible by the patch size {self.patch_size}")
        return VideoShape(t // self.tubelet_size, h // self.patch_size, w // self.patch_size)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, VideoShape]:
        if video.ndim != 5 or video.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a video of shape [B, {self.in_chans}, T, H, W], got {list(video.shape)}"
            )
        shape = self.grid(tuple(video.shape[2:]))
        if self.stride is None:
            tokens = F.linear(self._tubelets(video), self.proj.weight.flatten(1), self.proj.bias)  # [B, T'*H'*W', D]
        else:
            # Contiguous: elementwise ops keep a transposed layout, so without this copy every residual
            # add of a model without class token (whose concatenation would copy) stays transposed and
            # every LayerNorm copies it again.
            tokens = self.proj(video).flatten(2).transpose(1, 2).contiguous()  # [B, D, T', H', W'] -> [B, T'*H'*W', D]
        return (self.norm(tokens) if hasattr(self, "norm") else tokens), shape

    def _tubelets(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, T'*H'*W', C*t*p*p]``: each non-overlapping tubelet as a row, its
        values in the filter's ``(C, t, p, p)`` order, tokens time-major; under autocast cast first,
        as the product would, so that the one copy moves 16-bit values."""
        dtype = autocast_matmul_dtype(video)
        if dtype is not None:
            video = video.to(dtype)
        b, c, t, h, w = video.shape
        depth, size = self.tubelet_size, self.patch_size
        grid = video.view(b, c, t // depth, depth, h // size, size, w // size, size)
        return grid.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * depth * size * size)

    def init_from_2d(self, weight_2d: torch.Tensor, bias: torch.Tensor | None, method: str) -> None:
        """Initialise from an image model's ``[D, C, P, P]`` patch filter (see ``inflate_patch_weight``)."""
        with torch.no_grad():
            self.proj.weight.copy_(inflate_patch_weight(weight_2d, self.tubelet_size, method))
            if bias is not None:
                self.proj.bias.copy_(bias)
