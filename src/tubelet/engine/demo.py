"""``tubelet demo``: the whole tool on its own synthetic data, in minutes on a laptop CPU.

1. synthesise a small dataset of encoded videos (``tubelet synth``);
2. train the ``synth_tiny`` recipe (a small divided-attention TimeSformer);
3. evaluate the best checkpoint with multi-view testing, writing predictions and a confusion matrix;
4. predict the classes of one validation video;
5. print where everything is.
Run again on the same folder, it reuses the data and resumes (or skips) the training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from tubelet.data.synthetic import write_synthetic_dataset
from tubelet.engine.checkpoint import latest_checkpoint, load_inference_model, resolve_checkpoint
from tubelet.engine.config import load_config
from tubelet.engine.evaluate import evaluate_checkpoint, format_metrics
from tubelet.engine.predict import format_predictions, predict_videos
from tubelet.engine.train import PLOTS, fit

RECIPE = "synth_tiny"
TEST_VIEWS = (2, 3)


def run_demo(out_dir: str | Path, *, videos_per_class: int = 40, overrides: list[str] = (),
             stream: TextIO | None = None) -> dict:
    """Run the demo into ``out_dir`` (``overrides`` apply to the recipe); returns the evaluation metrics."""
    stream = stream or sys.stdout
    out_dir = Path(out_dir)
    data_dir, run_dir, eval_dir = out_dir / "data", out_dir / "run", out_dir / "eval"
    if not (data_dir / "train.csv").is_file():
        print(f"[1/4] writing synthetic videos to {data_dir}", file=stream)
        write_synthetic_dataset(data_dir, videos_per_class=videos_per_class, frames=16, size=32, seed=0)
    else:
        print(f"[1/4] reusing the synthetic videos in {data_dir}", file=stream)
    config = load_config(RECIPE, [f"data.train={data_dir / 'train.csv'}", f"data.val={data_dir / 'val.csv'}",
                                  *overrides])
    print(f"[2/4] training {config.model.name} ({RECIPE} recipe) into {run_dir}", file=stream, flush=True)
    fit(config, run_dir, resume=latest_checkpoint(run_dir) is not None)

    views = f"{TEST_VIEWS[0]}x{TEST_VIEWS[1]}"
    print(f"[3/4] evaluating the best checkpoint with {views} views per video", file=stream, flush=True)
    result, written = evaluate_checkpoint(run_dir, data_dir / "val.csv", views=TEST_VIEWS,
                                          out=eval_dir / "predictions")
    print(f"      {format_metrics(result)}", file=stream)

    video = sorted((data_dir / "videos").rglob("*.mp4"))[0]
    print(f"[4/4] predicting {video}", file=stream)
    model, test_config = load_inference_model(run_dir)
    predictions = predict_videos(model, [video], test_config.data, views=TEST_VIEWS, topk=3)
    print(f"      {format_predictions(predictions)}", file=stream)

    best = resolve_checkpoint(run_dir)
    print("\nwhere everything is:", file=stream)
    for what, path in (
        ("videos and lists", data_dir),
        ("resolved config", run_dir / "config.yaml"),
        ("best checkpoint", best),
        ("metrics log", run_dir / "metrics.jsonl"),
        ("TensorBoard", f"{run_dir / 'tensorboard'}  (tensorboard --logdir {run_dir / 'tensorboard'})"),
        ("plots", ", ".join(str(p) for p in sorted((run_dir / PLOTS).glob("*.png")))),
        ("predictions", ", ".join(str(p) for p in written)),
    ):
        print(f"  {what:17s} {path}", file=stream)
    print(f"\nnext: tubelet predict VIDEO --checkpoint {run_dir}", file=stream)
    return result.metrics
