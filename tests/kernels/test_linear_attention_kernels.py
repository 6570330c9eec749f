"""The Triton linear attention kernels against their PyTorch reference, forward and backward.

On CPU the kernels run through Triton's interpreter at tiny, odd sizes (lengths that are not
multiples of the block, feature and value widths that need padding); on a CUDA machine the
``gpu`` tests run them compiled at the sizes of the linear video transformer.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not importable (it is in the test extras)")

from tubelet.attention.linear import functional  # noqa: E402
from tubelet.kernels.linear_attention import triton_linear_attention  # noqa: E402
from tubelet.kernels.linear_attention.reference import linear_attention_reference  # noqa: E402

EPS = 1e-6
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert not torch.isnan(a).any()
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def inputs(seed: int, lead: tuple[int, ...], len_q: int, len_k: int, m: int, e: int, dtype=torch.float32, device=DEVICE):
    """Non-negative features (as a kernel map gives) and signed values, fresh for every check."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(*lead, len_q, m, generator=g) + 0.05
    k = torch.rand(*lead, len_k, m, generator=g) + 0.05
    v = torch.randn(*lead, len_k, e, generator=g)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v)]


def check_against_reference(q, k, v, tolerance: float) -> None:
    """Forward and backward of the kernels against the float64 reference on the same inputs."""
    out = triton_linear_attention(q, k, v, EPS)
    assert out.dtype == q.dtype and out.shape == (*q.shape[:-1], v.shape[-1])
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = linear_attention_reference(*wide, EPS)
    assert relative_error(out, ref) < tolerance
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    grads_ref = torch.autograd.grad(ref, wide, grad.double())
    for name, a, b in zip("qkv", grads, grads_ref):
        assert relative_error(a, b) < tolerance, name


@pytest.mark.parametrize(
    "lead, len_q, len_k, m, e",
    [
        ((2, 3), 5, 7, 8, 6),  # everything smaller than one block
        ((1, 2), 33, 17, 20, 12),  # padded feature and value widths, Lq != Lk
        ((3,), 70, 70, 16, 16),  # longer than one 64-token block: the loops run twice
        ((2, 1, 2), 9, 9, 24, 40),  # three leading dimensions, e > m
    ],
)
def test_kernels_match_reference_forward_and_backward(lead, len_q, len_k, m, e):
    seed = len_q * 1000 + m
    check_against_reference(*inputs(seed, lead, len_q, len_k, m, e), tolerance=1e-5)


def test_bfloat16_inputs_and_autocast():
    """bf16 in, bf16 out, within bf16's rounding of the float64 reference; under autocast the
    float32 inputs are computed in autocast's dtype, as a matmul would be."""
    q, k, v = inputs(5, (2, 2), 19, 19, 16, 24, dtype=torch.bfloat16)
    check_against_reference(q, k, v, tolerance=1e-2)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        assert triton_linear_attention(q.float(), k.float(), v.float(), EPS).dtype == torch.bfloat16


def test_head_major_views_need_no_copy_and_agree():
    """Values as attention modules pass them: ``[B, L, 3, H, d]`` permuted to ``[B, H, L, d]``."""
    g = torch.Generator().manual_seed(7)
    qkv = torch.randn(2, 11, 3, 2, 8, generator=g).to(DEVICE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, H, L, d] views
    q, k = q.relu() + 0.1, k.relu() + 0.1
    v = v.detach().requires_grad_()
    assert not v.is_contiguous()
    check_against_reference(q.detach().requires_grad_(), k.detach().requires_grad_(), v, tolerance=1e-5)


def test_zero_query_features_give_zero_output_and_finite_gradients():
    q, k, v = inputs(3, (1, 1), 6, 5, 16, 16)
    with torch.no_grad():
        q[..., 2, :] = 0.0
    out = triton_linear_attention(q, k, v, EPS)
    assert torch.equal(out[..., 2, :], torch.zeros_like(out[..., 2, :]))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    check_against_reference(q, k, v, tolerance=1e-5)


def test_unequal_leading_dimensions_are_refused():
    q, k, v = inputs(4, (2, 1), 4, 4, 16, 16)
    with pytest.raises(ValueError, match="equal leading dimensions"):
        triton_linear_attention(q, k[:1], v[:1], EPS)


def tiny_cosformer():
    """The tiny LVT with cosFormer features, a configuration the fused step does not cover: on the
    ``triton`` backend its steps reach the Eq. 3 kernel."""
    import tubelet

    torch.manual_seed(0)
    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=5, depth=1, num_frames=2, img_size=16,
                                 attention_options={"variant": "cosformer"})
    return model.to(DEVICE), torch.randn(2, 3, 2, 16, 16, device=DEVICE)


def logits_and_gradients(model, video) -> list[torch.Tensor]:
    model.zero_grad()
    logits = model(video)
    logits.square().sum().backward()
    return [logits.detach()] + [p.grad.clone() for p in model.parameters()]


def test_backend_switch_runs_the_kernel_inside_a_linear_attention_model(monkeypatch):
    """``set_backend("triton")``, the way a model reaches the kernel: the tiny LVT's logits and
    every parameter's gradient equal those of the PyTorch backend, and the kernel ran."""
    calls = []
    monkeypatch.setitem(functional._BACKENDS, "triton", lambda *args: calls.append(1) or triton_linear_attention(*args))
    model, video = tiny_cosformer()
    with functional.backend("torch"):
        expected = logits_and_gradients(model, video)
    with functional.backend("triton"):
        got = logits_and_gradients(model, video)
    assert len(calls) == 2  # the spatial and the temporal step of the one block
    for a, b in zip(got, expected):
        assert relative_error(a, b) < 1e-5


def check_compiled_kernels(q, k, v, backend: str, tolerance: float) -> None:
    """``torch.compile(fullgraph=True)`` (a graph break is an error) of the kernels gives eager's
    output and gradients and writes into none of its inputs."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: triton_linear_attention(a, b, c, EPS), fullgraph=True, backend=backend)
    versions = [t._version for t in (q, k, v)]
    out = compiled(q, k, v)
    eager = triton_linear_attention(q, k, v, EPS)
    assert relative_error(out, eager) < tolerance
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(eager, (q, k, v), grad)):
        assert relative_error(a, b) < tolerance
    assert [t._version for t in (q, k, v)] == versions, "the compiled kernels wrote into their inputs"


def test_kernels_compile_in_one_graph_through_the_interpreter():
    """The kernels are custom operators, which ``torch.compile`` calls without tracing into them:
    so even Triton's interpreter runs under ``aot_eager`` (which traces forward and backward with
    the operators' shape functions, as inductor does). Head-major views, as the modules pass."""
    qkv = torch.rand(2, 9, 3, 2, 16, generator=torch.Generator().manual_seed(8)).to(DEVICE).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, H, L, d] views of one tensor
    check_compiled_kernels(q, k, v, "aot_eager", 1e-6)


def test_linear_attention_model_on_the_kernels_compiles_in_one_graph():
    """The tiny cosFormer LVT on the ``triton`` backend under ``torch.compile(fullgraph=True,
    backend="aot_eager")``: eager's logits and every parameter's gradient."""
    model, video = tiny_cosformer()
    torch._dynamo.reset()
    with functional.backend("triton"):
        compiled = logits_and_gradients(torch.compile(model, fullgraph=True, backend="aot_eager"), video)
        eager = logits_and_gradients(model, video)
    names = ["logits"] + [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on CPU the interpreter tests above run instead")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize(
    "lead, length, m",
    [
        ((16, 8), 196, 64),  # LVT base spatial step: one frame of 14 x 14 patches, 8 heads of 64
        ((196, 8), 16, 64),  # its temporal step: one position over 16 frames
        ((1, 8), 3136, 64),  # joint pattern, 16 x 196 tokens
        ((4, 8), 197, 128),  # cosFormer's doubled features, with a class token
    ],
)
def test_kernels_match_reference_on_gpu_at_real_sizes(dtype, tolerance, lead, length, m):
    check_against_reference(*inputs(length + m, lead, length, length, m, 64, dtype=dtype, device="cuda"), tolerance=tolerance)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: inductor compiles the graph around the kernels for it")
def test_kernels_compile_in_one_graph_forward_and_backward():
    """As above under inductor, bf16, at the size of a spatial step with a class token."""
    check_compiled_kernels(*inputs(11, (4, 8), 197, 197, 64, 64, dtype=torch.bfloat16, device="cuda"), "inductor", 1e-3)
