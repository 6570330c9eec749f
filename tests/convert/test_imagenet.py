"""ImageNet initialisation from an image ViT in timm's layout: every video parameter filled or
reported, each family's rule, the file formats, errors, and ``train.init`` in the recipes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import tubelet
from .layouts import google_vit_npz, random_state, timm_vit_shapes
from tubelet.convert.imagenet import init_from_image
from tubelet.convert.timm import convert_google_vit, read_timm_vit
from tubelet.engine.config import load_config
from tubelet.engine.train import fit

VIT = random_state(timm_vit_shapes(dim=64, depth=2, patch=8, grid=4), seed=1)
VIDEO_MODELS = [name for name in tubelet.list_models("tiny") if not name.startswith("mvit")]


def image_vit_features(state: dict[str, torch.Tensor], image: torch.Tensor, heads: int) -> torch.Tensor:
    """A plain pre-norm ViT (timm's ``VisionTransformer.forward_features`` then the class token):
    ``[B, C, H, W] -> [B, D]``, written from its definition as the reference."""
    x = F.conv2d(image, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=state["patch_embed.proj.weight"].shape[-1])
    x = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1) + state["pos_embed"]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        p = lambda name: state[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, x.shape[-1:], p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        x = x + F.linear(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, x.shape[-1:], p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return F.layer_norm(x[:, 0], x.shape[-1:], state["norm.weight"], state["norm.bias"], eps=1e-6)


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_every_parameter_is_filled_or_reported_and_every_image_key_is_accounted_for(name):
    model = tubelet.create_model(name, num_classes=5)
    report = init_from_image(model, VIT)
    reported = set(report.loaded) | {entry.split(" ")[0].rstrip(":") for entry in report.reshaped} | set(report.fresh)
    assert reported == set(model.state_dict())
    assert "head.weight" in report.fresh and any(entry.startswith("head.weight (the image classifier)") for entry in report.unused)
    used = {k for k in VIT if not any(entry.split(" ")[0] == k for entry in report.unused)}
    assert {"blocks.0.mlp.fc1.weight", "blocks.1.attn.qkv.weight", "patch_embed.proj.weight"} <= used
    assert any(line.startswith("init missing") for line in report.lines())


def _weights(model: torch.nn.Module, name: str) -> torch.Tensor:
    return model.state_dict()[name]


def test_timesformer_divided_copies_spatial_into_temporal_and_keeps_temporal_fc_zero():
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5)
    report = init_from_image(model, VIT)
    for i in range(2):
        for part in ("temporal_attn.qkv.weight", "attn.qkv.weight"):
            assert torch.equal(_weights(model, f"blocks.{i}.attn.{part}"), VIT[f"blocks.{i}.attn.qkv.weight"])
        assert torch.equal(_weights(model, f"blocks.{i}.attn.temporal_norm.weight"), VIT[f"blocks.{i}.norm1.weight"])
    assert torch.count_nonzero(_weights(model, "blocks.1.attn.temporal_fc.weight")) == 0  # TimeSformer's code: all but block 0
    assert torch.count_nonzero(_weights(model, "pos_embed.temporal")) == 0
    assert torch.equal(_weights(model, "pos_embed.spatial"), VIT["pos_embed"])
    assert "blocks.*.attn.temporal_fc.weight (2)" in report.lines()[-2]


def test_vivit_model_3_copies_attention_not_its_layernorm_and_lvt_leaves_the_tube_step_fresh():
    vivit = tubelet.create_model("vivit_factorised_self_tiny_p8t2_8x32", num_classes=5)
    init_from_image(vivit, VIT)
    assert torch.equal(_weights(vivit, "blocks.0.attn.steps.1.attn.qkv.weight"), VIT["blocks.0.attn.qkv.weight"])
    assert torch.equal(_weights(vivit, "blocks.0.attn.steps.1.norm.weight"), torch.ones(64))  # scenic: fresh LayerNorm
    tubelet_filter = _weights(vivit, "patch_embed.proj.weight")  # central frame of 2: index 1
    assert torch.equal(tubelet_filter[:, :, 1], VIT["patch_embed.proj.weight"]) and torch.count_nonzero(tubelet_filter[:, :, 0]) == 0
    lvt = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=5)
    before = _weights(lvt, "blocks.0.attn.steps.1.attn.qkv.weight").clone()
    init_from_image(lvt, VIT)
    assert torch.equal(_weights(lvt, "blocks.0.attn.steps.0.attn.qkv.weight"), VIT["blocks.0.attn.qkv.weight"])
    assert torch.equal(_weights(lvt, "blocks.0.attn.steps.1.attn.qkv.weight"), before)
    average = tubelet.create_model("vivit_joint_tiny_p8t2_8x32", num_classes=5)
    init_from_image(average, VIT, tubelet_init="average", temporal_init="fresh")
    assert torch.allclose(_weights(average, "patch_embed.proj.weight").sum(2), VIT["patch_embed.proj.weight"])


@pytest.mark.parametrize("name", ["timesformer_space_tiny_p8_8x32", "xvit_tiny_p8_8x32"])
def test_a_static_clip_gives_the_image_models_features_per_frame(name):
    """Each frame of TimeSformer's space-only model (and XViT's backbone, whose shifts move the
    same values on a static clip except at the clip's ends) is the image ViT at initialisation."""
    model = tubelet.create_model(name, num_classes=5, img_size=32, num_frames=2).eval()
    init_from_image(model, VIT)
    frame = torch.randn(2, 3, 32, 32)
    reference = image_vit_features(VIT, frame, heads=4)
    if name.startswith("timesformer"):
        torch.testing.assert_close(model.forward_features(frame.unsqueeze(2).expand(-1, -1, 2, -1, -1)), reference, atol=1e-5, rtol=1e-5)
    else:  # one-frame clip: nothing to shift in from, the class token of the frame is the image's
        single = tubelet.create_model(name, num_classes=5, img_size=32, num_frames=1, attention="space").eval()
        init_from_image(single, VIT)
        tokens = {}
        single.pool.register_forward_hook(lambda module, args, out: tokens.update(x=args[0]))
        single(frame.unsqueeze(2))
        torch.testing.assert_close(single.norm(tokens["x"][:, 0]), reference, atol=1e-5, rtol=1e-5)


def test_positions_are_resized_to_the_model_grid_and_the_report_says_so():
    model = tubelet.create_model("timesformer_joint_tiny_p8_8x32", num_classes=5, img_size=16)
    report = init_from_image(model, VIT)
    assert "pos_embed.spatial <- pos_embed: grid 4x4 -> 2x2, class-token row kept" in report.reshaped
    assert _weights(model, "pos_embed.spatial").shape == (1, 5, 64)


def test_google_npz_pth_and_safetensors_read_to_the_same_state(tmp_path):
    np.savez(tmp_path / "vit.npz", **google_vit_npz(VIT, heads=4))
    torch.save({"model": {f"module.{k}": v for k, v in VIT.items()}}, tmp_path / "vit.pth")
    save_file(VIT, str(tmp_path / "vit.safetensors"))
    for path in ("vit.npz", "vit.pth", "vit.safetensors"):
        state = read_timm_vit(tmp_path / path)
        assert state.keys() == VIT.keys(), path
        for key in VIT:
            torch.testing.assert_close(state[key], VIT[key], atol=0, rtol=0, msg=f"{path} {key}")
    with pytest.raises(ValueError, match=r"parameters with no tubelet counterpart: Transformer/encoderblock_0/extra"):
        convert_google_vit({**{k: torch.from_numpy(v) for k, v in google_vit_npz(VIT, 4).items()}, "Transformer/encoderblock_0/extra": torch.zeros(1)})


def test_errors_name_the_key_the_file_and_the_model():
    narrow = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5, embed_dim=32, num_heads=2)
    with pytest.raises(ValueError, match=r"patch_embed.proj.weight \[64, 3, 8, 8\] does not fit patch_embed.proj.weight \[32, 3, 1, 8, 8\]"):
        init_from_image(narrow, VIT)
    with pytest.raises(ValueError, match="MViT is not a ViT-based video model"):
        init_from_image(tubelet.create_model("mvitv2_tiny_8x32"), VIT)
    with pytest.raises(ValueError, match=r"vit.ckpt: an image checkpoint must end in one of"):
        read_timm_vit("vit.ckpt")
    with pytest.raises(ValueError, match="unknown temporal_init 'zero'"):
        init_from_image(tubelet.create_model("timesformer_divided_tiny_p8_8x32"), VIT, temporal_init="zero")


SMALL = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "data.img_size=16",
         "data.num_frames=4", "data.num_workers=0", "data.auto_augment=null", "train.batch_size=4", "train.max_steps=1",
         "train.epochs=1", "train.progress=false", "train.grad_checkpointing=false", "eval.views=[1,1]", "eval.batch_size=4"]


@pytest.mark.parametrize("recipe", ["timesformer_divided_k400_8x224", "vivit_joint_k400_32x224", "lvt_ssv2_16x224", "xvit_ssv2_16x224"])
def test_recipe_trains_from_an_image_vit_checkpoint(tmp_path, tiny_synth, recipe):
    """The recipes, shrunk to a one-block width-32 model on 16 px, start from a timm-layout file."""
    vit = random_state(timm_vit_shapes(dim=32, depth=1, patch=8, grid=4), seed=2)
    torch.save(vit, tmp_path / "vit_b16.pth")
    data = [f"data.train={tiny_synth / 'train.csv'}", f"data.val={tiny_synth / 'val.csv'}"]
    log = io.StringIO()
    fit(load_config(recipe, SMALL + data + [f"train.init={tmp_path / 'vit_b16.pth'}"]), tmp_path / "run", stream=log)
    lines = log.getvalue()
    assert f"init from {tmp_path / 'vit_b16.pth'}" in lines
    assert "init reshaped: pos_embed." in lines and "grid 4x4 -> 2x2" in lines
    assert "init missing (kept at the model's initialisation): " in lines and "head.weight" in lines
    assert "init unexpected (not used): " in lines and "head.weight (the image classifier)" in lines
    assert "WARNING" not in lines  # an image ViT records no normalisation: the recipe's official one stands


def test_the_official_lvt_architecture_starts_from_an_image_vit_with_its_own_rule():
    from tubelet.convert.lvt import official_arguments

    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=5, **official_arguments(patch_stride=7))
    report = init_from_image(model, VIT)
    assert torch.count_nonzero(_weights(model, "pos_embed.temporal")) == 0
    assert "pos_embed" in report.unused and "patch_embed.norm.weight" in report.fresh
    assert torch.equal(_weights(model, "blocks.0.attn.steps.1.attn.qkv.weight"), VIT["blocks.0.attn.qkv.weight"])  # the frame step
    assert "blocks.0.attn.steps.0.attn.qkv.weight" in report.fresh  # the tube step: fresh, as the LVT code
