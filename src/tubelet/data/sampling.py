"""Which moments of a video make a clip: dense clips, uniform segments, multi-view test clips.

Samplers choose **frame indices on the video's average-rate grid** and hand the decoder
**times**: the video's ``duration`` is cut into ``num_frames`` equal cells (cell ``k`` spans
``[k, k + 1) * duration / num_frames`` seconds from the first frame) and index ``k`` becomes the
time of the cell's centre. On a constant-rate file cell ``k`` is exactly frame ``k``, whatever
the first timestamp is, and asking for the centre keeps the choice stable when a container rounds
pts (Matroska stores milliseconds). On a variable-frame-rate file the decoder returns the frame
on screen at that moment, so clips keep real-time spacing.

Every sampler has one contract (:class:`ClipSampler`):

- ``sample(info, num_frames, generator)``: one training clip, random where the method is random;
- ``views(info, num_frames, num_clips)``: ``num_clips`` deterministic test clips spread uniformly
  over the video (the temporal views; spatial crops are the transform's job).

Both return times in seconds from the first frame, ``[num_frames]`` and ``[num_clips][num_frames]``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Protocol

import torch

from tubelet.data.decode import VideoInfo
from tubelet.data.rng import randint, uniform

PADDINGS = ("loop", "repeat_last")


class ClipSampler(Protocol):
    def sample(self, info: VideoInfo, num_frames: int, generator: torch.Generator | None) -> list[float]: ...

    def views(self, info: VideoInfo, num_frames: int, num_clips: int) -> list[list[float]]: ...


def index_times(indices: list[int], info: VideoInfo) -> list[float]:
    """Seconds from the first frame of the centre of each grid cell ``k`` (see module docstring)."""
    cell = info.duration / info.num_frames
    return [(k + 0.5) * cell for k in indices]


def pad_indices(indices: list[int], length: int, padding: str) -> list[int]:
    """Map indices past the last frame (``length - 1``) back into the video.

    ``"loop"`` wraps around to the start (``k mod length``); ``"repeat_last"`` holds the last frame.
    """
    if padding == "loop":
        return [k % length for k in indices]
    if padding == "repeat_last":
        return [min(k, length - 1) for k in indices]
    raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")


def _check_counts(num_frames: int, num_clips: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_clips < 1:
        raise ValueError(f"number of temporal views must be >= 1, got {num_clips}")


class DenseSampler:
    """Kinetics-style dense clips: ``num_frames`` frames, one every ``interval`` frames.

    A clip covers ``span = (num_frames - 1) * interval + 1`` frames. Training draws the start
    uniformly from ``[0, N - span]`` (``N`` frames in the video). Test view ``j`` of ``J`` starts
    at ``floor((N - span) * j / (J - 1))`` (the centre for ``J = 1``), so the first view touches
    the start and the last the end, as PySlowFast's multi-view test does. A video shorter than one
    clip is padded by ``padding``; its test views then start at ``floor(N * j / J)`` with
    ``"loop"`` (each view a different phase of the loop) and all at 0 with ``"repeat_last"``
    (there is only one clip's worth of content).
    """

    def __init__(self, interval: int = 8, padding: str = "loop") -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1 frame, got {interval}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")
        self.interval = interval
        self.padding = padding

    def _span(self, num_frames: int) -> int:
        return (num_frames - 1) * self.interval + 1

    def _clip(self, start: int, num_frames: int, info: VideoInfo) -> list[float]:
        indices = [start + i * self.interval for i in range(num_frames)]
        return index_times(pad_indices(indices, info.num_frames, self.padding), info)

    def sample(self, info: VideoInfo, num_frames: int, generator: torch.Generator | None) -> list[float]:
        _check_counts(num_frames)
        slack = max(info.num_frames - self._span(num_frames), 0)
        return self._clip(randint(0, slack + 1, generator), num_frames, info)

    def views(self, info: VideoInfo, num_frames: int, num_clips: int) -> list[list[float]]:
        _check_counts(num_frames, num_clips)
        slack = info.num_frames - self._span(num_frames)
        if slack >= 0:
            starts = [slack // 2] if num_clips == 1 else [slack * j // (num_clips - 1) for j in range(num_clips)]
        elif self.padding == "loop":
            starts = [info.num_frames * j // num_clips for j in range(num_clips)]
        else:
            starts = [0] * num_clips
        return [self._clip(start, num_frames, info) for start in starts]


class UniformSampler:
    """TSN / SSv2-style segments: the video is cut into ``num_frames`` equal segments and one
    frame is taken from each (Wang et al., TSN, 2016, sec. 3.2).

    Training takes a uniformly random frame inside each segment; test view ``j`` of ``J`` takes
    the frame at fraction ``(j + 1/2) / J`` of every segment (``J = 1``: the segment's centre).
    Videos with fewer frames than segments repeat frames, so no padding policy is needed.
    """

    def sample(self, info: VideoInfo, num_frames: int, generator: torch.Generator | None) -> list[float]:
        _check_counts(num_frames)
        segment = info.num_frames / num_frames
        indices = [
            min(math.floor((s + uniform(0.0, 1.0, generator)) * segment), info.num_frames - 1)
            for s in range(num_frames)
        ]
        return index_times(indices, info)

    def views(self, info: VideoInfo, num_frames: int, num_clips: int) -> list[list[float]]:
        _check_counts(num_frames, num_clips)
        segment = Fraction(info.num_frames, num_frames)
        return [
            index_times([math.floor((s + Fraction(2 * j + 1, 2 * num_clips)) * segment) for s in range(num_frames)], info)
            for j in range(num_clips)
        ]
