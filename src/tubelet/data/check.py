"""``tubelet check-videos``: decode-check every video of a list or folder, in parallel.

Each video is opened, probed, and decoded at its first frame, its last frame and a few random
frames (random but fixed by ``seed`` and the file's position). A file passes when all of these
decode; the reasons of the others are FFmpeg's, or ours (file not found, empty file, no video
stream, stream shorter than its metadata says).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from tubelet.data.datasets import derive_seed
from tubelet.data.decode import DecodeError, open_video
from tubelet.data.lists import VIDEO_EXTENSIONS, read_any
from tubelet.data.sampling import index_times
from tubelet.files import atomic_write_text


@dataclass(frozen=True)
class CheckResult:
    """One file's verdict: ``reason`` is ``None`` when it decodes."""

    path: str
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


def video_paths(list_or_dir: str | os.PathLike) -> list[Path]:
    """The files to check: every file with a video extension under a folder (any depth), or the
    videos named by a list (any format ``read_any`` reads). A folder without videos is an error."""
    source = Path(list_or_dir)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not paths:
            raise ValueError(f"{source} holds no video files (looked for {', '.join(VIDEO_EXTENSIONS)} at any depth)")
        return paths
    return [entry.path for entry in read_any(source)]


def check_video(path: str | os.PathLike, *, num_random: int = 3, seed: int = 0) -> CheckResult:
    """Decode the first, last and ``num_random`` random frames of one video (1 decoder thread)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return CheckResult(str(path), "empty file (0 bytes)")  # FFmpeg would only say "Invalid data"
    try:
        with open_video(path, threads=1) as video:
            count = video.info.num_frames
            generator = torch.Generator().manual_seed(seed)
            indices = [0, count - 1] + torch.randint(count, (num_random,), generator=generator).tolist()
            frames = video.frames_at(index_times(indices, video.info))  # [2 + R, H, W, C]
    except DecodeError as error:
        return CheckResult(str(path), error.reason)
    if frames.shape[1:] != (video.info.height, video.info.width, 3):
        stated = f"{video.info.height}x{video.info.width}"
        return CheckResult(str(path), f"frames decode as {tuple(frames.shape[1:])}, the stream says {stated}")
    return CheckResult(str(path), None)


def _check_one(job: tuple[int, str, int, int]) -> CheckResult:
    position, path, num_random, seed = job
    return check_video(path, num_random=num_random, seed=derive_seed(seed, position))


def check_videos(
    paths: list[Path] | list[str], *, workers: int = 1, num_random: int = 3, seed: int = 0
) -> list[CheckResult]:
    """Check every path (in ``workers`` processes), results in the order of ``paths``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(position, str(path), num_random, seed) for position, path in enumerate(paths)]
    if workers == 1 or len(jobs) <= 1:
        return [_check_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_check_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))


def write_bad_list(results: list[CheckResult], out: str | os.PathLike) -> None:
    """Write ``path<TAB>reason`` for each bad file (atomically; an empty file when all are good)."""
    atomic_write_text(out, "".join(f"{r.path}\t{r.reason}\n" for r in results if not r.ok))


def summary(results: list[CheckResult], out: str | os.PathLike) -> str:
    """Lines for the terminal: the bad files with reasons, then the counts."""
    bad = [r for r in results if not r.ok]
    lines = [f"BAD  {r.path}: {r.reason}" for r in bad]
    good = len(results) - len(bad)
    lines.append(f"checked {len(results)} videos: {good} good, {len(bad)} bad; list of bad files in {out}")
    return "\n".join(lines)
