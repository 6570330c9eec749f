"""The fast-path switches (``tubelet.switch.Switch``, ``tubelet.attention.fast_paths``): one process-wide choice each, errors
that name the switch, the value and the choices, and blocks that restore what was set before,
even when the block raises."""

from __future__ import annotations

import pytest

from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.attention.linear.functional import LINEAR_BACKEND
from tubelet.attention.sdpa import SDPA_BACKEND
from tubelet.attention.fast_paths import fast_paths
from tubelet.layers.norm import LAYER_NORM_BACKEND
from tubelet.switch import Switch


def test_a_switch_sets_gets_and_restores_after_a_block_that_raises():
    switch = Switch("colour", ["red", "green"], "red")
    switch.set("green")
    assert switch.get() == "green"
    with pytest.raises(RuntimeError), switch.using("red"):
        assert switch.get() == "red"
        raise RuntimeError
    assert switch.get() == "green"
    with switch.using(None):
        assert switch.get() == "green"


def test_errors_name_the_switch_the_value_and_the_choices():
    switch = Switch("colour", ["red", "green"], "red")
    with pytest.raises(ValueError, match=r"unknown colour 'blue'; expected one of red, green"):
        switch.set("blue")
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        switch.add("red")
    switch.add("blue")
    switch.set("blue")
    with pytest.raises(ValueError, match="unknown colour 'grey'"):
        Switch("colour", ["red"], "grey")


def test_fast_paths_sets_every_switch_for_a_block():
    def state():
        return SDPA_BACKEND.get(), LINEAR_BACKEND.get(), LAYER_NORM_BACKEND.get(), ATTENTION_LAYOUT.get()

    assert state() == ("auto", "torch", "auto", "auto")
    with fast_paths(sdpa="math", linear="triton", norm="triton", layout="view"):
        assert state() == ("math", "triton", "triton", "view")
        with fast_paths(sdpa="flash"):
            assert state() == ("flash", "triton", "triton", "view")
    assert state() == ("auto", "torch", "auto", "auto")
    with pytest.raises(ValueError, match="unknown linear attention backend 'cuda'"), fast_paths(linear="cuda"):
        pass
    assert LINEAR_BACKEND.get() == "torch"
