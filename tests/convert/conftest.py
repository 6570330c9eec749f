"""Fixtures for the converter tests."""

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    from engine.synth_fixture import write_tiny_synth

    return write_tiny_synth(tmp_path_factory.mktemp("synth"))
