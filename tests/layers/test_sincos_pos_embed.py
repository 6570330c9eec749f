"""The fixed sinusoidal positions: patch tokens get the table, prefix tokens nothing."""

from __future__ import annotations

import pytest
import torch

from tubelet.layers.pos_embed import SinCosPosEmbed, sinusoid_table
from tubelet.layers.shape import VideoShape


@pytest.mark.parametrize("num_prefix", [0, 1, 2])
def test_sincos_adds_the_table_to_patches_only(num_prefix):
    shape = VideoShape(2, 3, 4)
    embed = SinCosPosEmbed(shape, 16, num_prefix)
    x = torch.randn(2, num_prefix + shape.num_patches, 16)
    out = embed(x, shape)
    assert torch.equal(out[:, :num_prefix], x[:, :num_prefix])
    torch.testing.assert_close(out[:, num_prefix:], x[:, num_prefix:] + sinusoid_table(shape.num_patches, 16), rtol=0, atol=0)
