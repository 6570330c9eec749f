"""Official checkpoints -> tubelet: the official TimeSformer, XViT and scenic's ViViT, each from a
checkpoint built here with the official names and shapes (``layouts``): every key consumed, every
parameter set, the architecture differences of the official code, and errors naming the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tubelet
from tubelet.cli import main
from tubelet.convert import load_foreign_model
from tubelet.convert.lvt import convert_lvt_official, load_lvt_official
from tubelet.convert.scenic_vivit import convert_scenic_vivit, load_scenic_vivit
from tubelet.convert.timesformer import convert_timesformer_official, load_timesformer_official
from tubelet.convert.xvit import convert_xvit_official, load_xvit_official
from tubelet.layers.shape import VideoShape
from tubelet.models.heads import FrameMeanNormHead, NormMeanHead

from .layouts import lvt_official_shapes, random_state, scenic_vivit_shapes, timesformer_official_shapes, xvit_official_shapes


def _pyth(tmp_path, state, prefix=""):
    path = tmp_path / "checkpoint.pyth"
    torch.save({"model_state": {prefix + k: v for k, v in state.items()}, "epoch": 15}, path)
    return path


@pytest.mark.parametrize("scheme", ["divided", "joint", "space"])
def test_official_timesformer_fills_every_parameter_from_every_key(tmp_path, scheme):
    official = random_state(timesformer_official_shapes(scheme))
    converted = convert_timesformer_official(official, scheme)
    assert len(converted) == len(official)
    model = load_timesformer_official(_pyth(tmp_path, official, prefix="model."))
    assert model.config["architecture"] == f"timesformer_{scheme}_tiny_p8_8x32" and model.num_classes == 5
    state = model.state_dict()
    assert set(state) == set(converted)
    for name, value in converted.items():
        assert torch.equal(state[name], value), name
    mixer = "attn" if scheme == "divided" else "attn.steps.0"
    assert torch.equal(state[f"blocks.1.{mixer}.attn.qkv.weight"], official["blocks.1.attn.qkv.weight"])
    if scheme == "space":
        assert isinstance(model.pool, FrameMeanNormHead)


def test_official_space_only_pooling_averages_then_normalises():
    """TimeSformer's code: ``norm(mean over frames of every token)[:, 0]``; ``frame_mean`` (the HF
    model's per-frame logits, averaged) normalises first: the two differ, ``frame_mean_norm`` is the former."""
    official = tubelet.create_model("timesformer_space_tiny_p8_8x32", num_classes=5, head="frame_mean_norm").eval()
    per_frame = tubelet.create_model("timesformer_space_tiny_p8_8x32", num_classes=5).eval()
    per_frame.load_state_dict(official.state_dict())
    tokens = {}
    official.pool.register_forward_hook(lambda module, args, out: tokens.update(x=args[0]))
    video = torch.randn(2, 3, 8, 32, 32)
    features = official.forward_features(video)
    cls = tokens["x"][:, :8]  # the frames' class tokens [B, T, D]
    torch.testing.assert_close(features, official.spatial_norm(cls.mean(dim=1)))
    assert (per_frame.forward_features(video) - features).abs().max() > 1e-3


def test_official_timesformer_errors_name_the_key(tmp_path):
    official = random_state(timesformer_official_shapes("divided"))
    with pytest.raises(ValueError, match=r"official TimeSformer parameters with no tubelet counterpart: blocks.0.attn.extra"):
        convert_timesformer_official({**official, "blocks.0.attn.extra": torch.zeros(1)}, "divided")
    del official["blocks.1.temporal_fc.bias"]
    with pytest.raises(ValueError, match=r"fits no tubelet architecture; closest is timesformer_divided_tiny_p8_8x32: "
                                         r"unfilled tubelet parameters: blocks.1.attn.temporal_fc.bias"):
        load_timesformer_official(_pyth(tmp_path, official))
    torch.save({"model_state": {"conv1.weight": torch.zeros(1)}}, tmp_path / "resnet.pyth")
    with pytest.raises(ValueError, match=r"resnet.pyth has no patch_embed.proj.weight: not a checkpoint of the official TimeSformer"):
        load_timesformer_official(tmp_path / "resnet.pyth")


def test_official_xvit_fills_every_parameter_and_takes_the_shift_of_its_config(tmp_path):
    official = random_state(xvit_official_shapes(head_blocks=1))
    converted = convert_xvit_official(official)
    assert len(converted) == len(official) - 2  # new_fc: built by the official model, not on the vit consensus's path
    model = load_xvit_official(_pyth(tmp_path, official), temporal_shift_div=8)
    assert model.config["architecture"] == "xvit_tiny_p8_8x32"
    assert model.config["args"]["attention_options"] == {"temporal_shift_div": 8}
    state = model.state_dict()
    assert set(state) == set(converted)
    assert torch.equal(state["cls_token"].flatten(), official["base_model.cls_token"].flatten())
    assert torch.equal(state["pos_embed.temporal"], official["base_model.temp_embed"][:, :, 0])
    assert torch.equal(state["head.weight"], official["consensus.mlp_head.4.weight"])
    assert torch.equal(state["pool.fc.weight"], official["consensus.mlp_head.1.weight"])
    model(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match=r"official XViT parameters with no tubelet counterpart: base_model.head.weight"):
        convert_xvit_official({**official, "base_model.head.weight": torch.zeros(5, 64)})


def _npz(tmp_path, arrays):
    path = tmp_path / "vivit.npz"
    np.savez(path, **{name: value.numpy() for name, value in arrays.items()})
    return path


@pytest.mark.parametrize("attention_type, architecture", [
    ("spacetime", "vivit_joint_tiny_p8t2_8x32"),
    ("factorized_encoder", "vivit_factorised_encoder_tiny_p8t2_8x32"),
    ("factorized_self_attention_block", "vivit_factorised_self_tiny_p8t2_8x32"),
    ("factorized_dot_product_attention", "vivit_factorised_dot_tiny_p8t2_8x32"),
])
def test_scenic_vivit_trees_fill_every_parameter(tmp_path, attention_type, architecture):
    tree = random_state(scenic_vivit_shapes(attention_type))
    given = {"attention_type": attention_type} if attention_type == "factorized_dot_product_attention" else {}
    model = load_scenic_vivit(_npz(tmp_path, {f"params/{k}": v for k, v in tree.items()}), img_size=32, **given)
    assert model.config["architecture"] == architecture
    args = model.config["args"]
    assert (args["num_heads"], args["num_frames"], args["img_size"], args["act"]) == (4, 8, 32, "gelu_tanh")
    if attention_type != "factorized_encoder":
        assert args["head"] == ("cls" if attention_type == "spacetime" else "norm_mean")
        assert args["head"] == "cls" or isinstance(model.pool, NormMeanHead)
    else:
        assert args["temporal_depth"] == 2 and args["drop_path_ramp"] == "per_encoder"
    kernel = tree["embedding/kernel"]  # [t, h, w, C, D] -> [D, C, t, h, w]
    assert torch.equal(model.state_dict()["patch_embed.proj.weight"], kernel.permute(4, 3, 0, 1, 2))
    model(torch.randn(1, 3, 8, 32, 32))


def test_scenic_model_4_heads_attend_as_scenic_assigns_them():
    """scenic's first half of the heads attends over time, the second over space: the converted
    block equals that computation written out with scenic's own (unswapped) weights."""
    tree = random_state(scenic_vivit_shapes("factorized_dot_product_attention"))
    model = tubelet.create_model("vivit_factorised_dot_tiny_p8t2_8x32", num_classes=5, act="gelu_tanh")
    model.load_state_dict(convert_scenic_vivit(tree, "factorised_dot"))
    block = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/"
    x = torch.randn(2, 4 * 16, 64)  # [B, T*H*W, D] on a 4 x 4 x 4 grid
    h = model.blocks[0].attn.norm(x)
    q, k, v = (torch.einsum("bnd,dhe->bhne", h, tree[block + f"{p}/kernel"]) + tree[block + f"{p}/bias"][None, :, None] for p in ("query", "key", "value"))
    grid = lambda t: t.reshape(2, 4, 4, 16, 16)  # [B, heads, T, H*W, d]  # noqa: E731
    time = F.scaled_dot_product_attention(*(grid(t)[:, :2].transpose(2, 3) for t in (q, k, v))).transpose(2, 3)
    space = F.scaled_dot_product_attention(*(grid(t)[:, 2:] for t in (q, k, v)))
    out = torch.cat([time, space], dim=1).reshape(2, 4, 64, 16)  # heads in scenic's order
    expected = x + torch.einsum("bhne,hed->bnd", out, tree[block + "out/kernel"]) + tree[block + "out/bias"]
    got, _ = model.blocks[0].attn(x, VideoShape(4, 4, 4))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_scenic_errors_name_the_key_and_the_input(tmp_path):
    tree = random_state(scenic_vivit_shapes("spacetime"))
    with pytest.raises(ValueError, match=r"scenic ViViT parameters with no tubelet counterpart: pre_logits/kernel"):
        convert_scenic_vivit({**tree, "pre_logits/kernel": torch.zeros(64, 64)}, "joint")
    with pytest.raises(ValueError, match=r"does not hold whole 3x3 frames at img_size=24; pass the checkpoint's img_size"):
        load_scenic_vivit(_npz(tmp_path, tree), img_size=24)


def test_convert_command_takes_loader_options_and_prints_the_init_report(tmp_path, capsys):
    from .layouts import timm_vit_shapes

    torch.save(random_state(timm_vit_shapes()), tmp_path / "vit.pth")
    assert main(["convert", str(tmp_path / "vit.pth"), "--from", "timm", "--set", "model=timesformer_divided_tiny_p8_8x32",
                 "num_classes=3", "--out", str(tmp_path / "tsf")]) == 0
    captured = capsys.readouterr()
    assert "timesformer_divided_tiny_p8_8x32" in captured.out and "init missing (kept at the model's initialisation)" in captured.err
    assert tubelet.load_model(tmp_path / "tsf").num_classes == 3
    official = random_state(xvit_official_shapes())
    path = _pyth(tmp_path, official)
    assert main(["convert", str(path), "--from", "xvit", "--set", "shift_div=8", "--out", str(tmp_path / "x")]) == 2
    assert "--from xvit has no option 'shift_div'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name it with --set model=NAME"):
        load_foreign_model(tmp_path / "vit.pth", "timm")


@pytest.mark.parametrize("share_gate", [True, False])
def test_official_lvt_fills_the_official_architecture(tmp_path, share_gate):
    official = random_state(lvt_official_shapes(share_gate=share_gate))
    converted = convert_lvt_official(official)
    assert len(converted) == len(official) - 2  # new_fc: not on the forward path of the vit consensus
    model = load_lvt_official(_pyth(tmp_path, official), img_size=32, patch_stride=7)
    args = model.config["args"]
    assert args["attention_options"]["groupings"] == ["tube", "frame"] and args["attention_options"]["temporal_shift_div"] == 4
    assert args["attention_options"]["fixation_shared"] is share_gate and args["num_heads"] == 4
    assert (args["patch_stride"], args["patch_norm"], args["pos_embed"], args["mlp"], args["head"]) == (7, True, "temporal", "dwconv", "norm_mean_mlp")
    state = model.state_dict()
    assert set(state) == set(converted)
    assert torch.equal(state["blocks.0.attn.steps.0.attn.qkv.weight"], official["base_model.blocks.0.temporal_attn.qkv.weight"])  # time first
    assert torch.equal(state["blocks.1.mlp.dwconv.weight"], official["base_model.blocks.1.mlp.dwconv.dwconv.weight"])
    assert model.grid == VideoShape(4, 5, 5)  # (32 + 2*4 - 8) // 7 + 1
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 5)
    # shared or not, every step is one the fused kernel covers (the triton backend's fused path)
    assert all(step.fusable for block in model.blocks for step in block.attn.steps)
    with pytest.raises(ValueError, match=r"official LVT parameters with no tubelet counterpart: base_model.blocks.0.attn.k_conv.weight"):
        convert_lvt_official({**official, "base_model.blocks.0.attn.k_conv.weight": torch.zeros(1)})
