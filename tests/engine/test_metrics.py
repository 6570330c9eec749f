import pytest
import torch

from tubelet.engine.metrics import (average_precision, confusion_matrix, mean_average_precision,
                                    per_class_accuracy, topk_correct)


def test_topk_and_confusion():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 0])
    assert topk_correct(scores, labels, 1).tolist() == [True, False, False, True]
    assert topk_correct(scores, labels, 2).tolist() == [True, True, False, True]
    assert topk_correct(scores, labels, 5).all()  # k larger than the class count
    confusion = confusion_matrix(scores.argmax(1), labels, 3)
    assert confusion.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert per_class_accuracy(confusion) == [0.5, 0.5, None]


def _slow_ap(scores, targets):
    ranked = sorted(zip(scores.tolist(), targets.tolist()), key=lambda p: -p[0])
    hits, total = 0, 0.0
    for rank, (_, positive) in enumerate(ranked, 1):
        if positive:
            hits += 1
            total += hits / rank
    return total / hits


def test_average_precision_matches_definition():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(50, 4, generator=generator)
    targets = (torch.rand(50, 4, generator=generator) > 0.7).long()
    targets[:, 3] = 0
    for k in range(3):
        assert average_precision(scores[:, k], targets[:, k]) == pytest.approx(_slow_ap(scores[:, k], targets[:, k]))
    expected = sum(_slow_ap(scores[:, k], targets[:, k]) for k in range(3)) / 3  # class 3 has no positives
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
    assert average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
