"""Every efficient attention scheme equals the same computation written as masked joint attention
over all tokens, with the mask built from the scheme's definition (outputs and gradients)."""

from __future__ import annotations

import pytest
import torch

from tubelet.attention import get_attention, list_attention
from tubelet.attention.registry import build_attention
from tubelet.attention.grouping import partition, unpartition
from tubelet.layers.shape import VideoShape

from masks import coordinates, grouping_key, same, with_prefix

DIM, HEADS = 16, 4
SHAPE = VideoShape(4, 4, 6)
STEPS = {
    "joint": ("joint",),
    "space": ("frame",),
    "local_global": ("window", "stride"),
    "axial": ("tube", "row", "column"),
    "factorised_self": ("frame", "tube"),
}


def fresh_input(num_prefix: int, shape: VideoShape = SHAPE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, num_prefix + shape.num_patches, DIM, generator=g, dtype=torch.float64, requires_grad=True)


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    module = get_attention(name)(DIM, HEADS).double()
    for p in module.parameters():  # non-trivial norms and biases too
        torch.nn.init.normal_(p, std=0.3)
    return module


def assert_same_outputs_and_grads(module, x, efficient, reference):
    weights = torch.randn_like(efficient(x))
    grads = []
    for fn in (efficient, reference):
        out = fn(x)
        params = [x, *module.parameters()]
        grads.append((out, torch.autograd.grad((out * weights).sum(), params)))
    (out_a, grads_a), (out_b, grads_b) = grads
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-10)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("num_prefix", [0, 1])
@pytest.mark.parametrize("name", sorted(STEPS))
def test_grouped_scheme_equals_masked_joint_attention(name, num_prefix):
    module = build(name)
    x = fresh_input(num_prefix)

    def reference(x):
        for step, grouping in zip(module.steps, STEPS[name]):
            mask = with_prefix(same(grouping_key(grouping, SHAPE)), num_prefix)
            x = x + step.attn(step.norm(x), mask=mask)
        return x

    assert_same_outputs_and_grads(module, x, lambda x: module(x, SHAPE)[0], reference)


def test_divided_equals_masked_joint_attention():
    """TimeSformer T+S: temporal attention among patches at one position (no class token), through
    temporal_fc; then spatial attention in each frame with a copy of the class token per frame,
    the copies' updates averaged."""
    module = build("divided")
    x = fresh_input(1)
    n, t, dim = SHAPE.num_patches, SHAPE.t, DIM
    frame_of = grouping_key("frame", SHAPE).squeeze(1)

    def reference(x):
        cls, patches = x[:, :1], x[:, 1:]
        temporal = module.temporal_attn(module.temporal_norm(patches), mask=same(grouping_key("tube", SHAPE)))
        patches = patches + module.temporal_fc(temporal)
        seq = torch.cat([cls.expand(-1, t, -1), patches], dim=1)  # [B, T copies + T*H*W, D]
        token_frame = torch.cat([torch.arange(t), frame_of])
        update = module.attn(module.norm(seq), mask=token_frame[:, None] == token_frame[None, :])
        cls = cls + update[:, :t].mean(dim=1, keepdim=True)
        return torch.cat([cls, patches + update[:, t:]], dim=1)

    assert n == frame_of.numel() and dim == x.shape[-1]
    assert_same_outputs_and_grads(module, x, lambda x: module(x, SHAPE)[0], reference)


def test_factorised_dot_equals_masked_heads():
    """ViViT model 4: heads 0..h/2-1 masked to the frame, heads h/2..h-1 to the time tube."""
    module = build("factorised_dot")
    x = fresh_input(0)
    space, time = same(grouping_key("frame", SHAPE)), same(grouping_key("tube", SHAPE))

    def reference(x):
        q, k, v = module.attn.split_heads(module.norm(x))
        half = HEADS // 2
        out_space = module.attn.attend(q[:, :half], k[:, :half], v[:, :half], mask=space)
        out_time = module.attn.attend(q[:, half:], k[:, half:], v[:, half:], mask=time)
        return x + module.attn.merge_heads(torch.cat([out_space, out_time], dim=1))

    assert_same_outputs_and_grads(module, x, lambda x: module(x, SHAPE)[0], reference)


def test_every_softmax_scheme_is_tested():
    tested = set(STEPS) | {"divided", "factorised_dot", "xvit", "tsm"}  # the last two in test_mixing.py
    softmax = {name for name in list_attention() if not name.startswith("linear")}
    assert softmax <= tested, f"untested schemes: {softmax - tested}"


@pytest.mark.parametrize("dilated", [False, True])
@pytest.mark.parametrize("factors", [(1, 4, 6), (4, 1, 1), (2, 2, 3), (1, 1, 6), (4, 2, 2)])
def test_partition_round_trip_and_groups(factors, dilated):
    x = torch.randn(3, SHAPE.num_patches, 5)
    groups = partition(x, SHAPE, factors, dilated)
    torch.testing.assert_close(unpartition(groups, SHAPE, factors, dilated), x)
    # tokens of one group share the group key
    ids = torch.arange(SHAPE.num_patches).float().reshape(1, -1, 1)
    members = partition(ids, SHAPE, factors, dilated).long().squeeze(-1)  # [G, S]
    coords = coordinates(SHAPE)
    key = coords % torch.tensor(factors) if dilated else coords // torch.tensor(factors)
    assert sorted(members.flatten().tolist()) == list(range(SHAPE.num_patches))
    for group in members:
        assert (key[group] == key[group[0]]).all()


def test_grid_that_does_not_divide_is_a_clear_error():
    module = build("local_global")
    x = fresh_input(1, VideoShape(3, 4, 6))
    with pytest.raises(ValueError, match="T=3"):
        module(x, VideoShape(3, 4, 6))


@pytest.mark.parametrize("name, option", [("joint", "local_splits"), ("joint", "steps"), ("space", "global_stride"), ("axial", "summary")])
def test_a_scheme_takes_only_its_own_options(name, option):
    with pytest.raises(ValueError, match=f"attention scheme {name!r} has no option {option!r}"):
        build_attention(name, DIM, HEADS, **{option: 1})
