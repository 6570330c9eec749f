import io
import os
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import load_config, save_config
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tubelet.cli",
         "train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fit(config, tmp_path / "single", stream=io.StringIO())
    ddp = ckpt.latest_checkpoint(tmp_path / "ddp")
    single = ckpt.latest_checkpoint(tmp_path / "single")
    assert ddp.name == single.name == "step00000006"
    assert len(ckpt.load_state(ddp)["rng"]) == 2  # each rank's generators, for an exact resume
    ddp_weights = safetensors.torch.load_file(str(ddp / ckpt.WEIGHTS))
    single_weights = safetensors.torch.load_file(str(single / ckpt.WEIGHTS))
    for key, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
