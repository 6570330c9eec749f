"""``InferenceGraphs`` on the CPU: CUDA graphs are for CUDA, so every call is the model's own
forward and nothing is captured; the switch names its settings. The replays themselves are tested
on the GPU machine (tests/gpu/test_inference_graphs.py)."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.engine.evaluate import classify_views
from tubelet.engine.graphs import CUDA_GRAPHS, InferenceGraphs


def test_on_the_cpu_every_call_is_the_models_forward():
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5).eval()
    runner = InferenceGraphs(model)
    video = torch.randn(1, 2, 3, 8, 32, 32)  # [B, V, C, T, H, W]
    with torch.no_grad(), CUDA_GRAPHS.using("on"):
        assert not runner.uses_graph(video[0])
        graphed = classify_views(model, video, device=torch.device("cpu"), amp_dtype=None, graphs=runner)
        eager = classify_views(model, video, device=torch.device("cpu"), amp_dtype=None)
    torch.testing.assert_close(graphed, eager, rtol=0, atol=0)
    assert runner.graphs == {}


def test_the_switch_names_its_settings():
    with pytest.raises(ValueError, match=r"unknown CUDA graphs for inference 'always'; expected one of auto, on, off"):
        CUDA_GRAPHS.set("always")
    assert CUDA_GRAPHS.get() == "auto"


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_the_command_line_offers_the_switchs_settings(command):
    """``--cuda-graphs`` of ``tubelet predict`` and ``tubelet eval`` (written out in the CLI, which
    does not import torch to parse its arguments) names the switch's settings and its batch limit."""
    from tubelet.cli import _build_parser
    from tubelet.engine.graphs import GRAPH_MAX_BATCH

    subcommands = next(a for a in _build_parser()._actions if a.dest == "command").choices
    option = next(a for a in subcommands[command]._actions if a.dest == "cuda_graphs")
    assert list(option.choices) == CUDA_GRAPHS.names and option.default == CUDA_GRAPHS.get()
    assert f"at most {GRAPH_MAX_BATCH} clips" in option.help


def test_a_distributed_model_runs_eagerly(tmp_path):
    """A DDP-wrapped model (one gloo process here) broadcasts buffers in its forward: never captured."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(torch.nn.Linear(4, 2))
        assert not InferenceGraphs(wrapped).local
        assert InferenceGraphs(torch.nn.Linear(4, 2)).local
    finally:
        dist.destroy_process_group()
