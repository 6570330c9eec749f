"""A small progress bar: steps done, named values (loss, lr), throughput and time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Redraws one line in place on a terminal; elsewhere (logs, CI) prints a line every
    ``every_lines`` updates and at the end. ``clips/s`` counts clips since the bar started."""

    def __init__(self, total: int, *, desc: str, start: int = 0, stream: TextIO | None = None,
                 enabled: bool = True, every_lines: int = 10, width: int = 24):
        self.total, self.desc, self.done, self.start = total, desc, start, start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty()
        self.every_lines, self.width = every_lines, width
        self.clips = 0
        self.began = time.perf_counter()

    def line(self, values: dict[str, float]) -> str:
        elapsed = max(time.perf_counter() - self.began, 1e-9)
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        rate = (self.done - self.start) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        return (f"{self.desc} [{bar}] {self.done}/{self.total} {shown} "
                f"{self.clips / elapsed:.1f} clips/s ETA {format_duration(eta)}")

    def update(self, clips: int, **values: float) -> None:
        """One step done, covering ``clips`` clips; ``values`` are shown beside the bar."""
        self.done += 1
        self.clips += clips
        if not self.enabled:
            return
        if self.interactive:
            self.stream.write("\r" + self.line(values))
            if self.done == self.total:
                self.stream.write("\n")
        elif self.done % self.every_lines == 0 or self.done == self.total:
            self.stream.write(self.line(values) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive and self.done != self.total:
            self.stream.write("\n")
            self.stream.flush()
