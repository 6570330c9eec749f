"""The LayerNorm kernels (``tubelet.kernels.layer_norm``), forward and backward, against PyTorch's
LayerNorm, and the ``LayerNorm`` module's fast path (``tubelet.layers.norm``): when it takes the kernel, and that a
whole model gives the same logits with either backend. On the CPU the kernel runs in Triton's
interpreter (tests/conftest.py); the ``gpu`` tests run it compiled at the models' sizes."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.kernels.layer_norm import triton_layer_norm
from tubelet.kernels.layer_norm.reference import layer_norm_reference
from tubelet.layers import norm
from tubelet.layers.norm import LAYER_NORM_BACKEND, LayerNorm
from tubelet.models.summary import default_input_size

pytest.importorskip("triton", reason="the kernel is written in Triton")
BF16_ULP = 2.0**-7  # relative spacing of bfloat16 values


def _inputs(rows, width, dtype, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = (torch.randn(rows, width, generator=g, device=device) * 3 + 1).to(dtype)
    weight = torch.randn(width, generator=g, device=device)
    bias = torch.randn(width, generator=g, device=device)
    return x, weight, bias


@pytest.mark.parametrize("width", [96, 100, 768])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_the_reference(width, dtype):
    x, weight, bias = _inputs(37, width, dtype, seed=width)  # 37 rows: the last program is partial
    exact = triton_layer_norm(x, weight, bias, 1e-6, torch.float32)
    torch.testing.assert_close(exact, layer_norm_reference(x, weight, bias, 1e-6, torch.float32), rtol=1e-5, atol=1e-5)
    rounded = triton_layer_norm(x, weight, bias, 1e-6, torch.bfloat16)
    assert rounded.dtype == torch.bfloat16
    torch.testing.assert_close(rounded.float(), layer_norm_reference(x, weight, bias, 1e-6, torch.bfloat16).float(),
                               rtol=BF16_ULP, atol=1e-6)


def test_strided_rows_and_leading_dimensions_are_read_in_place_or_copied():
    x, weight, bias = _inputs(2 * 5 * 3, 192, torch.float32, seed=1)
    wide = x.view(2, 5, 3 * 192)
    sliced = wide[..., 192 : 2 * 192]  # rows with a stride of 576: read in place
    heads = wide.view(2, 5, 3, 192).transpose(1, 2)  # rows not viewable as 2D: copied first
    for view in (sliced, heads):
        torch.testing.assert_close(triton_layer_norm(view, weight, bias, 1e-5, torch.float32),
                                   layer_norm_reference(view, weight, bias, 1e-5, torch.float32), rtol=1e-5, atol=1e-5)


def test_a_weight_of_another_width_is_an_error_naming_both():
    x, weight, bias = _inputs(4, 96, torch.float32)
    with pytest.raises(ValueError, match=r"width 96 .* \(95,\)"):
        triton_layer_norm(x, weight[:95], bias, 1e-6, torch.float32)


def test_the_module_takes_the_kernel_only_under_autocast(monkeypatch):
    calls = []
    monkeypatch.setattr(norm, "triton_layer_norm", lambda *args: calls.append(args[-1]) or layer_norm_reference(*args))
    layer = LayerNorm(16)
    x = torch.randn(3, 16)
    with LAYER_NORM_BACKEND.using("triton"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert calls == [torch.bfloat16] and out.dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x.requires_grad_())  # training under autocast: the kernel too
        assert calls == [torch.bfloat16] * 2
        with torch.no_grad():
            layer(x)  # no autocast: nn.LayerNorm
    with LAYER_NORM_BACKEND.using("torch"), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert calls == [torch.bfloat16] * 2


def _backward(norm_fn, x, weight, bias, grad):
    """Output and the gradients of ``x``, ``weight`` and ``bias`` of ``norm_fn(x, weight, bias)``."""
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    out = norm_fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, grad))


@pytest.mark.parametrize("width", [96, 100, 768])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_matches_float64(width, dtype):
    """137 rows: several tiles of rows for each of the backward's programs, the last one partial."""
    x, weight, bias = _inputs(137, width, dtype, seed=width)
    grad = torch.randn(137, width, generator=torch.Generator().manual_seed(width + 1))
    out, d_x, d_weight, d_bias = _backward(lambda *t: triton_layer_norm(*t, 1e-6, torch.float32), x, weight, bias, grad)
    exact = _backward(lambda x, w, b: torch.nn.functional.layer_norm(x, (width,), w, b, 1e-6),
                      x.double(), weight.double(), bias.double(), grad.double())
    assert (d_x.dtype, d_weight.dtype, d_bias.dtype) == (dtype, torch.float32, torch.float32)
    tolerance = dict(rtol=BF16_ULP, atol=1e-3) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    for ours, reference in zip((out, d_x, d_weight, d_bias), exact):
        torch.testing.assert_close(ours.double(), reference, **tolerance)


def test_backward_reads_strided_inputs_and_gradients():
    x, weight, bias = _inputs(2 * 5 * 3, 192, torch.float32, seed=2)
    heads = x.view(2, 5, 3, 192).transpose(1, 2)  # copied before the forward
    grad = torch.randn(2, 5, 3, 192).transpose(1, 2)  # copied before the backward
    ours = _backward(lambda *t: triton_layer_norm(*t, 1e-5, torch.float32), heads, weight, bias, grad)
    expected = _backward(lambda x, w, b: torch.nn.functional.layer_norm(x, (192,), w, b, 1e-5), heads, weight, bias, grad)
    assert ours[1].shape == heads.shape
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_module_trains_as_cuda_autocast_runs_nn_layer_norm():
    """Under autocast with the kernel: output in autocast's dtype, input gradient in the input's,
    weight gradients in float32, each equal to what CUDA autocast gives ``nn.LayerNorm`` (float32
    LayerNorm of the input, the output then rounded) within one bfloat16 rounding. (CPU autocast
    runs LayerNorm in bfloat16, so the default backend on the CPU is not the reference here.)"""
    torch.manual_seed(3)
    layer = LayerNorm(768)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(40, 768).bfloat16().requires_grad_()
    grad = torch.randn(40, 768).bfloat16()
    with LAYER_NORM_BACKEND.using("triton"), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    fast = (out, *torch.autograd.grad(out, (x, layer.weight, layer.bias), grad))
    wide = torch.nn.functional.layer_norm(x.float(), (768,), layer.weight, layer.bias, layer.eps)
    expected = (wide.bfloat16(), *torch.autograd.grad(wide, (x, layer.weight, layer.bias), grad.float()))
    assert [t.dtype for t in fast] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for ours, reference in zip(fast, expected):
        torch.testing.assert_close(ours.float(), reference.float(), rtol=BF16_ULP, atol=1e-3)


def test_auto_takes_the_kernel_for_large_cuda_inputs_only():
    """``auto`` (the default) never on the CPU; on CUDA from ``KERNEL_MIN_ELEMENTS`` values where no
    gradient is needed; ``triton`` in training too."""
    assert LAYER_NORM_BACKEND.get() == "auto"
    layer = LayerNorm(64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.uses_kernel(torch.empty(norm.KERNEL_MIN_ELEMENTS // 64, 64))
    if not torch.cuda.is_available():
        return
    layer.cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer.uses_kernel(torch.empty(norm.KERNEL_MIN_ELEMENTS // 64, 64, device="cuda"))
        assert not layer.uses_kernel(torch.empty(norm.KERNEL_MIN_ELEMENTS // 64 - 1, 64, device="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):  # training (the weights need gradients): ATen's
        assert not layer.uses_kernel(torch.empty(64 * norm.KERNEL_MIN_ELEMENTS, 64, device="cuda"))
    with LAYER_NORM_BACKEND.using("triton"), torch.autocast("cuda", dtype=torch.bfloat16):
        assert layer.uses_kernel(torch.empty(64, 64, device="cuda"))


def test_the_meta_device_takes_the_default_path():
    """FLOP counts build models on the meta device, where autocast has no state to ask about."""
    layer = LayerNorm(16, device="meta")
    with LAYER_NORM_BACKEND.using("triton"), torch.no_grad():
        out = layer(torch.empty(3, 16, device="meta"))
    assert out.shape == (3, 16) and out.device.type == "meta"


def _bf16_errors(model, video):
    """Relative L2 distance of the bf16-autocast logits from the float32 ones, with each LayerNorm
    backend. The two bf16 runs need not agree bit for bit: where the kernel's float32 statistics
    differ from PyTorch's in the last place, a bf16 rounding can flip, and a random network carries
    that along (MViTv2-S: the two runs differ by 0.9% while each is 1.2% from float32, CPU). So the
    fast path is held to the default's accuracy, not to its bits."""
    device = video.device.type
    with torch.inference_mode():
        exact = model(video).double()
        with torch.autocast(device, dtype=torch.bfloat16):
            default = model(video).double()
            with LAYER_NORM_BACKEND.using("triton"):
                fast = model(video).double()

    def error(logits):
        return ((logits - exact).norm() / exact.norm()).item()

    return error(default), error(fast)


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "mvitv2_tiny_8x32"])
def test_a_model_is_as_accurate_with_either_backend(name):
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=5).eval()
    default, fast = _bf16_errors(model, torch.randn(2, 3, 8, 32, 32))
    assert fast <= 1.25 * default + 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rows, width", [(32 * 25089, 96), (32 * 1569, 768), (8 * 1576, 768)])
def test_kernel_matches_the_reference_on_gpu_at_model_sizes(rows, width):
    x, weight, bias = _inputs(rows, width, torch.bfloat16, device="cuda")
    torch.testing.assert_close(triton_layer_norm(x, weight, bias, 1e-6, torch.bfloat16).float(),
                               layer_norm_reference(x, weight, bias, 1e-6, torch.bfloat16).float(), rtol=BF16_ULP, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["timesformer_divided_base_p16_8x224", "mvitv2_small_16x224"])
def test_a_base_model_is_as_accurate_with_either_backend_on_gpu(name):
    torch.manual_seed(0)
    model = tubelet.create_model(name).cuda().eval()
    default, fast = _bf16_errors(model, torch.randn(2, *default_input_size(name), device="cuda"))
    assert fast <= 1.25 * default + 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rows, width, dtype", [(16 * 25089, 96, torch.bfloat16), (16 * 1576, 768, torch.float32)])
def test_backward_matches_float32_on_gpu_at_model_sizes(rows, width, dtype):
    """MViTv2-S's first-stage head norms and TimeSformer-B's float32 residual stream, at batch 16."""
    x, weight, bias = _inputs(rows, width, dtype, device="cuda")
    grad = torch.randn(rows, width, device="cuda").bfloat16()
    ours = _backward(lambda *t: triton_layer_norm(*t, 1e-6, torch.bfloat16), x, weight, bias, grad)
    expected = _backward(lambda x, w, b: torch.nn.functional.layer_norm(x.float(), (width,), w, b, 1e-6),
                         x, weight, bias, grad.float())
    for a, b in zip(ours[1:], expected[1:]):
        assert a.dtype == b.dtype
        assert ((a.double() - b.double()).norm() / b.double().norm()).item() < 1e-3
