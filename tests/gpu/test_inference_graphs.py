"""``tubelet.engine.graphs.InferenceGraphs`` on a GPU: replays give eager's logits (float32 and
bf16 autocast, softmax and linear attention, MViTv2's pooling), one graph per shape up to
``MAX_GRAPHS``, weights updated in place are seen, and what must run eagerly does: autograd, large
batches under ``auto``, ``off``, and a forward that waits for the host (with a warning). Skipped
without CUDA; ``python -m pytest -m gpu tests/gpu/test_inference_graphs.py``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tubelet
from tubelet.engine import graphs as graphs_module
from tubelet.engine.graphs import CUDA_GRAPHS, GRAPH_MAX_BATCH, MAX_GRAPHS, InferenceGraphs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
MODELS = ["timesformer_divided_tiny_p8_8x32", "mvitv2_tiny_8x32", "lvt_tiny_p8_8x32"]


def _model(name):
    torch.manual_seed(0)
    return tubelet.create_model(name, num_classes=7).cuda().eval()


def _video(batch, seed=1):
    return torch.randn(batch, 3, 8, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_a_replay_gives_the_eager_logits(name, dtype):
    model = _model(name)
    runner = InferenceGraphs(model)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for seed in (1, 2):  # the second call replays the graph captured by the first, on a new input
            video = _video(2, seed)
            assert runner.uses_graph(video)
            torch.testing.assert_close(runner(video), model(video), rtol=0, atol=0 if dtype is None else 2e-2)
    assert len(runner.graphs) == 1 and None not in runner.graphs.values()


def test_one_graph_per_shape_up_to_the_limit_then_eager():
    model = _model(MODELS[0])
    runner = InferenceGraphs(model)
    with torch.no_grad():
        for batch in range(1, MAX_GRAPHS + 2):
            with CUDA_GRAPHS.using("on"):
                torch.testing.assert_close(runner(_video(batch)), model(_video(batch)), rtol=0, atol=0)
    assert [g is not None for g in runner.graphs.values()] == [True] * MAX_GRAPHS + [False]


def test_weights_changed_in_place_are_seen():
    model = _model(MODELS[0])
    runner = InferenceGraphs(model)
    video = _video(1)
    with torch.no_grad():
        before = runner(video)
        model.head.bias.add_(1.0)
        after = runner(video)
    torch.testing.assert_close(after, before + 1.0)


def test_what_must_run_eagerly_does():
    model = _model(MODELS[0])
    runner = InferenceGraphs(model)
    assert not runner.uses_graph(_video(1))  # autograd on
    with torch.no_grad():
        assert runner.uses_graph(_video(GRAPH_MAX_BATCH)) and not runner.uses_graph(_video(GRAPH_MAX_BATCH + 1))
        with CUDA_GRAPHS.using("off"):
            assert not runner.uses_graph(_video(1))
        with CUDA_GRAPHS.using("on"):
            assert runner.uses_graph(_video(GRAPH_MAX_BATCH + 1))
        assert not runner.uses_graph(_video(1).cpu())


class _WaitsForTheHost(nn.Module):
    def forward(self, x):
        return x * float(x.sum())  # a device-to-host copy: not capturable


def test_a_forward_that_waits_for_the_host_warns_and_runs_eagerly():
    runner = InferenceGraphs(_WaitsForTheHost())
    x = torch.ones(2, 3, device="cuda")
    with torch.no_grad():
        with pytest.warns(UserWarning, match=r"could not be captured, so it runs eagerly"):
            out = runner(x)
        torch.testing.assert_close(out, x * 6.0)
        torch.testing.assert_close(runner(x), x * 6.0)  # the shape stays eager, without a second warning
    assert list(runner.graphs.values()) == [None]


def test_predictions_are_those_of_eager_inference(synth, monkeypatch):
    """``predict_segments`` classifies one segment's crops at a time: a small batch, from a graph."""
    from tubelet.engine.config import DataConfig
    from tubelet.engine.predict import predict_segments

    captured = []
    real_capture = graphs_module.InferenceGraphs._capture
    monkeypatch.setattr(graphs_module.InferenceGraphs, "_capture",
                        lambda self, *args: captured.append(1) or real_capture(self, *args))
    model = _model(MODELS[0])
    data = DataConfig(num_frames=8, img_size=32)
    path = sorted(synth.rglob("*.mp4"))[0]
    common = dict(window=0.2, stride=0.1, crops=3, device=torch.device("cuda"), amp_dtype=torch.bfloat16)
    graphed = predict_segments(model, path, data, **common)
    with CUDA_GRAPHS.using("off"):
        eager = predict_segments(model, path, data, **common)
    assert captured == [1] and len(graphed) > 2  # one capture, replayed for every later segment
    assert [s["start"] for s in graphed] == [s["start"] for s in eager]
    for a, b in zip(graphed, eager):
        assert [c["class"] for c in a["top"]][:1] == [c["class"] for c in b["top"]][:1]
        assert a["top"][0]["score"] == pytest.approx(b["top"][0]["score"], abs=2e-2)
