"""Mixup/CutMix: targets sum to one and match the mixing weights and the pasted area."""

from __future__ import annotations

import pytest
import torch

from tubelet.data.mixup import MixupCutmix, cutmix_box, smooth_one_hot


def _batch(batch: int = 4, frames: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos where sample i is the constant i + 1, so every pixel tells whom it came from."""
    videos = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1, 1).expand(batch, 3, frames, size, size)
    return videos.contiguous(), torch.arange(batch)


def test_smooth_one_hot_values():
    targets = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    expected = torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]])
    assert torch.allclose(targets, expected)
    assert torch.equal(smooth_one_hot(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_blends_videos_and_targets_with_one_lambda():
    videos, labels = _batch()
    mix = MixupCutmix(4, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        mixed, targets = mix(videos, labels, g)
        lam = float(targets[0, 0])
        assert torch.allclose(targets.sum(1), torch.ones(4))
        assert torch.allclose(mixed, lam * videos + (1 - lam) * videos.flip(0))
        for i in range(4):
            assert targets[i, i] == pytest.approx(lam, abs=1e-6) and targets[i, 3 - i] == pytest.approx(1 - lam, abs=1e-6)


def test_cutmix_pastes_one_box_on_all_frames_and_targets_match_area():
    videos, labels = _batch(batch=4, frames=5, size=20)
    mix = MixupCutmix(4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        mixed, targets = mix(videos, labels, g)
        assert torch.allclose(targets.sum(1), torch.ones(4))
        pasted = mixed != videos  # [B, C, T, H, W]
        box = pasted[0, 0, 0]
        assert all(torch.equal(pasted[b, c, t], box) for b in (0, 3) for c in range(3) for t in range(5))
        assert torch.equal(mixed[0][pasted[0]], torch.full((int(pasted[0].sum()),), 4.0))  # from the partner
        area_share = float(box.float().mean())
        assert float(targets[0, 0]) == pytest.approx(1 - area_share)
        assert float(targets[0, 3]) == pytest.approx(area_share)


def test_cutmix_box_area_follows_lambda_before_clipping():
    g = torch.Generator().manual_seed(2)
    for lam in (0.2, 0.5, 0.9):
        top, left, h, w = cutmix_box(100, 100, lam, g)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 100
        assert h * w <= (1 - lam) * 100 * 100 + 1


def test_label_smoothing_and_mixing_combine():
    videos, labels = _batch()
    mixed, targets = MixupCutmix(10, cutmix_alpha=0.0, label_smoothing=0.1)(videos, labels, torch.Generator().manual_seed(3))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert float(targets[0, 9]) == pytest.approx(0.01)  # neither label: smoothing mass only


def test_prob_zero_leaves_batch_unmixed():
    videos, labels = _batch()
    mixed, targets = MixupCutmix(4, prob=0.0, label_smoothing=0.2)(videos, labels)
    assert mixed is videos
    assert torch.allclose(targets, smooth_one_hot(labels, 4, 0.2))


def test_switch_prob_chooses_between_mixup_and_cutmix():
    videos, labels = _batch()
    mix = MixupCutmix(4, switch_prob=0.5)
    g = torch.Generator().manual_seed(4)
    kinds = set()
    for _ in range(30):
        mixed, _ = mix(videos, labels, g)
        is_blend = bool(((mixed != videos).float().mean(dim=(1, 2, 3, 4)) == 1).all())
        kinds.add("mixup" if is_blend else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_multi_label_targets_are_mixed_as_given():
    videos, _ = _batch()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    mixed, targets = MixupCutmix(3, cutmix_alpha=0.0)(videos, labels, torch.Generator().manual_seed(5))
    lam = (4.0 - float(mixed[0, 0, 0, 0, 0])) / 3.0  # sample 0 (value 1) mixed with sample 3 (value 4)
    assert torch.allclose(targets, lam * labels + (1 - lam) * labels.flip(0), atol=1e-6)


def test_deterministic_given_a_generator():
    videos, labels = _batch()
    mix = MixupCutmix(4)
    a = mix(videos, labels, torch.Generator().manual_seed(7))
    b = mix(videos, labels, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"mixup_alpha": -1.0}, "mixup_alpha=-1.0"), ({"prob": 1.5}, "prob=1.5"), ({"label_smoothing": 2.0}, "label_smoothing=2.0")],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixupCutmix(4, **kwargs)
