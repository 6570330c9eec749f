"""Resuming a run: SIGKILL at arbitrary moments, then ``--resume``, ends bit-identical to a run never stopped."""

import io
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

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
    os.setpgid(0, 0)  # a process group of its own, so that the kill takes its DataLoader workers too
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
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its workers: none outlives the test holding its output
    except ProcessLookupError:  # the run finished within the delay (seen on a loaded machine): a kill too late
        process.join()
        assert process.exitcode == 0, f"the run failed (exit code {process.exitcode}) after step {step}"
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


# a linear video transformer whose Performer features are redrawn every 2 steps
_PERFORMER = ["model=lvt_tiny_p8_8x32", "model.depth=2", "model.drop_path_rate=0.3",
              "model.attention_options={variant: performer, performer_redraw_interval: 2}"]


@pytest.mark.slow
@pytest.mark.parametrize("workers, model", [(0, _STOCHASTIC), (2, _STOCHASTIC), (0, _PERFORMER)],
                         ids=["dropout-0-workers", "dropout-2-workers", "performer-0-workers"])
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path, tiny_synth, workers, model):
    config = load_config(None, tiny_overrides(tiny_synth) + model + [f"data.num_workers={workers}"])
    straight = _start(config, tmp_path / "straight", False)
    straight.join()
    assert straight.exitcode == 0
    expected = _final_state(tmp_path / "straight")
    assert expected[0] == "step00000006"

    draw = random.Random(len(model) + workers)
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


# ---- what --resume reads, says and refuses (the CLI on a 3-step run) ----

@pytest.fixture(scope="module")
def three_steps(tmp_path_factory, tiny_synth):
    """A finished one-epoch run (checkpoints after steps 1, 2 and 3) started with data overrides."""
    from tubelet.cli import main

    run = tmp_path_factory.mktemp("resume") / "run"
    overrides = [o for o in tiny_overrides(tiny_synth) if not o.startswith(("train.epochs", "data.val"))]
    assert main(["train", "synth_tiny", *overrides, "data.val=", "train.epochs=1", "--out", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def _drop_after(run, step):
    import shutil

    for folder in ckpt.list_checkpoints(run):
        if int(folder.name[4:]) > step:
            shutil.rmtree(folder)


def test_resume_takes_the_run_folder_alone_and_continues_from_its_config(three_steps, tmp_path, capsys):
    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    _drop_after(run, 1)  # as if killed after the first checkpoint
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert ckpt.latest_checkpoint(run).name == "step00000003"
    for key, value in safetensors.torch.load_file(str(ckpt.latest_checkpoint(three_steps) / ckpt.WEIGHTS)).items():
        assert torch.equal(safetensors.torch.load_file(str(run / "checkpoints/step00000003" / ckpt.WEIGHTS))[key],
                           value), key
    # the README's form: recipe and --out; the recipe is not read again (it lacks the data overrides)
    _drop_after(run, 2)
    assert main(["train", "synth_tiny", "--out", str(run), "--resume"]) == 0
    assert "the recipe synth_tiny is not read again" in capsys.readouterr().err


def test_a_finished_run_says_so_and_writes_nothing(three_steps, tmp_path, capsys):
    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run)]) == 0
    assert "is finished (step00000003: step 3 of 3, 1 epochs); nothing to resume" in capsys.readouterr().err
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "config.yaml"}
    assert after == {p: t for p, t in before.items() if p.name != "config.yaml"}


@pytest.mark.parametrize("override, named", [
    ("train.epochs=2", "train.epochs=1 -> 2"),
    ("model.depth=2", "model.depth=1 -> 2"),
    ("train.lr=0.01", "train.lr=0.001 -> 0.01"),
])
def test_a_changed_schedule_or_architecture_is_refused_naming_the_key(three_steps, tmp_path, capsys, override,
                                                                      named):
    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    assert main(["train", "--resume", str(run), override]) == 2
    err = capsys.readouterr().err
    assert named in err and "--allow-changes" in err and len(err.strip().splitlines()) == 1


def test_allow_changes_trains_on_with_a_longer_schedule(three_steps, tmp_path, capsys):
    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    assert main(["train", "--resume", str(run), "train.epochs=2", "train.progress=false", "--allow-changes"]) == 0
    assert "resuming with a changed config: train.epochs=1 -> 2" in capsys.readouterr().err
    assert ckpt.latest_checkpoint(run).name == "step00000006"
    assert load_config(str(run / "config.yaml")).train.epochs == 2


def test_nothing_to_resume_is_explained(three_steps, tmp_path, capsys):
    from tubelet.cli import main

    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nothing to resume: " in capsys.readouterr().err
    run = _copy(three_steps, tmp_path)
    _drop_after(run, 0)  # killed before its first checkpoint
    assert main(["train", "--resume", str(run)]) == 0
    assert "has no checkpoint yet (stopped before its first save): training from the start" in capsys.readouterr().err
    assert ckpt.latest_checkpoint(run).name == "step00000003"


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(three_steps, tmp_path, capsys):
    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    _drop_after(run, 2)
    damaged = run / "checkpoints/step00000002"
    (damaged / ckpt.STATE).write_bytes((damaged / ckpt.STATE).read_bytes()[:50])
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"warning: checkpoint {damaged} is damaged" in err
    assert f"falling back to {run / 'checkpoints/step00000001'}" in err
    assert ckpt.latest_checkpoint(run).name == "step00000003"


def test_tensorboard_holds_no_events_past_the_resume_point(three_steps, tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from tubelet.cli import main

    run = _copy(three_steps, tmp_path)
    _drop_after(run, 1)  # the killed process had logged steps 2 and 3 already
    assert main(["train", "--resume", str(run)]) == 0
    steps = []
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            steps += [event.step for value in event.summary.value if value.tag == "train/loss"]
    assert steps == [1, 2, 3]
