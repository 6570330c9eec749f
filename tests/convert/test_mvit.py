"""torchvision and PySlowFast MViTv2 -> tubelet: every key consumed, every parameter set, errors
that name what does not fit, and the ``tubelet convert`` command.

torchvision does not import with the CPU torch of the test suite, so its layout is written here
from its ``MSBlockConfig`` lists (``mvit_v2_s``: key names and shapes as torchvision's
``MViT.__init__`` makes them); the logit comparison with torchvision itself runs on the GPU
machine (``test_logits_equal_torchvision_mvit_v2_s``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import save_file

import tubelet
from tubelet.cli import main
from tubelet.convert.slowfast_mvit import convert_slowfast_mvit, load_slowfast_mvit
from tubelet.convert.torchvision_mvit import convert_torchvision_mvit, load_torchvision_mvit

# torchvision's mvit_v2_s block settings, per block: heads, input and output widths, Q and KV strides.
V2_S = dict(
    num_heads=[1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8],
    input_channels=[96, 96, 192, 192] + [384] * 11 + [768],
    output_channels=[96, 192, 192] + [384] * 11 + [768, 768],
    stride_q=[[1, 1, 1], [1, 2, 2], [1, 1, 1], [1, 2, 2]] + [[1, 1, 1]] * 10 + [[1, 2, 2], [1, 1, 1]],
    stride_kv=[[1, 8, 8], [1, 4, 4], [1, 4, 4]] + [[1, 2, 2]] * 11 + [[1, 1, 1]] * 2,
)
# The same layout for mvitv2_tiny_8x32 (8 frames at 32 px: an 4 x 8 x 8 token grid).
TINY = dict(
    num_heads=[1, 2, 4], input_channels=[16, 16, 32], output_channels=[16, 32, 64],
    stride_q=[[1, 1, 1], [1, 2, 2], [1, 2, 2]], stride_kv=[[1, 4, 4], [1, 2, 2], [1, 1, 1]],
)


def torchvision_layout(config: dict, frames: int, size: int, num_classes: int = 400, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict named and shaped as torchvision's ``MViT(rel_pos_embed=True,
    proj_after_attn=True)`` for ``config``, 3x7x7 stem of stride 2x4x4, 3x3x3 pooling kernels."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv_proj.weight": [config["input_channels"][0], 3, 3, 7, 7], "conv_proj.bias": [config["input_channels"][0]]}
    shapes["pos_encoding.class_token"] = [config["input_channels"][0]]
    grid = [frames // 2, size // 4, size // 4]
    for i, (heads, dim, out, sq, skv) in enumerate(zip(*(config[k] for k in ("num_heads", "input_channels", "output_channels", "stride_q", "stride_kv")))):
        block, head_dim = f"blocks.{i}.", out // heads
        shapes.update({block + "norm1.weight": [dim], block + "norm1.bias": [dim], block + "norm2.weight": [out], block + "norm2.bias": [out]})
        shapes.update({block + "attn.qkv.weight": [3 * out, dim], block + "attn.qkv.bias": [3 * out]})
        shapes.update({block + "attn.project.0.weight": [out, out], block + "attn.project.0.bias": [out]})
        for name in "qkv":
            shapes[block + f"attn.pool_{name}.pool.weight"] = [head_dim, 1, 3, 3, 3]
            shapes[block + f"attn.pool_{name}.norm_act.0.weight"] = [head_dim]
            shapes[block + f"attn.pool_{name}.norm_act.0.bias"] = [head_dim]
        spatial = 2 * max(max(grid[1:]) // sq[1], max(grid[1:]) // skv[1]) - 1
        shapes.update({block + "attn.rel_pos_h": [spatial, head_dim], block + "attn.rel_pos_w": [spatial, head_dim]})
        shapes[block + "attn.rel_pos_t"] = [2 * grid[0] - 1, head_dim]
        shapes.update({block + "mlp.0.weight": [4 * out, out], block + "mlp.0.bias": [4 * out]})
        shapes.update({block + "mlp.3.weight": [out, 4 * out], block + "mlp.3.bias": [out]})
        if dim != out:
            shapes.update({block + "project.weight": [out, dim], block + "project.bias": [out]})
        grid = [n // s for n, s in zip(grid, sq)]
    last = config["output_channels"][-1]
    shapes.update({"norm.weight": [last], "norm.bias": [last], "head.1.weight": [num_classes, last], "head.1.bias": [num_classes]})
    return {name: 0.1 * torch.randn(shape, generator=g) for name, shape in shapes.items()}


# PySlowFast's names for torchvision's (read in slowfast/models/video_model_builder.py and attention.py).
SLOWFAST_NAMES = [
    (r"^conv_proj\.", "patch_embed.proj."), (r"^pos_encoding\.class_token$", "cls_token"), (r"attn\.project\.0\.", "attn.proj."),
    (r"attn\.pool_([qkv])\.pool\.", r"attn.pool_\1."), (r"attn\.pool_([qkv])\.norm_act\.0\.", r"attn.norm_\1."),
    (r"mlp\.0\.", "mlp.fc1."), (r"mlp\.3\.", "mlp.fc2."), (r"\.project\.", ".proj."), (r"^head\.1\.", "head.projection."),
]


def slowfast_layout(torchvision_state: dict[str, torch.Tensor], separate_qkv: bool = False) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in torchvision_state.items():
        for pattern, replacement in SLOWFAST_NAMES:
            key = re.sub(pattern, replacement, key)
        if key == "cls_token":
            value = value.reshape(1, 1, -1)
        if separate_qkv and ".attn.qkv." in key:
            for part, chunk in zip("qkv", value.chunk(3)):
                out[key.replace(".qkv.", f".{part}.")] = chunk
        else:
            out[key] = value
    return out


def clip(frames=8, size=32, seed=1):
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_mvit_v2_s_layout_fills_every_parameter_of_mvitv2_small():
    state = torchvision_layout(V2_S, frames=16, size=224)
    assert sum(v.numel() for v in state.values()) == 34_537_744  # torchvision's num_params for mvit_v2_s
    converted = convert_torchvision_mvit(state)
    expected = tubelet.create_model("mvitv2_small_16x224").state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == v.shape for k, v in expected.items())
    torch.testing.assert_close(converted["blocks.3.proj.weight"], state["blocks.3.project.weight"])
    torch.testing.assert_close(converted["blocks.14.attn.norm_v.bias"], state["blocks.14.attn.pool_v.norm_act.0.bias"])
    torch.testing.assert_close(converted["cls_token"].flatten(), state["pos_encoding.class_token"])


def test_torchvision_and_slowfast_layouts_of_the_same_weights_give_one_model():
    state = torchvision_layout(TINY, frames=8, size=32, num_classes=7)
    from_torchvision = convert_torchvision_mvit(state)
    for separate in (False, True):
        from_slowfast = convert_slowfast_mvit(slowfast_layout(state, separate_qkv=separate))
        assert set(from_slowfast) == set(from_torchvision)
        for key, value in from_torchvision.items():
            torch.testing.assert_close(from_slowfast[key], value, rtol=0, atol=0, msg=key)


def test_files_convert_through_the_command_line(tmp_path, capsys):
    state = torchvision_layout(TINY, frames=8, size=32, num_classes=7)
    torch.save(state, tmp_path / "mvit.pth")
    save_file(state, str(tmp_path / "mvit.safetensors"))
    torch.save({"model_state": slowfast_layout(state), "epoch": 3, "cfg": "MVIT:\n  DEPTH: 3\n"}, tmp_path / "mvit.pyth")
    direct = load_torchvision_mvit(tmp_path / "mvit.pth").eval()
    assert direct.config["architecture"] == "mvitv2_tiny_8x32" and direct.num_classes == 7
    expected = direct(clip())
    for name, fmt in (("mvit.pth", "torchvision-mvit"), ("mvit.safetensors", "torchvision-mvit"), ("mvit.pyth", "slowfast-mvit")):
        out = tmp_path / f"out_{name}"
        assert main(["convert", str(tmp_path / name), "--from", fmt, "--out", str(out)]) == 0
        assert "mvitv2_tiny_8x32" in capsys.readouterr().out
        torch.testing.assert_close(tubelet.load_model(out).eval()(clip()), expected, rtol=1e-5, atol=1e-6)


def test_another_architecture_is_one_line_naming_what_does_not_fit(tmp_path, capsys):
    state = torchvision_layout(TINY, frames=8, size=32)
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(ValueError, match=r"torchvision MViT parameters with no tubelet counterpart: conv1\.weight, fc\.weight"):
        convert_torchvision_mvit(resnet)
    deeper = torchvision_layout(dict(TINY, **{k: v + v[-1:] for k, v in TINY.items()}), frames=8, size=32)
    torch.save(deeper, tmp_path / "deeper.pth")
    assert main(["convert", str(tmp_path / "deeper.pth"), "--from", "torchvision-mvit", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "fits no tubelet architecture; closest is mvitv2_tiny_8x32" in error
    assert "names the tubelet model lacks: blocks.3." in error
    absolute = dict(state, **{"pos_encoding.spatial_pos": torch.zeros(64, 16)})
    with pytest.raises(ValueError, match=r"no tubelet counterpart: pos_encoding\.spatial_pos"):
        convert_torchvision_mvit(absolute)
    torch.save({"model": state}, tmp_path / "wrapped.pyth")
    with pytest.raises(ValueError, match="has no 'model_state': not a PySlowFast checkpoint"):
        load_slowfast_mvit(tmp_path / "wrapped.pyth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "junk.pth"), "--from", "torchvision-mvit", "--out", str(tmp_path / "y")]) == 2
    assert "junk.pth cannot be read as a torch.save file" in capsys.readouterr().err


def _torchvision():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: torchvision does not import with the CPU torch of the test suite")
    return pytest.importorskip("torchvision.models.video", reason="torchvision is not installed")


@pytest.mark.gpu
def test_logits_equal_torchvision_mvit_v2_s(monkeypatch):
    """torchvision's mvit_v2_s with random weights (every parameter perturbed), converted; fp32
    logits on a 16 x 224 clip agree within 1e-4."""
    video_models = _torchvision()
    torch.manual_seed(0)
    reference = video_models.mvit_v2_s().cuda().eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.02 * torch.randn_like(param))
    model = tubelet.create_model("mvitv2_small_16x224")
    model.load_state_dict(convert_torchvision_mvit(reference.state_dict()))
    model = model.cuda().eval()
    clip = torch.randn(2, 3, 16, 224, 224, device="cuda")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # float32 means float32 here
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with torch.no_grad():
        expected, got = reference(clip), model(clip)
    difference = (got - expected).abs().max().item()
    print(f"max abs logit difference vs torchvision mvit_v2_s (fp32): {difference:.3g}")
    assert difference <= 1e-4 and math.isfinite(difference)


@pytest.mark.gpu
def test_bench_compares_with_torchvision_on_the_same_weights(monkeypatch):
    _torchvision()
    from tubelet.bench import BenchConfig, run_bench

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    result = run_bench(BenchConfig(models=("mvitv2_tiny_8x32",), compare=True, reps=2, warmup=1, device="cuda"))
    ours, theirs = result["rows"]
    assert ours["status"] == theirs["status"] == "ok" and theirs["implementation"].startswith("torchvision")
    assert theirs["logits_relative_difference"] < 1e-5
