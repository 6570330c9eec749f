"""Every softmax attention kernel of the switch (``tubelet.attention.sdpa``) on CUDA, bf16, against
a float64 reference at sequence lengths 8, 16, 197 and 785, forward and backward, and a sequence
batch above CUDA's grid limit (cut into chunks). Skipped without CUDA.

    python -m pytest -m gpu tests/gpu/test_sdpa_backends.py -q -rs
"""

from __future__ import annotations

import math

import pytest
import torch

from tubelet.attention import sdpa

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# Stated tolerance of every setting: relative L2 error against float64 of at most 1% (bf16 inputs
# and outputs carry 0.4% rounding each), outputs and every gradient.
TOLERANCE = 1e-2
SHAPES = {8: (784, 12), 16: (392, 12), 197: (16, 12), 785: (4, 12)}  # length -> (sequences, heads)


def relative_error(got, want):
    return ((got.double() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("backend", sdpa.SDPA_BACKENDS)
@pytest.mark.parametrize("length", sorted(SHAPES))
def test_each_kernel_equals_the_reference(backend, length):
    sequences, heads = SHAPES[length]
    g = torch.Generator(device="cuda").manual_seed(length)
    q, k, v, grad = (torch.randn(sequences, heads, length, 64, device="cuda", generator=g).bfloat16() for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    if backend == "triton" and length > 32:
        with sdpa.sdpa_backend(backend), pytest.raises(ValueError, match=f"at most 32 queries and keys, got {length}"):
            sdpa.attention(q, k, v)
        return
    with sdpa.sdpa_backend(backend):
        out = sdpa.attention(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), grad)
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = (wide[0] @ wide[1].transpose(-2, -1) / math.sqrt(64)).softmax(-1) @ wide[2]
    expected_grads = torch.autograd.grad(expected, wide, grad.double())
    assert relative_error(out, expected) < TOLERANCE
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE


@pytest.mark.parametrize("backend", sdpa.SDPA_BACKENDS)
def test_each_kernel_reads_the_view_layouts_temporal_groups(backend):
    """``ATTENTION_LAYOUT = "view"``'s temporal groups: ``[B, T*HW, D]`` tokens read as
    ``[B, HW*heads, T, d]`` (TimeSformer-B 8x224 batch 4: 2,352 "heads" of 8 keys), strided, no copy."""
    g = torch.Generator(device="cuda").manual_seed(7)
    batch, frames, spatial, heads, d = 4, 8, 196, 12, 64
    q, k, v, grad = (torch.randn(batch, frames * spatial, heads * d, device="cuda", generator=g).bfloat16() for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def groups(x):
        return x.view(batch, frames, spatial * heads, d).transpose(1, 2)  # [B, HW*heads, T, d]

    with sdpa.sdpa_backend(backend):
        out = sdpa.attention(groups(q), groups(k), groups(v))
        grads = torch.autograd.grad(out, (q, k, v), groups(grad))
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    gq, gk, gv = (groups(t) for t in wide)
    expected = (gq @ gk.transpose(-2, -1) / math.sqrt(d)).softmax(-1) @ gv
    expected_grads = torch.autograd.grad(expected, wide, groups(grad).double())
    assert relative_error(out, expected) < TOLERANCE
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE


@pytest.mark.parametrize("backend", ["auto", "flash", "efficient", "triton"])
def test_a_sequence_batch_above_the_grid_limit_runs_and_is_exact(backend):
    sequences = sdpa.MAX_GRID_SEQUENCES + 4465  # 70,000 temporal sequences of 8 frames
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(sequences, 2, 8, 64, device="cuda", generator=g).bfloat16() for _ in range(3))
    with sdpa.sdpa_backend(backend), torch.inference_mode():
        out = sdpa.attention(q, k, v)
        halves = torch.cat([sdpa._sdpa(q[:35000], k[:35000], v[:35000], None, 0.0),
                            sdpa._sdpa(q[35000:], k[35000:], v[35000:], None, 0.0)])
    torch.testing.assert_close(out, halves, rtol=0, atol=0)


def _kernels_of(call) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return [event.name for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]


def test_auto_takes_the_efficient_kernel_for_short_keys_from_the_first_call_and_leaves_no_state():
    """With ``SHORT_KEY_KERNEL`` ``efficient``, the first short-key call already runs the
    memory-efficient kernel (a priority order set for the call did not apply to its first call on
    torch 2.11), and the global priority order is the same after the call as before."""
    before = torch._C._get_sdp_priority_order()
    q = torch.randn(64, 2, 4, 16, device="cuda", dtype=torch.bfloat16)
    with sdpa.SHORT_KEY_KERNEL.using("efficient"):
        kernels = _kernels_of(lambda: sdpa.attention(q, q, q))
    assert any("fmha_cutlass" in name or "efficient" in name.lower() for name in kernels), kernels
    assert torch._C._get_sdp_priority_order() == before


@pytest.fixture
def short_keys_to_triton(monkeypatch):
    """``auto`` takes the Triton kernel for short keys at any size (the tiny models' too)."""
    monkeypatch.setattr(sdpa, "TRITON_MIN_ELEMENTS", 0)
    with sdpa.SHORT_KEY_KERNEL.using("triton"):
        yield


def test_auto_takes_the_triton_kernel_for_short_sequences_only():
    """With ``SHORT_KEY_KERNEL`` ``triton`` (the default), ``auto`` runs tubelet's kernel for at most
    8 queries and keys without a mask from ``TRITON_MIN_ELEMENTS`` query values, and PyTorch's
    kernels for longer sequences, a mask or fewer values (a batch-1 step)."""
    short = torch.randn(8192, 8, 8, 64, device="cuda", dtype=torch.bfloat16)
    long = torch.randn(8192, 8, 9, 64, device="cuda", dtype=torch.bfloat16)
    assert short.numel() >= sdpa.TRITON_MIN_ELEMENTS
    assert not any("_forward_kernel" in name for name in _kernels_of(lambda: sdpa.attention(short[:64], short[:64], short[:64])))
    assert any("_forward_kernel" in name for name in _kernels_of(lambda: sdpa.attention(short, short, short)))
    assert not any("_forward_kernel" in name for name in _kernels_of(lambda: sdpa.attention(long, long, long)))
    mask = torch.ones(8, 8, device="cuda", dtype=torch.bool)
    assert not any("_forward_kernel" in name for name in _kernels_of(lambda: sdpa.attention(short, short, short, mask)))


def test_a_compiled_divided_model_equals_eager_with_the_triton_kernel(short_keys_to_triton):
    """Eager runs tubelet's kernel for the 8-frame temporal steps; compiled, the compiler's choice."""
    import tubelet

    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5).cuda().eval()
    video = torch.randn(2, 3, 8, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert any("_forward_kernel" in name for name in _kernels_of(lambda: model(video)))
        eager = model(video)
        out = torch.compile(model, fullgraph=True)(video)
    assert relative_error(out, eager.double()) < TOLERANCE


def test_activation_checkpointing_recomputes_the_forward_exactly():
    """The recompute in backward picks the same kernels as the forward (it raised CheckpointError),
    and the gradients equal those without checkpointing (up to the order of the attention
    backward's atomic additions)."""
    import tubelet

    def gradients(checkpointing):
        torch.manual_seed(0)
        model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5, depth=2, embed_dim=32,
                                     num_heads=2).cuda().train()
        model.set_grad_checkpointing(checkpointing)
        x = torch.randn(4, 3, 4, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x).float().logsumexp(-1).mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, recomputed = gradients(False), gradients(True)
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-3, atol=1e-6, msg=name)


def test_the_view_layout_equals_permute_on_a_base_model_at_a_large_batch():
    """TimeSformer-B at batch 8 (12,552 tokens a step: ``auto`` takes views) in float32 without
    TF32: the same logits under both layouts."""
    import tubelet
    from tubelet.attention.layout import ATTENTION_LAYOUT

    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_base_p16_8x224", num_classes=10).cuda().eval()
    video = torch.randn(8, 3, 8, 224, 224, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            with ATTENTION_LAYOUT.using("view"):
                viewed = model(video)
            with ATTENTION_LAYOUT.using("permute"):
                permuted = model(video)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert relative_error(viewed, permuted.double()) < 1e-5
