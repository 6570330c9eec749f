"""Mixup and CutMix of video batches at collation, with label smoothing.

Mixup (Zhang et al. 2018): ``x = lam x_i + (1 - lam) x_j``. CutMix (Yun et al. 2019): a box of
area share ``1 - lam`` is pasted from ``x_j`` into ``x_i``, the same box on every frame, and
``lam`` is corrected to the share actually kept. In both, the target is
``lam y_i + (1 - lam) y_j`` with ``y`` label-smoothed one-hot vectors. As in timm's "batch" mode,
one ``lam`` is drawn per batch and sample ``i`` is paired with sample ``B - 1 - i``.

Multi-label targets (multi-hot ``[B, K]``, or any float targets) mix by the same rule, without
smoothing: ``lam y_i + (1 - lam) y_j``. The training step is the one place that applies it, on the
device, after each micro-batch is moved there.
"""

from __future__ import annotations

import math

import torch

from tubelet.data import rng


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Long ``[B]`` -> float ``[B, K]``: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return targets.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """Box ``(top, left, h, w)`` of about ``(1 - lam)`` of the frame, centred at a uniform point and
    clipped to the frame (so its area can be smaller; the caller recomputes ``lam`` from it)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = rng.randint(0, height, generator), rng.randint(0, width, generator)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, left, bottom - top, right - left


class MixupCutmix:
    """Mix a batch: ``(videos [B, C, T, H, W], labels) -> (videos, targets float [B, K])``.

    ``labels`` is Long ``[B]`` (smoothed one-hot targets) or float ``[B, K]`` (multi-label
    targets, mixed as they are). With probability ``prob`` the batch is mixed, by CutMix with
    probability ``switch_prob`` when both alphas are positive; ``lam ~ Beta(alpha, alpha)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}: expected at least 1")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}: expected values >= 0")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name}={value}: expected a value in [0, 1]")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            return labels.float()
        return smooth_one_hot(labels, self.num_classes, self.label_smoothing)

    def _draw(self, generator: torch.Generator | None) -> tuple[float, bool]:
        """``(lam, use_cutmix)`` for one batch; ``lam = 1`` leaves it unmixed."""
        if (self.mixup_alpha == 0 and self.cutmix_alpha == 0) or not rng.coin(self.prob, generator):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.coin(self.switch_prob, generator)
        else:
            use_cutmix = self.cutmix_alpha > 0
        return rng.beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha, generator), use_cutmix

    def __call__(
        self, videos: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = self._targets(labels)  # [B, K]
        lam, use_cutmix = self._draw(generator)
        if lam == 1.0:
            return videos, targets
        partner = videos.flip(0)  # sample i is mixed with sample B - 1 - i
        if use_cutmix:
            height, width = videos.shape[-2:]
            top, left, h, w = cutmix_box(height, width, lam, generator)
            videos = videos.clone()
            videos[..., top : top + h, left : left + w] = partner[..., top : top + h, left : left + w]  # all frames
            lam = 1.0 - h * w / (height * width)
        else:
            videos = lam * videos + (1.0 - lam) * partner
        return videos, lam * targets + (1.0 - lam) * targets.flip(0)
