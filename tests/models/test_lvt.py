"""The linear video transformer models (seed 003): configuration, size against Table 1, variants."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.attention.linear import LinearAttention
from tubelet.models.summary import model_cost

TINY = "lvt_tiny_p8_8x32"


def _video(frames=8, size=32, batch=2, seed=0):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_registered_variants_follow_table7():
    assert tubelet.list_models("lvt") == [
        "lvt_base_p16_16x224", "lvt_base_p16_16x336", "lvt_base_p16_32x224", "lvt_small_p16_8x224", TINY,
    ]
    with torch.device("meta"):
        model = tubelet.create_model("lvt_base_p16_16x224")
    args = model.config["args"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["patch_size"]) == (512, 12, 8, 16)
    assert (args["num_frames"], args["img_size"], args["attention"]) == (16, 224, "linear")
    mixer = model.blocks[0].attn
    assert isinstance(mixer, LinearAttention) and mixer.variant == "relu" and mixer.groupings == ("frame", "tube")
    assert [step.grouping.name for step in mixer.steps] == ["frame", "tube"]
    assert [s.kind for s in mixer.steps[0].shifts] == ["temporal"] and [s.kind for s in mixer.steps[1].shifts] == ["spatial"]
    assert mixer.steps[0].fixation.mode == "cooperative" and mixer.steps[0].fixation.shared


@pytest.mark.slow
def test_size_near_table1():
    """Table 1: 52.2M parameters, 257.8 GMACs. See ``tubelet.models.lvt`` for the differences:
    196 instead of 289 tokens per frame (the LVT code's overlapping patches), no depth-wise MLP
    convolution, shared fixation ratio."""
    default = model_cost("lvt_base_p16_16x224", num_classes=174)  # SSv2
    assert abs(default.params - 52.2e6) / 52.2e6 < 0.02, default.params
    assert 165 < default.gmacs < 175, default.gmacs
    same_tokens_as_lvt_code = model_cost("lvt_base_p16_16x224", num_classes=174, img_size=272)  # 17 x 17 per frame
    assert abs(same_tokens_as_lvt_code.gmacs - 257.8) / 257.8 < 0.03, same_tokens_as_lvt_code.gmacs


def test_linear_cost_in_frames():
    """Linear attention: doubling the frames doubles the cost (to within the per-frame constant)."""
    costs = [model_cost(TINY, num_frames=frames).flops for frames in (8, 16, 32)]
    assert costs[1] == pytest.approx(2 * costs[0], rel=0.01) and costs[2] == pytest.approx(2 * costs[1], rel=0.01)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"variant": "performer", "performer_redraw_interval": 1},
        {"variant": "cosformer", "groupings": ("joint",)},
        {"variant": "elu", "groupings": ("band",), "band_radius": 2},
        {"variant": "linformer", "linformer_grid": (8, 4, 4), "linformer_proj_len": 16},
        {"variant": "orthoformer", "orthoformer_landmarks": 8},
        {"fixation": "separate", "association_order": "after"},
    ],
)
def test_tiny_variants_train_and_take_other_inputs(options):
    model = tubelet.create_model(TINY, num_classes=4, attention_options=options)
    logits = model(_video())
    assert logits.shape == (2, 4)
    logits.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    assert model(_video(frames=4, size=48, batch=1)).shape == (1, 4)


def test_save_and_load_keep_performer_features(tmp_path):
    model = tubelet.create_model(TINY, num_classes=3, attention_options={"variant": "performer"}).eval()
    tubelet.save_model(model, tmp_path / "m")
    loaded = tubelet.load_model(tmp_path / "m").eval()
    x = _video(batch=1)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tubelet.create_model(TINY, num_classes=3)
    x = _video()
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, b in zip(plain, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)


def test_bad_attention_options_name_the_option():
    with pytest.raises(ValueError, match="unknown linear attention variant 'relu6'"):
        tubelet.create_model(TINY, attention_options={"variant": "relu6"})
    with pytest.raises((TypeError, ValueError), match="shift_sizes"):
        tubelet.create_model(TINY, attention_options={"shift_sizes": 2})


def test_performer_redraw_keeps_gradient_checkpointing_exact():
    """The recompute in the backward pass must see the random features of the forward pass."""
    options = {"variant": "performer", "performer_redraw_interval": 1}
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tubelet.create_model(TINY, num_classes=4, attention_options=options)
        model.set_grad_checkpointing(checkpointing)
        model.train()
        model(_video()).square().sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
