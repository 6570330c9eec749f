import math

import pytest
import torch

from tubelet.engine.schedule import build_scheduler, warmup_cosine_factor


def test_warmup_is_linear_then_cosine_reaches_min():
    total, warmup, floor = 20, 4, 0.1
    factors = [warmup_cosine_factor(s, total_steps=total, warmup_steps=warmup, min_factor=floor) for s in range(total)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # step 4 starts the cosine at its top; halfway through it is the mean of top and floor
    assert factors[4] == pytest.approx(1.0)
    assert factors[12] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert warmup_cosine_factor(total, total_steps=total, warmup_steps=warmup, min_factor=floor) == pytest.approx(floor)


def test_scheduler_keeps_per_group_scales_and_resumes():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    make = lambda: torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.5}], lr=1.0)
    optimizer = make()
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=2, min_factor=0.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.25])
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    expected = warmup_cosine_factor(5, total_steps=10, warmup_steps=2, min_factor=0.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([expected, expected / 2])
    again = make()
    resumed = build_scheduler(again, total_steps=10, warmup_steps=2, min_factor=0.0)
    again.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    again.step()
    resumed.step()
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_warmup_longer_than_training_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warm-up of 12 steps"):
        build_scheduler(optimizer, total_steps=10, warmup_steps=12, min_factor=0.0)
