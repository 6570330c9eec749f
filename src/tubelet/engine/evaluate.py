"""Multi-view evaluation: every video as T temporal clips x S spatial crops, scores averaged.

Each view is classified on its own; the video's score is the mean of its views' probabilities
(softmax, or sigmoid for multi-label data), as in TimeSformer's and XViT's ``TxS`` testing.
Clip-level metrics score every view separately, video-level metrics the averaged scores.
Videos that fail to decode are listed and left out of every metric.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.data.lists import VideoList
from tubelet.data.transforms import Normalisation, normalised_on
from tubelet.engine.device import autocast
from tubelet.engine.distributed import gather_objects
from tubelet.engine.graphs import InferenceGraphs
from tubelet.engine.metrics import confusion_matrix, mean_average_precision, per_class_accuracy, topk_correct
from tubelet.files import atomic_write_json, atomic_write_text


@dataclass
class EvalResult:
    """Scores and metrics of one evaluation, rows in dataset order.

    ``indices [N]`` dataset indices of the videos that decoded; ``view_scores [N, V, K]`` each
    view's probabilities; ``scores [N, K]`` their mean; ``labels`` Long ``[N]`` or multi-hot
    ``[N, K]``; ``confusion [K, K]`` (single-label); ``failed`` the files left out.
    """

    indices: torch.Tensor
    view_scores: torch.Tensor
    labels: torch.Tensor
    metrics: dict[str, Any]
    confusion: torch.Tensor | None
    failed: list[str] = field(default_factory=list)

    @property
    def scores(self) -> torch.Tensor:
        return self.view_scores.mean(dim=1)


def summarize(view_scores: torch.Tensor, labels: torch.Tensor, loss: float,
              multi_label: bool) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Metrics (percentages) of ``view_scores [N, V, K]`` against ``labels``, and the confusion matrix."""
    num_videos, num_views, num_classes = view_scores.shape
    scores = view_scores.mean(dim=1)  # [N, K]
    metrics: dict[str, Any] = {"loss": loss, "videos": num_videos, "views": num_views}
    if multi_label:
        metrics["map"] = 100 * mean_average_precision(scores, labels)
        metrics["clip_map"] = 100 * mean_average_precision(view_scores.flatten(0, 1),
                                                           labels.repeat_interleave(num_views, dim=0))
        return metrics, None
    clip_labels = labels.repeat_interleave(num_views)  # [N*V], view-major within each video
    for k in (1, 5):
        metrics[f"top{k}"] = 100 * topk_correct(scores, labels, k).float().mean().item()
        metrics[f"clip_top{k}"] = 100 * topk_correct(view_scores.flatten(0, 1), clip_labels, k).float().mean().item()
    confusion = confusion_matrix(scores.argmax(dim=1), labels, num_classes)
    metrics["per_class"] = [None if a is None else 100 * a for a in per_class_accuracy(confusion)]
    present = [a for a in metrics["per_class"] if a is not None]
    metrics["mean_class_accuracy"] = sum(present) / len(present)
    return metrics, confusion


def classify_views(model: nn.Module, video: torch.Tensor, *, device: torch.device, amp_dtype: torch.dtype | None,
                   normalisation: Normalisation | None = None, graphs: InferenceGraphs | None = None) -> torch.Tensor:
    """Float32 logits ``[B*V, K]`` of every view of ``video [B, V, C, T, H, W]``, view-major within
    each video; uint8 views are normalised on ``device`` with ``normalisation = (mean, std)``.
    ``graphs`` (``InferenceGraphs(model)``, kept across batches) runs small batches from CUDA graphs."""
    video = normalised_on(device, video, normalisation, what="classify_views")
    with autocast(device, amp_dtype):
        return (graphs or model)(video.flatten(0, 1)).float()


@torch.no_grad()
def evaluate(model: nn.Module, loader: torch.utils.data.DataLoader, *, device: torch.device,
             amp_dtype: torch.dtype | None = None, multi_label: bool = False,
             normalisation: Normalisation | None = None) -> EvalResult:
    """Classify every view of every video in ``loader`` (batches ``video [B, V, C, T, H, W]``, float,
    or uint8 for ``normalisation = (mean, std)`` on ``device``, as ``eval_loader`` gives them).

    Under DDP each process scores its shard and every process gets the gathered result.
    """
    was_training = model.training
    model.eval()
    indices, view_scores, labels, failed = [], [], [], []
    graphs = InferenceGraphs(model)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for batch in loader:
        failed.extend(batch["failed"])
        if batch["video"] is None:
            continue
        b, v = batch["video"].shape[:2]
        logits = classify_views(model, batch["video"], device=device, amp_dtype=amp_dtype, normalisation=normalisation,
                                graphs=graphs)  # [B*V, K]
        target = batch["label"].to(device)
        if multi_label:
            probs = torch.sigmoid(logits)
            loss = F.binary_cross_entropy_with_logits(logits, target.repeat_interleave(v, dim=0), reduction="sum")
            loss = loss / logits.shape[1]
        else:
            probs = logits.softmax(dim=-1)
            loss = F.cross_entropy(logits, target.repeat_interleave(v), reduction="sum")
        loss_sum += loss.double().cpu()
        indices.append(batch["index"])
        view_scores.append(probs.reshape(b, v, -1).cpu())  # [B, V, K]
        labels.append(batch["label"])
    model.train(was_training)
    shards = gather_objects((indices, view_scores, labels, failed, float(loss_sum)))
    indices = torch.cat([t for shard in shards for t in shard[0]])
    if len(indices) == 0:
        raise ValueError(f"no video could be evaluated: all {len(failed)} failed to decode "
                         f"({', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''})")
    order = indices.argsort()
    view_scores = torch.cat([t for shard in shards for t in shard[1]])[order]
    labels = torch.cat([t for shard in shards for t in shard[2]])[order]
    failed = [path for shard in shards for path in shard[3]]
    loss = sum(shard[4] for shard in shards) / (view_scores.shape[0] * view_scores.shape[1])
    metrics, confusion = summarize(view_scores, labels, loss, multi_label)
    metrics["failed"] = len(failed)
    return EvalResult(indices[order], view_scores, labels, metrics, confusion, failed)


def _label_names(label: torch.Tensor, class_names: Sequence[str]) -> str:
    if label.ndim == 0:
        return class_names[int(label)]
    return ";".join(class_names[k] for k in label.nonzero().flatten().tolist())


def write_predictions(result: EvalResult, videos: VideoList, out: str | Path, *, topk: int = 5) -> list[Path]:
    """``OUT.csv`` (one row a video: path, label, top-k classes and scores) and ``OUT.json`` (the
    same, plus metrics, per-class accuracy and the files that failed). Returns the two paths."""
    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".csv", ".json") else out
    names = videos.class_names
    k = min(topk, len(names))
    rows = []
    for index, scores, label in zip(result.indices.tolist(), result.scores, result.labels):
        top = scores.topk(k)
        rows.append({
            "path": str(videos[index].path),
            "label": _label_names(label, names),
            "top": [{"class": names[c], "score": round(float(s), 6)} for s, c in zip(top.values, top.indices.tolist())],
        })
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["path", "label", "prediction", "score", *[f"top{i + 1}" for i in range(1, k)]])
    for row in rows:
        writer.writerow([row["path"], row["label"], row["top"][0]["class"], row["top"][0]["score"],
                         *[f"{t['class']}:{t['score']}" for t in row["top"][1:]]])
    csv_path, json_path = Path(f"{out}.csv"), Path(f"{out}.json")
    atomic_write_text(csv_path, table.getvalue())
    metrics = dict(result.metrics)
    per_class = metrics.pop("per_class", None)
    atomic_write_json(json_path, {
        "metrics": metrics,
        "per_class_accuracy": dict(zip(names, per_class)) if per_class is not None else None,
        "failed": result.failed,
        "videos": rows,
    })
    return [csv_path, json_path]


def evaluate_checkpoint(checkpoint: str | Path, data_list: str | Path, *, views: tuple[int, int] | None = None,
                        out: str | Path | None = None, batch_size: int | None = None, num_workers: int | None = None,
                        device: str = "auto", precision: str = "auto") -> tuple[EvalResult, list[Path]]:
    """``tubelet eval``: test a checkpoint (or run folder, or saved model) on a video list with
    ``views`` (default: the run's ``eval.views``) on ``device`` at ``precision`` (``auto``: the GPU
    in bf16 when there is one, see ``tubelet.engine.device``). With ``out``, writes ``OUT.csv``,
    ``OUT.json`` and ``OUT_confusion.png``; returns the result and the files written."""
    from tubelet.data.lists import read_any
    from tubelet.engine.checkpoint import load_inference_model
    from tubelet.engine.device import autocast_dtype, resolve_device
    from tubelet.engine.inputs import eval_loader
    from tubelet.engine.plots import plot_confusion

    resolved = resolve_device(device, what="--device")
    amp_dtype = autocast_dtype(precision, resolved, what="--precision")
    model, config = load_inference_model(checkpoint)
    model.to(resolved)
    views = views or config.eval.views
    videos = read_any(data_list, class_names=model.class_names)
    loader = eval_loader(config.data, videos, views=views, resize_to=config.eval.resize_to,
                         batch_size=batch_size or config.eval.batch_size, num_workers=num_workers)
    result = evaluate(model, loader, device=resolved, amp_dtype=amp_dtype, multi_label=videos.multi_label,
                      normalisation=config.data.normalisation())
    written: list[Path] = []
    if out is not None:
        written = write_predictions(result, videos, out)
        if result.confusion is not None:
            stem = written[0].with_suffix("")
            title = (f"{Path(data_list).name} by {checkpoint}\n{views[0]}x{views[1]} views per video, "
                     f"top-1 {result.metrics['top1']:.1f}%")
            written.append(plot_confusion(result.confusion, videos.class_names, f"{stem}_confusion.png", title=title))
    return result, written


def format_metrics(result: EvalResult) -> str:
    """One line of the headline metrics."""
    shown = [f"{k} {result.metrics[k]:.2f}" for k in ("top1", "top5", "clip_top1", "clip_top5", "map", "clip_map",
                                                      "mean_class_accuracy") if k in result.metrics]
    views = result.view_scores.shape[1]
    failed = f", {len(result.failed)} failed to decode: {', '.join(result.failed[:5])}" if result.failed else ""
    return f"{result.metrics['videos']} videos x {views} views: {' '.join(shown)}{failed}"
