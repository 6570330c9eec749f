"""``tubelet bench`` on the CPU at tiny sizes: the table, JSON and plot, the comparison with
transformers on the same weights, and failures that become cells instead of crashes."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
import torch

from tubelet.attention import sdpa
from tubelet.attention.divided import DividedSpaceTimeAttention
from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.bench import BenchConfig, command_line, markdown, run_bench
from tubelet.bench import run as bench_run
from tubelet.cli import _build_parser, main
from tubelet.models.summary import model_cost

TINY = "timesformer_divided_tiny_p8_8x32"
FAST = dict(reps=2, warmup=1, overrides={"depth": 1})


def test_cli_writes_table_json_and_plot_and_agrees_with_transformers(tmp_path, capsys):
    pytest.importorskip("transformers", reason="--compare needs transformers (in the test extras)")
    code = main(["bench", TINY, "--frames", "2", "4", "--size", "16", "--batch", "1", "2", "--reps", "2", "--warmup", "1",
                 "--compare", "--set", "depth=1", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| model | implementation | frames |" in out and "logits agree to" in out
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["environment"]["matmul_peak_flops"] > 0
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2  # frames x batches x (tubelet, transformers)
    assert {row["implementation"].split()[0] for row in rows} == {"tubelet", "transformers"}
    for row in rows:
        assert row["status"] == "ok", row
        assert row["videos_per_s"] > 0 and 0 < row["mfu"] and len(row["times_s"]) == 2
        assert row["videos_per_s"] == pytest.approx(row["batch"] / (row["latency_ms"] / 1e3))
        cost = model_cost(TINY, depth=1, num_frames=row["frames"], img_size=16)
        assert row["flops_per_clip"] == cost.flops and row["gmacs_per_clip"] == cost.gmacs
        if row["implementation"] != "tubelet":
            assert row["logits_relative_difference"] < 1e-5
    params = {(row["frames"], row["implementation"]): row["params"] for row in rows}
    assert params[(4, "tubelet")] == params[(4, rows[1]["implementation"])]


def test_training_step_counts_three_forward_passes():
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), mode="train", **FAST))
    (row,) = result["rows"]
    assert row["status"] == "ok" and row["mode"] == "train"
    assert row["flops_per_clip"] == 3 * model_cost(TINY, depth=1, num_frames=2, img_size=16).flops
    assert "training step" in markdown(result)


def test_out_of_memory_is_a_cell_not_a_crash(monkeypatch):
    real = bench_run.measure

    def measure(impl, shape, *args):
        if shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(impl, shape, *args)

    monkeypatch.setattr(bench_run, "measure", measure)
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), batches=(1, 2), **FAST))
    assert [row["status"] for row in result["rows"]] == ["ok", "OOM"]
    assert "| 2 | OOM |" in markdown(result)


def test_missing_reference_library_is_said_plainly(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), compare=True, **FAST))
    ours, reference = result["rows"]
    assert ours["status"] == "ok"
    assert reference["status"] == "unavailable" and "transformers is not importable" in reference["message"]


def test_architecture_without_reference_and_disagreeing_outputs(monkeypatch):
    pytest.importorskip("transformers", reason="needs transformers (in the test extras)")
    result = run_bench(BenchConfig(models=("lvt_tiny_p8_8x32",), frames=(2,), sizes=(16,), compare=True, **FAST))
    assert "no reference implementation of lvt_tiny_p8_8x32" in result["rows"][1]["message"]
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), compare=True,
                                   reps=2, warmup=1, overrides={"depth": 1, "attention": "axial"}))
    assert "transformers' TimeSformer has no 'axial' attention" in result["rows"][1]["message"]
    monkeypatch.setattr(bench_run, "check_agreement", lambda first, second, video: 0.5)
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), compare=True, **FAST))
    assert all(row["status"] == "error" and "outputs differ" in row["message"] for row in result["rows"])


def test_command_line_reproduces_the_config():
    config = BenchConfig(models=(TINY, "lvt_tiny_p8_8x32"), frames=(8, 16), batches=(1, 4), compare=True, cuda_graph=True,
                         compile="max-autotune", linear_backend="triton", sdpa_backend="efficient", norm_backend="triton",
                         layout="view",
                         overrides={"attention_options": {"variant": "elu"}})
    args = _build_parser().parse_args(shlex.split(command_line(config))[1:])
    assert (tuple(args.models), tuple(args.frames), tuple(args.batch), args.compile, args.cuda_graph, args.linear_backend,
            args.sdpa_backend, args.norm_backend, args.layout) == (config.models, config.frames, config.batches, "max-autotune", True,
                                                                   "triton", "efficient", "triton", "view")
    assert bench_run.parse_overrides(args.overrides) == config.overrides


def test_the_softmax_kernel_switch_is_applied_and_reported(monkeypatch):
    seen = []
    original = sdpa._sdpa
    monkeypatch.setattr(sdpa, "_sdpa", lambda *args: seen.append(sdpa.get_sdpa_backend()) or original(*args))
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), sdpa_backend="math", **FAST))
    assert result["rows"][0]["status"] == "ok" and set(seen) == {"math"}
    assert "softmax attention backend: math" in markdown(result, "cmd") and sdpa.get_sdpa_backend() == "auto"


def test_the_attention_layout_is_applied_and_reported(monkeypatch):
    seen = []
    original = DividedSpaceTimeAttention.forward_views
    monkeypatch.setattr(DividedSpaceTimeAttention, "forward_views", lambda *args: seen.append(1) or original(*args))
    result = run_bench(BenchConfig(models=(TINY,), frames=(2,), sizes=(16,), layout="view", **FAST))
    assert result["rows"][0]["status"] == "ok" and seen
    assert "attention layout: view" in markdown(result, "cmd") and ATTENTION_LAYOUT.get() == "auto"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "no_such_model"], "unknown model 'no_such_model'"),
        (["bench", TINY, "--set", "depth"], "--set 'depth' is not of the form key=value"),
        (["bench", TINY, "--set", "dept=1"], "dept"),
        (["bench", TINY, "--set", "depth=[1"], "--set 'depth=[1' is not YAML"),
        (["bench", TINY, "--linear-backend", "cuda-magic"], "unknown linear attention backend 'cuda-magic'"),
        (["bench", TINY, "--sdpa-backend", "fast"], "unknown softmax attention backend 'fast'"),
        (["bench", TINY, "--layout", "strided"], "unknown attention layout 'strided'; expected one of auto, permute, view"),
        (["bench", TINY, "--device", "gpu"], "--device is 'gpu'; expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    assert main(["bench", TINY, "--device", "cuda"]) == 2
    assert "--device is 'cuda' but CUDA is not available (use 'cpu' or 'auto')" in capsys.readouterr().err
    assert main(["bench", TINY, "--cuda-graph"]) == 2
    assert "--cuda-graph captures inference steps on a CUDA device only" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_time_the_same_computation():
    """Eager steps and CUDA graph replays of the same cell: both run, peak memory is measured."""
    rows = [run_bench(BenchConfig(models=(TINY,), batches=(4,), cuda_graph=graph, device="cuda", **FAST))["rows"][0]
            for graph in (False, True)]
    assert all(row["status"] == "ok" and row["peak_memory_bytes"] > 0 for row in rows), rows


def _weight_casts_per_run(reps: int) -> int:
    """``aten::_to_copy`` calls of one bf16 inference cell on the CPU with ``reps`` timed steps."""
    config = BenchConfig(models=(TINY,), dtype="bf16", device="cpu", reps=reps, warmup=1, overrides={"depth": 1})
    model = bench_run.create_model(TINY, depth=1).eval()
    impl = bench_run.Implementation("tubelet", model, model, model.num_classes)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        bench_run.measure(impl, (1, 3, 8, 32, 32), config, torch.device("cpu"), "bf16")
    return sum(event.count for event in prof.key_averages() if event.key == "aten::_to_copy")


def test_inference_steps_cast_the_weights_once():
    """Steps after the first reuse autocast's 16-bit weights: four more steps add the casts of
    activations only, far fewer than a step's weight casts (two per linear layer)."""
    linears = sum(isinstance(m, torch.nn.Linear) for m in bench_run.create_model(TINY, depth=1).modules())
    per_step = (_weight_casts_per_run(6) - _weight_casts_per_run(2)) / 4
    first = _weight_casts_per_run(0)  # the warm-up step alone: every weight cast once
    assert first - per_step >= 2 * linears, (first, per_step, linears)
