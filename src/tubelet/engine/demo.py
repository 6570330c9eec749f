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
from tubelet.engine.checkpoint import latest_checkpoint
from tubelet.engine.config import Config, load_config
from tubelet.engine.evaluate import evaluate_checkpoint, format_metrics
from tubelet.engine.predict import format_predictions, predict_checkpoint
from tubelet.engine.report import format_report, run_report
from tubelet.engine.train import fit

RECIPE = "synth_tiny"
TEST_VIEWS = (2, 3)
# About 370 CPU-seconds (measured with one thread, 2026-12-01): 6 minutes on one core, 4-5 on two idle ones.
DURATION = "about 5 minutes on 2 idle CPU cores, 6 on one, longer on a busy machine"


def describe_model(config: Config) -> str:
    """The architecture name with the recipe's constructor arguments, which may change what the
    name says (a ``_p8`` model trained with ``patch_size=4``)."""
    args = ", ".join(f"{key}={value}" for key, value in config.model.args.items())
    return f"{config.model.name} with {args}" if args else config.model.name


def run_demo(out_dir: str | Path, *, videos_per_class: int = 40, overrides: list[str] = (),
             stream: TextIO | None = None) -> dict:
    """Run the demo into ``out_dir`` (``overrides`` apply to the recipe); returns the evaluation metrics."""
    stream = stream or sys.stdout
    out_dir = Path(out_dir)
    data_dir, run_dir, eval_dir = out_dir / "data", out_dir / "run", out_dir / "eval"
    print(f"tubelet demo: {DURATION}; the training prints the time left after each validation", file=stream)
    if not (data_dir / "train.csv").is_file():
        print(f"[1/4] writing synthetic videos to {data_dir}", file=stream)
        write_synthetic_dataset(data_dir, videos_per_class=videos_per_class, frames=16, size=32, seed=0)
    else:
        print(f"[1/4] reusing the synthetic videos in {data_dir}", file=stream)
    config = load_config(RECIPE, [f"data.train={data_dir / 'train.csv'}", f"data.val={data_dir / 'val.csv'}",
                                  *overrides])
    print(f"[2/4] training {describe_model(config)} ({RECIPE} recipe) into {run_dir}", file=stream, flush=True)
    fit(config, run_dir, resume=latest_checkpoint(run_dir) is not None)

    views = f"{TEST_VIEWS[0]}x{TEST_VIEWS[1]}"
    print(f"[3/4] evaluating the best checkpoint with {views} views per video", file=stream, flush=True)
    result, written = evaluate_checkpoint(run_dir, data_dir / "val.csv", views=TEST_VIEWS,
                                          out=eval_dir / "predictions")
    print(f"      {format_metrics(result)}", file=stream)

    video = sorted((data_dir / "videos").rglob("*.mp4"))[0]
    print(f"[4/4] predicting {video}", file=stream)
    predictions = predict_checkpoint(run_dir, [video], views=TEST_VIEWS, topk=3)
    print(f"      {format_predictions(predictions)}", file=stream)

    print("\nwhere everything is:", file=stream)
    rows = [("videos and lists", str(data_dir)), *run_report(run_dir), ("predictions", ", ".join(map(str, written)))]
    print(format_report(rows), file=stream)
    print(f"\nnext: tubelet predict VIDEO --checkpoint {run_dir}", file=stream)
    return result.metrics
