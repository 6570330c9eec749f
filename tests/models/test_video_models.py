"""The registered models: shapes, gradients, bad input, resizing, saving, costs."""

from __future__ import annotations

import math

import pytest
import torch

import tubelet
from tubelet.layers.patch_embed import PatchEmbed, inflate_patch_weight
from tubelet.layers.pos_embed import sinusoid_table
from tubelet.models.summary import model_cost

TINY = tubelet.list_models("tiny")


def video(batch=2, frames=8, size=32, seed=0):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_forward_backward(name):
    model = tubelet.create_model(name, num_classes=5)
    logits = model(video())
    assert logits.shape == (2, 5)
    logits.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("name", TINY)
def test_other_frame_counts_and_sizes_run(name):
    model = tubelet.create_model(name, num_classes=3).eval()
    assert model(video(1, frames=16, size=48)).shape == (1, 3)


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "vivit_joint_tiny_p8t2_8x32", "timesformer_space_tiny_p8_8x32"])
def test_loading_for_another_input_equals_resizing_on_the_fly(name, tmp_path):
    model = tubelet.create_model(name, num_classes=3).eval()
    tubelet.save_model(model, tmp_path / "m", class_names=["a", "b", "c"])
    resized = tubelet.load_model(tmp_path / "m", num_frames=16, img_size=48).eval()
    x = video(1, frames=16, size=48)
    torch.testing.assert_close(resized(x), model(x))
    assert resized.config["args"]["num_frames"] == 16 and resized.class_names == ["a", "b", "c"]


def test_save_load_round_trip_leaves_no_temporary_files(tmp_path):
    model = tubelet.create_model("videomae_tiny_p8t2_8x32", num_classes=4).eval()
    tubelet.save_model(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "model.safetensors"]
    loaded = tubelet.load_model(tmp_path / "run").eval()
    x = video(1)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_bad_input_messages_name_the_problem():
    model = tubelet.create_model("vivit_joint_tiny_p8t2_8x32", num_classes=2)
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\].*\[2, 8, 32, 32\]"):
        model(torch.randn(2, 8, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\].*\[1, 1, 8, 32, 32\]"):
        model(torch.randn(1, 1, 8, 32, 32))
    with pytest.raises(ValueError, match="7 frames are not divisible by the tubelet depth 2"):
        model(torch.randn(1, 3, 7, 32, 32))
    with pytest.raises(ValueError, match="resolution 30x32 is not divisible by the patch size 8"):
        model(torch.randn(1, 3, 8, 30, 32))
    with pytest.raises(ValueError, match="did you mean timesformer_divided_base_p16_8x224"):
        tubelet.create_model("timesformer_divide_base_p16_8x224")
    with pytest.raises(ValueError, match="'embed_dims'.*did you mean embed_dim"):
        tubelet.create_model("vivit_joint_tiny_p8t2_8x32", embed_dims=32)
    with pytest.raises(ValueError, match="scheme 'local_global' has no option 'local_split'.*did you mean local_splits"):
        tubelet.create_model("timesformer_divided_tiny_p8_8x32", attention="local_global", attention_options={"local_split": (1, 2, 2)})
    with pytest.raises(ValueError, match="unknown attention scheme 'jiont'.*joint"):
        tubelet.create_model("timesformer_divided_tiny_p8_8x32", attention="jiont")


@pytest.mark.parametrize("scheme", ["joint", "space", "local_global", "axial", "factorised_self"])
def test_attention_is_swappable_by_name(scheme):
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", attention=scheme, num_classes=2)
    assert model(video(1)).shape == (1, 2)


def test_tubelet_initialisation_from_2d_filters():
    weight, clip = torch.randn(6, 3, 4, 4), torch.randn(1, 3, 4, 8, 8)
    frame_conv = lambda frame: torch.nn.functional.conv2d(frame, weight, stride=4)  # noqa: E731
    embed = PatchEmbed(patch_size=4, tubelet_size=4, in_chans=3, embed_dim=6)
    embed.init_from_2d(weight, torch.zeros(6), "central_frame")
    tokens, _ = embed(clip)
    torch.testing.assert_close(tokens, frame_conv(clip[:, :, 2]).flatten(2).transpose(1, 2))
    embed.init_from_2d(weight, torch.zeros(6), "average")
    static = clip[:, :, :1].expand(-1, -1, 4, -1, -1)
    tokens, _ = embed(static)
    torch.testing.assert_close(tokens, frame_conv(static[:, :, 0]).flatten(2).transpose(1, 2))
    assert inflate_patch_weight(weight, 4, "average").sum(2).allclose(weight)
    with pytest.raises(ValueError, match="unknown tubelet initialisation 'middle'"):
        inflate_patch_weight(weight, 4, "middle")


def test_sinusoid_table_formula():
    table = sinusoid_table(5, 6)[0]
    for pos in range(5):
        for i in range(6):
            angle = pos / 10000 ** (2 * (i // 2) / 6)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[pos, i].item() == pytest.approx(expected, abs=1e-6)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=2)
    x = video(1)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_training_hooks():
    model = tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", num_classes=2)
    assert model.no_weight_decay() == {"cls_token", "pos_embed.weight", "temporal_cls_token", "temporal_pos_embed.weight"}
    depth = model.num_layers
    assert model.layer_id("patch_embed.proj.weight") == 0
    assert model.layer_id("blocks.0.mlp.fc1.weight") == 1
    assert model.layer_id("temporal_blocks.0.mlp.fc1.weight") == len(model.blocks) + 1
    assert model.layer_id("head.weight") == depth + 1
    model.reset_classifier(7)
    assert model(video(1)).shape == (1, 7)


def test_timesformer_temporal_fc_starts_at_zero_after_the_first_block():
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32")
    assert model.blocks[0].attn.temporal_fc.weight.abs().sum() > 0
    assert all(b.attn.temporal_fc.weight.abs().sum() == 0 for b in model.blocks[1:])


@pytest.mark.parametrize(
    "name, params_m, gmacs",
    [
        # TimeSformer paper: 121.4M parameters, 0.59 TFLOPs for 3 views = 196 GMACs per view.
        ("timesformer_divided_base_p16_8x224", 121.4, 196),
        # ViT-B with a 400-way head and tubelets: HF's vivit-b-16x2-kinetics400 has 88.9M.
        ("vivit_joint_base_p16t2_32x224", 88.9, None),
        # VideoMAE ViT-B fine-tuned on Kinetics-400: 87M; 180 GFLOPs (multiply-adds) per view.
        ("videomae_base_p16t2_16x224", 86.5, 180),
    ],
)
def test_costs_match_the_papers(name, params_m, gmacs):
    cost = model_cost(name)
    assert cost.params / 1e6 == pytest.approx(params_m, rel=0.01)
    if gmacs:
        assert cost.gmacs == pytest.approx(gmacs, rel=0.01)
