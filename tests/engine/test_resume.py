"""Resuming a run: SIGKILL at arbitrary moments, then ``--resume``, ends bit-identical to a run never stopped."""

import io
import multiprocessing
import os
import random
import signal
import time

import pytest
import safetensors.torch
import torch

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import load_config
from tubelet.engine.train import fit

from .synth_fixture import tiny_overrides

# two blocks, so that drop path has a non-zero rate in each; dropout before the head and in attention
_STOCHASTIC = ["model.depth=2", "model.drop_path_rate=0.3", "model.drop_rate=0.2", "model.attn_drop_rate=0.1"]


def _train(config, run, resume):
    torch.set_num_threads(1)  # the same float reduction order in every process
    fit(config, run, resume=resume, stream=io.StringIO())


def _start(config, run, resume):
    process = multiprocessing.get_context("fork").Process(target=_train, args=(config, run, resume))
    process.start()
    return process


def _kill_after(process, run, step, delay):
    """SIGKILL ``process`` ``delay`` seconds after its checkpoint of ``step`` appears."""
    target = run / ckpt.CHECKPOINTS / f"step{step:08d}"
    while not target.exists():
        assert process.is_alive(), f"the run ended (exit code {process.exitcode}) before step {step}"
        time.sleep(0.002)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.join()


def _final_state(run):
    latest = ckpt.latest_checkpoint(run)
    return latest.name, safetensors.torch.load_file(str(latest / ckpt.WEIGHTS)), ckpt.load_state(latest)["optimizer"]


def _assert_same_tensors(actual, expected, where=""):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            _assert_same_tensors(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_tensors(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path, tiny_synth, workers):
    config = load_config(None, tiny_overrides(tiny_synth) + _STOCHASTIC + [f"data.num_workers={workers}"])
    straight = _start(config, tmp_path / "straight", False)
    straight.join()
    assert straight.exitcode == 0
    expected = _final_state(tmp_path / "straight")
    assert expected[0] == "step00000006"

    draw = random.Random(workers)
    kill_steps = sorted(draw.sample(range(1, 6), 3))  # of the 6 steps (3 an epoch), a kill after 3 of them
    run = tmp_path / "killed"
    for i, step in enumerate(kill_steps):
        _kill_after(_start(config, run, i > 0), run, step, delay=draw.uniform(0.0, 0.2))
    last = _start(config, run, True)
    last.join()
    assert last.exitcode == 0
    name, weights, optimizer = _final_state(run)
    assert name == expected[0]
    _assert_same_tensors(weights, expected[1], "weights")
    _assert_same_tensors(optimizer, expected[2], "optimizer")
