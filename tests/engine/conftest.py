"""Fixtures for the engine tests."""

import pytest
import torch

from .tiny import TinyNet


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()
