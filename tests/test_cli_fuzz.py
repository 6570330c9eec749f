"""Damaged inputs to every command that reads files: one line naming the problem, no traceback,
exit code 2 (1 where the inputs were read and some videos did not decode), and nothing written
outside the output folder."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import pytest

import tubelet
from tubelet.cli import main
from tubelet.data.synthetic import write_synthetic_dataset

_GARBAGE = bytes(random.Random(0).randrange(256) for _ in range(4000))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Good inputs: a synthetic dataset, a saved model for it and a one-step run."""
    root = tmp_path_factory.mktemp("fuzz")
    write_synthetic_dataset(root / "data", videos_per_class=2, frames=8, size=32, seed=0)
    names = (root / "data/classes.txt").read_text().split()
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=len(names), depth=1, embed_dim=32,
                                 num_heads=2, num_frames=4, img_size=16)
    tubelet.save_model(model, root / "model", class_names=names)
    data = root / "data"
    assert main(["train", "synth_tiny", "model.depth=1", "model.embed_dim=32", "model.num_heads=2",
                 f"data.train={data / 'train.csv'}", "data.val=", "data.num_frames=4", "data.img_size=16",
                 "data.num_workers=0", "train.batch_size=4", "train.max_steps=1", "train.progress=false",
                 "--out", str(root / "run")]) == 0
    (root / "recipe.yaml").write_text((root / "run/config.yaml").read_text())
    return root


def _video(inputs: Path) -> Path:
    return sorted((inputs / "data/videos").rglob("*.mp4"))[0]


def _write(path: Path, content: bytes | str) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _all_videos(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(inputs: Path) -> None:
        for video in (inputs / "data/videos").rglob("*.mp4"):
            damage(video)
    return apply


def _config(inputs: Path, folder: str, change: Callable[[dict], object]) -> None:
    path = inputs / folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


WEIGHT_DAMAGE = {
    "empty weights": lambda d: _write(d / "model.safetensors", b""),
    "truncated weights": lambda d: _truncate(d / "model.safetensors"),
    "garbage weights": lambda d: _write(d / "model.safetensors", _GARBAGE),
    "no weights": lambda d: (d / "model.safetensors").unlink(),
    "empty config": lambda d: _write(d / "config.json", ""),
    "garbage config": lambda d: _write(d / "config.json", _GARBAGE),
    "config a list": lambda d: _write(d / "config.json", "[1, 2]"),
    "unknown architecture": lambda d: _config(d.parent, d.name, lambda c: c.update(architecture="no_such_model")),
    "bad argument": lambda d: _config(d.parent, d.name, lambda c: c["args"].update(depth="two")),
    "unknown argument": lambda d: _config(d.parent, d.name, lambda c: c["args"].update(colour="red")),
    "class names short": lambda d: _config(d.parent, d.name, lambda c: c.update(class_names=["a"])),
}

LIST_DAMAGE = {
    "empty list": "",
    "garbage list": _GARBAGE,
    "no label": "videos/x.mp4\n",
    "label out of range": "videos/x.mp4 999\n",
    "unknown class": "videos/x.mp4 no_such_class\n",
    "missing videos": "nowhere/a.mp4 0\nnowhere/b.mp4 1\n",
}

VIDEO_DAMAGE = {
    "empty videos": _all_videos(lambda v: _write(v, b"")),
    "garbage videos": _all_videos(lambda v: _write(v, _GARBAGE)),
    "truncated videos": _all_videos(_truncate),
}


def _train(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(inputs / "recipe.yaml"), f"data.train={inputs / 'data/train.csv'}", *extra,
            "--out", str(out / "run")]


def _cases() -> list[tuple[str, Callable[[Path], None], Callable[[Path, Path], list[str]]]]:
    """(name, damage(inputs), argv(inputs, out))."""
    cases = []
    for name, damage in WEIGHT_DAMAGE.items():
        cases += [
            (f"predict: {name}", lambda i, d=damage: d(i / "model"),
             lambda i, o: ["predict", str(_video(i)), "--checkpoint", str(i / "model")]),
            (f"eval: {name}", lambda i, d=damage: d(i / "model"),
             lambda i, o: ["eval", str(i / "model"), "--data", str(i / "data/val.csv"), "--out", str(o / "p")]),
            (f"train init: {name}", lambda i, d=damage: d(i / "model"),
             lambda i, o: _train(i, o, f"train.init={i / 'model'}")),
            (f"convert: {name}", lambda i, d=damage: d(i / "model"),
             lambda i, o: ["convert", str(i / "model"), "--from", "hf", "--out", str(o / "converted")]),
        ]
    latest = "run/checkpoints/step00000001"
    for name in ("empty weights", "truncated weights", "garbage config"):
        cases.append((f"eval run checkpoint: {name}", lambda i, d=WEIGHT_DAMAGE[name]: d(i / latest),
                      lambda i, o: ["eval", str(i / "run"), "--data", str(i / "data/val.csv")]))
    for name, content in LIST_DAMAGE.items():
        cases += [
            (f"eval: {name}", lambda i, c=content: _write(i / "data/val.csv", c),
             lambda i, o: ["eval", str(i / "model"), "--data", str(i / "data/val.csv")]),
            (f"train: {name}", lambda i, c=content: _write(i / "data/train.csv", c),
             lambda i, o: _train(i, o)),
            (f"check-videos: {name}", lambda i, c=content: _write(i / "data/val.csv", c),
             lambda i, o: ["check-videos", str(i / "data/val.csv"), "--workers", "1", "--out", str(o / "bad.txt")]),
        ]
    for name, damage in VIDEO_DAMAGE.items():
        cases += [
            (f"eval: {name}", damage, lambda i, o: ["eval", str(i / "model"), "--data", str(i / "data/val.csv")]),
            (f"predict: {name}", damage, lambda i, o: ["predict", str(_video(i)), "--checkpoint", str(i / "model")]),
            (f"predict window: {name}", damage,
             lambda i, o: ["predict", str(_video(i)), "--checkpoint", str(i / "model"), "--window", "0.3"]),
            (f"train: {name}", damage, lambda i, o: _train(i, o)),
            (f"train 2 workers: {name}", damage, lambda i, o: _train(i, o, "data.num_workers=2")),
            (f"check-videos: {name}", damage,
             lambda i, o: ["check-videos", str(i / "data"), "--workers", "1", "--out", str(o / "bad.txt")]),
        ]
    for name, text in {"recipe not YAML": "model: [1\n", "recipe a list": "- 1\n", "recipe binary": _GARBAGE,
                       "recipe unknown key": "train:\n  lrr: 0.1\n", "recipe wrong type": "train:\n  epochs: many\n"}.items():
        cases.append((f"train: {name}", lambda i, t=text: _write(i / "recipe.yaml", t),
                      lambda i, o: _train(i, o)))
    for name, damage in {"run config not YAML": lambda i: _write(i / "run/config.yaml", "train: [\n"),
                         "run config binary": lambda i: _write(i / "run/config.yaml", _GARBAGE),
                         "run config unknown key": lambda i: _write(i / "run/config.yaml", "colour: red\n"),
                         "every checkpoint damaged": lambda i: _truncate(i / latest / "state.pt")}.items():
        cases.append((f"train --resume: {name}", damage, lambda i, o: ["train", "--resume", str(i / "run")]))
    return cases


_CASES = _cases()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("name, damage, argv", _CASES, ids=[c[0] for c in _CASES])
def test_damaged_input_is_one_line_and_writes_nowhere_else(name, damage, argv, pristine, tmp_path, capsys,
                                                           monkeypatch):
    inputs = Path(shutil.copytree(pristine, tmp_path / "inputs"))
    if name.startswith("train --resume"):
        out = inputs / "run"  # resuming writes into the run folder
    else:
        out = tmp_path / "out"
    damage(inputs)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _snapshot(inputs)
    code = main(argv(inputs, out))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 2, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert not any(work.iterdir()), "wrote into the working folder"
    after = _snapshot(inputs)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    if out.is_relative_to(inputs):
        changed = {k for k in changed if not (inputs / k).is_relative_to(out)}
    assert not changed, f"changed inputs: {sorted(changed)}"


@pytest.mark.slow
def test_some_undecodable_videos_exit_1_in_every_command(pristine, tmp_path, capsys):
    """The policy: the videos that decode are used, the others named, exit code 1 (2 when none decodes)."""
    inputs = Path(shutil.copytree(pristine, tmp_path / "inputs"))
    videos = sorted((inputs / "data/videos").rglob("*.mp4"))
    bad = [line.split(",")[0] for line in (inputs / "data/val.csv").read_text().splitlines()[1:2]]
    _write(inputs / "data" / bad[0], _GARBAGE)
    assert main(["eval", str(inputs / "model"), "--data", str(inputs / "data/val.csv")]) == 1
    assert "1 failed to decode" in capsys.readouterr().out
    _write(videos[0], _GARBAGE)
    assert main(["predict", str(videos[0]), str(videos[1]), "--checkpoint", str(inputs / "model")]) == 1
    assert "cannot decode" in capsys.readouterr().out
    assert main(["check-videos", str(inputs / "data/val.csv"), "--workers", "1", "--out",
                 str(tmp_path / "bad.txt")]) == 1
    assert 1 <= (tmp_path / "bad.txt").read_text().count("\n") < 12
