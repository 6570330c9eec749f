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
    with pytest.raises(ValueError, match=r"cls_token \[1, 1, 64\] does not fit cls_token \[1, 1, 16\]"):
        init_from_image(tubelet.create_model("mvitv2_tiny_8x32"), VIT)  # an image ViT is no image MViT
    with pytest.raises(ValueError, match="Linear is not a ViT-based video model nor an MViT"):
        init_from_image(torch.nn.Linear(2, 2), VIT)
    official_video = {f"model.{k}": v for k, v in VIT.items()}  # e.g. an official TimeSformer .pyth: nothing fits
    with pytest.raises(ValueError, match=r"a state dict fills no parameter of VideoTransformer: not an image model .* `tubelet convert --from FORMAT`"):
        init_from_image(tubelet.create_model("timesformer_divided_tiny_p8_8x32"), official_video)
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


def image_mvit_state(video: dict[str, torch.Tensor], spatial_rows: dict[str, int], seed: int = 3) -> dict[str, torch.Tensor]:
    """An image MViTv2 in the official layout (facebookresearch/mvit) beside a video one: 2D
    convolutions, no temporal relative positions, ``head.projection``, spatial tables of
    ``spatial_rows`` rows (an image grid other than the video model's)."""
    shapes = {}
    for name, value in video.items():
        if name.endswith("rel_pos_t"):
            continue
        shape = list(value.shape)
        if value.ndim == 5:
            shape = shape[:2] + shape[3:]
        if name in spatial_rows:
            shape[0] = spatial_rows[name]
        shapes[name.replace("head.", "head.projection.")] = tuple(shape)
    return random_state(shapes, seed=seed)


def test_mvit_starts_from_an_image_mvit_by_inflating_its_convolutions(tmp_path):
    """PySlowFast's inflate_weight: each 2D convolution repeated over its temporal kernel / its
    length; relative positions of the image grid interpolated; the temporal ones left fresh."""
    model = tubelet.create_model("mvitv2_tiny_8x32", num_classes=5)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    image = image_mvit_state(fresh, {"blocks.0.attn.rel_pos_h": 31, "blocks.0.attn.rel_pos_w": 31})  # a 64 px image
    torch.save({"model_state": image, "epoch": 100}, tmp_path / "MViTv2_T_in1k.pyth")
    report = init_from_image(model, tmp_path / "MViTv2_T_in1k.pyth")
    state = model.state_dict()

    stem = image["patch_embed.proj.weight"]  # [16, 3, 7, 7] -> [16, 3, 3, 7, 7]
    assert torch.equal(state["patch_embed.proj.weight"], stem.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3)
    assert torch.allclose(state["patch_embed.proj.weight"].sum(2), stem)  # a static clip sees the image filter
    pool = image["blocks.1.attn.pool_q.weight"]
    assert torch.equal(state["blocks.1.attn.pool_q.weight"], pool.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3)
    assert "patch_embed.proj.weight <- patch_embed.proj.weight: [C', C, kh, kw] -> [C', C, 3, kh, kw] (average)" in report.reshaped
    rows = torch.nn.functional.interpolate(image["blocks.0.attn.rel_pos_h"].t()[None], size=15, mode="linear")[0].t()
    assert torch.equal(state["blocks.0.attn.rel_pos_h"], rows)
    assert "blocks.0.attn.rel_pos_w <- blocks.0.attn.rel_pos_w: 31 -> 15 rows (linear)" in report.reshaped
    assert torch.equal(state["blocks.1.attn.rel_pos_h"], image["blocks.1.attn.rel_pos_h"])  # same grid: copied
    for name in ("cls_token", "blocks.2.attn.qkv.weight", "blocks.1.proj.weight", "blocks.2.mlp.fc2.bias", "norm.weight"):
        assert torch.equal(state[name], image[name]) and name in report.loaded, name

    temporal = [k for k in fresh if k.endswith("rel_pos_t")]
    assert sorted(report.fresh) == sorted(temporal + ["head.weight", "head.bias"])
    for name in report.fresh:
        assert torch.equal(state[name], fresh[name]), name
    assert sorted(report.unused) == ["head.projection.bias (the image classifier)", "head.projection.weight (the image classifier)"]
    assert set(report.loaded) | {e.split(" ")[0] for e in report.reshaped} | set(report.fresh) == set(fresh)

    central = tubelet.create_model("mvitv2_tiny_8x32", num_classes=5)
    init_from_image(central, image, tubelet_init="central_frame")
    assert torch.equal(central.state_dict()["patch_embed.proj.weight"][:, :, 1], stem)
    assert torch.count_nonzero(central.state_dict()["patch_embed.proj.weight"][:, :, [0, 2]]) == 0
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight \[48, 8\] does not fit blocks.0.attn.qkv.weight \[48, 16\]"):
        init_from_image(model, {**image, "blocks.0.attn.qkv.weight": torch.zeros(48, 8)})


def test_mvit_recipe_trains_from_an_official_image_mvit_file(tmp_path, tiny_synth):
    """The MViTv2 recipe on the tiny MViT, from a ``.pyth`` image MViTv2 (``model_state``) as ``train.init``."""
    image = image_mvit_state(tubelet.create_model("mvitv2_tiny_8x32", num_classes=1000).state_dict(), {})
    torch.save({"model_state": image}, tmp_path / "MViTv2_T_in1k.pyth")
    small = ["model=mvitv2_tiny_8x32", "data.img_size=32", "data.num_frames=4", "data.num_workers=0", "train.batch_size=4",
             "train.max_steps=1", "train.epochs=1", "train.progress=false", "eval.views=[1,1]", "eval.batch_size=4",
             f"data.train={tiny_synth / 'train.csv'}", f"data.val={tiny_synth / 'val.csv'}",
             f"train.init={tmp_path / 'MViTv2_T_in1k.pyth'}"]
    log = io.StringIO()
    fit(load_config("mvitv2_small_k400_16x224", small), tmp_path / "run", stream=log)
    lines = log.getvalue()
    assert f"init from {tmp_path / 'MViTv2_T_in1k.pyth'}" in lines
    assert "init reshaped: patch_embed.proj.weight <- patch_embed.proj.weight: [C', C, kh, kw] -> [C', C, 3, kh, kw] (average)" in lines
    assert "init missing (kept at the model's initialisation): blocks.*.attn.rel_pos_t (3), head.weight, head.bias" in lines
    assert "init unexpected (not used): head.projection.weight (the image classifier)" in lines
