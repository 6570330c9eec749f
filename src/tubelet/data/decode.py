"""Video decoding: pick frames by presentation time, output uint8 ``[T, H, W, C]`` RGB.

Frames are chosen by timestamp (``pts * time_base``), never by counting decoded frames, so a
file whose first timestamp is not 0 and a variable-frame-rate file both give the frame that is
on screen at the asked time. Times given to :meth:`VideoReader.frames_at` are seconds from the
first frame (``0`` = first frame, whatever its pts), the same convention as
:class:`VideoInfo.duration` and the samplers in ``sampling.py``.

Two backends share one contract: PyAV (default; its wheel bundles FFmpeg) and torchcodec (used
only when asked for with ``backend="torchcodec"``, and only if it is installed).

Usage::

    with open_video("clip.mp4") as video:
        info = video.info                      # duration, fps, num_frames, height, width, start
        frames = video.frames_at([0.05, 0.5])  # uint8 [2, H, W, 3]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import av
import numpy as np
import torch

# Two timestamps closer than this (seconds) are the same instant: absorbs float rounding of pts*tb.
TIME_EPS = 1e-6
# A stream that ends more than this many mean frame durations (and at least _MIN_GAP_S) before a
# time its own metadata promises is truncated; a shorter gap is the last frame's own duration.
_END_GAP_FRAMES = 4
_MIN_GAP_S = 0.1
# Decoder threads in the main process; DataLoader workers use 1 (the workers are the parallelism).
_MAIN_PROCESS_THREADS = 4


class DecodeError(RuntimeError):
    """A video that cannot be opened or decoded. ``path`` names it, ``reason`` says why.

    ``DecodeError(message)`` alone is how a DataLoader re-raises one from a worker (the message
    then holds the worker's traceback, the error's own line last)."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        super().__init__(str(path) if reason is None else f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler needs to know about a video stream.

    ``duration`` runs from the first frame's pts to the end of the last frame (seconds);
    ``start`` is the first frame's pts in seconds (often 0, not always); ``fps`` is the average
    rate ``num_frames / duration`` where the container does not state one.
    """

    duration: float
    fps: float
    num_frames: int
    height: int
    width: int
    start: float = 0.0


class VideoReader(Protocol):
    """An open video: ``info`` plus ``frames_at``; a context manager that closes the file."""

    info: VideoInfo

    def frames_at(self, times: Sequence[float]) -> torch.Tensor:
        """uint8 ``[T, H, W, C]``: for each time (seconds from the first frame), the frame on
        screen then (the last frame whose pts is <= the time). Times need not be sorted and may
        repeat."""

    def close(self) -> None: ...

    def __enter__(self) -> VideoReader: ...

    def __exit__(self, *exc: object) -> None: ...


def decoder_threads() -> int:
    """Decoder threads for the current process: 1 inside a DataLoader worker (N workers already
    use N cores; more threads would oversubscribe), a few in the main process."""
    if torch.utils.data.get_worker_info() is not None:
        return 1
    return min(_MAIN_PROCESS_THREADS, os.cpu_count() or 1)


class PyAVReader:
    """PyAV/FFmpeg reader: seeks to the keyframe before the first wanted time, decodes forward and
    stops as soon as the last wanted time is passed."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(path, _reason(error)) from error
        try:
            if not self._container.streams.video:
                raise DecodeError(path, "no video stream")
            self._stream = self._container.streams.video[0]
            # Slice threading only: frame threading ("AUTO"/"FRAME") can deadlock when decoding
            # stops before the end of the file, which is what clip sampling always does
            # (PyAV issue 1849, pytorch/vision issue 9010).
            self._stream.thread_type = "SLICE"
            self._stream.codec_context.thread_count = threads or decoder_threads()
            self.info = self._probe()
        except DecodeError:
            self.close()
            raise
        except (av.FFmpegError, OSError) as error:
            self.close()
            raise DecodeError(path, _reason(error)) from error

    def _probe(self) -> VideoInfo:
        stream = self._stream
        time_base = stream.time_base
        if time_base is None:
            raise DecodeError(self.path, "video stream has no time base")
        num_frames = stream.frames
        if stream.duration is not None and num_frames > 0:
            start = (stream.start_time or 0) * time_base
            duration = stream.duration * time_base
        else:
            # Matroska/WebM and some others state neither; read the packet index (no decoding).
            start, duration, num_frames = self._scan_packets(time_base)
        if num_frames <= 0 or duration <= 0:
            raise DecodeError(self.path, "video stream has no frames")
        fps = float(stream.average_rate) if stream.average_rate else num_frames / float(duration)
        return VideoInfo(
            duration=float(duration),
            fps=fps,
            num_frames=int(num_frames),
            height=stream.codec_context.height,
            width=stream.codec_context.width,
            start=float(start),
        )

    def _scan_packets(self, time_base: Fraction) -> tuple[Fraction, Fraction, int]:
        starts, ends = [], []
        for packet in self._container.demux(self._stream):
            if packet.pts is not None:
                starts.append(packet.pts)
                ends.append(packet.pts + (packet.duration or 0))
        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        if not starts:
            return Fraction(0), Fraction(0), 0
        return min(starts) * time_base, (max(ends) - min(starts)) * time_base, len(starts)

    def frames_at(self, times: Sequence[float]) -> torch.Tensor:
        if len(times) == 0:
            raise ValueError("frames_at needs at least one time, got none")
        targets = [self.info.start + float(t) for t in times]
        order = sorted(range(len(targets)), key=targets.__getitem__)
        try:
            picked = self._decode_sorted([targets[i] for i in order])
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(self.path, _reason(error)) from error
        frames: list[np.ndarray] = [np.empty(0)] * len(targets)
        for rank, i in enumerate(order):
            frames[i] = picked[rank]
        return torch.from_numpy(np.stack(frames))  # [T, H, W, C]

    def _decode_sorted(self, targets: list[float]) -> list[np.ndarray]:
        """Frames for ascending absolute times. Seeks to the keyframe at or before the first
        target; if the demuxer lands after it or at the end (imprecise seeking in some
        containers, MPEG-TS for one), decodes once more from the start of the stream."""
        stream = self._stream
        seek_pts = int((targets[0] - TIME_EPS) / stream.time_base)
        self._container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        picked = self._decode_forward(targets, restart_if_late=True)
        if picked is None:
            # 0, not the stream's start_time: MPEG-TS seeks to its own start_time land past the end
            self._container.seek(0, stream=stream, backward=True, any_frame=False)
            picked = self._decode_forward(targets, restart_if_late=False)
        return picked

    def _decode_forward(self, targets: list[float], *, restart_if_late: bool) -> list[np.ndarray] | None:
        picked: list[np.ndarray] = []
        previous: _LazyFrame | None = None
        for frame in self._container.decode(self._stream):
            if frame.pts is None:
                continue
            current = _LazyFrame(frame, float(frame.pts * frame.time_base))
            landed_late = current.time > targets[0] + TIME_EPS and current.time > self.info.start + TIME_EPS
            if previous is None and landed_late and restart_if_late:
                return None
            # every target before this frame's time belongs to the previous frame (or to this
            # one when the target precedes the first frame of the stream)
            while len(picked) < len(targets) and targets[len(picked)] < current.time - TIME_EPS:
                picked.append((previous or current).array())
            if len(picked) == len(targets):
                return picked
            previous = current
        if previous is None:
            if restart_if_late:
                return None
            raise DecodeError(self.path, "no frame could be decoded")
        self._check_not_truncated(previous.time, targets[-1])
        picked.extend(previous.array() for _ in range(len(targets) - len(picked)))
        return picked

    def all_frames(self, height: int, width: int) -> Iterator[tuple[float, np.ndarray]]:
        """Every frame from the first, in presentation order: ``(seconds from the first frame,
        uint8 [height, width, 3])``, scaled by FFmpeg's swscale (area averaging when it shrinks).
        Raises :class:`DecodeError` when the stream ends before its metadata says."""
        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        last = None
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is None:
                    continue
                last = float(frame.pts * frame.time_base)
                yield last - self.info.start, frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(self.path, _reason(error)) from error
        if last is None:
            raise DecodeError(self.path, "no frame could be decoded")
        self._check_not_truncated(last, self.info.start + self.info.duration - self.info.duration / self.info.num_frames)

    def _check_not_truncated(self, last_time: float, wanted: float) -> None:
        mean_frame = self.info.duration / self.info.num_frames
        allowed = max(_END_GAP_FRAMES * mean_frame, _MIN_GAP_S)
        if wanted - last_time > allowed:
            raise DecodeError(
                self.path,
                f"stream ends at {last_time - self.info.start:.3f} s but its metadata promises "
                f"{self.info.duration:.3f} s (truncated file?)",
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LazyFrame:
    """A decoded frame converted to RGB only if picked, and at most once."""

    def __init__(self, frame: av.VideoFrame, time: float) -> None:
        self.frame, self.time = frame, time
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.frame.to_ndarray(format="rgb24")  # [H, W, C]
        return self._array


class TorchCodecReader:
    """torchcodec reader with the same contract as :class:`PyAVReader`."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = str(path)
        decoders = _import_torchcodec()
        try:
            self._decoder = decoders.VideoDecoder(
                self.path, dimension_order="NHWC", num_ffmpeg_threads=threads or decoder_threads(), seek_mode="exact"
            )
            meta = self._decoder.metadata
        except (RuntimeError, ValueError, OSError) as error:
            raise DecodeError(path, str(error)) from error
        if not meta.num_frames or not meta.duration_seconds:
            raise DecodeError(path, "video stream has no frames")
        self.info = VideoInfo(
            duration=float(meta.duration_seconds),
            fps=float(meta.average_fps),
            num_frames=int(meta.num_frames),
            height=int(meta.height),
            width=int(meta.width),
            start=float(meta.begin_stream_seconds),
        )

    def frames_at(self, times: Sequence[float]) -> torch.Tensor:
        if len(times) == 0:
            raise ValueError("frames_at needs at least one time, got none")
        last_pts = self.info.start + self.info.duration - self.info.duration / self.info.num_frames / 2
        # torchcodec refuses times past the last frame's end; clamp to its centre (same frame)
        seconds = [min(self.info.start + float(t), last_pts) for t in times]
        try:
            return self._decoder.get_frames_played_at(seconds=seconds).data  # [T, H, W, C]
        except (RuntimeError, IndexError, ValueError) as error:
            raise DecodeError(self.path, str(error)) from error

    def close(self) -> None:
        self._decoder = None

    def __enter__(self) -> TorchCodecReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_READERS = {"pyav": PyAVReader, "torchcodec": TorchCodecReader}
BACKENDS = tuple(_READERS)


def _import_torchcodec():
    try:
        from torchcodec import decoders
    except ImportError as error:
        raise ImportError(
            "backend 'torchcodec' needs the torchcodec package, which is not installed "
            "(pip install torchcodec, matching your torch version), or use backend='pyav'"
        ) from error
    return decoders


def check_backend(backend: str) -> None:
    """Fail early (before any worker starts) when ``backend`` is unknown or not installed."""
    if backend not in _READERS:
        raise ValueError(f"unknown decoding backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "torchcodec":
        _import_torchcodec()


def open_video(path: str | os.PathLike, *, backend: str = "pyav", threads: int | None = None) -> VideoReader:
    """Open ``path`` for reading frames; use as a context manager so the file is closed.

    Raises :class:`DecodeError` when the file is missing, unreadable or has no video stream;
    ``ValueError``/``ImportError`` when the backend is unknown/not installed.
    """
    check_backend(backend)
    if not Path(path).is_file():
        raise DecodeError(path, "file not found")
    return _READERS[backend](path, threads=threads)


def probe_video(path: str | os.PathLike, *, backend: str = "pyav") -> VideoInfo:
    """Duration, fps, frame count, size and start time of ``path`` (see :class:`VideoInfo`)."""
    with open_video(path, backend=backend, threads=1) as video:
        return video.info


def _reason(error: Exception) -> str:
    """FFmpeg's own words, without the path PyAV appends (DecodeError names the path once)."""
    message = getattr(error, "strerror", None) or str(error)
    return message.split(": '")[0] if isinstance(message, str) else str(error)
