"""Finding one's way: --version, the recipes and every config key with where its value comes from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tubelet
from tubelet.cli import main
from tubelet.engine.config import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_package_version(capsys):
    assert main(["--version"]) == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"tubelet {version}\n" and tubelet.__version__ == version


def test_recipes_lists_each_recipe_with_its_first_sentence(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    synth = next(line for line in lines if line.startswith("synth_tiny "))
    assert synth.split(None, 1)[1] == ("The built-in synthetic data (`tubelet synth`, 40 videos per class of 16 "
                                       "frames at 32x32): what `make demo` trains.")


def test_print_config_shows_every_key_its_value_and_source(capsys):
    assert main(["train", "synth_tiny", "train.lr=0.01", "--print-config"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        key, rest = line.split("=", 1)
        value, source = rest.split("  # ")
        rows[key.strip()] = (value.strip(), source)
    assert rows["train.lr"] == ("0.01", "override")
    assert rows["model.patch_size"][0] == "4" and rows["model.patch_size"][1].startswith("recipe ")
    assert rows["model.embed_dim"] == ("64", "model timesformer_divided_tiny_p8_8x32")
    assert rows["model.num_frames"] == ("8", "from data.num_frames")
    assert rows["model.mlp_ratio"] == ("4.0", "constructor default")
    assert rows["train.momentum"] == ("0.9", "default")
    for section in ("data", "train", "eval"):  # every field of every section
        fields = tubelet.engine.config.config_to_dict(tubelet.engine.config.Config())[section]
        assert {f"{section}.{name}" for name in fields} <= set(rows)
