import io
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import load_config, save_config
from tubelet.engine.distributed import launch_environment
from tubelet.engine.train import fit

from .synth_fixture import tiny_overrides


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_the_same_global_batch(tmp_path, tiny_synth):
    """torchrun with 2 CPU processes (DDP over gloo, 2 clips each) ends where one process with
    batches of 4 does: the sampler shards each global batch and DDP averages the gradients."""
    # SGD: Adam would turn float noise in near-zero gradients (the key bias) into full-size steps
    config = load_config(None, tiny_overrides(tiny_synth) + ["data.val=", "train.device=cpu", "train.optimizer=sgd",
                                                            "train.lr=0.1", "train.save_every_steps=null"])
    save_config(config, tmp_path / "recipe.yaml")
    env = launch_environment(OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tubelet.cli",
         "train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fit(config, tmp_path / "single", stream=io.StringIO())
    ddp = ckpt.latest_checkpoint(tmp_path / "ddp")
    single = ckpt.latest_checkpoint(tmp_path / "single")
    assert ddp.name == single.name == "step00000006"
    ddp_weights = safetensors.torch.load_file(str(ddp / ckpt.WEIGHTS))
    single_weights = safetensors.torch.load_file(str(single / ckpt.WEIGHTS))
    for key, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)

    # a run started on one process, resumed on two: the same data order and global batches
    shutil.copytree(tmp_path / "single", tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved/checkpoints/step00000006")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tubelet.cli",
         "train", "--resume", str(tmp_path / "moved")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "step 3 of 6" in done.stderr
    moved = safetensors.torch.load_file(str(ckpt.latest_checkpoint(tmp_path / "moved") / ckpt.WEIGHTS))
    for key, value in single_weights.items():
        torch.testing.assert_close(moved[key], value, rtol=1e-4, atol=1e-5, msg=key)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_torchrun_process_joins_the_group_and_reduces_on_its_device(tmp_path, tiny_synth, monkeypatch):
    """``torchrun --nproc-per-node 1`` must run the collectives that 8 GPUs run (in-process, gloo):
    the loss reduction at each log step and the validation gather, each on the group's device."""
    import torch.distributed as torch_dist

    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    reduced, real_all_reduce = [], torch_dist.all_reduce

    def spy(tensor, *args, **kwargs):
        reduced.append(tensor.device.type)
        return real_all_reduce(tensor, *args, **kwargs)

    monkeypatch.setattr(torch_dist, "all_reduce", spy)
    config = load_config(None, tiny_overrides(tiny_synth) + ["train.device=cpu", "train.max_steps=2"])
    try:
        metrics = fit(config, tmp_path / "run", stream=io.StringIO())
        assert torch_dist.is_initialized() and torch_dist.get_backend() == "gloo"
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    assert reduced and set(reduced) == {"cpu"}  # one loss reduction per log step, at least
    assert "top1" in metrics


def test_collectives_refuse_a_tensor_off_the_group_device(monkeypatch):
    """What NCCL does at the first log step of a multi-GPU run, checked without a GPU."""
    import torch.distributed as torch_dist

    from tubelet.engine.distributed import all_reduce_sum

    monkeypatch.setattr(torch_dist, "is_initialized", lambda: True)
    monkeypatch.setattr(torch_dist, "get_backend", lambda *args: "nccl")
    monkeypatch.setattr(torch_dist, "all_reduce", lambda *args, **kwargs: None)
    with pytest.raises(ValueError, match="got a cpu tensor but the nccl process group needs cuda tensors"):
        all_reduce_sum(torch.tensor([1.0]))
