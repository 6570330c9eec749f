"""Kernel feature maps and the inner linear attention function against their explicit forms."""

import math

import pytest
import torch

from tubelet.attention.linear import functional
from tubelet.attention.linear.feature_maps import (
    EluPlusOneFeatures,
    PerformerFeatures,
    ReLUFeatures,
    SigmoidFeatures,
    cos_reweight,
    orthogonal_gaussian,
    sequence_positions,
)
from tubelet.attention.linear.functional import linear_attention, reference_linear_attention
from tubelet.attention.linear.kernel import KernelAttention
from tubelet.layers.shape import VideoShape

FEATURE_MAPS = {
    "relu": lambda d: ReLUFeatures(d),
    "relu_no_offset": lambda d: ReLUFeatures(d, offset=0.0),
    "elu": EluPlusOneFeatures,
    "sigmoid": SigmoidFeatures,
    "performer": lambda d: PerformerFeatures(d, num_features=24),
}


def _qkv(seed: int, lq: int = 11, lk: int = 13, d: int = 8, e: int = 6):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, lq, d, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, lk, d, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, lk, e, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v


def _explicit(rho, q, k, v):
    """``rownorm(rho(Q) rho(K)^T) V`` with the N x N matrix written out."""
    a = rho(q, is_query=True) @ rho(k, is_query=False).transpose(-2, -1)  # [..., Lq, Lk]
    return (a / a.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
def test_linear_attention_equals_quadratic_formula_forward_and_backward(name):
    rho = FEATURE_MAPS[name](8).double()
    q, k, v = _qkv(seed=sorted(FEATURE_MAPS).index(name))
    with torch.no_grad():  # plain ReLU would give a zero row (0 / 0 in the explicit form) for an all-negative query
        q += 0.5
    fast = linear_attention(rho(q, is_query=True), rho(k, is_query=False), v)
    slow = _explicit(rho, q, k, v)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    grad_out = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, (q, k, v), grad_out)
    grads_slow = torch.autograd.grad(slow, (q, k, v), grad_out)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_linear_attention_gradcheck():
    g = torch.Generator().manual_seed(0)
    qf = torch.rand(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    kf = torch.rand(1, 2, 7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_attention, (qf, kf, v))


def test_reference_mask_and_library_reference_agree():
    q, k, v = _qkv(seed=3, lq=6, lk=6)
    qf, kf = q.detach().relu() + 0.1, k.detach().relu() + 0.1
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    mask |= torch.eye(6, dtype=torch.bool)
    a = (qf @ kf.transpose(-2, -1)) * mask
    torch.testing.assert_close(reference_linear_attention(qf, kf, v.detach(), mask=mask), a / a.sum(-1, keepdim=True) @ v.detach())


def test_feature_maps_values():
    x = torch.tensor([[-2.0, 0.0, 3.0]])
    torch.testing.assert_close(ReLUFeatures(4)(x, is_query=True), torch.tensor([[0.5, 0.5, 3.5]]))
    torch.testing.assert_close(EluPlusOneFeatures(3)(x, is_query=True), torch.tensor([[math.exp(-2.0), 1.0, 4.0]]))
    torch.testing.assert_close(SigmoidFeatures(3)(x, is_query=True), torch.sigmoid(x))
    with pytest.raises(ValueError, match="offset"):
        ReLUFeatures(4, offset=-1.0)


def test_cosformer_core_equals_explicit_cos_weighted_formula():
    q, k, v = _qkv(seed=5, lq=9, lk=12)
    qf, kf = q.relu() + 0.05, k.relu() + 0.05
    out = KernelAttention(cos_reweighting=True)(qf, kf, v, prefix=0, grid=(1, 1, 12))
    i = torch.arange(1, 10, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(1, 13, dtype=torch.float64).unsqueeze(0)
    a = (qf @ kf.transpose(-2, -1)) * torch.cos(math.pi / 2 * (i - j) / 12)  # M = max(Lq, Lk)
    torch.testing.assert_close(out, a / a.sum(-1, keepdim=True) @ v, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), (q, k, v), retain_graph=True)
    grads_ref = torch.autograd.grad((a / a.sum(-1, keepdim=True) @ v).sum(), (q, k, v))
    for a_, b_ in zip(grads, grads_ref):
        torch.testing.assert_close(a_, b_)


def test_cos_reweight_shape_and_product():
    f = torch.rand(4, 3, dtype=torch.float64)
    out = cos_reweight(f, sequence_positions(4, f.device), 8)
    assert out.shape == (4, 6)
    gram = out @ out.T
    p = torch.arange(1, 5, dtype=torch.float64)
    torch.testing.assert_close(gram, (f @ f.T) * torch.cos(math.pi / 16 * (p[:, None] - p[None, :])))


def test_band_core_equals_masked_formula():
    shape = VideoShape(5, 2, 3)
    p, radius = 1, 1
    length = p + shape.num_patches
    g = torch.Generator().manual_seed(2)
    qf = torch.rand(2, 2, length, 4, generator=g, dtype=torch.float64)
    kf = torch.rand(2, 2, length, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, length, 3, generator=g, dtype=torch.float64)
    frame = torch.cat([torch.full((p,), -100), torch.arange(shape.num_patches) // shape.spatial])
    mask = (frame[:, None] - frame[None, :]).abs() <= radius
    mask[:p, :] = True
    mask[:, :p] = True
    for cos in (False, True):
        out = KernelAttention(cos_reweighting=cos).attend_band(qf, kf, v, shape, radius)
        a = qf @ kf.transpose(-2, -1)
        if cos:
            pos = torch.arange(1, length + 1, dtype=torch.float64)
            a = a * torch.cos(math.pi / 2 * (pos[:, None] - pos[None, :]) / length)
        a = a * mask
        torch.testing.assert_close(out, a / a.sum(-1, keepdim=True) @ v)


def test_orthogonal_random_features_blocks_are_orthogonal():
    w = orthogonal_gaussian(20, 8, torch.Generator().manual_seed(0)).double()
    assert w.shape == (20, 8)
    for start in (0, 8, 16):
        block = w[start : start + 8]
        directions = block / block.norm(dim=1, keepdim=True)
        gram = directions @ directions.T
        torch.testing.assert_close(gram, torch.eye(len(block), dtype=torch.float64), atol=1e-6, rtol=0)


def test_performer_approximates_softmax_better_with_more_features():
    """Mean error of FAVOR+ attention against exact softmax attention, over 8 seeded draws."""
    g = torch.Generator().manual_seed(0)
    d = 16
    q = torch.randn(1, 1, 64, d, generator=g, dtype=torch.float64) * 0.6
    k = torch.randn(1, 1, 64, d, generator=g, dtype=torch.float64) * 0.6
    v = torch.randn(1, 1, 64, d, generator=g, dtype=torch.float64)
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
    errors = []
    for features in (4, 32, 256, 2048):
        rho = PerformerFeatures(d, num_features=features).double()
        total = 0.0
        for draw in range(8):
            rho.redraw(torch.Generator().manual_seed(100 * features + draw))
            approx = linear_attention(rho(q, is_query=True), rho(k, is_query=False), v)
            total += (approx - exact).norm().item() / exact.norm().item()
        errors.append(total / 8)
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.2 * errors[0], errors
    assert errors[-1] < 0.15, errors


def test_performer_features_are_positive_and_unbiased_for_the_softmax_kernel():
    d = 8
    rho = PerformerFeatures(d, num_features=131072).double()
    rho.redraw(torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    q = torch.randn(5, d, generator=g, dtype=torch.float64) * 0.5
    k = torch.randn(5, d, generator=g, dtype=torch.float64) * 0.5
    qf, kf = rho(q, is_query=True), rho(k, is_query=False)
    assert (qf > 0).all() and (kf > 0).all()
    # Undo the stabilisers (row max of W q', global max of W k') to compare with exp(q.k / sqrt(d)).
    wq, wk = (q * d**-0.25) @ rho.projection.double().T, (k * d**-0.25) @ rho.projection.double().T
    estimate = (qf @ kf.T) * torch.exp(wq.amax(-1, keepdim=True) + wk.amax())
    torch.testing.assert_close(estimate, torch.exp(q @ k.T / math.sqrt(d)), rtol=0.03, atol=0)


def test_performer_redraw_interval():
    """Redraws follow optimiser steps (never forward passes), deterministically from W itself,
    with the step count in the state dict."""
    rho = PerformerFeatures(4, num_features=8, redraw_interval=2)
    twin = PerformerFeatures(4, num_features=8, redraw_interval=2)
    twin.load_state_dict(rho.state_dict())  # another DDP rank
    x = torch.randn(3, 4)
    first = rho.projection.clone()
    for _ in range(5):
        rho(x, is_query=True)
    assert torch.equal(rho.projection, first), "no redraw in forward"
    rho.after_optimizer_step()
    assert torch.equal(rho.projection, first) and int(rho.state_dict()["steps_since_redraw"]) == 1
    resumed = PerformerFeatures(4, num_features=8, redraw_interval=2)
    resumed.load_state_dict(rho.state_dict())  # a checkpoint taken between the two steps
    for module in (rho, resumed, twin, twin):
        module.after_optimizer_step()
    assert not torch.equal(rho.projection, first)
    assert torch.equal(rho.projection, resumed.projection) and torch.equal(rho.projection, twin.projection)
    assert "projection" in rho.state_dict()
    fixed = PerformerFeatures(4, num_features=8)
    before = fixed.projection.clone()
    fixed.after_optimizer_step()
    assert torch.equal(fixed.projection, before)
    with pytest.raises(ValueError, match="redraw_interval"):
        PerformerFeatures(4, redraw_interval=0)
    with pytest.raises(ValueError, match="num_features"):
        PerformerFeatures(4, num_features=0)


def test_backend_switch_chooses_implementation_not_result():
    assert functional.get_backend() == "torch"
    q, k, v = _qkv(seed=9)
    qf, kf = q.detach().relu() + 0.1, k.detach().relu() + 0.1
    expected = linear_attention(qf, kf, v.detach())
    calls = []

    def reference_backend(a, b, c, eps):
        calls.append(a.shape)
        return reference_linear_attention(a, b, c, eps)

    functional.register_backend("test-reference", reference_backend)
    try:
        functional.set_backend("test-reference")
        torch.testing.assert_close(linear_attention(qf, kf, v.detach()), expected)
        assert calls
    finally:
        functional.set_backend("torch")
        del functional._BACKENDS["test-reference"]
    with pytest.raises(ValueError, match="unknown linear attention backend 'triton-missing'"):
        functional.set_backend("triton-missing")
    with pytest.raises(ValueError, match="registered twice"):
        functional.register_backend("torch", reference_backend)


def test_linear_attention_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="q_feat"):
        linear_attention(torch.rand(1, 4, 3), torch.rand(1, 5, 2), torch.rand(1, 5, 2))
    with pytest.raises(ValueError, match="v \\[..., Lk, e\\]"):
        linear_attention(torch.rand(1, 4, 3), torch.rand(1, 5, 3), torch.rand(1, 6, 2))


def test_zero_features_give_zero_output_not_nan():
    qf = torch.zeros(1, 3, 4)
    out = linear_attention(qf, torch.rand(1, 5, 4), torch.randn(1, 5, 2))
    assert torch.equal(out, torch.zeros(1, 3, 2))
