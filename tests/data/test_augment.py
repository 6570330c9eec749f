"""RandAugment/AutoAugment ops against slow per-pixel formulas, and their sampling."""

from __future__ import annotations

import math

import pytest
import torch

from tubelet.data import augment
from tubelet.data.augment import RandAugmentConfig, apply_ops, sample_auto_augment, sample_rand_augment

FILL = (124, 116, 104)


def _clip(seed: int = 0, frames: int = 2, height: int = 6, width: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), generator=g, dtype=torch.uint8)


def _per_value(clip: torch.Tensor, formula) -> torch.Tensor:
    """Apply a Python function of one uint8 value to every entry, slowly."""
    return torch.tensor([formula(int(v)) for v in clip.flatten()], dtype=torch.uint8).view(clip.shape)


def _grey(pixel: torch.Tensor) -> float:
    r, g, b = (float(v) for v in pixel)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend_value(degenerate: float, value: int, factor: float) -> int:
    return int(math.floor(min(max(degenerate + factor * (value - degenerate), 0.0), 255.0)))


def _assert_close_uint8(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Blends are computed in float32 by the op and float64 here: allow 1 off on a rare boundary."""
    difference = (actual.int() - expected.int()).abs()
    assert difference.max() <= 1
    assert (difference > 0).float().mean() < 0.02


def test_invert_posterize_solarize_match_per_value_formulas():
    clip = _clip()
    assert torch.equal(augment.invert(clip), _per_value(clip, lambda v: 255 - v))
    for bits in range(0, 9):
        expected = _per_value(clip, lambda v: v if bits >= 8 else (v >> (8 - bits)) << (8 - bits))
        assert torch.equal(augment.posterize(clip, bits), expected), bits
    for threshold in (0, 100, 128, 256):
        assert torch.equal(augment.solarize(clip, threshold), _per_value(clip, lambda v: 255 - v if v >= threshold else v))
    for add in (0, 50, 110):
        assert torch.equal(augment.solarize_add(clip, add), _per_value(clip, lambda v: min(255, v + add) if v < 128 else v))


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.5, 1.9])
def test_brightness_contrast_color_match_blend_formulas(factor):
    clip = _clip(1)
    assert torch.equal(augment.brightness(clip, factor), _per_value(clip, lambda v: _blend_value(0.0, v, factor)))

    expected_contrast = torch.empty_like(clip)
    expected_color = torch.empty_like(clip)
    for t in range(clip.shape[0]):
        greys = [[_grey(clip[t, :, y, x]) for x in range(clip.shape[3])] for y in range(clip.shape[2])]
        mean = sum(map(sum, greys)) / (clip.shape[2] * clip.shape[3])
        for c in range(3):
            for y in range(clip.shape[2]):
                for x in range(clip.shape[3]):
                    value = int(clip[t, c, y, x])
                    expected_contrast[t, c, y, x] = _blend_value(mean, value, factor)
                    expected_color[t, c, y, x] = _blend_value(greys[y][x], value, factor)
    _assert_close_uint8(augment.contrast(clip, factor), expected_contrast)
    _assert_close_uint8(augment.color(clip, factor), expected_color)


def test_sharpness_blends_with_smoothed_interior():
    clip, factor = _clip(2), 1.7
    weights = [[1, 1, 1], [1, 5, 1], [1, 1, 1]]
    expected = clip.clone()
    frames, channels, height, width = clip.shape
    for t in range(frames):
        for c in range(channels):
            for y in range(1, height - 1):
                for x in range(1, width - 1):
                    total = sum(weights[i][j] * int(clip[t, c, y - 1 + i, x - 1 + j]) for i in range(3) for j in range(3))
                    smooth = round(total / 13)
                    expected[t, c, y, x] = _blend_value(smooth, int(clip[t, c, y, x]), factor)
    _assert_close_uint8(augment.sharpness(clip, factor), expected)


def test_autocontrast_stretches_each_frame_channel():
    clip = _clip(3)
    clip[1, 2] = 77  # a flat channel is left unchanged
    expected = clip.clone()
    for t in range(clip.shape[0]):
        for c in range(clip.shape[1]):
            low, high = int(clip[t, c].min()), int(clip[t, c].max())
            if high > low:
                expected[t, c] = _per_value(clip[t, c], lambda v: (v - low) * 255 // (high - low))
    assert torch.equal(augment.autocontrast(clip), expected)


def _pil_equalize_channel(values: list[int]) -> list[int]:
    """PIL's ImageOps.equalize for one channel, written as PIL writes it."""
    hist = [0] * 256
    for v in values:
        hist[v] += 1
    present = [h for h in hist if h]
    if len(present) <= 1:
        return values
    step = (sum(present) - present[-1]) // 255
    if not step:
        return values
    lut, n = [], step // 2
    for i in range(256):
        lut.append(min(n // step, 255))
        n += hist[i]
    return [lut[v] for v in values]


@pytest.mark.parametrize("height, width, high", [(6, 7, 256), (20, 30, 256), (20, 30, 40)])
def test_equalize_matches_pil_algorithm(height, width, high):
    g = torch.Generator().manual_seed(height + high)
    clip = torch.randint(0, high, (2, 3, height, width), generator=g, dtype=torch.uint8)
    clip[0, 1] = 9  # one value only: unchanged
    expected = torch.empty_like(clip)
    for t in range(clip.shape[0]):
        for c in range(clip.shape[1]):
            values = _pil_equalize_channel([int(v) for v in clip[t, c].flatten()])
            expected[t, c] = torch.tensor(values, dtype=torch.uint8).view(height, width)
    assert torch.equal(augment.equalize(clip), expected)


def test_translate_by_whole_pixels_shifts_and_fills():
    clip = _clip(4, height=5, width=8)
    dx = 2  # fraction 2/8 of the width: output x reads input x + 2
    expected = torch.empty_like(clip)
    for x in range(8):
        expected[..., x] = clip[..., x + dx] if x + dx < 8 else torch.tensor(FILL, dtype=torch.uint8).view(3, 1)
    assert torch.equal(augment.translate_x(clip, dx / 8, FILL), expected)
    dy = -1  # fraction -1/5 of the height: output y reads input y - 1
    expected = torch.empty_like(clip)
    for y in range(5):
        expected[..., y, :] = clip[..., y + dy, :] if y + dy >= 0 else torch.tensor(FILL, dtype=torch.uint8).view(3, 1)
    assert torch.equal(augment.translate_y(clip, dy / 5, FILL), expected)


def test_shear_x_by_whole_pixels_per_row():
    clip = _clip(5, height=5, width=9)
    expected = torch.empty_like(clip)
    for y in range(5):
        for x in range(9):
            source = x + (y - 2)  # factor 1 about the centre row 2
            expected[..., y, x] = clip[..., y, source] if 0 <= source < 9 else torch.tensor(FILL, dtype=torch.uint8)
    assert torch.equal(augment.shear_x(clip, 1.0, FILL), expected)
    assert torch.equal(augment.shear_y(clip.transpose(-1, -2), 1.0, FILL), expected.transpose(-1, -2))


@pytest.mark.parametrize("size", [6, 7])
def test_rotate_quarter_turn_is_rot90_anticlockwise(size):
    clip = _clip(6, height=size, width=size)
    assert torch.equal(augment.rotate(clip, 90.0, FILL), torch.rot90(clip, 1, dims=(-2, -1)))
    assert torch.equal(augment.rotate(clip, -90.0, FILL), torch.rot90(clip, -1, dims=(-2, -1)))
    assert torch.equal(augment.rotate(clip, 0.0, FILL), clip)


@pytest.mark.parametrize("name", sorted(augment._OPS))
def test_every_op_is_identical_on_identical_frames(name):
    image = _clip(7, frames=1, height=12, width=10)
    clip = image.expand(5, -1, -1, -1).clone()
    arg = augment._OPS[name].level_to_arg(7.0)
    out = apply_ops(clip, [(name, arg)], FILL)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert all(torch.equal(out[t], out[0]) for t in range(5))
    assert torch.equal(out[:1], apply_ops(image, [(name, arg)], FILL))  # a frame's result depends on that frame only


def test_rand_augment_sampling_follows_config():
    config = RandAugmentConfig(magnitude=9, num_ops=3, magnitude_std=0.0, prob=1.0)
    g = torch.Generator().manual_seed(0)
    names = set()
    for _ in range(50):
        ops = sample_rand_augment(config, g)
        assert len(ops) == 3
        for name, arg in ops:
            assert abs(arg) == augment._OPS[name].level_to_arg(9.0)
            names.add(name)
    assert len(names) >= 10  # drawn across the whole op list
    assert sample_rand_augment(RandAugmentConfig(prob=0.0), g) == []
    a = sample_rand_augment(RandAugmentConfig(), torch.Generator().manual_seed(3))
    b = sample_rand_augment(RandAugmentConfig(), torch.Generator().manual_seed(3))
    assert a == b


def test_rand_augment_magnitude_noise_is_clipped():
    config = RandAugmentConfig(magnitude=10, magnitude_std=5.0, prob=1.0, ops=("rotate",), num_ops=1)
    g = torch.Generator().manual_seed(1)
    angles = [abs(sample_rand_augment(config, g)[0][1]) for _ in range(200)]
    assert max(angles) == pytest.approx(30.0) and min(angles) < 30.0
    uniform = RandAugmentConfig(magnitude=5, magnitude_std=math.inf, prob=1.0, ops=("rotate",), num_ops=1)
    angles = [abs(sample_rand_augment(uniform, g)[0][1]) for _ in range(200)]
    assert max(angles) <= 15.0


def test_auto_augment_samples_ops_of_one_sub_policy():
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(100):
        ops = sample_auto_augment("imagenet", g)
        lengths.add(len(ops))
        names = [name for name, _ in ops]
        assert any(all(n in [p[0] for p in sub] for n in names) for sub in augment.IMAGENET_POLICY)
        for name, arg in ops:
            if name == "posterize_original":
                assert 4 <= arg <= 8
    assert lengths == {0, 1, 2}
    with pytest.raises(ValueError, match="auto_augment='v0'"):
        sample_auto_augment("v0", g)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"magnitude": 11}, "magnitude=11"),
        ({"num_ops": 0}, "num_ops=0"),
        ({"prob": 1.5}, "prob=1.5"),
        ({"ops": ("rotate", "cutout")}, "cutout"),
    ],
)
def test_rand_augment_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandAugmentConfig(**kwargs)
