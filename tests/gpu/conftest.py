"""Fixtures of the GPU tests."""

import pytest


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The engine tests' tiny synthetic dataset (tests/engine/synth_fixture.py)."""
    pytest.importorskip("av", reason="PyAV writes and reads the synthetic videos")
    from engine.synth_fixture import write_tiny_synth

    return write_tiny_synth(tmp_path_factory.mktemp("synth"))
