"""A record of where eval and predict classify, for the device tests on CPU and GPU."""

from __future__ import annotations

import pytest

from tubelet.engine import evaluate as evaluate_module
from tubelet.engine import predict as predict_module


def record_classified(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """A list that gets ``(device type, autocast dtype, the weights' device type)`` for every batch
    that ``evaluate`` and the predictions classify."""
    seen, real = [], evaluate_module.classify_views

    def spy(model, video, *, device, amp_dtype, **options):
        seen.append((device.type, amp_dtype, next(model.parameters()).device.type))
        return real(model, video, device=device, amp_dtype=amp_dtype, **options)

    monkeypatch.setattr(evaluate_module, "classify_views", spy)
    monkeypatch.setattr(predict_module, "classify_views", spy)
    return seen
