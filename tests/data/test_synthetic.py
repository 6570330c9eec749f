"""tubelet synth: deterministic, decodable, and the temporal classes differ only in frame order."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tubelet.cli import main
from tubelet.data.lists import read_video_list
from tubelet.data.synthetic import CLASS_NAMES, render_clip, write_synthetic_dataset

PAIRS = [
    ("moving_right", "moving_left"),
    ("rotating_clockwise", "rotating_anticlockwise"),
    ("approaching", "receding"),
    ("appearing", "disappearing"),
]


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize("forward, backward", PAIRS)
def test_pairs_are_time_reversals_of_one_draw(forward, backward):
    for seed in range(3):
        a = render_clip(forward, np.random.default_rng(seed), 10, 32)
        b = render_clip(backward, np.random.default_rng(seed), 10, 32)
        assert a.shape == (10, 32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b[::-1])
        assert not np.array_equal(a, b)  # not a palindrome: the order carries the class


def _centroid(clip: np.ndarray, axis: int) -> np.ndarray:
    """Per-frame centroid (along ``axis`` of the frame: 0 rows, 1 columns) of what differs from the
    per-pixel median over time, i.e. of the moving object."""
    change = np.abs(clip.astype(np.float64) - np.median(clip, axis=0)).sum(-1)  # [T, H, W]
    weights = change.sum(axis=2 - axis)  # [T, W] for columns, [T, H] for rows
    return (weights * np.arange(weights.shape[1])).sum(1) / weights.sum(1)


def test_motion_directions_and_static_classes():
    draw = lambda: np.random.default_rng(11)  # noqa: E731
    assert np.all(np.diff(_centroid(render_clip("moving_right", draw(), 12, 48), axis=1)) > 0)
    assert np.all(np.diff(_centroid(render_clip("moving_left", draw(), 12, 48), axis=1)) < 0)
    fast = _centroid(render_clip("falling_fast", draw(), 12, 48), axis=0)
    slow = _centroid(render_clip("falling_slow", draw(), 12, 48), axis=0)
    assert np.all(np.diff(fast) > 0) and np.all(np.diff(slow) > 0)
    assert fast[-1] - fast[0] > 2.5 * (slow[-1] - slow[0])
    for name in ("static_bar", "static_disc"):
        clip = render_clip(name, draw(), 6, 32)
        assert all(np.array_equal(frame, clip[0]) for frame in clip)


def test_render_rejects_unknown_class():
    with pytest.raises(ValueError, match="'jumping'"):
        render_clip("jumping", np.random.default_rng(0), 8, 32)


def test_dataset_is_deterministic_decodable_and_listed(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", videos_per_class=2, frames=8, size=32, seed=5)
    write_synthetic_dataset(tmp_path / "b", videos_per_class=2, frames=8, size=32, seed=5)
    write_synthetic_dataset(tmp_path / "c", videos_per_class=2, frames=8, size=32, seed=6)

    assert first.class_names == CLASS_NAMES and len(CLASS_NAMES) == 12
    assert (tmp_path / "a" / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    for split in ("train.csv", "val.csv"):
        assert (tmp_path / "a" / split).read_text() == (tmp_path / "b" / split).read_text()
    train = read_video_list(first.train_list)
    val = read_video_list(first.val_list)
    assert train.class_names == CLASS_NAMES
    assert len(train) == 12 and len(val) == 12  # 2 per class: 1 validation, 1 training
    assert sorted(entry.label for entry in train) == list(range(12))
    assert not list((tmp_path / "a").rglob("*.tmp"))

    for k, name in enumerate(CLASS_NAMES):
        relative = Path("videos") / name / f"{name}_0001.mp4"
        decoded = _decode(tmp_path / "a" / relative)
        assert decoded.shape == (8, 32, 32, 3)
        assert np.array_equal(decoded, _decode(tmp_path / "b" / relative))
        assert not np.array_equal(decoded, _decode(tmp_path / "c" / relative))
        rendered = render_clip(name, np.random.default_rng([5, k, 1]), 8, 32)
        assert np.abs(decoded.astype(float) - rendered).mean() < 8  # the file shows what was drawn


def test_cli_writes_dataset_and_rejects_bad_sizes(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--videos-per-class", "2", "--frames", "4", "--size", "16", "--seed", "1"]) == 0
    assert (tmp_path / "d" / "train.csv").is_file()
    assert "12 classes" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "e"), "--size", "33"]) == 2
    assert "size=33" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "e"), "--videos-per-class", "1"]) == 2
    assert not (tmp_path / "e" / "train.csv").exists()


def test_encoding_gives_the_same_bytes_every_time():
    """libx264's macroblock-tree rate control gave other bytes for the same 32x32 clip in about 3%
    of encodes; 96 encodes here (8 of each class) would have met it with 95% probability."""
    from tubelet.data.synthetic import encode_video

    for k, name in enumerate(CLASS_NAMES):
        clip = render_clip(name, np.random.default_rng([5, k, 1]), 8, 32)
        first = encode_video(clip)
        assert all(encode_video(clip) == first for _ in range(7)), name
