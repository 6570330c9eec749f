"""A cache of decoded frames: every frame of a video decoded once, scaled to a short side, kept on
disk as raw uint8 and read back by time with the contract of :class:`decode.VideoReader`.

Why: a training clip is a few frames from anywhere in a video, and H.264 makes the decoder start at
the keyframe before them (8x8 dense sampling at a keyframe every 60 frames decodes about 90 frames
to keep 8), so the decoder bounds training from files (BENCHMARKS.md, "training from files"). From
the cache a clip is a few reads of a memory-mapped file.

Layout: ``CACHE/<key>/frames.u8`` (``[N, H, W, 3]`` uint8, row-major) and ``CACHE/<key>/meta.json``
(the source's path, size and modification time, the short side asked for, the stream's
:class:`VideoInfo` with the cached height and width, each frame's time). ``key`` is a hash of the
video's resolved path. An entry is written in a temporary folder and renamed into place, so a
reader finds a whole entry or none. A video whose size or modification time changed after its
entry was written is stale: reading it raises a :class:`DecodeError` that says so, and building
the cache again rewrites it. Disk: ``N * H * W * 3`` bytes (a 10 s, 30 fps video at short side
256: 300 x 256 x 341 x 3 = 79 MB); frames with a short side at or below the asked one keep their size.

Usage::

    build_frame_cache(paths, "cache/", short_side=256, workers=8)   # or: tubelet cache-frames LIST --out cache/
    with CachedReader("clip.mp4", "cache/") as video:                # what VideoDataset(frame_cache=...) opens
        frames = video.frames_at([0.05, 0.5])                        # uint8 [2, H, W, 3]
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tubelet.data.decode import TIME_EPS, DecodeError, VideoInfo, open_video
from tubelet.files import atomic_folder

FRAMES_FILE, META_FILE = "frames.u8", "meta.json"


def entry_dir(cache: str | os.PathLike, path: str | os.PathLike) -> Path:
    """The folder of ``path``'s entry in ``cache`` (whether or not it exists)."""
    key = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:24]
    return Path(cache) / key


def _source_stamp(path: str | os.PathLike) -> dict:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(H, W)`` with the short side at ``short_side`` (never enlarged), the long side truncated as
    ``transforms.resize_short_side`` does."""
    if min(height, width) <= short_side:
        return height, width
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


class CachedReader:
    """Frames of ``path`` from its entry in ``cache``: ``info`` (the stream's, with the cached size)
    and ``frames_at`` (the frame on screen at each time, as :class:`decode.PyAVReader` picks it).
    A missing or stale entry is a :class:`DecodeError` naming the video."""

    def __init__(self, path: str | os.PathLike, cache: str | os.PathLike) -> None:
        self.path = str(path)
        folder = entry_dir(cache, path)
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except FileNotFoundError:
            raise DecodeError(path, f"not in the frame cache {cache} (build it with `tubelet cache-frames`)") from None
        except (OSError, ValueError) as error:
            raise DecodeError(path, f"unreadable frame cache entry {folder}: {error}") from error
        try:
            stamp = _source_stamp(path)
        except OSError:
            raise DecodeError(path, "file not found") from None
        if {key: meta[key] for key in stamp} != stamp:
            raise DecodeError(path, f"changed since its frames were cached in {cache}: run `tubelet cache-frames` again")
        self.info = VideoInfo(**meta["info"])
        self._times = np.asarray(meta["times"], dtype=np.float64)  # [N], seconds from the first frame
        shape = (len(self._times), self.info.height, self.info.width, 3)
        try:
            self._frames = np.memmap(folder / FRAMES_FILE, dtype=np.uint8, mode="r", shape=shape)
        except (OSError, ValueError) as error:
            raise DecodeError(path, f"frame cache entry {folder} does not hold {shape} frames: {error}") from error

    def frames_at(self, times: Sequence[float]) -> torch.Tensor:
        if len(times) == 0:
            raise ValueError("frames_at needs at least one time, got none")
        # the last frame whose time is <= t; a time before the first frame takes the first
        indices = np.searchsorted(self._times, np.asarray(times, dtype=np.float64) + TIME_EPS, side="right") - 1
        return torch.from_numpy(np.ascontiguousarray(self._frames[np.clip(indices, 0, None)]))  # [T, H, W, C]

    def close(self) -> None:
        self._frames = None

    def __enter__(self) -> CachedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_fresh(path: str | os.PathLike, folder: Path, short_side: int) -> bool:
    try:
        meta = json.loads((folder / META_FILE).read_text())
        stamp = _source_stamp(path)
    except (OSError, ValueError):
        return False
    return meta.get("short_side") == short_side and {key: meta.get(key) for key in stamp} == stamp


def write_entry(path: str | os.PathLike, cache: str | os.PathLike, *, short_side: int) -> Path:
    """Decode every frame of ``path`` (1 decoder thread), scale it to ``short_side`` and write the
    entry atomically (replacing an older one). Raises :class:`DecodeError` when the video does not
    decode."""
    folder = entry_dir(cache, path)
    with open_video(path, threads=1) as video, atomic_folder(folder) as scratch:
        stamp = _source_stamp(path)
        height, width = cached_size(video.info.height, video.info.width, short_side)
        times = []
        with open(scratch / FRAMES_FILE, "wb") as frames:
            for time, frame in video.all_frames(height, width):
                times.append(time)
                frames.write(frame.tobytes())
        if any(later < earlier for earlier, later in zip(times, times[1:])):
            raise DecodeError(path, "frame times are not in presentation order")
        info = dict(asdict(video.info), height=height, width=width)
        meta = dict(source=str(Path(path).resolve()), short_side=short_side, **stamp, info=info, times=times)
        (scratch / META_FILE).write_text(json.dumps(meta))
    return folder


@dataclass(frozen=True)
class CacheResult:
    """One video's outcome: ``written``, ``kept`` (a fresh entry was there) or ``failed`` with ``reason``."""

    path: str
    status: str
    reason: str | None = None


def _cache_one(job: tuple[str, str, int]) -> CacheResult:
    path, cache, short_side = job
    if _is_fresh(path, entry_dir(cache, path), short_side):
        return CacheResult(path, "kept")
    try:
        write_entry(path, cache, short_side=short_side)
    except DecodeError as error:
        return CacheResult(path, "failed", error.reason)
    except OSError as error:
        return CacheResult(path, "failed", f"{type(error).__name__}: {error}")
    return CacheResult(path, "written")


def build_frame_cache(
    paths: Sequence[str | os.PathLike], cache: str | os.PathLike, *, short_side: int = 256, workers: int = 1
) -> list[CacheResult]:
    """Write the entry of every video in ``paths`` that has no fresh one (in ``workers`` processes);
    results in the order of ``paths``. A video that does not decode is a ``failed`` result, not an
    exception."""
    if short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(str(path), str(cache), short_side) for path in paths]
    if workers == 1 or len(jobs) <= 1:
        return [_cache_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_cache_one, jobs))


def missing_entries(paths: Sequence[str | os.PathLike], cache: str | os.PathLike) -> list[str]:
    """The videos of ``paths`` without an entry in ``cache`` (fresh or not: staleness is found on reading)."""
    return [str(path) for path in paths if not (entry_dir(cache, path) / META_FILE).is_file()]


def summary(results: list[CacheResult], cache: str | os.PathLike) -> str:
    """Lines for the terminal: the failed videos with reasons, then the counts."""
    lines = [f"FAILED  {r.path}: {r.reason}" for r in results if r.status == "failed"]
    counts = {status: sum(r.status == status for r in results) for status in ("written", "kept", "failed")}
    lines.append(f"{len(results)} videos: {counts['written']} cached, {counts['kept']} already cached, "
                 f"{counts['failed']} failed; frames in {cache}")
    return "\n".join(lines)
