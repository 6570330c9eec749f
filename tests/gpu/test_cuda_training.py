"""The engine on a GPU: bf16 training steps, evaluation and prediction (the library's, and the
command line's, on CUDA in bf16 by default), a one-process torchrun run over NCCL through the real
loop with validation, and an exact resume. Skipped without CUDA.

On the GPU machine: ``python -m pytest -m gpu tests/gpu -q -rs`` (PyAV is needed for the
synthetic videos; the tests skip, saying so, without it).
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import safetensors.torch
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _overrides(root, *extra):
    from engine.synth_fixture import tiny_overrides

    return tiny_overrides(root) + ["train.device=cuda", "train.precision=bf16", "model.depth=2",
                                   "model.drop_path_rate=0.2", "model.drop_rate=0.1", *extra]


def _weights(run):
    from tubelet.engine import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run)
    return latest.name, safetensors.torch.load_file(str(latest / ckpt.WEIGHTS))


def test_bf16_training_steps_on_cuda(synth, tmp_path):
    from tubelet.engine.config import load_config
    from tubelet.engine.run_log import read_metrics
    from tubelet.engine.train import fit

    metrics = fit(load_config(None, _overrides(synth, "train.max_steps=4")), tmp_path, stream=io.StringIO())
    losses = [r["loss"] for r in read_metrics(tmp_path) if r["kind"] == "train"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert "top1" in metrics
    name, weights = _weights(tmp_path)
    assert name == "step00000004" and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in weights.values())


def test_eval_and_predict_on_cuda_match_the_cpu(synth, tmp_path):
    from tubelet.engine.checkpoint import load_inference_model
    from tubelet.engine.config import load_config
    from tubelet.engine.evaluate import evaluate_checkpoint
    from tubelet.engine.predict import predict_videos
    from tubelet.engine.train import fit

    fit(load_config(None, _overrides(synth, "train.max_steps=2")), tmp_path / "run", stream=io.StringIO())
    result, _ = evaluate_checkpoint(tmp_path / "run", synth / "val.csv", views=(2, 3))  # device auto: cuda
    assert result.metrics["videos"] == 12 and result.metrics["views"] == 6
    model, config = load_inference_model(tmp_path / "run")
    video = sorted((synth / "videos").rglob("*.mp4"))[0]
    on_cpu = predict_videos(model, [video], config.data, views=(1, 3), topk=3)
    on_gpu = predict_videos(model.cuda(), [video], config.data, views=(1, 3), topk=3, device=torch.device("cuda"))
    assert [t["class"] for t in on_gpu[0]["top"]] == [t["class"] for t in on_cpu[0]["top"]]
    for gpu, cpu in zip(on_gpu[0]["top"], on_cpu[0]["top"]):
        assert abs(gpu["score"] - cpu["score"]) < 1e-3


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_one_process_trains_over_nccl_with_validation(synth, tmp_path, parallel):
    """DDP, and FSDP2 in bf16 with gradient accumulation and activation checkpointing, on one GPU
    through the real loop; the checkpoint is whole float32 weights, as ``tubelet eval`` reads them."""
    from tubelet.engine.config import load_config, save_config
    from tubelet.engine.distributed import launch_environment
    from tubelet.engine.evaluate import evaluate_checkpoint
    from tubelet.engine.run_log import read_metrics

    extra = ["train.accum_steps=2", "train.grad_checkpointing=true"] if parallel == "fsdp" else []
    recipe = load_config(None, _overrides(synth, "train.save_every_steps=null", f"train.parallel={parallel}", *extra))
    save_config(recipe, tmp_path / "recipe.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "tubelet.cli",
         "train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run")],
        env=launch_environment(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{'FSDP2' if parallel == 'fsdp' else 'DDP'} over 1 process(es), nccl backend, cuda" in done.stderr
    kinds = [r["kind"] for r in read_metrics(tmp_path / "run")]
    assert kinds.count("val") == 2 and kinds.count("train") == 6  # 2 epochs of 3 steps, logged every step
    name, weights = _weights(tmp_path / "run")
    assert name == "step00000006" and all(t.dtype == torch.float32 for t in weights.values())
    result, _ = evaluate_checkpoint(tmp_path / "run", synth / "val.csv")
    assert result.metrics["videos"] == 12


def test_resume_on_cuda_continues_the_uninterrupted_run(synth, tmp_path, monkeypatch):
    from tubelet.engine import train as train_module
    from tubelet.engine.config import load_config
    from tubelet.engine.train import fit

    config = load_config(None, _overrides(synth))
    fit(config, tmp_path / "straight", stream=io.StringIO())
    real_step, calls = train_module.train_step, []

    def crashing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # in the middle of the second epoch
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", stream=io.StringIO())
    monkeypatch.undo()
    log = io.StringIO()
    fit(config, tmp_path / "resumed", resume=True, stream=log)
    assert "resuming from" in log.getvalue()
    (name, expected), (resumed_name, resumed) = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert name == resumed_name == "step00000006"
    worst = max((resumed[k] - v).abs().max().item() for k, v in expected.items())
    print(f"largest difference from the uninterrupted run: {worst:.3g}")
    assert worst <= 1e-6, worst  # CUDA kernels are deterministic here; bit-identical is expected, 1e-6 tolerated


def test_cli_eval_and_predict_run_on_cuda_in_bf16_by_default(synth, tmp_path, capsys, monkeypatch):
    import json

    from engine.classified import record_classified
    from tubelet.cli import main
    from tubelet.engine.config import load_config
    from tubelet.engine.train import fit

    fit(load_config(None, _overrides(synth, "train.max_steps=2")), tmp_path / "run", stream=io.StringIO())
    seen = record_classified(monkeypatch)
    run, video = str(tmp_path / "run"), str(sorted((synth / "videos").rglob("*.mp4"))[0])
    assert main(["eval", run, "--data", str(synth / "val.csv"), "--views", "2x3", "--out", str(tmp_path / "p")]) == 0
    assert "12 videos x 6 views: top1" in capsys.readouterr().out
    assert main(["predict", video, "--checkpoint", run, "--views", "1x3", "--topk", "12", "--json"]) == 0
    on_gpu = {t["class"]: t["score"] for t in json.loads(capsys.readouterr().out)[0]["top"]}
    assert seen and set(seen) == {("cuda", torch.bfloat16, "cuda")}
    seen.clear()
    assert main(["predict", video, "--checkpoint", run, "--views", "1x3", "--topk", "12", "--json",
                 "--device", "cpu"]) == 0
    on_cpu = {t["class"]: t["score"] for t in json.loads(capsys.readouterr().out)[0]["top"]}
    assert set(seen) == {("cpu", None, "cpu")}
    assert on_gpu.keys() == on_cpu.keys() and max(abs(on_gpu[k] - on_cpu[k]) for k in on_cpu) < 2e-2
    assert main(["eval", run, "--data", str(synth / "val.csv"), "--device", "cuda:0", "--precision", "fp32"]) == 0
    assert ("cuda", None, "cuda") in seen


def test_adamw_is_fused_on_cuda_and_updates_as_foreach_does():
    """``tubelet.engine.optim.adamw`` takes PyTorch's fused kernel for CUDA parameters: the same
    weights after three steps as the multi-tensor kernels, within float32 rounding."""
    from tubelet.engine.optim import adamw

    g = torch.Generator("cuda").manual_seed(0)
    start = [torch.randn(shape, device="cuda", generator=g) for shape in ((64, 33), (33,), (7, 5, 3))]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    finals = []
    for make in (lambda params: adamw(params, lr=1e-2, weight_decay=0.05),
                 lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05, foreach=True)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = make(params)
        for step in grads:
            for p, grad in zip(params, step):
                p.grad = grad.clone()
            optimizer.step()
        finals.append((optimizer.defaults["fused"], params))
    (fused, ours), (_, reference) = finals
    assert fused is True
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
