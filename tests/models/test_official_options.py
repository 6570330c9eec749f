"""The official codes' choices as named options: the heads that normalise before or after
averaging, LVT's MLP head, and ViViT model 2's stochastic-depth ramp per encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tubelet
from tubelet.layers.shape import VideoShape
from tubelet.models.heads import Prefix, make_head

SHAPE = VideoShape(2, 2, 2)


@pytest.mark.parametrize("prefix", [Prefix(class_token=True), Prefix(class_token=False)])
def test_norm_mean_normalises_every_patch_token_then_averages(prefix):
    torch.manual_seed(0)
    norm = nn.LayerNorm(8)
    x = torch.randn(3, int(prefix.class_token) + SHAPE.num_patches, 8) * 3 + 1
    patches = x[:, int(prefix.class_token):]
    torch.testing.assert_close(make_head("norm_mean", 8, prefix, num_heads=2)(x, SHAPE, norm), norm(patches).mean(1))
    assert (make_head("mean", 8, prefix, num_heads=2)(x, SHAPE, norm) - norm(patches).mean(1)).abs().max() > 1e-3


def test_norm_mean_mlp_is_lvts_head_and_takes_its_width():
    torch.manual_seed(0)
    head = make_head("norm_mean_mlp", 8, Prefix(class_token=False), num_heads=2, options={"mlp_dim": 6})
    x, norm = torch.randn(2, SHAPE.num_patches, 8), nn.LayerNorm(8)
    expected = torch.nn.functional.gelu(head.fc(head.mlp_norm(norm(x).mean(1))))
    torch.testing.assert_close(head(x, SHAPE, norm), expected)
    assert head.out_dim == 6 and head.mlp_norm.eps == 1e-5
    head(x, SHAPE, norm).sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    with pytest.raises(ValueError, match="head 'norm_mean' has no option 'mlp_dim'"):
        make_head("norm_mean", 8, Prefix(class_token=False), num_heads=2, options={"mlp_dim": 6})


def test_frame_mean_norm_averages_the_frames_then_normalises():
    norm = nn.LayerNorm(8)
    x = torch.randn(2, SHAPE.t + SHAPE.num_patches, 8) * 2
    head = make_head("frame_mean_norm", 8, Prefix(class_token=False, frame_tokens=True), num_heads=2)
    torch.testing.assert_close(head(x, SHAPE, norm), norm(x[:, : SHAPE.t].mean(1)))


def test_vivit_model_2_ramps_stochastic_depth_per_encoder_as_scenic():
    model = tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", drop_path_rate=0.3, temporal_depth=3)
    rates = [block.drop_path.p for block in (*model.blocks, *model.temporal_blocks)]
    assert rates == pytest.approx([0.0, 0.3, 0.0, 0.15, 0.3])
    across = tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", drop_path_rate=0.4, temporal_depth=3, drop_path_ramp="across")
    assert [b.drop_path.p for b in (*across.blocks, *across.temporal_blocks)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="unknown drop_path_ramp 'per_block'"):
        tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", drop_path_ramp="per_block")


def test_overlapping_patches_give_the_lvt_codes_289_tokens_and_a_norm():
    from tubelet.layers.patch_embed import PatchEmbed

    embed = PatchEmbed(patch_size=16, tubelet_size=1, in_chans=3, embed_dim=8, stride=14, norm=True)
    tokens, shape = embed(torch.randn(1, 3, 2, 224, 224))
    assert shape == VideoShape(2, 17, 17) and tokens.shape == (1, 2 * 289, 8)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(1, 578) + embed.norm.bias.mean(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="patch stride 20 must be between 1 and the patch size 16"):
        PatchEmbed(patch_size=16, tubelet_size=1, in_chans=3, embed_dim=8, stride=20)


def test_dwconv_mlp_convolves_each_frames_grid_between_its_layers():
    from tubelet.layers.mlp import ConvMlp

    torch.manual_seed(0)
    mlp = ConvMlp(8, 16)
    x = torch.randn(2, 1 + SHAPE.num_patches, 8)  # a prefix token passes beside the convolution
    h = mlp.fc1(x)
    grid = h[:, 1:].reshape(2 * SHAPE.t, SHAPE.h, SHAPE.w, 16).permute(0, 3, 1, 2)
    conv = torch.nn.functional.conv2d(grid, mlp.dwconv.weight, mlp.dwconv.bias, padding=1, groups=16)
    h = torch.cat([h[:, :1], conv.permute(0, 2, 3, 1).reshape(2, -1, 16)], dim=1)
    torch.testing.assert_close(mlp(x, SHAPE), mlp.fc2(torch.nn.functional.gelu(h)))


def test_temporal_only_positions_add_one_vector_per_frame_and_resize():
    from tubelet.layers.pos_embed import TemporalPosEmbed

    table = TemporalPosEmbed(SHAPE, 8, num_prefix=0)
    x = torch.zeros(1, SHAPE.num_patches, 8)
    out = table(x, SHAPE).reshape(SHAPE.t, SHAPE.spatial, 8)
    assert torch.equal(out[1, 3], table.temporal[0, 1]) and torch.equal(out[0, 0], out[0, 2])
    assert table.resized_state(VideoShape(4, 2, 2))["temporal"].shape == (1, 4, 8)
