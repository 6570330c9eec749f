"""Every model family, attention scheme and linear-attention variant traces under ``torch.compile``
as one graph (``fullgraph=True``: a graph break is an error) and computes what eager does.

Dynamo's ``eager`` backend traces without generating code, so the test is about graph breaks,
not about inductor; the GPU benchmarks compile the same models with inductor."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.attention.registry import list_attention
from tubelet.models.registry import model_arguments
from tubelet.models.summary import default_input_size

TINY_MODELS = [name for name in tubelet.list_models() if "_tiny_" in name]
# (model, overrides): every tiny model, and the one scheme no tiny model registers by name
CASES = [(name, {}) for name in TINY_MODELS] + [("timesformer_divided_tiny_p8_8x32", {"attention": "space"})]
LINEAR_VARIANTS = ["elu", "sigmoid", "performer", "cosformer", "linformer", "orthoformer"]


def _traces_as_one_graph(model: torch.nn.Module, video: torch.Tensor, autocast: bool = False) -> None:
    torch._dynamo.reset()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = model(video)
        compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)(video)
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, overrides", CASES, ids=[f"{name}{'-' if o else ''}{'-'.join(map(str, o.values()))}" for name, o in CASES])
def test_every_tiny_model_compiles_without_graph_breaks(name, overrides):
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, **overrides)
    _traces_as_one_graph(model, torch.randn(2, *default_input_size(name)))


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "vivit_factorised_self_tiny_p8t2_8x32"])
def test_the_view_layout_compiles_without_graph_breaks(name):
    """Divided attention with its class token, and frame and tube steps without prefix, as views."""
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, depth=1)
    with ATTENTION_LAYOUT.using("view"):
        _traces_as_one_graph(model, torch.randn(2, *default_input_size(name)))


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "vivit_factorised_self_tiny_p8t2_8x32"])
def test_a_model_compiles_without_graph_breaks_under_autocast(name):
    """The casts done ahead of autocast (patch tubelets, separate Q, K, V products) trace too."""
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, depth=1)
    with ATTENTION_LAYOUT.using("view"):
        _traces_as_one_graph(model, torch.randn(2, *default_input_size(name)), autocast=True)


@pytest.mark.parametrize("variant", LINEAR_VARIANTS)
def test_every_linear_attention_variant_compiles_without_graph_breaks(variant):
    torch.manual_seed(0)
    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=3, attention_options={"variant": variant})
    _traces_as_one_graph(model, torch.randn(1, *default_input_size("lvt_tiny_p8_8x32")))


def test_the_tiny_models_cover_every_attention_scheme():
    schemes = {model_arguments(name, overrides).get("attention") for name, overrides in CASES}
    assert schemes - {None} == set(list_attention())
    assert {"mvitv2_tiny_8x32", "vivit_factorised_encoder_tiny_p8t2_8x32"} <= set(TINY_MODELS)  # the families of their own
