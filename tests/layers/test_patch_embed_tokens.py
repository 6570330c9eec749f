"""Patch tokens come out in the layout the blocks expect."""

from __future__ import annotations

import torch

from tubelet.layers.patch_embed import PatchEmbed


def test_tokens_are_contiguous_time_major_patches():
    embed = PatchEmbed(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=8)
    video = torch.randn(2, 3, 4, 8, 12)
    tokens, shape = embed(video)
    assert tuple(shape) == (2, 2, 3) and tokens.shape == (2, 12, 8)
    assert tokens.is_contiguous()
    # token (t, h, w) = 1, 1, 2 is the tubelet at frames 2-3, rows 4-7, columns 8-11
    patch = video[:, :, 2:4, 4:8, 8:12]
    expected = torch.einsum("bcthw,dcthw->bd", patch, embed.proj.weight) + embed.proj.bias
    torch.testing.assert_close(tokens[:, 1 * 6 + 1 * 3 + 2], expected)


def test_the_product_of_tubelets_is_the_convolution():
    """Non-overlapping patches as one matrix product equal ``proj``'s 3D convolution (float64), and
    under autocast the bf16 product of the same rounded values; overlapping patches keep the
    convolution."""
    torch.manual_seed(0)
    embed = PatchEmbed(patch_size=4, tubelet_size=2, in_chans=3, embed_dim=8).double()
    video = torch.randn(2, 3, 4, 8, 12, dtype=torch.float64)
    tokens, _ = embed(video)
    expected = embed.proj(video).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, rtol=1e-12, atol=1e-12)
    embed.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, _ = embed(video.float())
    assert fast.dtype == torch.bfloat16
    rounded = torch.nn.functional.conv3d(video.float().bfloat16().double(), embed.proj.weight.bfloat16().double(),
                                         embed.proj.bias.bfloat16().double(), stride=(2, 4, 4))
    torch.testing.assert_close(fast.double(), rounded.flatten(2).transpose(1, 2), rtol=2**-7, atol=1e-2)
    overlapping = PatchEmbed(patch_size=4, tubelet_size=1, in_chans=3, embed_dim=8, stride=3)
    tokens, shape = overlapping(video.float())
    torch.testing.assert_close(tokens, overlapping.proj(video.float()).flatten(2).transpose(1, 2))
