"""Classification metrics over whole evaluation sets (plain tensors in, Python numbers out)."""

from __future__ import annotations

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``[N]``: whether ``labels [N]`` is among the ``k`` highest of ``scores [N, K]``."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Long ``[K, K]``: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Recall of each class from a confusion matrix; None for classes with no samples."""
    totals = confusion.sum(dim=1)
    return [float(confusion[k, k] / totals[k]) if totals[k] > 0 else None for k in range(len(totals))]


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of one class: the mean, over its positives, of the precision at each positive's rank.

    ``scores [N]``, ``targets [N]`` in {0, 1}; ties are ranked by order of appearance.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    hits = targets[order].float()
    precision_at = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float32)
    return float((precision_at * hits).sum() / hits.sum())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """mAP over the classes with at least one positive (Charades' protocol); ``[N, K]`` each."""
    present = [k for k in range(targets.shape[1]) if targets[:, k].sum() > 0]
    if not present:
        raise ValueError("mean average precision needs at least one positive label")
    return sum(average_precision(scores[:, k], targets[:, k]) for k in present) / len(present)
