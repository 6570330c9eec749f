"""PNG plots of a run: loss and accuracy curves from ``metrics.jsonl``, and a confusion matrix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import torch  # noqa: E402

from tubelet.files import atomic_write_bytes  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _series(records: list[dict[str, Any]], kind: str, key: str, x: str = "step") -> tuple[list, list]:
    points = [(r[x], r[key]) for r in records if r["kind"] == kind and r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def accuracy_curves(records: list[dict[str, Any]]) -> dict[str, tuple[list, list]]:
    """The validation curves of ``accuracy.png``, by legend label: ``(epochs, values)``. With one
    view per video the clip top-1 equals the top-1, so the two are drawn as one labelled line."""
    curves = {key: _series(records, "val", key, x="epoch") for key in ("top1", "top5", "map", "clip_top1")}
    if curves["clip_top1"] == curves["top1"]:
        curves = {("top1 (= clip top1, 1 view)" if key == "top1" else key): xy
                  for key, xy in curves.items() if key != "clip_top1"}
    return {key: xy for key, xy in curves.items() if xy[0]}


def plot_curves(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """``loss.png`` (train loss per logged step, validation loss per epoch) and ``accuracy.png``
    (validation top-1 / top-5, or mAP, per epoch). Returns the files written."""
    out_dir = Path(out_dir)
    written = []
    figure, axes = plt.subplots(figsize=(6, 4))
    for kind, key, style in (("train", "loss", "-"), ("val", "loss", "o-")):
        xs, ys = _series(records, kind, key)
        if xs:
            axes.plot(xs, ys, style, label=f"{kind} loss")
    axes.set(xlabel="optimiser step", ylabel="loss", title="loss")
    axes.legend()
    axes.grid(alpha=0.3)
    _save(figure, out_dir / "loss.png")
    written.append(out_dir / "loss.png")
    curves = accuracy_curves(records)
    if curves:
        figure, axes = plt.subplots(figsize=(6, 4))
        for (key, (xs, ys)), style in zip(curves.items(), ("o-", "s--", "^-.", "d:")):
            axes.plot([x + 1 for x in xs], ys, style, label=key)
        axes.set(xlabel="epoch", ylabel="%", title="validation accuracy", ylim=(0, 100))
        axes.legend()
        axes.grid(alpha=0.3)
        _save(figure, out_dir / "accuracy.png")
        written.append(out_dir / "accuracy.png")
    return written


def plot_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: str | Path, *, title: str) -> Path:
    """A row-normalised confusion matrix (rows: true class, columns: predicted), with counts;
    ``title`` says whose (which data, checkpoint or epoch, views)."""
    counts = confusion.float()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90)
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    if len(class_names) <= 30:
        for i in ticks:
            for j in ticks:
                if counts[i, j] > 0:
                    axes.text(j, i, int(counts[i, j]), ha="center", va="center",
                              color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    _save(figure, Path(path))
    return Path(path)
