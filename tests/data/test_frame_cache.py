"""The frame cache (``tubelet cache-frames``, ``data.frame_cache``): frames read back by time as
the decoder picks them, scaling, staleness, failures that leave no entry, and the dataset and
command line on top of it."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from tubelet.cli import main
from tubelet.data import frame_cache
from tubelet.data.datasets import VideoDataset
from tubelet.data.decode import DecodeError, VideoInfo, open_video
from tubelet.data.frame_cache import CachedReader, build_frame_cache, cached_size, entry_dir
from tubelet.data.lists import VideoEntry, VideoList
from tubelet.data.sampling import DenseSampler, index_times
from tubelet.data.transforms import TrainTransform, resize

VFR_PTS = [0, 10, 50, 150, 200, 400, 700, 710, 800]  # ms


def times_to_probe(info: VideoInfo) -> list[float]:
    """Every frame's own time, times between frames, before the first and at the very end, unsorted."""
    frame_times = index_times(list(range(info.num_frames)), info)
    between = [t + 0.004 for t in frame_times]
    return [info.duration - 1e-3, *reversed(frame_times), -0.1, *between, 0.0]


@pytest.mark.parametrize(
    "name, options",
    [
        ("cfr.mp4", dict(num_frames=40, gop=8)),
        ("offset.mp4", dict(num_frames=30, pts=range(45, 75), gop=10)),  # first timestamp 1.5 s
        ("vfr.mkv", dict(num_frames=len(VFR_PTS), pts=VFR_PTS, time_base=Fraction(1, 1000), container="matroska")),
    ],
)
def test_cached_frames_are_the_decoded_frames_at_every_time(tmp_path, index_video, frame_indices, name, options):
    path = index_video(name, options.pop("num_frames"), **options)
    [result] = build_frame_cache([path], tmp_path / "cache", short_side=256)
    assert result.status == "written", result
    with open_video(path) as decoded, CachedReader(path, tmp_path / "cache") as cached:
        assert cached.info == decoded.info  # 32 px is below the short side: the size is kept
        times = times_to_probe(decoded.info)
        want, got = decoded.frames_at(times), cached.frames_at(times)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    assert frame_indices(got) == frame_indices(want)
    assert torch.equal(got, want)  # the same conversion: at its own size, area scaling changes nothing


def test_frames_are_scaled_to_the_short_side(tmp_path, index_video):
    path = index_video("wide.mp4", 6, height=64, width=96)
    build_frame_cache([path], tmp_path / "cache", short_side=32)
    with open_video(path) as decoded, CachedReader(path, tmp_path / "cache") as cached:
        assert (cached.info.height, cached.info.width) == (32, 48) == cached_size(64, 96, 32)
        assert cached.info.duration == decoded.info.duration and cached.info.num_frames == 6
        got = cached.frames_at([0.0, 0.1])
        want = resize(decoded.frames_at([0.0, 0.1]).permute(0, 3, 1, 2), 32, 48).permute(0, 2, 3, 1)
    assert got.shape == (2, 32, 48, 3)
    assert (got.float() - want.float()).abs().mean() < 3  # area averaging against antialiased bilinear
    assert cached_size(96, 64, 32) == (48, 32) and cached_size(20, 30, 32) == (20, 30)


def test_a_changed_video_is_stale_and_is_rewritten(tmp_path, index_video, frame_indices):
    path = index_video("a.mp4", 10)
    cache = tmp_path / "cache"
    assert [r.status for r in build_frame_cache([path], cache)] == ["written"]
    assert [r.status for r in build_frame_cache([path], cache)] == ["kept"]
    index_video("a.mp4", 12)  # the same name, other content
    os.utime(path, ns=(0, 10**9))  # a modification time unlike the first one's, however fast the test
    with pytest.raises(DecodeError, match="changed since its frames were cached"):
        CachedReader(path, cache)
    assert [r.status for r in build_frame_cache([path], cache)] == ["written"]
    with CachedReader(path, cache) as cached:
        assert cached.info.num_frames == 12 and frame_indices(cached.frames_at([11 / 30])) == [11]
    assert [r.status for r in build_frame_cache([path], cache, short_side=16)] == ["written"]  # another size


def test_videos_that_do_not_decode_fail_and_leave_no_entry(tmp_path, index_video):
    good = index_video("good.mp4", 8)
    cut = tmp_path / "cut.mp4"
    whole = index_video("whole.mp4", 60, container_options={"movflags": "faststart"})
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])  # promises 60 frames, holds fewer
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(bytes(range(256)) * 12)
    cache = tmp_path / "cache"
    results = build_frame_cache([good, cut, noise, tmp_path / "gone.mp4"], cache, workers=2)
    assert [r.status for r in results] == ["written", "failed", "failed", "failed"]
    assert "truncated" in results[1].reason or "Invalid data" in results[1].reason
    assert "Invalid data" in results[2].reason and results[3].reason == "file not found"
    assert sorted(p.name for p in cache.iterdir()) == [entry_dir(cache, good).name]  # no partial or temporary folder
    summary = frame_cache.summary(results, cache)
    assert f"FAILED  {cut}:" in summary and summary.endswith(f"4 videos: 1 cached, 0 already cached, 3 failed; frames in {cache}")


def test_a_video_not_in_the_cache_is_named(tmp_path, index_video):
    path = index_video("a.mp4", 4)
    with pytest.raises(DecodeError, match="not in the frame cache .*`tubelet cache-frames`") as error:
        CachedReader(path, tmp_path / "cache")
    assert error.value.path == str(path)


def test_entries_get_the_umask_mode(tmp_path, index_video):
    path = index_video("a.mp4", 4)
    old = os.umask(0o022)
    try:
        folder = build_frame_cache([path], tmp_path / "cache") and entry_dir(tmp_path / "cache", path)
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {oct(0o644)}
    assert folder.stat().st_mode & 0o055 == 0o055  # readable by others too


def make_list(paths) -> VideoList:
    return VideoList(tuple(VideoEntry(p, i % 2) for i, p in enumerate(paths)), ("a", "b"), source="videos.csv")


def test_dataset_reads_the_same_clips_from_the_cache(tmp_path, index_video):
    """With frames below the short side, a training item from the cache is the decoded one."""
    paths = [index_video(f"v{i}.mp4", 24 + i, gop=6) for i in range(3)]
    build_frame_cache(paths, tmp_path / "cache")
    options = dict(num_frames=4, sampler=DenseSampler(interval=2), transform=TrainTransform(16), seed=3)
    decoded = VideoDataset(make_list(paths), **options)
    cached = VideoDataset(make_list(paths), frame_cache=tmp_path / "cache", **options)
    for index in range(3):
        a, b = decoded[index], cached[index]
        assert a["label"] == b["label"] and torch.equal(a["video"], b["video"])


def test_dataset_refuses_a_cache_without_its_videos(tmp_path, index_video):
    paths = [index_video(f"v{i}.mp4", 6) for i in range(3)]
    build_frame_cache(paths[:1], tmp_path / "cache")
    options = dict(num_frames=2, sampler=DenseSampler(interval=1), transform=TrainTransform(16))
    with pytest.raises(ValueError, match=r"2 of 3 videos of videos.csv are not in the frame cache .*v1.mp4 first; "
                                         r"write them with `tubelet cache-frames videos.csv --out"):
        VideoDataset(make_list(paths), frame_cache=tmp_path / "cache", **options)


def test_cache_frames_command(tmp_path, index_video, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        index_video(f"videos/v{i}.mp4", 5)
    cache = tmp_path / "cache"
    assert main(["cache-frames", str(folder), "--out", str(cache), "--workers", "1", "--short-side", "16"]) == 0
    assert capsys.readouterr().out.strip() == f"2 videos: 2 cached, 0 already cached, 0 failed; frames in {cache}"
    (folder / "zero.mp4").write_bytes(b"")
    assert main(["cache-frames", str(folder), "--out", str(cache), "--workers", "1", "--short-side", "16"]) == 1
    assert "3 videos: 0 cached, 2 already cached, 1 failed" in capsys.readouterr().out
    with CachedReader(folder / "v0.mp4", cache) as cached:
        assert (cached.info.height, cached.info.width) == (16, 16)
        assert isinstance(cached.frames_at([0.0]), torch.Tensor) and np.asarray(cached.frames_at([0.0])).shape == (1, 16, 16, 3)
