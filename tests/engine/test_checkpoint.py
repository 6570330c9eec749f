import pytest
import safetensors.torch
import torch

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.checkpoint import (Progress, latest_checkpoint, list_checkpoints, load_state, load_weights,
                                       mark_best, resolve_checkpoint, save_checkpoint)

from .tiny import TinyNet


def _save(run, model, step, keep_last=2):
    return save_checkpoint(run, model=model, model_config={"architecture": "tiny", "args": {}, "class_names": None},
                           state={"scheduler": {"last_epoch": step}}, progress=Progress(0, step, step), keep_last=keep_last)


def test_keeps_last_n_plus_best_and_resolves(tmp_path, tiny_net):
    first = _save(tmp_path, tiny_net, 1)
    mark_best(first, "top1", 50.0)
    for step in (2, 3, 4):
        _save(tmp_path, tiny_net, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step00000001", "step00000003", "step00000004"]
    assert latest_checkpoint(tmp_path).name == "step00000004"
    assert resolve_checkpoint(tmp_path) == first  # a run folder resolves to its best
    assert resolve_checkpoint(first) == first
    assert load_state(first)["progress"] == Progress(0, 1, 1)
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path / "nothing")


def test_killed_while_writing_leaves_previous_checkpoint(tmp_path, tiny_net, monkeypatch):
    good = _save(tmp_path, tiny_net, 1)
    weights = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    real_save_file = safetensors.torch.save_file

    def dies_halfway(tensors, path, *args, **kwargs):
        real_save_file(tensors, path, *args, **kwargs)
        with open(path, "r+b") as handle:  # a torn write, then the "kill"
            handle.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", dies_halfway)
    with torch.no_grad():
        tiny_net.head.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, tiny_net, 2)
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step00000001"]
    assert latest_checkpoint(tmp_path) == good
    fresh = TinyNet()
    load_weights(fresh, good / ckpt.WEIGHTS)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, weights[name])


def test_killed_subprocess_leaves_only_complete_checkpoints(tmp_path):
    """A real SIGKILL at an arbitrary moment of a save loop: every checkpoint folder that exists loads."""
    import subprocess
    import sys
    import time

    script = (
        "import sys, torch\n"
        "from tubelet.engine.checkpoint import Progress, save_checkpoint\n"
        "model = torch.nn.Linear(512, 512)\n"
        "for step in range(1, 10000):\n"
        "    save_checkpoint(sys.argv[1], model=model, model_config={}, state={}, progress=Progress(0, step, step))\n"
        "    print(step, flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let a few saves complete
        process.stdout.readline()
    time.sleep(0.05)
    process.kill()
    process.wait()
    found = list_checkpoints(tmp_path)
    assert found
    for folder in found:
        load_weights(torch.nn.Linear(512, 512), folder / ckpt.WEIGHTS)
        load_state(folder)


def test_load_weights_names_bad_keys_and_allows_new_head(tmp_path):
    path = tmp_path / "w.safetensors"
    source = TinyNet(num_classes=5)
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["norm.bias"]
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(ValueError) as error:
        load_weights(TinyNet(num_classes=3), path)
    message = str(error.value)
    assert "missing keys: norm.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "head.weight (file (5, 8), model (3, 8))" in message
    assert "train.new_head=true" in message

    del state["extra.weight"]
    state["norm.bias"] = torch.ones(8)
    safetensors.torch.save_file(state, str(path))
    target = TinyNet(num_classes=3)
    head_before = target.head.weight.clone()
    notes = load_weights(target, path, new_head=True)
    assert notes == ["new head: shape-mismatched key(s) head.bias, head.weight left freshly initialised"]
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.norm.bias, torch.ones(8))
    with pytest.raises(ValueError, match="missing keys: norm.bias"):  # non-head problems stay refused
        del state["norm.bias"]
        safetensors.torch.save_file(state, str(path))
        load_weights(TinyNet(num_classes=3), path, new_head=True)


def test_a_full_disk_while_saving_leaves_the_last_good_checkpoint(tmp_path, tiny_net, monkeypatch):
    from full_disk import filling_disk

    good = _save(tmp_path, tiny_net, 1)
    monkeypatch.setattr(ckpt.torch, "save", filling_disk(torch.save, keep_bytes=10))
    with pytest.raises(OSError, match="No space left on device"):
        _save(tmp_path, tiny_net, 2)
    monkeypatch.undo()
    assert list_checkpoints(tmp_path) == [good]
    assert sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS).iterdir()) == [good.name]  # no temporary left
    assert ckpt.check_checkpoint(good) is None


def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from tubelet import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))

    monkeypatch.setattr(cli, "_cmd_train", full)
    assert cli.main(["train", "synth_tiny", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tubelet train: error: [Errno 28] No space left on device") and "\n" not in err
