"""The README runs as written: every Python snippet and every shell command in it.

Python snippets run in order in one namespace, in a folder with a small synthetic dataset at
``data/``. Shell commands run in README order through ``tubelet.cli.main`` in a folder with a
small synthetic dataset at ``synth/`` and two of its videos as ``clip.mp4`` and ``long.mp4``.
To stay fast, models are built with 1 block (the ``shallow_models`` fixture) and a few literal
values are replaced (``SMALLER``: each must still be in the README, so the table cannot hide a
change). Commands whose inputs are outside artefacts (foreign checkpoints, Kinetics, 8 GPUs, a run
trained further down) or that take minutes are only parsed, with their names checked
(``PARSE_ONLY``); ``make`` targets are dry-run.
The models table must match ``tubelet models`` (its cost file).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import tubelet
from tubelet.cli import _build_parser, main
from tubelet.convert import FORMATS
from tubelet.data.synthetic import write_synthetic_dataset
from tubelet.engine.config import load_config
from tubelet.models.registry import constructor_arguments, get_entry
from tubelet.models.summary import cached_costs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# README text -> what runs instead, to keep the doc test in seconds.
SMALLER = {
    "build_train_loader(train, batch_size=8, num_workers=4, seed=0)": "build_train_loader(train, batch_size=8, num_workers=0, seed=0)",
    "build_eval_loader(val, batch_size=4, num_workers=4)": "build_eval_loader(val, batch_size=4, num_workers=0)",
    "tubelet synth synth --videos-per-class 40": "tubelet synth synth --videos-per-class 2 --frames 8",
    "model.depth=3 --out runs/a": "model.depth=1 model.embed_dim=32 model.num_heads=2 train.max_steps=2 "
                                  "train.progress=false --out runs/a",
}
# Commands that are parsed and name-checked but not run: (prefix, why).
PARSE_ONLY = (
    ("tubelet convert ", "needs a foreign checkpoint"),
    ("tubelet export ", "needs a trained run (runs/a is trained further down) or a converted checkpoint"),
    ("tubelet train timesformer_divided_k400_8x224", "Kinetics and ImageNet weights"),
    ("torchrun ", "8 processes on Kinetics"),
    ("tubelet bench timesformer_divided_base", "base models: minutes on a CPU"),
    ("tubelet bench lvt_base", "base models, Triton: GPU"),
)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def _commands() -> list[str]:
    """Each command of the bash blocks, without its trailing comment; comment-only lines dropped."""
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            command = re.split(r"\s+#\s", " " + line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def _smaller(text: str) -> str:
    for original, replacement in SMALLER.items():
        text = text.replace(original, replacement)
    return text


def test_every_replacement_still_matches_the_readme():
    for original in SMALLER:
        assert original in README, f"SMALLER names {original!r}, which the README no longer holds"


@pytest.fixture
def shallow_models(monkeypatch):
    """``tubelet.create_model`` with 1 block wherever the model has a ``depth`` argument."""
    create = tubelet.create_model

    def shallow(name, **overrides):
        if "depth" in constructor_arguments(get_entry(name).cls):
            overrides["depth"] = 1
        return create(name, **overrides)

    monkeypatch.setattr(tubelet, "create_model", shallow)


def test_python_snippets_run(tmp_path, monkeypatch, shallow_models):
    write_synthetic_dataset(tmp_path / "data", videos_per_class=2, frames=8, size=32, seed=0)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for snippet in _blocks("python"):
        exec(compile(_smaller(snippet), "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def _parse_only(argv: list[str]) -> None:
    argv = argv[argv.index("tubelet.cli") + 1:] if argv[0] == "torchrun" else argv[1:]
    args = _build_parser().parse_args(argv)
    if args.command == "convert":
        assert args.source_format in FORMATS, args.source_format
    elif args.command == "bench":
        for name in args.models:
            get_entry(name)
    elif args.command == "train":
        load_config(args.recipe, args.overrides)


def test_shell_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_synthetic_dataset(tmp_path / "synth", videos_per_class=2, frames=8, size=32, seed=0)
    videos = sorted((tmp_path / "synth" / "videos").rglob("*.mp4"))
    shutil.copy(videos[0], tmp_path / "clip.mp4")
    shutil.copy(videos[1], tmp_path / "long.mp4")
    ran = []
    for command in _commands():
        argv = shlex.split(_smaller(command))
        if argv[0] == "make":
            subprocess.run(["make", "-n", "-C", str(ROOT), *argv[1:], f"VENV={tmp_path / 'venv'}"], check=True,
                           capture_output=True)
        elif any(command.startswith(prefix) for prefix, _ in PARSE_ONLY):
            _parse_only(argv)
        else:
            assert argv[0] == "tubelet", f"the doc test does not know how to run {command!r}"
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                code = main(argv[1:])
            assert code == 0, f"{command!r} exited {code}:\n{printed.getvalue()[-2000:]}"
            ran.append(argv[1])
    assert {"models", "train", "eval", "predict", "synth"} <= set(ran)


def test_models_table_matches_tubelet_models():
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\d+x\d+x\d+x\d+) \| ([\d.]+) \| ([\d.]+) \|$", README, flags=re.M)
    assert len(rows) > 10
    costs = cached_costs()
    for name, shape, params, gmacs in rows:
        cost = costs[name]
        assert shape == "x".join(map(str, cost.input_size)), name
        assert params == f"{cost.params / 1e6:.2f}", name
        assert gmacs == f"{cost.gmacs:.4g}", name


def test_attention_names_in_the_readme_exist():
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.M)) - set(tubelet.list_models())
    assert listed <= set(tubelet.attention.list_attention()), listed - set(tubelet.attention.list_attention())
