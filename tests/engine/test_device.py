"""Device and precision choice, shared by training, eval and predict: auto, explicit, and errors that name the setting."""

import pytest
import torch

from tubelet.engine.device import autocast_dtype, resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_gpu_when_there_is_one(monkeypatch, no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda:3")


@pytest.mark.parametrize("device, message", [
    ("cuda", "--device is 'cuda' but CUDA is not available (use 'cpu' or 'auto')"),
    ("cuda:1", "--device is 'cuda:1' but CUDA is not available"),
    ("gpu", "--device is 'gpu'; expected auto, cpu, cuda or cuda:N"),
    ("meta", "--device is 'meta'; expected auto, cpu, cuda or cuda:N"),
])
def test_a_device_that_is_not_there_is_an_error_naming_the_setting(device, message, no_cuda):
    with pytest.raises(ValueError) as error:
        resolve_device(device, what="--device")
    assert message in str(error.value)


def test_a_cuda_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"train.device is 'cuda:2' but there are 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_precision_auto_is_bf16_on_gpu_and_fp32_on_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", gpu) is None
    assert autocast_dtype("auto", gpu) == autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp16", gpu) == torch.float16
    with pytest.raises(ValueError, match="--precision=fp16 needs a GPU"):
        autocast_dtype("fp16", cpu, what="--precision")
    with pytest.raises(ValueError, match="--precision must be one of auto, bf16, fp16, fp32, got 'half'"):
        autocast_dtype("half", cpu, what="--precision")
