"""The short-sequence softmax attention kernels (``tubelet.kernels.short_attention``) against a
float64 reference, forward and backward, and the ``triton`` setting of the softmax switch
(``tubelet.attention.sdpa``) that reaches them.

On the CPU the kernels run through Triton's interpreter (tests/conftest.py) at tiny, odd sizes:
lengths and widths that are not powers of two, a head count that leaves the last program part
empty, the ``view`` layout's strided groups. ``tests/gpu/test_sdpa_backends.py`` runs them compiled
at TimeSformer's sizes.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton", reason="the kernels are written in Triton (in the test extras)")

import tubelet  # noqa: E402
from tubelet.attention import sdpa  # noqa: E402
from tubelet.kernels.short_attention import MAX_LENGTH, SHORT_ATTENTION_TILES, triton_short_attention  # noqa: E402
from tubelet.kernels.short_attention.reference import short_attention_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True, params=SHORT_ATTENTION_TILES.names)
def tiles(request):
    """Every test with each way the kernels tile their sequences."""
    with SHORT_ATTENTION_TILES.using(request.param):
        yield request.param


def reference(q, k, v):
    """Scores, softmax and weighted sum in float64, written out."""
    q, k, v = (t.double() for t in (q, k, v))
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert not torch.isnan(a).any()
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def inputs(seed, n, heads, len_q, len_k, d, e, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = ((n, heads, len_q, d), (n, heads, len_k, d), (n, heads, len_k, e))
    return [(torch.randn(shape, generator=g) * 2).to(device=DEVICE, dtype=dtype).requires_grad_() for shape in shapes]


def check(q, k, v, tolerance):
    out = triton_short_attention(q, k, v)
    assert out.dtype == q.dtype and out.shape == (*q.shape[:-1], v.shape[-1])
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = reference(*wide)
    assert relative_error(out, expected) < tolerance
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(expected, wide, grad.double())
    for name, a, b in zip("qkv", got, want):
        assert a.shape == b.shape and a.stride() == (q, k, v)["qkv".index(name)].stride(), name
        assert relative_error(a, b) < tolerance, name


@pytest.mark.parametrize(
    "n, heads, len_q, len_k, d, e",
    [
        (2, 3, 8, 8, 16, 16),  # TimeSformer's 8 frames, at a small width
        (1, 5, 5, 7, 12, 20),  # Lq != Lk, widths that need padding, e > d
        (3, 9, 1, 3, 8, 8),  # one query; 9 heads: the last program's block is part empty
        (1, 2, 16, 16, 64, 64),  # 16 frames at the base models' head width
        (2, 3, 32, 32, 16, 8),  # the most frames; e below a tensor-core product's side
    ],
)
def test_kernels_equal_the_reference_forward_and_backward(n, heads, len_q, len_k, d, e):
    check(*inputs(len_q * 100 + len_k, n, heads, len_q, len_k, d, e), tolerance=1e-5)


def test_sharp_scores_stay_finite():
    """Scores of several thousand (the online softmax subtracts each query's running maximum;
    exp of the raw scores would overflow float32): the output is right and the gradients finite."""
    q, k, v = inputs(1, 1, 2, 8, 8, 16, 16)
    with torch.no_grad():
        q.mul_(20)
        k.mul_(20)
    out = triton_short_attention(q, k, v)
    assert relative_error(out, reference(q, k, v)) < 1e-5
    assert all(torch.isfinite(grad).all() for grad in torch.autograd.grad(out.sum(), (q, k, v)))


def test_bf16_inputs_are_computed_in_float32_and_rounded_once():
    q, k, v = inputs(2, 2, 4, 8, 8, 32, 32, dtype=torch.bfloat16)
    out = triton_short_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    exact = short_attention_reference(*(t.float() for t in (q, k, v)))
    torch.testing.assert_close(out.float(), exact, rtol=2.0**-7, atol=1e-6)
    check(q, k, v, tolerance=1e-2)


def test_the_view_layouts_strided_groups_are_read_in_place_and_the_output_is_token_major():
    """``[B, T*HW, heads*d]`` tokens as ``[B, HW*heads, T, d]`` groups (``ATTENTION_LAYOUT`` ``view``):
    the kernels read the strided views without a copy, and the output transposes back to tokens as
    a view, as PyTorch's flash kernels' output does."""
    batch, frames, spatial, heads, d = 2, 4, 3, 2, 8
    g = torch.Generator().manual_seed(3)
    tokens = [torch.randn(batch, frames * spatial, heads * d, generator=g).to(DEVICE).requires_grad_() for _ in range(3)]

    def groups(x):
        return x.view(batch, frames, spatial * heads, d).transpose(1, 2)

    q, k, v = (groups(t) for t in tokens)
    out = triton_short_attention(q, k, v)
    assert out.transpose(1, 2).is_contiguous()
    wide = [groups(t.detach().double().requires_grad_()) for t in tokens]
    assert relative_error(out, reference(*wide)) < 1e-5
    grad = torch.randn(out.shape, generator=g).to(out)
    got = torch.autograd.grad(out, tokens, grad)
    want = torch.autograd.grad(reference(*wide), [w._base for w in wide], grad.double())
    for a, b in zip(got, want):
        assert relative_error(a, b) < 1e-5


def test_autocast_computes_in_its_dtype():
    q, k, v = inputs(4, 1, 2, 8, 8, 16, 16)
    with torch.autocast(q.device.type, dtype=torch.bfloat16):
        out = triton_short_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, reference(q, k, v)) < 1e-2


@pytest.mark.parametrize("shapes, message", [
    (((1, 2, 8, 16), (1, 2, MAX_LENGTH + 1, 16), (1, 2, MAX_LENGTH + 1, 16)), r"at most 32 queries and keys, got 8 and 33"),
    (((1, 2, 8, 16), (1, 1, 8, 16), (1, 1, 8, 16)), r"matching queries, keys and values \(no broadcasting\)"),
    (((1, 2, 8, 16), (1, 2, 8, 12), (1, 2, 8, 16)), r"matching queries, keys and values"),
    (((2, 8, 16), (2, 8, 16), (2, 8, 16)), r"\[N, heads, L, d\]"),
])
def test_inputs_the_kernels_do_not_take_are_errors_naming_them(shapes, message):
    q, k, v = (torch.zeros(shape, device=DEVICE) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        triton_short_attention(q, k, v)


def test_the_switch_reaches_the_kernel_and_refuses_masks_and_dropout(monkeypatch):
    q, k, v = inputs(5, 2, 2, 8, 8, 16, 16)
    calls = []
    monkeypatch.setattr(sdpa, "triton_short_attention", lambda *args: calls.append(args[0].shape) or triton_short_attention(*args))
    with sdpa.sdpa_backend("triton"):
        out = sdpa.attention(q, k, v)
        with pytest.raises(ValueError, match="'triton' softmax attention backend takes no mask and no dropout"):
            sdpa.attention(q, k, v, torch.ones(8, 8, dtype=torch.bool, device=DEVICE))
        with pytest.raises(ValueError, match="no mask and no dropout"):
            sdpa.attention(q, k, v, dropout_p=0.1)
    assert calls == [q.shape]
    assert relative_error(out, reference(q, k, v)) < 1e-5


def test_a_divided_model_gives_the_same_logits_and_gradients_with_the_kernel():
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=3, depth=2, embed_dim=32, num_heads=2).to(DEVICE)
    video = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def run(backend):
        model.zero_grad()
        with sdpa.sdpa_backend(backend):
            logits = model(video)
        logits.logsumexp(-1).sum().backward()
        return logits, {name: p.grad.clone() for name, p in model.named_parameters()}

    (ours, our_grads), (theirs, their_grads) = run("triton"), run("math")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_auto_leaves_cpu_calls_to_pytorch_whatever_the_short_key_kernel(monkeypatch):
    """``SHORT_KEY_KERNEL`` steers ``auto`` on CUDA only (the GPU tests check that it takes the
    kernel there); on the CPU ``auto`` is PyTorch's choice."""
    q, k, v = (t.detach().cpu() for t in inputs(6, 2, 2, 8, 8, 16, 16))
    calls = []
    monkeypatch.setattr(sdpa, "triton_short_attention", lambda *args: calls.append(1))
    assert sdpa.SHORT_KEY_KERNEL.get() == "triton"
    out = sdpa.attention(q, k, v)
    assert calls == [] and relative_error(out, reference(q, k, v)) < 1e-5
    with pytest.raises(ValueError, match=r"'flash'; expected one of triton, efficient"):
        sdpa.SHORT_KEY_KERNEL.set("flash")
