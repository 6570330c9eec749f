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
