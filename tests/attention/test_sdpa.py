"""The softmax attention switch (``tubelet.attention.sdpa``) on the CPU: every backend that runs
here equals a float64 reference at the sequence lengths the models use, the chunking of large
sequence batches changes nothing, and a bad name is an error naming it. The CUDA kernels (flash,
cuDNN, efficient) are held to the same reference in ``tests/gpu/test_sdpa_backends.py``."""

from __future__ import annotations

import math

import pytest
import torch

from tubelet.attention import sdpa
from tubelet.attention.core import SoftmaxCore

LENGTHS = (8, 16, 197, 785)


def reference(q, k, v, mask=None):
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
    return scores.softmax(-1) @ v.double()


def inputs(length, *, sequences=2, heads=2, width=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(sequences, heads, length, width, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("backend", ["auto", "math", "flash"])
@pytest.mark.parametrize("length", LENGTHS)
def test_cpu_backends_equal_the_reference_forward_and_backward(backend, length):
    q, k, v = inputs(length, seed=length)
    grad = torch.randn(2, 2, length, 16, generator=torch.Generator().manual_seed(1))
    with sdpa.sdpa_backend(backend):
        out = sdpa.attention(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = reference(*wide)
    expected_grads = torch.autograd.grad(expected, wide, grad.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_the_switch_reaches_the_models_core_and_is_restored():
    q, k, v = inputs(16)
    core = SoftmaxCore()
    with sdpa.sdpa_backend("math"):
        assert sdpa.get_sdpa_backend() == "math"
        out = core(q, k, v, prefix=0, grid=None)
    assert sdpa.get_sdpa_backend() == "auto"
    torch.testing.assert_close(out.double(), reference(q, k, v), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_shape", [None, (1, 1, 8, 8), (11, 1, 8, 8), (11, 2, 8, 8)])
def test_chunks_of_a_large_sequence_batch_change_nothing(monkeypatch, mask_shape):
    q, k, v = inputs(8, sequences=11, seed=3)
    mask = None if mask_shape is None else torch.rand(mask_shape, generator=torch.Generator().manual_seed(4)) > 0.3
    if mask is not None:
        mask[..., 0] = True  # every query keeps a key
    whole = sdpa.attention(q, k, v, mask)
    calls = []
    original = sdpa._sdpa
    monkeypatch.setattr(sdpa, "MAX_GRID_SEQUENCES", 4)
    monkeypatch.setattr(sdpa, "_sdpa", lambda *args: calls.append(args[0].shape[0]) or original(*args))
    chunked = sdpa.attention(q, k, v, mask)
    assert calls == [4, 4, 3]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(chunked.double(), reference(q, k, v, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_shape", [None, (1, 1, 8, 8), (9, 8, 8), (3, 9, 8, 8)])
def test_chunks_of_the_head_axis_then_of_the_batch_change_nothing(monkeypatch, mask_shape):
    """The ``view`` layout puts groups on the head axis: both axes past the limit are cut, N first."""
    q, k, v = inputs(8, sequences=3, heads=9, seed=5)
    mask = None if mask_shape is None else torch.rand(mask_shape, generator=torch.Generator().manual_seed(6)) > 0.3
    if mask is not None:
        mask[..., 0] = True
    whole = sdpa.attention(q, k, v, mask)
    calls = []
    original = sdpa._sdpa
    monkeypatch.setattr(sdpa, "MAX_GRID_SEQUENCES", 2)
    monkeypatch.setattr(sdpa, "_sdpa", lambda *args: calls.append(tuple(args[0].shape[:2])) or original(*args))
    chunked = sdpa.attention(q, k, v, mask)
    assert calls == [(2, 2)] * 4 + [(2, 1)] + [(1, 2)] * 4 + [(1, 1)]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    torch.testing.assert_close(chunked.double(), reference(q, k, v, mask), rtol=1e-4, atol=1e-5)


def test_an_unknown_backend_is_an_error_naming_it_and_the_choices():
    with pytest.raises(ValueError, match=r"'fast'.*auto, flash, cudnn, efficient, math"):
        sdpa.set_sdpa_backend("fast")
    assert sdpa.get_sdpa_backend() == "auto"
