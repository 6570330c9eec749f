"""Samplers: the exact frames each returns, on constant-rate, offset-start and variable-rate files,
training randomness, multi-view positions and padding of short videos."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from tubelet.data.decode import VideoInfo, open_video
from tubelet.data.sampling import DenseSampler, UniformSampler, index_times, pad_indices


def grid(num_frames: int, fps: float = 30.0) -> VideoInfo:
    return VideoInfo(duration=num_frames / fps, fps=fps, num_frames=num_frames, height=32, width=32)


def indices_of(times: list[float], info: VideoInfo) -> list[int]:
    """Grid cell of each time (the frame index on a constant-rate file)."""
    cell = info.duration / info.num_frames
    return [int(t // cell) for t in times]


def test_index_times_are_cell_centres():
    assert index_times([0, 1, 29], grid(30)) == pytest.approx([0.5 / 30, 1.5 / 30, 29.5 / 30])


def test_pad_indices():
    assert pad_indices([8, 9, 10, 13], 10, "loop") == [8, 9, 0, 3]
    assert pad_indices([8, 9, 10, 13], 10, "repeat_last") == [8, 9, 9, 9]
    with pytest.raises(ValueError, match="unknown padding 'zeros'"):
        pad_indices([0], 10, "zeros")


def test_dense_views_are_spread_from_start_to_end():
    info = grid(30)
    views = DenseSampler(interval=3).views(info, 4, 3)  # span 10 frames, slack 20
    assert [indices_of(v, info) for v in views] == [[0, 3, 6, 9], [10, 13, 16, 19], [20, 23, 26, 29]]
    assert indices_of(DenseSampler(interval=3).views(info, 4, 1)[0], info) == [10, 13, 16, 19]


def test_dense_train_clip_is_random_but_seeded():
    info, sampler = grid(30), DenseSampler(interval=3)
    starts = set()
    for seed in range(200):
        clip = indices_of(sampler.sample(info, 4, torch.Generator().manual_seed(seed)), info)
        assert clip == [clip[0] + 3 * i for i in range(4)] and 0 <= clip[0] <= 20
        starts.add(clip[0])
        again = sampler.sample(info, 4, torch.Generator().manual_seed(seed))
        assert indices_of(again, info) == clip
    assert starts == set(range(21))


def test_dense_short_video_padding():
    info = grid(10)  # 4 frames every 4 need 13
    loop, hold = DenseSampler(interval=4, padding="loop"), DenseSampler(interval=4, padding="repeat_last")
    generator = torch.Generator().manual_seed(0)
    assert indices_of(loop.sample(info, 4, generator), info) == [0, 4, 8, 2]
    assert indices_of(hold.sample(info, 4, generator), info) == [0, 4, 8, 9]
    assert [indices_of(v, info) for v in loop.views(info, 4, 3)] == [[0, 4, 8, 2], [3, 7, 1, 5], [6, 0, 4, 8]]
    assert [indices_of(v, info) for v in hold.views(info, 4, 2)] == [[0, 4, 8, 9], [0, 4, 8, 9]]


def test_uniform_views_take_fixed_points_of_each_segment():
    info, sampler = grid(30), UniformSampler()
    assert indices_of(sampler.views(info, 5, 1)[0], info) == [3, 9, 15, 21, 27]  # segment centres
    assert [indices_of(v, info) for v in sampler.views(info, 5, 2)] == [[1, 7, 13, 19, 25], [4, 10, 16, 22, 28]]
    # fewer frames than segments: frames repeat
    assert indices_of(sampler.views(grid(3), 6, 1)[0], grid(3)) == [0, 0, 1, 1, 2, 2]


def test_uniform_train_takes_any_frame_within_its_segment():
    info, sampler = grid(30), UniformSampler()
    seen = [set() for _ in range(5)]
    for seed in range(200):
        clip = indices_of(sampler.sample(info, 5, torch.Generator().manual_seed(seed)), info)
        for segment, index in enumerate(clip):
            assert 6 * segment <= index < 6 * segment + 6
            seen[segment].add(index)
    assert all(s == set(range(6 * k, 6 * k + 6)) for k, s in enumerate(seen))


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match="interval must be >= 1"):
        DenseSampler(interval=0)
    with pytest.raises(ValueError, match="unknown padding 'mirror'"):
        DenseSampler(padding="mirror")
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        UniformSampler().sample(grid(10), 0, None)
    with pytest.raises(ValueError, match="temporal views must be >= 1, got 0"):
        DenseSampler().views(grid(10), 4, 0)


SAMPLERS = {
    "dense-train": lambda info: [DenseSampler(interval=2).sample(info, 6, torch.Generator().manual_seed(3))],
    "dense-views": lambda info: DenseSampler(interval=2).views(info, 6, 3),
    "uniform-train": lambda info: [UniformSampler().sample(info, 6, torch.Generator().manual_seed(3))],
    "uniform-views": lambda info: UniformSampler().views(info, 6, 2),
}


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("first_pts", [0, 37])
def test_decoded_frames_are_the_sampled_indices(name, first_pts, index_video, frame_indices):
    path = index_video(f"{name}.mp4", 24, pts=range(first_pts, first_pts + 24), gop=6)
    with open_video(path) as video:
        for times in SAMPLERS[name](video.info):
            assert frame_indices(video.frames_at(times)) == indices_of(times, video.info)


@pytest.mark.parametrize("name", SAMPLERS)
def test_variable_frame_rate_gives_frame_on_screen_at_sampled_time(name, index_video, frame_indices):
    pts = [0, 40, 50, 60, 70, 200, 210, 220, 400, 410, 420, 430, 600, 700, 710, 720]  # ms
    path = index_video(f"{name}.mp4", len(pts), pts=pts, time_base=Fraction(1, 1000))
    with open_video(path) as video:
        for times in SAMPLERS[name](video.info):
            expected = [max(k for k, p in enumerate(pts) if p / 1000 <= t) for t in times]
            assert frame_indices(video.frames_at(times)) == expected
