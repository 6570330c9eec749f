"""The attention layout switch (``tubelet.attention.layout``): both layouts compute the same function
(float64, outputs and gradients of inputs and weights) for TimeSformer's divided block and the
grouped schemes, at odd grid sizes with and without a class token; the ``view`` layout reaches the
core without ``partition`` copies where it applies; chunks of the head axis change nothing; a bad
name is an error naming the choices."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.attention import grouping, layout, sdpa
from tubelet.attention.layout import ATTENTION_LAYOUT, view_split
from tubelet.attention.registry import build_attention
from tubelet.layers.shape import VideoShape

DIM, HEADS = 12, 3
SHAPE = VideoShape(3, 5, 7)
LAYOUTS = ("permute", "view")


OPTIONS = {"local_global": dict(local_splits=(1, 5, 1), global_stride=(3, 1, 7))}  # windows no view, strides


def build(scheme: str) -> torch.nn.Module:
    torch.manual_seed(0)
    module = build_attention(scheme, DIM, HEADS, **OPTIONS.get(scheme, {})).double()
    for p in module.parameters():  # non-zero temporal_fc, norms and biases
        torch.nn.init.normal_(p, std=0.3)
    return module


def outputs_and_grads(module: torch.nn.Module, num_prefix: int, name: str):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, num_prefix + SHAPE.num_patches, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)
    with ATTENTION_LAYOUT.using(name):
        out, shape = module(x, SHAPE)
    assert shape == SHAPE
    params = list(module.parameters())
    grads = torch.autograd.grad((out * weights).sum(), [x, *params])
    return out, grads


@pytest.mark.parametrize("num_prefix", [0, 1])
@pytest.mark.parametrize("scheme", ["divided", "factorised_self", "axial", "space", "local_global"])
def test_both_layouts_compute_the_same_outputs_and_gradients(scheme, num_prefix):
    module = build(scheme)
    (out, grads), (view_out, view_grads) = (outputs_and_grads(module, num_prefix, name) for name in LAYOUTS)
    torch.testing.assert_close(view_out, out, rtol=1e-12, atol=1e-12)
    for got, want in zip(view_grads, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_prefix", [0, 1])
def test_divided_drops_the_same_tubes_and_frames_in_training(num_prefix):
    """Stochastic depth drops each tube of the temporal step and each frame of the spatial step
    (TimeSformer's code); both layouts draw the same masks from the same seed."""
    torch.manual_seed(0)
    module = build_attention("divided", DIM, HEADS, drop_path=0.5).double().train()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    results = []
    for name in LAYOUTS:
        torch.manual_seed(2)
        results.append(outputs_and_grads(module, num_prefix, name))
    (out, grads), (view_out, view_grads) = results
    torch.testing.assert_close(view_out, out, rtol=1e-12, atol=1e-12)
    for got, want in zip(view_grads, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["divided", "factorised_self", "axial"])
def test_the_view_layout_makes_no_partition_copies_without_prefix(monkeypatch, scheme):
    """Divided's temporal step and every tube, frame, row and column step go to the core as views."""
    module = build(scheme)

    def refuse(*args, **kwargs):
        raise AssertionError("partition was called under the view layout")

    monkeypatch.setattr(grouping, "partition", refuse)
    monkeypatch.setattr("tubelet.attention.divided.partition", refuse)
    x = torch.randn(2, SHAPE.num_patches, DIM, dtype=torch.float64)
    with ATTENTION_LAYOUT.using("view"):
        module(x, SHAPE)


def test_the_tubes_are_views_of_the_projections():
    """Q, K, V apart (``split_heads(separate=True)``): a tube's ``[B, H*W*heads, T, d]`` shares their storage."""
    attn = build("divided").temporal_attn
    x = torch.randn(2, SHAPE.num_patches, DIM, dtype=torch.float64)
    q, _, _ = attn.split_heads(x, separate=True)
    tubes = layout.to_groups(q, view_split(SHAPE, (SHAPE.t, 1, 1)))
    assert tubes.shape == (2, SHAPE.spatial * HEADS, SHAPE.t, DIM // HEADS)
    assert tubes.data_ptr() == q.data_ptr() and tubes.stride(-1) == 1
    packed, _, _ = attn.split_heads(x)
    torch.testing.assert_close(q, packed, rtol=1e-12, atol=1e-12)


def test_separate_projections_under_autocast_cast_their_input_once():
    """Autocast casts the input of each linear; ``split_heads(separate=True)`` casts it once itself."""
    attn = build("divided").temporal_attn.float()
    x = torch.randn(2, SHAPE.num_patches, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.profiler.profile(record_shapes=True) as prof:
        separate = attn.split_heads(x, separate=True)
        packed = attn.split_heads(x)
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[0] == list(x.shape)]
    assert len(casts) == 2  # one for each call
    for got, want in zip(separate, packed):
        assert got.dtype == want.dtype == torch.bfloat16
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    q, _, _ = attn.to("meta").split_heads(x.to("meta"), separate=True)  # no autocast state there (the bench's FLOP count)
    assert q.shape == (2, HEADS, SHAPE.num_patches, DIM // HEADS)


def test_view_split_cuts_one_run_of_grid_axes():
    assert view_split(SHAPE, (3, 1, 1)) == (1, 3, 35)  # tube
    assert view_split(SHAPE, (1, 5, 7)) == (3, 35, 1)  # frame
    assert view_split(SHAPE, (1, 1, 7)) == (15, 7, 1)  # row
    assert view_split(SHAPE, (1, 5, 1)) == (3, 5, 7)  # column
    assert view_split(SHAPE, (3, 5, 7)) == (1, 105, 1)  # joint
    assert view_split(VideoShape(2, 4, 4), (2, 2, 2)) is None  # windows: three runs


def test_chunks_of_the_head_axis_change_nothing(monkeypatch):
    """Divided's tubes put ``H*W*heads`` sequences on the head axis, past a small limit here."""
    module = build("divided")
    out, grads = outputs_and_grads(module, 1, "view")
    calls = []
    original = sdpa._sdpa
    monkeypatch.setattr(sdpa, "MAX_GRID_SEQUENCES", 16)
    monkeypatch.setattr(sdpa, "_sdpa", lambda *args: calls.append(tuple(args[0].shape[:2])) or original(*args))
    chunked, chunked_grads = outputs_and_grads(module, 1, "view")
    assert (2, 16) in calls and max(max(c) for c in calls) <= 16
    torch.testing.assert_close(chunked, out, rtol=1e-12, atol=1e-12)
    for got, want in zip(chunked_grads, grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_an_unknown_layout_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown attention layout 'strided'; expected one of auto, permute, view"):
        ATTENTION_LAYOUT.set("strided")
    assert ATTENTION_LAYOUT.get() == "auto"


def test_auto_takes_views_for_large_steps_only():
    from tubelet.attention.layout import VIEW_MIN_TOKENS, uses_views

    assert ATTENTION_LAYOUT.get() == "auto"
    assert uses_views(2, VIEW_MIN_TOKENS // 2) and not uses_views(1, VIEW_MIN_TOKENS - 1)
    with ATTENTION_LAYOUT.using("view"):
        assert uses_views(1, 10)
    with ATTENTION_LAYOUT.using("permute"):
        assert not uses_views(64, VIEW_MIN_TOKENS)


def test_auto_gives_the_same_function_across_its_threshold(monkeypatch):
    """A divided model under ``auto`` with the threshold below and above its step: equal outputs."""
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=4, depth=1).double().eval()
    video = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        monkeypatch.setattr(layout, "VIEW_MIN_TOKENS", 1)
        viewed = model(video)
        monkeypatch.setattr(layout, "VIEW_MIN_TOKENS", 10**9)
        permuted = model(video)
    torch.testing.assert_close(viewed, permuted, rtol=1e-12, atol=1e-12)
