"""MViTv2: stage resolutions and widths as in the paper, sizes and costs, input that does not fit,
typed stage configuration, resizing, and the two relative-position paths."""

from __future__ import annotations

import pytest
import torch

import tubelet
import tubelet.attention.pooling as pooling
from tubelet.models.mvit import MViT, MViTStage
from tubelet.models.summary import model_cost


def stage_outputs(name: str, **overrides) -> list[tuple[int, tuple[int, int, int]]]:
    """(width, token grid) after each block, from a forward pass on the meta device."""
    with torch.device("meta"):
        model = tubelet.create_model(name, **overrides).eval()
        args = model.config["args"]
        frames, size = args.get("num_frames"), args.get("img_size")
        video = torch.empty(1, 3, frames, size, size)
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, inputs, output: seen.append((output[0].shape[-1], tuple(output[1]))))
    model(video)
    return seen


@pytest.mark.parametrize(
    "name, frames, depths",
    [("mvitv2_small_16x224", 8, (1, 2, 11, 2)), ("mvitv2_base_32x224", 16, (2, 3, 16, 3))],
)
def test_stages_have_the_papers_widths_and_resolutions(name, frames, depths):
    """MViTv2-S and -B (Li et al. 2022; PySlowFast's configs, torchvision's mvit_v2_s): four stages of widths
    96, 192, 384, 768 on grids T/2 x 56^2, 28^2, 14^2, 7^2, Q pooled in each stage's first block."""
    expected = []
    for depth, width, side in zip(depths, (96, 192, 384, 768), (56, 28, 14, 7)):
        expected += [(width, (frames, side, side))] * depth
    assert stage_outputs(name) == expected


@pytest.mark.parametrize(
    "name, params_m, gmacs",
    [("mvitv2_small_16x224", 34.54, 64.2), ("mvitv2_base_32x224", 51.2, 225)],
)
def test_costs_match_torchvision_and_the_paper(name, params_m, gmacs):
    """torchvision ``mvit_v2_s``: 34,537,744 parameters, 64.224 GMACs; MViTv2-B 32x3: 51.2M, 225."""
    cost = model_cost(name)
    assert cost.params / 1e6 == pytest.approx(params_m, abs=0.05)
    assert cost.gmacs == pytest.approx(gmacs, rel=0.01)
    if name == "mvitv2_small_16x224":
        assert cost.params == 34_537_744


def test_a_clip_that_does_not_fit_the_strides_is_named():
    model = tubelet.create_model("mvitv2_tiny_8x32", num_classes=3)
    with pytest.raises(ValueError, match=r"a 8x40x40 clip does not fit this MViT's strides: .*multiples of 16"):
        model(torch.randn(1, 3, 8, 40, 40))
    with pytest.raises(ValueError, match=r"a 7x32x32 clip does not fit .*frames must be a multiple of 2"):
        model(torch.randn(1, 3, 7, 32, 32))
    with pytest.raises(ValueError, match=r"a 16x200x200 clip does not fit .*multiples of 32"):
        tubelet.create_model("mvitv2_small_16x224", img_size=200)
    with pytest.raises(ValueError, match=r"expected a video of shape \[B, 3, T, H, W\]"):
        model(torch.randn(1, 1, 8, 32, 32))


def test_stages_are_typed_and_their_fields_checked():
    typed = [MViTStage(1, 16, 1, (1, 1, 1)), MViTStage(2, 32, 2)]
    model = MViT(num_frames=4, img_size=32, kv_stride=(1, 2, 2), stages=typed, num_classes=2)
    assert [b.attn.num_heads for b in model.blocks] == [1, 2, 2] and model.stages == typed
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="MViT stage has no field 'heads'; did you mean"):
        MViT(num_frames=4, img_size=32, stages=[dict(depth=1, dim=16, heads=1)])
    with pytest.raises(ValueError, match="dim divisible by num_heads"):
        MViTStage(1, 10, 4)


def test_the_folded_and_bias_paths_give_the_same_model(monkeypatch):
    model = tubelet.create_model("mvitv2_tiny_8x32", num_classes=4).double().eval()
    clip = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64)
    monkeypatch.setattr(pooling, "RELATIVE_POSITIONS", "bias")
    bias = model(clip)
    monkeypatch.setattr(pooling, "RELATIVE_POSITIONS", "folded")
    torch.testing.assert_close(model(clip), bias, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(pooling, "RELATIVE_POSITIONS", "fused")
    with pytest.raises(ValueError, match="RELATIVE_POSITIONS='fused'; expected one of"):
        model(clip)


def test_loading_for_another_input_equals_interpolating_on_the_fly(tmp_path):
    model = tubelet.create_model("mvitv2_tiny_8x32", num_classes=3).eval()
    tubelet.save_model(model, tmp_path / "m")
    clip = torch.randn(1, 3, 16, 48, 48)
    resized = tubelet.load_model(tmp_path / "m", num_frames=16, img_size=48).eval()
    assert resized.blocks[0].attn.rel_pos_t.shape[0] == 2 * 8 - 1
    torch.testing.assert_close(resized(clip), model(clip), rtol=1e-5, atol=1e-6)


def test_training_hooks_see_every_block():
    model = tubelet.create_model("mvitv2_tiny_8x32", num_classes=3, drop_path_rate=0.1)
    assert model.num_layers == 3
    assert model.layer_id("blocks.2.attn.rel_pos_h") == 3 and model.layer_id("patch_embed.proj.weight") == 0
    assert model.layer_id("head.weight") == 4 and "cls_token" in model.no_weight_decay()
    clip = torch.randn(2, 3, 8, 32, 32)
    torch.manual_seed(0)
    model(clip).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    torch.manual_seed(0)
    model(clip).sum().backward()
    for a, b in zip(plain, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)
