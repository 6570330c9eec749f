"""What a finished run holds and where: printed at the end of ``tubelet train`` and ``tubelet demo``."""

from __future__ import annotations

from pathlib import Path

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.run_log import METRICS, TENSORBOARD
from tubelet.engine.resume import RUN_CONFIG
from tubelet.engine.train import PLOTS


def run_report(run_dir: str | Path) -> list[tuple[str, str]]:
    """``(what, where)`` rows for a run folder: the best checkpoint and its score, the resolved
    config, the metrics log, TensorBoard and the plots."""
    run_dir = Path(run_dir)
    best = ckpt.best_record(run_dir)
    rows = []
    if best is not None:
        rows.append((f"best {best['metric']} {best['value']:.2f}", str(run_dir / ckpt.CHECKPOINTS / best["checkpoint"])))
    else:
        latest = ckpt.latest_checkpoint(run_dir)
        rows.append(("last checkpoint (no validation)", str(latest)))
    rows += [
        ("resolved config", str(run_dir / RUN_CONFIG)),
        ("metrics log", str(run_dir / METRICS)),
        ("TensorBoard", f"{run_dir / TENSORBOARD}  (tensorboard --logdir {run_dir / TENSORBOARD})"),
        ("plots", ", ".join(str(p) for p in sorted((run_dir / PLOTS).glob("*.png")))),
    ]
    return rows


def format_report(rows: list[tuple[str, str]]) -> str:
    """One aligned line per row."""
    width = max(len(what) for what, _ in rows)
    return "\n".join(f"  {what:<{width}}  {where}" for what, where in rows)
