"""Train and eval transforms: crop boxes and positions, flips and label maps, one draw per clip."""

from __future__ import annotations

import math

import pytest
import torch

from tubelet.data.augment import RandAugmentConfig
from tubelet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    mirror_label_map,
    normalised_on,
    normalize,
    random_erase,
    random_resized_crop_box,
    resize,
    resize_short_side,
    spatial_crops,
)


def _frames(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, height, width, 3), generator=g, dtype=torch.uint8)


def _copies(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A clip made of ``frames`` copies of one random image, uint8 [T, H, W, C]."""
    return _frames(1, height, width, seed).expand(frames, -1, -1, -1).clone()


def _coordinates(height: int, width: int) -> torch.Tensor:
    """uint8 [1, 3, H, W] whose channels are (row, column, 0): a crop shows where it came from."""
    rows = torch.arange(height).view(height, 1).expand(height, width)
    cols = torch.arange(width).view(1, width).expand(height, width)
    return torch.stack([rows, cols, torch.zeros_like(rows)]).unsqueeze(0).to(torch.uint8)


@pytest.mark.parametrize("height, width, expected", [(48, 64, (24, 32)), (64, 48, (32, 24)), (30, 100, (24, 80)), (40, 40, (24, 24))])
def test_resize_short_side_keeps_aspect(height, width, expected):
    clip = torch.full((2, 3, height, width), 77, dtype=torch.uint8)
    out = resize_short_side(clip, 24)
    assert tuple(out.shape[-2:]) == expected
    assert torch.equal(out, torch.full_like(out, 77))  # a flat image stays flat through the antialiasing filter


@pytest.mark.parametrize("layout", ["contiguous", "frames_last_view"])
@pytest.mark.parametrize("size", [(17, 23), (48, 96)])  # shrinking with antialiasing, and enlarging
def test_uint8_resize_is_within_one_level_of_the_float_computation(layout, size):
    """The CPU's uint8 kernel against the float computation it stands for, rounded, on noise and
    on a clip viewed from ``[T, H, W, C]`` as the transforms pass it."""
    frames = torch.randint(0, 256, (3, 31, 45, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    clip = frames.permute(0, 3, 1, 2) if layout == "frames_last_view" else frames.permute(0, 3, 1, 2).contiguous()
    out = resize(clip, *size)
    expected = torch.nn.functional.interpolate(clip.double(), size=size, mode="bilinear", antialias=True, align_corners=False)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, *size)
    difference = (out.double() - expected.round().clamp(0, 255)).abs()
    assert difference.max() <= 1 and difference.mean() < 0.5


def test_resize_to_same_size_is_identity():
    clip = _frames(2, 24, 36).permute(0, 3, 1, 2)
    assert torch.equal(resize_short_side(clip, 24), clip)


def test_random_resized_crop_box_obeys_scale_and_ratio():
    scale, ratio = (0.25, 0.6), (0.5, 2.0)
    height, width = 120, 160
    g = torch.Generator().manual_seed(0)
    areas, aspects = [], []
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(height, width, scale, ratio, g)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # w and h are rounded to whole pixels: allow half a pixel each way
        assert (w + 0.5) * (h + 0.5) >= scale[0] * height * width and (w - 0.5) * (h - 0.5) <= scale[1] * height * width
        assert (w + 0.5) / (h - 0.5) >= ratio[0] and (w - 0.5) / (h + 0.5) <= ratio[1]
        areas.append(w * h / (height * width))
        aspects.append(w / h)
    assert min(areas) < 0.3 and max(areas) > 0.55  # the whole range is used
    assert min(aspects) < 0.6 and max(aspects) > 1.6


def test_random_resized_crop_box_falls_back_to_centre():
    # no box of area share >= 0.9 with ratio <= 4/3 fits a 10x100 frame: centred 10x13 box
    assert random_resized_crop_box(10, 100, (0.9, 1.0), (3 / 4, 4 / 3), torch.Generator()) == (0, 43, 10, 13)
    assert random_resized_crop_box(100, 10, (0.9, 1.0), (3 / 4, 4 / 3), torch.Generator()) == (43, 0, 13, 10)
    assert random_resized_crop_box(30, 30, (1.0, 1.0), (2.0, 3.0), torch.Generator()) == (7, 0, 15, 30)


@pytest.mark.parametrize(
    "height, width, starts",
    [
        (32, 48, [(0, 0), (0, 8), (0, 16)]),  # landscape: left, centre, right
        (48, 32, [(0, 0), (8, 0), (16, 0)]),  # portrait: top, centre, bottom
        (32, 45, [(0, 0), (0, 7), (0, 13)]),  # odd difference: centre offset rounds up
        (36, 36, [(2, 0), (2, 2), (2, 4)]),  # square: crops along the width
    ],
)
def test_three_crop_positions(height, width, starts):
    size = 32
    views = spatial_crops(_coordinates(height, width), size, 3)
    assert views.shape == (3, 1, 3, size, size)
    got = [(int(view[0, 0, 0, 0]), int(view[0, 1, 0, 0])) for view in views]
    assert got == starts
    centre = spatial_crops(_coordinates(height, width), size, 1)
    assert centre.shape == (1, 1, 3, size, size) and torch.equal(centre[0], views[1])


def test_eval_transform_views_are_normalised_crops():
    frames = _frames(4, 32, 40)
    views = EvalTransform(32, num_crops=3)(frames)
    assert views.shape == (3, 3, 4, 32, 32)
    clip = frames.permute(0, 3, 1, 2)
    for crop_index, left in enumerate([0, 4, 8]):
        expected = normalize(clip[..., :, left : left + 32], IMAGENET_MEAN, IMAGENET_STD).permute(1, 0, 2, 3)
        assert torch.allclose(views[crop_index], expected)


def test_eval_transform_resizes_short_side_first():
    views = EvalTransform(16, resize_to=24, num_crops=1)(_frames(3, 48, 96))
    assert views.shape == (1, 3, 3, 16, 16)
    with pytest.raises(ValueError, match="resize_to=8"):
        EvalTransform(16, resize_to=8)
    with pytest.raises(ValueError, match="num_crops=5"):
        EvalTransform(16, num_crops=5)


def test_normalize_formula():
    clip = torch.tensor([0, 255, 128], dtype=torch.uint8).view(3, 1, 1)
    out = normalize(clip, IMAGENET_MEAN, IMAGENET_STD)
    expected = [(v / 255 - m) / s for v, m, s in zip([0, 255, 128], IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(out.flatten(), torch.tensor(expected))


def test_mirror_label_map_swaps_left_right_words():
    names = [
        "Pushing something from left to right",
        "Pushing something from right to left",
        "Turning the camera left while filming something",
        "Turning the camera right while filming something",
        "moving_left",
        "moving_right",
        "rotating_clockwise",
        "rotating_anticlockwise",
        "Spinning counterclockwise",
        "Spinning clockwise",
        "Tilting something left",  # no mirror class: absent
        "Bright Leftovers",  # "left" inside a word is not the word "left"
    ]
    assert mirror_label_map(names) == {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6, 8: 9, 9: 8}


def test_flip_mirrors_frames_and_maps_label():
    frames = _frames(3, 16, 16)
    plain = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))  # the whole 16x16 frame, no resize
    flipped, label = TrainTransform(16, hflip=1.0, flip_label_map={4: 5, 5: 4}, **plain)(frames, 4)
    expected = normalize(frames.permute(0, 3, 1, 2).flip(-1), IMAGENET_MEAN, IMAGENET_STD).permute(1, 0, 2, 3)
    assert torch.allclose(flipped, expected) and label == 5
    assert TrainTransform(16, hflip=1.0, flip_label_map={4: 5, 5: 4}, **plain)(frames, (4, 7))[1] == (5, 7)
    kept, label = TrainTransform(16, hflip=0.0, flip_label_map={4: 5}, **plain)(frames, 4)
    assert torch.allclose(kept, expected.flip(-1)) and label == 4


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rand_augment": RandAugmentConfig(magnitude=9, num_ops=3, prob=1.0)},
        {"auto_augment": "imagenet"},
        {"random_erasing": 1.0, "rand_augment": RandAugmentConfig(prob=1.0)},
    ],
)
def test_train_transform_is_identical_on_identical_frames(options):
    frames = _copies(6, 40, 52, seed=3)
    transform = TrainTransform(24, **options)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        clip, _ = transform(frames, 0, g)
        assert clip.shape == (3, 6, 24, 24) and clip.dtype == torch.float32
        assert all(torch.equal(clip[:, t], clip[:, 0]) for t in range(6))


def test_train_transform_is_deterministic_given_a_generator():
    frames = _frames(4, 40, 52)
    transform = TrainTransform(24, rand_augment=RandAugmentConfig(), random_erasing=0.5)
    first = [transform(frames, 1, torch.Generator().manual_seed(seed))[0] for seed in range(4)]
    again = [transform(frames, 1, torch.Generator().manual_seed(seed))[0] for seed in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("options", [{}, {"auto_augment": "imagenet"}, {"rand_augment": RandAugmentConfig(prob=1.0)}])
def test_uint8_output_normalised_as_a_batch_is_the_float_output(options):
    """``output_dtype=torch.uint8``, then ``normalize`` of the stacked batch ``[B, C, T, H, W]``
    (what the training loop does on its device) gives exactly the float transform's clips, with
    the same random draws (flips and labels too)."""
    mean, std = (0.45, 0.40, 0.35), (0.22, 0.23, 0.24)
    frames = _frames(4, 40, 52)
    as_float = TrainTransform(24, mean=mean, std=std, flip_label_map={0: 1}, **options)
    as_uint8 = TrainTransform(24, mean=mean, std=std, flip_label_map={0: 1}, output_dtype=torch.uint8, **options)
    floats = [as_float(frames, 0, torch.Generator().manual_seed(seed)) for seed in range(6)]
    uint8s = [as_uint8(frames, 0, torch.Generator().manual_seed(seed)) for seed in range(6)]
    assert all(clip.dtype == torch.uint8 and clip.shape == (3, 4, 24, 24) for clip, _ in uint8s)
    assert [label for _, label in uint8s] == [label for _, label in floats] and {label for _, label in floats} == {0, 1}
    batch = normalize(torch.stack([clip for clip, _ in uint8s]), mean, std, channel_dim=-4)
    assert torch.equal(batch, torch.stack([clip for clip, _ in floats]))


def test_uint8_eval_views_normalised_on_the_device_are_the_float_views():
    """``EvalTransform(output_dtype=torch.uint8)`` then ``normalised_on`` of the batch ``[B, V, C, T,
    H, W]`` (what ``classify_views`` does) gives exactly the float views; a uint8 batch without a
    normalisation is an error naming the caller."""
    mean, std = (0.45, 0.40, 0.35), (0.22, 0.23, 0.24)
    clips = [_frames(4, 40, 52), _frames(4, 52, 40)]
    as_float = EvalTransform(24, resize_to=28, num_crops=3, mean=mean, std=std)
    as_uint8 = EvalTransform(24, resize_to=28, num_crops=3, mean=mean, std=std, output_dtype=torch.uint8)
    batch = torch.stack([as_uint8(frames) for frames in clips])
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 3, 4, 24, 24)
    on_device = normalised_on(torch.device("cpu"), batch, (mean, std), what="test")
    assert torch.equal(on_device, torch.stack([as_float(frames) for frames in clips]))
    floats = on_device.clone()
    assert torch.equal(normalised_on(torch.device("cpu"), floats, None, what="test"), floats)
    with pytest.raises(ValueError, match="a uint8 video batch needs classify_views's normalisation"):
        normalised_on(torch.device("cpu"), batch, None, what="classify_views")
    with pytest.raises(ValueError, match="output_dtype=torch.float16: expected torch.float32"):
        EvalTransform(24, output_dtype=torch.float16)


def test_uint8_output_refuses_random_erasing():
    with pytest.raises(ValueError, match="random_erasing=0.25 draws normalised noise: it needs output_dtype=torch.float32"):
        TrainTransform(24, random_erasing=0.25, output_dtype=torch.uint8)
    with pytest.raises(ValueError, match="output_dtype=torch.float16: expected torch.float32"):
        TrainTransform(24, output_dtype=torch.float16)


def test_random_erase_replaces_one_box_on_every_frame():
    clip = torch.zeros(4, 3, 30, 40)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        out = random_erase(clip, g)
        changed = (out != 0).any(dim=(0, 1))  # [H, W]
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(changed.sum()) == h * w  # one filled rectangle
        assert 0.02 * 1200 - 40 <= h * w <= 1200 / 3 + 40 and 0.3 * 0.8 <= w / h <= 1 / 0.3 * 1.2
        assert all(torch.equal(out[t], out[0]) for t in range(4))
        box = out[0, :, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert abs(float(box.mean())) < 1.0 and 0.5 < float(box.std()) < 1.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": (0.5, 0.1)}, r"scale=\(0.5, 0.1\)"),
        ({"ratio": (0.0, 1.0)}, r"ratio=\(0.0, 1.0\)"),
        ({"hflip": 2.0}, "hflip=2.0"),
        ({"random_erasing": -0.1}, "random_erasing=-0.1"),
        ({"auto_augment": "v7"}, "auto_augment='v7'"),
        ({"auto_augment": "imagenet", "rand_augment": RandAugmentConfig()}, "at most one"),
        ({"mean": (0.5, 0.5)}, "mean="),
    ],
)
def test_train_transform_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainTransform(16, **kwargs)


def test_train_transform_output_range_matches_normalisation():
    frames = torch.zeros(2, 20, 20, 3, dtype=torch.uint8)
    clip, _ = TrainTransform(8, hflip=0.0)(frames, 0, torch.Generator().manual_seed(0))
    for c in range(3):
        assert torch.allclose(clip[c], torch.full_like(clip[c], -IMAGENET_MEAN[c] / IMAGENET_STD[c]))
    assert not math.isnan(float(clip.sum()))
