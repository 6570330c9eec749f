"""Fixtures for the engine tests."""

import pytest
import torch

from .tiny import TinyNet


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    from .synth_fixture import write_tiny_synth

    return write_tiny_synth(tmp_path_factory.mktemp("synth"))
