"""RandAugment and AutoAugment for video clips, in plain torch.

A clip is uint8 ``[T, C, H, W]`` (RGB). The policies *sample* a list of ``(op name, argument)``
pairs once per clip (:func:`sample_rand_augment`, :func:`sample_auto_augment`) and
:func:`apply_ops` then runs each op on the whole clip as a batch, so every frame gets the same
op with the same argument. Statistics that an op needs (the mean grey level of ``contrast``, the
histograms of ``equalize``, the range of ``autocontrast``) are those of each frame, as when the
image op is applied to the frames one by one.

The ops follow PIL's ``ImageOps``/``ImageEnhance`` as timm uses them, on uint8 values ``x``:

* ``invert``: ``255 - x``; ``posterize(bits)``: keep the ``bits`` high bits; ``solarize(thr)``:
  ``255 - x`` where ``x >= thr``; ``solarize_add(add)``: ``min(255, x + add)`` where ``x < 128``.
* ``brightness``, ``contrast``, ``color``, ``sharpness`` with factor ``f`` blend the clip with a
  degenerate image ``d``: ``floor(clamp(d + f (x - d), 0, 255))`` where ``d`` is black, the
  frame's mean grey, the frame in grey, or the frame smoothed by PIL's 3x3 SMOOTH kernel.
* ``autocontrast``: per frame and channel, ``(x - lo) * 255 // (hi - lo)``.
* ``equalize``: PIL's per-channel histogram equalisation.
* ``rotate``, ``shear_x/y``, ``translate_x/y``: affine maps about the frame centre, bilinear,
  with ``fill`` outside the frame.

Magnitudes use timm's scale: a level in ``[0, 10]`` maps to each op's argument range
(RandAugment, Cubuk et al. 2020; AutoAugment's ImageNet policy, Cubuk et al. 2019, Table 9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from tubelet.data import rng

Fill = tuple[int, int, int]

# --------------------------------------------------------------------------- ops


def invert(clip: torch.Tensor) -> torch.Tensor:
    """``255 - x``. uint8 ``[..., C, H, W]`` in and out, as all ops here."""
    return 255 - clip


def posterize(clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every value (``bits >= 8``: unchanged)."""
    if bits >= 8:
        return clip
    mask = (0xFF << (8 - max(bits, 0))) & 0xFF
    return clip & mask


def solarize(clip: torch.Tensor, threshold: int) -> torch.Tensor:
    """Invert the values at or above ``threshold`` (``threshold = 256``: none)."""
    return torch.where(clip.to(torch.int32) >= threshold, 255 - clip, clip)  # int32: 256 does not wrap to 0


def solarize_add(clip: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    """Add ``add`` (saturating at 255) to the values below ``threshold``."""
    added = (clip.to(torch.int32) + add).clamp(0, 255).to(torch.uint8)
    return torch.where(clip.to(torch.int32) < threshold, added, clip)


def _grey(clip: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float ``[..., 3, H, W]`` -> ``[..., 1, H, W]``."""
    red, green, blue = clip.unbind(-3)
    return (0.299 * red + 0.587 * green + 0.114 * blue).unsqueeze(-3)


def _blend(clip: torch.Tensor, degenerate: torch.Tensor, factor: float) -> torch.Tensor:
    """``floor(clamp(d + f (x - d), 0, 255))`` as uint8; ``f = 0`` gives ``d``, ``f = 1`` the clip."""
    mixed = degenerate + factor * (clip.float() - degenerate)
    return mixed.clamp(0, 255).floor().to(torch.uint8)


def brightness(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with black: ``f x``."""
    return _blend(clip, torch.zeros((), dtype=torch.float32), factor)


def contrast(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with each frame's mean grey level."""
    mean = _grey(clip.float()).mean(dim=(-3, -2, -1), keepdim=True)  # [..., 1, 1, 1]
    return _blend(clip, mean, factor)


def color(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the grey version of each frame (``f = 0``: grey, ``f > 1``: more saturated)."""
    return _blend(clip, _grey(clip.float()), factor)


def sharpness(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the frame smoothed by ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` (borders unsmoothed)."""
    lead, (channels, height, width) = clip.shape[:-3], clip.shape[-3:]
    frames = clip.reshape(-1, channels, height, width).float()  # [N, C, H, W]
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(channels, 1, 3, 3)
    smooth = F.conv2d(frames, kernel, groups=channels).round()  # [N, C, H-2, W-2]
    degenerate = frames.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(frames, degenerate, factor).reshape(*lead, channels, height, width)


def autocontrast(clip: torch.Tensor) -> torch.Tensor:
    """Stretch each frame's channel from ``[lo, hi]`` to ``[0, 255]`` (unchanged where ``hi == lo``)."""
    values = clip.to(torch.int32)
    low = values.amin(dim=(-2, -1), keepdim=True)  # [..., C, 1, 1]
    high = values.amax(dim=(-2, -1), keepdim=True)
    stretched = (values - low) * 255 // (high - low).clamp(min=1)
    return torch.where(high > low, stretched, values).to(torch.uint8)


def equalize(clip: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` on each frame's channel.

    With histogram ``h`` of ``n`` values and ``h_last`` the count of the largest value present,
    ``step = (n - h_last) // 255`` and ``lut[v] = (step // 2 + sum_{u < v} h[u]) // step``;
    a channel with ``step == 0`` (one value, or too few pixels) is left unchanged.
    """
    shape = clip.shape
    flat = clip.reshape(-1, shape[-2] * shape[-1]).long()  # [T*C, H*W]
    hist = torch.zeros(flat.shape[0], 256, dtype=torch.long).scatter_add_(1, flat, torch.ones_like(flat))
    last_count = hist.gather(1, flat.amax(dim=1, keepdim=True))  # [T*C, 1]
    step = (flat.shape[1] - last_count) // 255
    before = hist.cumsum(dim=1) - hist  # counts strictly below each value
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256).expand_as(lut))
    return lut.gather(1, flat).to(torch.uint8).reshape(shape)


def _affine(clip: torch.Tensor, matrix: tuple[float, float, float, float], shift: tuple[float, float], fill: Fill) -> torch.Tensor:
    """Resample with ``in = M (out - c) + c + shift`` in pixel coordinates ``(x, y)``, c the centre.

    ``matrix = (m_xx, m_xy, m_yx, m_yy)``. Bilinear; points outside the frame read ``fill``.
    """
    lead, (channels, height, width) = clip.shape[:-3], clip.shape[-3:]
    frames = clip.reshape(-1, channels, height, width).float()  # [N, C, H, W]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    cx, cy = (width - 1) / 2, (height - 1) / 2
    m_xx, m_xy, m_yx, m_yy = matrix
    in_x = m_xx * (xs - cx) + m_xy * (ys - cy) + cx + shift[0]
    in_y = m_yx * (xs - cx) + m_yy * (ys - cy) + cy + shift[1]
    # grid_sample's normalised coordinates with align_corners=False: pixel i -> (2 i + 1) / size - 1
    grid = torch.stack([(2 * in_x + 1) / width - 1, (2 * in_y + 1) / height - 1], dim=-1).float()  # [H, W, 2]
    grid = grid.expand(frames.shape[0], height, width, 2)
    ones = torch.ones_like(frames[:, :1])
    sampled = F.grid_sample(torch.cat([frames, ones], dim=1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    values, inside = sampled[:, :channels], sampled[:, channels:]  # inside: share of in-frame taps
    fill_values = torch.tensor(fill, dtype=torch.float32).view(channels, 1, 1)
    out = values + (1 - inside) * fill_values
    return out.round().clamp(0, 255).to(torch.uint8).reshape(*lead, channels, height, width)


def rotate(clip: torch.Tensor, degrees: float, fill: Fill) -> torch.Tensor:
    """Rotate about the centre, anticlockwise on screen for positive ``degrees`` (as PIL)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    return _affine(clip, (cos, -sin, sin, cos), (0.0, 0.0), fill)


def shear_x(clip: torch.Tensor, factor: float, fill: Fill) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x + f (y - cy), y)``."""
    return _affine(clip, (1.0, factor, 0.0, 1.0), (0.0, 0.0), fill)


def shear_y(clip: torch.Tensor, factor: float, fill: Fill) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x, y + f (x - cx))``."""
    return _affine(clip, (1.0, 0.0, factor, 1.0), (0.0, 0.0), fill)


def translate_x(clip: torch.Tensor, fraction: float, fill: Fill) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x + fraction W, y)``: content moves left for ``fraction > 0``."""
    return _affine(clip, (1.0, 0.0, 0.0, 1.0), (fraction * clip.shape[-1], 0.0), fill)


def translate_y(clip: torch.Tensor, fraction: float, fill: Fill) -> torch.Tensor:
    """Output ``(x, y)`` reads input ``(x, y + fraction H)``: content moves up for ``fraction > 0``."""
    return _affine(clip, (1.0, 0.0, 0.0, 1.0), (0.0, fraction * clip.shape[-2]), fill)


# --------------------------------------------------------------------------- op table


class _Op(NamedTuple):
    apply: Callable[[torch.Tensor, float, Fill], torch.Tensor]  # (clip, argument, fill) -> clip
    level_to_arg: Callable[[float], float]  # level in [0, 10] -> argument (timm's ranges)
    signed: bool  # the argument's sign is drawn at random


def _no_arg(level: float) -> float:
    return 0.0


def _enhance(level: float) -> float:
    return level / 10 * 1.8 + 0.1  # factor in [0.1, 1.9]


_OPS: dict[str, _Op] = {
    "autocontrast": _Op(lambda clip, arg, fill: autocontrast(clip), _no_arg, False),
    "equalize": _Op(lambda clip, arg, fill: equalize(clip), _no_arg, False),
    "invert": _Op(lambda clip, arg, fill: invert(clip), _no_arg, False),
    "rotate": _Op(rotate, lambda level: level / 10 * 30.0, True),
    # RandAugment keeps 0-4 bits (timm "Posterize"); AutoAugment's paper keeps 4-8 bits
    "posterize": _Op(lambda clip, arg, fill: posterize(clip, int(arg)), lambda level: int(level / 10 * 4), False),
    "posterize_original": _Op(lambda clip, arg, fill: posterize(clip, int(arg)), lambda level: int(level / 10 * 4) + 4, False),
    "solarize": _Op(lambda clip, arg, fill: solarize(clip, int(arg)), lambda level: int(level / 10 * 256), False),
    "solarize_add": _Op(lambda clip, arg, fill: solarize_add(clip, int(arg)), lambda level: int(level / 10 * 110), False),
    "color": _Op(lambda clip, arg, fill: color(clip, arg), _enhance, False),
    "contrast": _Op(lambda clip, arg, fill: contrast(clip, arg), _enhance, False),
    "brightness": _Op(lambda clip, arg, fill: brightness(clip, arg), _enhance, False),
    "sharpness": _Op(lambda clip, arg, fill: sharpness(clip, arg), _enhance, False),
    "shear_x": _Op(shear_x, lambda level: level / 10 * 0.3, True),
    "shear_y": _Op(shear_y, lambda level: level / 10 * 0.3, True),
    "translate_x": _Op(translate_x, lambda level: level / 10 * 0.45, True),
    "translate_y": _Op(translate_y, lambda level: level / 10 * 0.45, True),
}

RAND_AUGMENT_OPS: tuple[str, ...] = (
    "autocontrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
    "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip

# AutoAugment's ImageNet policy (Cubuk et al. 2019): 25 sub-policies of two (op, probability, level).
IMAGENET_POLICY: tuple[tuple[tuple[str, float, float], ...], ...] = (
    (("posterize_original", 0.4, 8), ("rotate", 0.6, 9)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
    (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
    (("posterize_original", 0.6, 7), ("posterize_original", 0.6, 6)),
    (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
    (("equalize", 0.4, 4), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, 7)),
    (("posterize_original", 0.8, 5), ("equalize", 1.0, 2)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
    (("equalize", 0.6, 8), ("posterize_original", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)),
    (("rotate", 0.4, 9), ("equalize", 0.6, 2)),
    (("equalize", 0.0, 7), ("equalize", 0.8, 8)),
    (("invert", 0.6, 4), ("equalize", 1.0, 8)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)),
    (("sharpness", 0.4, 7), ("invert", 0.6, 8)),
    (("shear_x", 0.6, 5), ("equalize", 1.0, 9)),
    (("color", 0.4, 0), ("equalize", 0.6, 3)),
    (("equalize", 0.4, 7), ("solarize", 0.2, 4)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 5)),
    (("invert", 0.6, 4), ("equalize", 1.0, 8)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, 8), ("equalize", 0.6, 3)),
)

AUTO_AUGMENT_POLICIES = {"imagenet": IMAGENET_POLICY}


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class RandAugmentConfig:
    """RandAugment (Cubuk et al. 2020) with timm's options.

    timm's ``rand-m9-n2-mstd0.5`` is ``RandAugmentConfig(magnitude=9, num_ops=2, magnitude_std=0.5)``:
    ``num_ops`` ops are drawn with replacement from ``ops``, each applied with probability
    ``prob`` at a level drawn from ``N(magnitude, magnitude_std^2)`` clipped to
    ``[0, magnitude_max]`` (``magnitude_std = inf``: uniform in ``[0, magnitude]``).
    """

    magnitude: float = 9.0
    num_ops: int = 2
    magnitude_std: float = 0.5
    prob: float = 0.5
    magnitude_max: float = 10.0
    ops: tuple[str, ...] = RAND_AUGMENT_OPS

    def __post_init__(self) -> None:
        if not 0 <= self.magnitude <= self.magnitude_max:
            raise ValueError(f"RandAugmentConfig.magnitude={self.magnitude}: expected a value in [0, magnitude_max={self.magnitude_max}]")
        if self.num_ops < 1:
            raise ValueError(f"RandAugmentConfig.num_ops={self.num_ops}: expected at least 1")
        if self.magnitude_std < 0:
            raise ValueError(f"RandAugmentConfig.magnitude_std={self.magnitude_std}: expected >= 0")
        if not 0 <= self.prob <= 1:
            raise ValueError(f"RandAugmentConfig.prob={self.prob}: expected a probability in [0, 1]")
        unknown = [name for name in self.ops if name not in _OPS]
        if unknown or not self.ops:
            raise ValueError(f"RandAugmentConfig.ops={self.ops!r}: expected a non-empty subset of {sorted(_OPS)}")


def _argument(name: str, level: float, generator: torch.Generator | None) -> float:
    op = _OPS[name]
    arg = op.level_to_arg(level)
    return -arg if op.signed and rng.coin(0.5, generator) else arg


def sample_rand_augment(config: RandAugmentConfig, generator: torch.Generator | None = None) -> list[tuple[str, float]]:
    """Draw one clip's RandAugment ops: a list of ``(op name, argument)`` for :func:`apply_ops`."""
    chosen = []
    for _ in range(config.num_ops):
        name = config.ops[rng.randint(0, len(config.ops), generator)]
        if not rng.coin(config.prob, generator):
            continue
        if math.isinf(config.magnitude_std):
            level = rng.uniform(0.0, config.magnitude, generator)
        else:
            level = rng.normal(config.magnitude, config.magnitude_std, generator)
        level = min(max(level, 0.0), config.magnitude_max)
        chosen.append((name, _argument(name, level, generator)))
    return chosen


def auto_augment_policy(name: str) -> tuple[tuple[tuple[str, float, float], ...], ...]:
    """The sub-policies of the AutoAugment policy ``name`` (ValueError naming it if unknown)."""
    if name not in AUTO_AUGMENT_POLICIES:
        raise ValueError(f"auto_augment={name!r}: expected one of {sorted(AUTO_AUGMENT_POLICIES)}")
    return AUTO_AUGMENT_POLICIES[name]


def sample_auto_augment(policy: str, generator: torch.Generator | None = None) -> list[tuple[str, float]]:
    """Draw one clip's AutoAugment ops: one sub-policy, each of its ops kept with its probability."""
    sub_policies = auto_augment_policy(policy)
    sub_policy = sub_policies[rng.randint(0, len(sub_policies), generator)]
    return [(name, _argument(name, level, generator)) for name, prob, level in sub_policy if rng.coin(prob, generator)]


def apply_ops(clip: torch.Tensor, ops: list[tuple[str, float]], fill: Fill) -> torch.Tensor:
    """Apply sampled ops in order to uint8 ``[T, C, H, W]``, the same on every frame."""
    for name, arg in ops:
        clip = _OPS[name].apply(clip, arg, fill)
    return clip
