"""Spatial transforms of video clips, in plain torch, drawn once per clip.

Decoded videos are uint8 ``[T, H, W, C]``. Here a clip is ``[T, C, H, W]``, so that torch's image
functions treat the frames as a batch: every random choice (crop box, flip, augmentation ops,
erased box) is drawn once per clip from a ``torch.Generator`` and applied identically to every
frame. What leaves :class:`TrainTransform` is float, normalised ``[C, T, H, W]``; what leaves
:class:`EvalTransform` is ``[S, C, T, H, W]``, one entry per spatial crop. With
``output_dtype=torch.uint8`` either hands its clips over before normalisation, for
:func:`normalised_on` to normalise a batch on its device (a quarter of the bytes through a loader).

Train: random resized crop (Szegedy et al. 2015; torchvision/timm semantics: 10 tries, then a
centre crop at the nearest allowed aspect ratio), horizontal flip with a label map for
direction-sensitive classes, RandAugment or AutoAugment (:mod:`tubelet.data.augment`),
normalisation, random erasing (Zhong et al. 2020; timm's "pixel" mode, one box per clip).
Eval: short-side resize, then 1 centre crop or 3 crops (both ends and centre of the long side, as
TimeSformer and XViT test).
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F

from tubelet.data import rng
from tubelet.data.augment import RandAugmentConfig, apply_ops, auto_augment_policy, sample_auto_augment, sample_rand_augment
from tubelet.normalisation import IMAGENET_MEAN, IMAGENET_STD

Label = int | tuple[int, ...]


def resize(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 ``[T, C, H, W]`` to ``[T, C, height, width]``. On the CPU
    PyTorch's uint8 kernel computes it (in fixed point: within one level of the float computation,
    about 12x faster in a one-thread loader worker); elsewhere it is computed in float and rounded."""
    if clip.shape[-2:] == (height, width):
        return clip
    if clip.dtype == torch.uint8 and clip.device.type == "cpu":
        return F.interpolate(clip, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    out = F.interpolate(clip.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[T, C, H, W]`` so that its short side is ``size``; the long side keeps the aspect
    ratio, truncated as torchvision does (``int(size * long / short)``)."""
    height, width = clip.shape[-2:]
    if height <= width:
        return resize(clip, size, int(size * width / height))
    return resize(clip, int(size * height / width), size)


def crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """``clip[..., top:top+height, left:left+width]``."""
    return clip[..., top : top + height, left : left + width]


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Draw a crop box ``(top, left, h, w)`` with area share in ``scale`` and ``w / h`` in ``ratio``.

    The aspect ratio is drawn log-uniformly. After 10 boxes that do not fit, falls back to the
    largest centred box whose ratio is ``ratio`` clamped to the frame's own.
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1], generator)
        aspect = math.exp(rng.uniform(log_low, log_high, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h + 1, generator), rng.randint(0, width - w + 1, generator), h, w
    frame_ratio = width / height
    if frame_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif frame_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _crop_starts(length: int, size: int, num_crops: int) -> list[int]:
    """Start offsets of ``num_crops`` windows of ``size`` along a side of ``length``.

    The centre offset is ``ceil((length - size) / 2)``, as in PySlowFast's ``uniform_crop``.
    """
    centre = math.ceil((length - size) / 2)
    if num_crops == 1:
        return [centre]
    return [0, centre, length - size]


def spatial_crops(clip: torch.Tensor, size: int, num_crops: int) -> torch.Tensor:
    """Square crops of ``[T, C, H, W]`` -> ``[S, T, C, size, size]``, S = ``num_crops``.

    ``num_crops=1``: the centre crop. ``num_crops=3``: start, centre and end of the long side
    (left, centre, right for landscape and square frames; top, centre, bottom for portrait),
    centred on the short side.
    """
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops={num_crops}: expected 1 (centre) or 3 (both ends and centre of the long side)")
    height, width = clip.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"frame of {height}x{width} is smaller than the crop size {size}")
    if height > width:
        left = _crop_starts(width, size, 1)[0]
        boxes = [(top, left) for top in _crop_starts(height, size, num_crops)]
    else:
        top = _crop_starts(height, size, 1)[0]
        boxes = [(top, left) for left in _crop_starts(width, size, num_crops)]
    return torch.stack([crop(clip, top, left, size, size) for top, left in boxes])


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror ``[..., H, W]`` left to right."""
    return clip.flip(-1)


# A horizontal flip turns each word into one of its mirror words (the first that names a class).
_MIRROR_WORDS = {
    "left": ("right",),
    "right": ("left",),
    "leftward": ("rightward",),
    "rightward": ("leftward",),
    "leftwards": ("rightwards",),
    "rightwards": ("leftwards",),
    "clockwise": ("anticlockwise", "counterclockwise"),
    "anticlockwise": ("clockwise",),
    "counterclockwise": ("clockwise",),
}


def _mirror_options(word: str) -> tuple[str, ...]:
    mirrors = _MIRROR_WORDS.get(word.lower())
    if mirrors is None:
        return (word,)
    if word.isupper():
        return tuple(m.upper() for m in mirrors)
    if word[0].isupper():
        return tuple(m.capitalize() for m in mirrors)
    return mirrors


def mirror_label_map(class_names: Sequence[str]) -> dict[int, int]:
    """Label map for horizontal flips: class ``i`` -> class ``j`` whose name is ``i``'s with left and
    right (and clockwise and anticlockwise) swapped, e.g. SSv2's "Pushing something from left to
    right" <-> "Pushing something from right to left". Classes without a mirror class are absent."""
    index = {name: i for i, name in enumerate(class_names)}
    mapping = {}
    for i, name in enumerate(class_names):
        parts = re.split(r"([A-Za-z]+)", name)  # odd positions are words
        options = [_mirror_options(part) if position % 2 else (part,) for position, part in enumerate(parts)]
        for candidate in map("".join, itertools.product(*options)):
            if candidate != name and candidate in index:
                mapping[i] = index[candidate]
                break
    return mapping


def normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, channel_dim: int = -3) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` (or channels at another ``channel_dim`` from the end, e.g. -4 for a
    batch ``[B, C, T, H, W]``) -> float32 ``(x / 255 - mean) / std``, as ``x * gain - offset`` in
    place on the float copy (two passes over it, not three). The same numbers on any device."""
    shape = (-1,) + (1,) * (-channel_dim - 1)
    gain = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32, device=clip.device).view(shape)
    offset = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=clip.device).view(shape)
    return clip.float().mul_(gain).sub_(offset)


Normalisation = tuple[Sequence[float], Sequence[float]]  # (mean, std) of each channel


def normalised_on(device: torch.device, video: torch.Tensor, normalisation: Normalisation | None, *, what: str) -> torch.Tensor:
    """A batch of clips ``[..., C, T, H, W]`` on ``device`` as the model takes it: float clips as
    they are; uint8 clips (a transform's ``output_dtype=torch.uint8``) normalised there with
    ``normalisation = (mean, std)``, which ``what`` (the caller, for the error) must be given."""
    video = video.to(device, non_blocking=True)
    if video.dtype != torch.uint8:
        return video
    if normalisation is None:
        raise ValueError(f"a uint8 video batch needs {what}'s normalisation=(mean, std) to be normalised")
    return normalize(video, *normalisation, channel_dim=-4)


def _check_output_dtype(output_dtype: torch.dtype) -> None:
    if output_dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"output_dtype={output_dtype}: expected torch.float32 (normalised) or torch.uint8 (not yet)")


def random_erase(
    clip: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """Replace one box of normalised float ``[T, C, H, W]`` with N(0, 1) noise (timm's "pixel" mode).

    The box (area share in ``[min_area, max_area]``, aspect log-uniform in
    ``[min_aspect, 1 / min_aspect]``) and its noise are drawn once and are the same on every
    frame; after 10 boxes that do not fit, the clip is returned unchanged.
    """
    channels, height, width = clip.shape[-3:]
    log_low, log_high = math.log(min_aspect), math.log(1 / min_aspect)
    for _ in range(10):
        target = height * width * rng.uniform(min_area, max_area, generator)
        aspect = math.exp(rng.uniform(log_low, log_high, generator))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = rng.randint(0, height - h + 1, generator)
            left = rng.randint(0, width - w + 1, generator)
            noise = torch.randn(channels, h, w, generator=generator, dtype=clip.dtype)
            out = clip.clone()
            out[..., top : top + h, left : left + w] = noise
            return out
    return clip


def _check_range(name: str, value: tuple[float, float], low: float) -> tuple[float, float]:
    if len(value) != 2 or not low < value[0] <= value[1]:
        raise ValueError(f"{name}={value!r}: expected (min, max) with {low} < min <= max")
    return float(value[0]), float(value[1])


def _check_probability(name: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={value!r}: expected a probability in [0, 1]")
    return float(value)


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean={tuple(mean)!r}, std={tuple(std)!r}: expected three values each, std > 0")


class TrainTransform:
    """Training clip: random resized crop, flip, RandAugment/AutoAugment, normalise, erase.

    ``__call__(frames uint8 [T, H, W, C], label, generator) -> (float [C, T, img, img], label)``;
    the label changes when a flip maps it through ``flip_label_map`` (see :func:`mirror_label_map`).
    Geometric augmentation ops fill with the mean colour. With ``output_dtype=torch.uint8`` the
    clip is returned before normalisation, uint8 ``[C, T, img, img]`` (a quarter of the bytes
    through the loader), for the training loop to normalise on its device with
    ``normalize(batch, mean, std, channel_dim=-4)``, which gives the same numbers; random erasing,
    which draws normalised noise, needs the float output.
    """

    def __init__(
        self,
        img_size: int,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        flip_label_map: dict[int, int] | None = None,
        rand_augment: RandAugmentConfig | None = None,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output_dtype: torch.dtype = torch.float32,
    ) -> None:
        if img_size < 1:
            raise ValueError(f"img_size={img_size}: expected a positive number of pixels")
        _check_output_dtype(output_dtype)
        if output_dtype == torch.uint8 and random_erasing > 0:
            raise ValueError(f"random_erasing={random_erasing} draws normalised noise: it needs output_dtype=torch.float32")
        if rand_augment is not None and auto_augment is not None:
            raise ValueError("rand_augment and auto_augment are both set: expected at most one of them")
        if auto_augment is not None:
            auto_augment_policy(auto_augment)  # fail now on an unknown policy name
        _check_mean_std(mean, std)
        self.img_size = img_size
        self.scale = _check_range("scale", scale, 0.0)
        self.ratio = _check_range("ratio", ratio, 0.0)
        self.hflip = _check_probability("hflip", hflip)
        self.flip_label_map = dict(flip_label_map or {})
        self.rand_augment = rand_augment
        self.auto_augment = auto_augment
        self.random_erasing = _check_probability("random_erasing", random_erasing)
        self.mean, self.std = tuple(mean), tuple(std)
        self.fill = tuple(min(255, round(255 * m)) for m in mean)
        self.output_dtype = output_dtype

    def _flip_label(self, label: Label) -> Label:
        if isinstance(label, tuple):
            return tuple(self.flip_label_map.get(item, item) for item in label)
        return self.flip_label_map.get(label, label)

    def __call__(self, frames: torch.Tensor, label: Label, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Label]:
        clip = frames.permute(0, 3, 1, 2)  # [T, H, W, C] -> [T, C, H, W]
        top, left, h, w = random_resized_crop_box(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, generator)
        clip = resize(crop(clip, top, left, h, w), self.img_size, self.img_size)
        if self.hflip > 0 and rng.coin(self.hflip, generator):
            clip = hflip(clip)
            label = self._flip_label(label)
        if self.rand_augment is not None:
            clip = apply_ops(clip, sample_rand_augment(self.rand_augment, generator), self.fill)
        if self.auto_augment is not None:
            clip = apply_ops(clip, sample_auto_augment(self.auto_augment, generator), self.fill)
        if self.output_dtype == torch.uint8:
            return clip.permute(1, 0, 2, 3).contiguous(), label  # [T, C, H, W] -> [C, T, H, W]
        out = normalize(clip, self.mean, self.std)
        if self.random_erasing > 0 and rng.coin(self.random_erasing, generator):
            out = random_erase(out, generator)
        return out.permute(1, 0, 2, 3).contiguous(), label  # [T, C, H, W] -> [C, T, H, W]


class EvalTransform:
    """Evaluation views of a clip: short side to ``resize_to``, then ``num_crops`` square crops.

    ``__call__(frames uint8 [T, H, W, C]) -> float [S, C, T, img, img]``, S = ``num_crops``
    (1: centre; 3: start, centre, end of the long side), normalised; with ``output_dtype=torch.uint8``
    the views before normalisation, for ``normalised_on`` to normalise on the model's device.
    """

    def __init__(
        self,
        img_size: int,
        *,
        resize_to: int | None = None,
        num_crops: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        output_dtype: torch.dtype = torch.float32,
    ) -> None:
        resize_to = img_size if resize_to is None else resize_to
        if img_size < 1 or resize_to < img_size:
            raise ValueError(f"img_size={img_size}, resize_to={resize_to}: expected 1 <= img_size <= resize_to")
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops={num_crops}: expected 1 (centre) or 3 (both ends and centre of the long side)")
        _check_mean_std(mean, std)
        _check_output_dtype(output_dtype)
        self.img_size = img_size
        self.resize_to = resize_to
        self.num_crops = num_crops
        self.mean, self.std = tuple(mean), tuple(std)
        self.output_dtype = output_dtype

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        clip = resize_short_side(frames.permute(0, 3, 1, 2), self.resize_to)  # [T, C, H', W']
        views = spatial_crops(clip, self.img_size, self.num_crops)  # [S, T, C, img, img]
        if self.output_dtype == torch.float32:
            views = normalize(views, self.mean, self.std)
        return views.permute(0, 2, 1, 3, 4).contiguous()  # [S, C, T, img, img]
