"""Two GPUs over NCCL (issue 14): DDP and FSDP2, with gradient accumulation and activation
checkpointing, end where one GPU does at the same global batch; an FSDP2 run of 2 GPUs resumes on
one. Skipped without 2 CUDA devices.

On the 2-GPU machine: ``python -m pytest -m gpu tests/gpu/test_multi_gpu.py -q -rs`` (PyAV needed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")]


def _torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    from tubelet.engine.distributed import launch_environment

    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), "-m",
         "tubelet.cli", "train", *args], env=launch_environment(OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run):
    from tubelet.engine import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run)
    return latest.name, safetensors.torch.load_file(str(latest / ckpt.WEIGHTS))


def _assert_close_runs(run, reference):
    (name, weights), (ref_name, expected) = _weights(run), _weights(reference)
    assert name == ref_name == "step00000006"
    worst = max(((weights[k] - v).abs().max() / v.abs().max().clamp_min(1e-6)).item() for k, v in expected.items())
    print(f"{run.name}: largest difference from {reference.name}, relative to the tensor's largest value: {worst:.3g}")
    assert worst < 1e-2, worst  # float32, but cuDNN convolutions may run in TF32


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gpus_match_one_at_the_same_global_batch_and_resume_on_one(synth, tmp_path, parallel):
    from engine.synth_fixture import tiny_overrides

    from tubelet.engine import checkpoint as ckpt
    from tubelet.engine.config import load_config, save_config
    from tubelet.engine.run_log import read_metrics

    config = load_config(None, tiny_overrides(synth) + [
        "train.device=cuda", "train.precision=fp32", "model.depth=2", "train.optimizer=sgd", "train.lr=0.1",
        "train.save_every_steps=null", f"train.parallel={parallel}", "train.accum_steps=2",
        "train.grad_checkpointing=true"])
    save_config(config, tmp_path / "recipe.yaml")
    two = _torchrun(2, str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "two"))
    assert f"{'FSDP2' if parallel == 'fsdp' else 'DDP'} over 2 process(es), nccl backend, cuda" in two.stderr
    assert [r["kind"] for r in read_metrics(tmp_path / "two")].count("val") == 2
    _torchrun(1, str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "one"))
    _assert_close_runs(tmp_path / "two", tmp_path / "one")

    shutil.copytree(tmp_path / "two", tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / ckpt.CHECKPOINTS / "step00000006")
    (tmp_path / "moved" / ckpt.CHECKPOINTS / ckpt.BEST).unlink(missing_ok=True)
    resumed = _torchrun(1, "--resume", str(tmp_path / "moved"))
    assert "step 3 of 6" in resumed.stderr
    _assert_close_runs(tmp_path / "moved", tmp_path / "two")


def test_two_gpus_train_fsdp_in_bf16_with_validation(synth, tmp_path):
    """The default precision on GPUs: FSDP2 gathers bf16 weights, reduces float32 gradients; the
    checkpoint is whole float32 weights."""
    from engine.synth_fixture import tiny_overrides

    from tubelet.engine.config import load_config, save_config
    from tubelet.engine.run_log import read_metrics

    save_config(load_config(None, tiny_overrides(synth) + ["train.device=cuda", "train.parallel=fsdp",
                                                          "train.save_every_steps=null"]), tmp_path / "recipe.yaml")
    _torchrun(2, str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"))
    records = read_metrics(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert [r["kind"] for r in records].count("val") == 2
    name, weights = _weights(tmp_path / "run")
    assert name == "step00000006" and all(t.dtype == torch.float32 for t in weights.values())
