import io

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
    for expected in ("best checkpoint", "metrics log", "TensorBoard", "loss.png", "predictions.json",
                     "[4/4] predicting"):
        assert expected in text, expected
    assert (tmp_path / "eval" / "predictions_confusion.png").is_file()
    again = io.StringIO()
    run_demo(tmp_path, videos_per_class=2, overrides=["model.depth=1", "model.embed_dim=32", "model.num_heads=2",
                                                      "train.max_steps=2", "train.batch_size=4",
                                                      "train.progress=false"], stream=again)
    assert "reusing the synthetic videos" in again.getvalue()
