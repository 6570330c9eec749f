"""VideoDataset and its loaders: items, multi-view order and positions, damaged and missing files
in train and eval modes, determinism, sharding, failure accounting."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch

from tubelet.data.datasets import VideoDataset
from tubelet.data.decode import DecodeError
from tubelet.data.failures import FailureTracker, TooManyDecodeFailures
from tubelet.data.lists import VideoEntry, VideoList, read_video_list
from tubelet.data.loader import (EpochShuffleSampler, EpochStream, ShardSampler, build_eval_loader, build_train_loader,
                                 build_train_stream)
from tubelet.data.sampling import DenseSampler, UniformSampler

BAD_KINDS = ["zero.mp4", "truncated.mp4", "noise.mp4", "audio_as_video.mp4", "missing.mp4"]


def train_transform(frames, label, generator=None):
    """uint8 [T, H, W, C] -> float [C, T, H, W] (values kept 0..255 so frame indices stay readable)."""
    return frames.permute(3, 0, 1, 2).float(), label


def two_crop_transform(frames):
    """uint8 [T, H, W, C] -> [2, C, T, H, W]: crop 0 the frames, crop 1 their negative."""
    clip = frames.permute(3, 0, 1, 2).float()  # [C, T, H, W]
    return torch.stack([clip, 255 - clip])


def as_frames(clip: torch.Tensor) -> torch.Tensor:
    """float [C, T, H, W] -> uint8 [T, H, W, C], for reading the frame indices back."""
    return clip.permute(1, 2, 3, 0).round().to(torch.uint8)


def write_audio_file(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w", format="wav") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            output.mux(packet)


@pytest.fixture
def videos(tmp_path, write_index_video) -> Path:
    """tmp/good{0..3}.mp4 (20, 24, 28, 32 frames), an MKV named .mp4, and the damaged kinds."""
    for i in range(4):
        write_index_video(tmp_path / f"good{i}.mp4", 20 + 4 * i, gop=8)
    write_index_video(tmp_path / "matroska_named.mp4", 20, container="matroska")
    (tmp_path / "zero.mp4").write_bytes(b"")
    data = (tmp_path / "good3.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    noise = torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    (tmp_path / "noise.mp4").write_bytes(bytes(noise.tolist()))
    write_audio_file(tmp_path / "audio_as_video.mp4")
    return tmp_path


def make_list(folder: Path, names: list[str], multi_label: bool = False) -> VideoList:
    labels = [(i % 3, (i + 1) % 3) if multi_label else i % 3 for i in range(len(names))]
    entries = tuple(VideoEntry(folder / name, label) for name, label in zip(names, labels))
    return VideoList(entries, ("a", "b", "c"), multi_label=multi_label, source=str(folder / "list.txt"))


def good_names() -> list[str]:
    return [f"good{i}.mp4" for i in range(4)] + ["matroska_named.mp4"]


def make_dataset(folder: Path, names: list[str], *, multi_label: bool = False, **options) -> VideoDataset:
    """A dataset of ``folder/names``; defaults: 2 uniform frames, the train transform."""
    options = {"num_frames": 2, "sampler": UniformSampler(), "transform": train_transform} | options
    return VideoDataset(make_list(folder, names, multi_label), **options)


def test_train_item(videos, frame_indices):
    dataset = make_dataset(videos, good_names(), num_frames=4, sampler=DenseSampler(interval=2))
    item = dataset[2]
    assert set(item) == {"video", "label", "index", "failed"}
    assert item["video"].shape == (3, 4, 32, 32) and item["label"] == 2 and item["index"] == 2 and item["failed"] == []
    shown = frame_indices(as_frames(item["video"]))
    assert shown == [shown[0] + 2 * i for i in range(4)] and 0 <= shown[0] <= 28 - 7
    assert torch.equal(dataset[2]["video"], item["video"])  # same seed and index, same clip
    starts = {frame_indices(as_frames(dataset[(2, seed)]["video"]))[0] for seed in range(20)}
    assert len(starts) > 5  # the sample seed moves the clip


def test_multi_label_item_is_multi_hot(videos):
    assert make_dataset(videos, good_names(), multi_label=True)[1]["label"].tolist() == [0.0, 1.0, 1.0]


def test_eval_views_are_clip_major_at_uniform_positions(videos, frame_indices):
    # good1 has 24 frames; 4 frames every 2 span 7, so 3 clips start at 0, 8.5 -> 8, 17
    dataset = make_dataset(
        videos, good_names(), num_frames=4, sampler=DenseSampler(interval=2), transform=two_crop_transform, mode="eval", views=(3, 2)
    )
    item = dataset[1]
    assert item["video"].shape == (6, 3, 4, 32, 32) and item["failed"] == []
    starts = [0, 8, 17]
    for clip in range(3):
        expected = [starts[clip] + 2 * i for i in range(4)]
        assert frame_indices(as_frames(item["video"][clip * 2 + 0])) == expected
        assert frame_indices(as_frames(255 - item["video"][clip * 2 + 1])) == expected


def test_eval_crop_count_must_match_views(videos):
    dataset = make_dataset(videos, good_names(), transform=two_crop_transform, mode="eval", views=(1, 3))
    with pytest.raises(ValueError, match="made 2 crops per clip, but views asks for 3"):
        dataset[0]


@pytest.mark.parametrize("bad", BAD_KINDS)
def test_train_replaces_damaged_or_missing_video(videos, bad, frame_indices):
    dataset = make_dataset(videos, good_names() + [bad], num_frames=3, seed=5)
    item = dataset[5]
    assert item["failed"] == [str(videos / bad)]
    assert item["index"] != 5 and item["label"] == item["index"] % 3
    assert item["video"].shape == (3, 3, 32, 32)
    again = dataset[5]
    assert again["index"] == item["index"] and torch.equal(again["video"], item["video"])


@pytest.mark.parametrize("bad", BAD_KINDS)
def test_eval_lists_damaged_or_missing_video_without_substitute(videos, bad):
    dataset = make_dataset(videos, good_names() + [bad], transform=two_crop_transform, mode="eval", views=(2, 2))
    item = dataset[5]
    assert item["video"] is None and item["failed"] == [str(videos / bad)] and item["index"] == 5


def test_train_gives_up_when_substitutes_keep_failing(videos):
    dataset = make_dataset(videos, ["zero.mp4", "noise.mp4"], max_substitutes=3)
    with pytest.raises(DecodeError, match="3 substitutes all failed"):
        dataset[0]


def test_dataset_arguments_are_checked(videos):
    with pytest.raises(ValueError, match="mode must be one of train, eval, got 'test'"):
        make_dataset(videos, good_names(), mode="test")
    with pytest.raises(ValueError, match=r"views must be \(temporal clips, spatial crops\)"):
        make_dataset(videos, good_names(), views=(0, 1))
    with pytest.raises(ValueError, match="unknown decoding backend"):
        make_dataset(videos, good_names(), backend="cv2")


def test_train_loader_batches_and_failures(videos):
    dataset = make_dataset(videos, good_names() + BAD_KINDS)
    loader = build_train_loader(dataset, batch_size=5, num_workers=0, seed=0)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["video"].shape == (5, 3, 2, 32, 32)
        assert batch["label"].dtype == torch.long and batch["label"].tolist() == [i % 3 for i in batch["index"].tolist()]
    # every bad file is met (and named) this epoch; substitutes drawn among the bad ones add more
    failed = [path for batch in batches for path in batch["failed"]]
    assert set(failed) == {str(videos / name) for name in BAD_KINDS}


def test_train_loader_same_batches_whatever_the_worker_count(videos):
    def epoch(num_workers: int) -> list[dict]:
        dataset = make_dataset(videos, good_names() + ["zero.mp4"], sampler=DenseSampler(interval=3))
        return list(build_train_loader(dataset, batch_size=2, num_workers=num_workers, seed=7))

    one, two = epoch(0), epoch(2)
    assert [b["index"].tolist() for b in one] == [b["index"].tolist() for b in two]
    assert all(torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"]) for a, b in zip(one, two))
    assert set(one[0]) == {"video", "label", "index", "failed"}


def _pairs(batches) -> list[list[int]]:
    return [batch["index"].tolist() for batch in batches]


def test_the_train_stream_is_the_loaders_epochs_one_after_another(videos):
    dataset = make_dataset(videos, good_names() + ["zero.mp4"])  # 7 videos: 3 batches of 2 an epoch
    loader = build_train_loader(dataset, batch_size=2, num_workers=0, seed=5)
    epochs = [list(loader) for _ in range(3)]
    for workers in (0, 2):
        stream = build_train_stream(dataset, batch_size=2, num_workers=workers, seed=5)
        assert stream.batch_sampler.batches_per_epoch == 3
        streamed = list(itertools.islice(stream, 9))
        assert _pairs(streamed) == _pairs(b for epoch in epochs for b in epoch)
        assert all(torch.equal(a["video"], b["video"]) for a, b in zip(streamed, (b for e in epochs for b in e)))
    # each epoch whole steps of two batches: the third batch of every epoch is left out
    grouped = build_train_stream(dataset, batch_size=2, num_workers=0, seed=5, group=2)
    assert grouped.batch_sampler.batches_per_epoch == 2
    assert _pairs(itertools.islice(grouped, 4)) == _pairs(epochs[0][:2] + epochs[1][:2])


def test_the_train_stream_seeks_into_an_epoch():
    sampler = EpochShuffleSampler(11, seed=2, rank=1, world_size=2)  # 6 pairs a rank: 2 batches of 3
    stream = EpochStream(sampler, batch_size=3)
    whole = list(itertools.islice(stream, 6))
    stream.seek(1, 1)
    assert list(itertools.islice(stream, 3)) == whole[3:]
    assert whole[:2] == [list(itertools.islice(sampler.pairs(0), 3)), list(sampler.pairs(0, 3))]
    with pytest.raises(ValueError, match="batch 2 is outside an epoch of 2 batches"):
        stream.seek(0, 2)
    with pytest.raises(ValueError, match="batch_size and group must be at least 1"):
        EpochStream(sampler, batch_size=3, group=0)
    assert list(EpochStream(sampler, batch_size=7)) == []  # fewer pairs than a batch: no batch, and no end-less loop


def test_train_loader_labels_and_modes(videos):
    batch = next(iter(build_train_loader(make_dataset(videos, good_names()), batch_size=4, num_workers=0, seed=0)))
    assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
    multi = make_dataset(videos, good_names(), multi_label=True)
    assert next(iter(build_train_loader(multi, batch_size=4, num_workers=0, seed=0)))["label"].shape == (4, 3)
    with pytest.raises(ValueError, match="needs a dataset in eval mode, got mode .train."):
        build_eval_loader(multi, batch_size=4, num_workers=0)


def test_eval_loader_drops_failed_rows(videos):
    names = ["good0.mp4", "zero.mp4", "good1.mp4", "missing.mp4", "noise.mp4"]
    dataset = make_dataset(videos, names, transform=two_crop_transform, mode="eval", views=(2, 2))
    batches = list(build_eval_loader(dataset, batch_size=3, num_workers=0))
    assert batches[0]["video"].shape == (2, 4, 3, 2, 32, 32)
    assert batches[0]["index"].tolist() == [0, 2] and batches[0]["label"].tolist() == [0, 2]
    assert batches[0]["failed"] == [str(videos / "zero.mp4")]
    assert batches[1]["video"] is None and batches[1]["index"].numel() == 0
    assert batches[1]["failed"] == [str(videos / "missing.mp4"), str(videos / "noise.mp4")]


def test_samplers_shard_without_overlap():
    shards = [list(EpochShuffleSampler(10, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    indices = [i for shard in shards for i, _ in shard]
    assert sorted(set(indices)) == list(range(10)) and len(indices) == 12
    sampler = EpochShuffleSampler(10, seed=3)
    first, second = [i for i, _ in sampler], [i for i, _ in sampler]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    sampler.set_epoch(0)
    assert [i for i, _ in sampler] == first
    assert [list(ShardSampler(10, rank=r, world_size=3)) for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="rank must be in"):
        ShardSampler(10, rank=3, world_size=3)


def test_failure_tracker():
    tracker = FailureTracker(max_share=0.05, min_seen=20)
    tracker.update(["a.mp4", "b.mp4"], 10)  # 20% but too early to judge
    tracker.update([], 30)
    assert tracker.failures == 2 and tracker.share == pytest.approx(0.05)
    assert tracker.report() == "2 decode failures in 40 samples (5.00%, limit 5.00%): a.mp4, b.mp4"
    with pytest.raises(TooManyDecodeFailures, match=r"3 decode failures in 40 samples \(7.50%, limit 5.00%\): a.mp4 \(2x\), b.mp4"):
        tracker.update(["a.mp4"], 0)
    assert issubclass(TooManyDecodeFailures, RuntimeError)
    assert FailureTracker().max_share == 0.01
    with pytest.raises(ValueError, match=r"max_share must be within \[0, 1\], got 2"):
        FailureTracker(max_share=2)


def test_with_eval_transform_and_list_file(videos):
    transforms = pytest.importorskip("tubelet.data.transforms", reason="needs the transforms module")
    shutil.copy(videos / "good0.mp4", videos / "clip.mp4")
    (videos / "val.txt").write_text("path label\nclip.mp4 1\ngood2.mp4 0\n")
    dataset = VideoDataset(
        read_video_list(videos / "val.txt"),
        num_frames=4,
        sampler=DenseSampler(interval=2),
        transform=transforms.EvalTransform(24, resize_to=28, num_crops=3),
        mode="eval",
        views=(2, 3),
    )
    batch = next(iter(build_eval_loader(dataset, batch_size=2, num_workers=0)))
    assert batch["video"].shape == (2, 6, 3, 4, 24, 24) and batch["video"].dtype == torch.float32
    assert batch["label"].tolist() == [1, 0] and batch["failed"] == []
    # clips 0 and 1 of video 0 differ; the 3 crops of a clip cover different places
    assert not torch.equal(batch["video"][0, 0], batch["video"][0, 3])
    assert not torch.equal(batch["video"][0, 0], batch["video"][0, 2])
