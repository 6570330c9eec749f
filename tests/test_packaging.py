"""A wheel of tubelet carries what a non-editable install needs at run time: the recipes that
``tubelet train NAME``, ``tubelet recipes`` and ``tubelet demo`` read, and the cached model costs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tubelet.engine.config import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_recipes_live_in_the_package_and_the_checkout_links_to_them():
    assert RECIPES_DIR.parent.name == "tubelet" and any(RECIPES_DIR.glob("*.yaml"))
    assert (ROOT / "recipes").resolve() == RECIPES_DIR


def test_the_wheel_holds_every_recipe_and_the_model_costs(tmp_path):
    pytest.importorskip("setuptools", reason="builds the wheel with the installed setuptools")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("tubelet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"tubelet/recipes/{p.name}" for p in RECIPES_DIR.glob("*.yaml")} <= names
    assert "tubelet/models/costs.json" in names
