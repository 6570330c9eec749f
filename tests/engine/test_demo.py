import io
import subprocess
from pathlib import Path

import pytest

from tubelet.engine.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_where_things_are(tmp_path):
    out = io.StringIO()
    metrics = run_demo(tmp_path, videos_per_class=2,
                       overrides=["model.depth=1", "model.embed_dim=32", "model.num_heads=2", "train.max_steps=2",
                                  "train.batch_size=4", "train.progress=false"], stream=out)
    text = out.getvalue()
    assert metrics["views"] == 6 and metrics["videos"] == 12
    for expected in ("tubelet demo: about 5 minutes", "timesformer_divided_tiny_p8_8x32 with depth=1, patch_size=4, tubelet_size=2", "best top1", "metrics log", "TensorBoard", "loss.png", "predictions.json",
                     "[4/4] predicting"):
        assert expected in text, expected
    assert (tmp_path / "eval" / "predictions_confusion.png").is_file()
    again = io.StringIO()
    run_demo(tmp_path, videos_per_class=2, overrides=["model.depth=1", "model.embed_dim=32", "model.num_heads=2",
                                                      "train.max_steps=2", "train.batch_size=4",
                                                      "train.progress=false"], stream=again)
    assert "reusing the synthetic videos" in again.getvalue()


def test_make_demo_installs_tubelet_without_the_test_extras(tmp_path):
    """On a fresh clone (no .venv), `make demo` installs tubelet alone; `make test` adds the extras."""
    root = Path(__file__).resolve().parents[2]

    def commands(target):
        return subprocess.run(["make", "-n", "-C", str(root), target, f"VENV={tmp_path / 'venv'}"], check=True,
                              capture_output=True, text=True).stdout

    assert "pip install -q -e .\n" in commands("demo") and ".[test]" not in commands("demo")
    assert '.[test]' in commands("test")
