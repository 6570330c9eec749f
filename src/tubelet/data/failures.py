"""Counting videos that failed to decode during training, and stopping when there are too many.

A training dataset replaces an undecodable video by another sample (see ``datasets.py``), which
keeps one bad file from killing a long run but would silently train on a different distribution
if many files were bad. :class:`FailureTracker` counts the replacements over the samples seen and
raises :class:`TooManyDecodeFailures` once their share passes ``max_share``.
"""

from __future__ import annotations

from collections import Counter


class TooManyDecodeFailures(RuntimeError):
    """More videos failed to decode than the configured share allows."""


class FailureTracker:
    """Running count of decode failures among the samples seen.

    ``update(failed, seen)`` takes a batch's ``failed`` list and its size. The share is checked
    only once ``min_seen`` samples have been seen, so that one bad file in the first batch does not
    stop a run whose real share is tiny; it is then ``failures / seen``.
    """

    def __init__(self, max_share: float = 0.01, *, min_seen: int = 100) -> None:
        if not 0.0 <= max_share <= 1.0:
            raise ValueError(f"max_share must be within [0, 1], got {max_share}")
        if min_seen < 1:
            raise ValueError(f"min_seen must be >= 1, got {min_seen}")
        self.max_share = max_share
        self.min_seen = min_seen
        self.seen = 0
        self.files: Counter[str] = Counter()

    @property
    def failures(self) -> int:
        return sum(self.files.values())

    @property
    def share(self) -> float:
        return self.failures / self.seen if self.seen else 0.0

    def update(self, failed: list[str], seen: int) -> None:
        """Add one batch: the files that failed in it and how many samples it held."""
        self.files.update(failed)
        self.seen += seen
        if self.seen >= self.min_seen and self.share > self.max_share:
            raise TooManyDecodeFailures(
                f"{self.report()}; stopping: check the files with `tubelet check-videos`, "
                f"or raise the limit if this share is acceptable"
            )

    def report(self, max_files: int = 5) -> str:
        """One line: count, share, limit, and the most frequent failing files."""
        line = (
            f"{self.failures} decode failures in {self.seen} samples "
            f"({100 * self.share:.2f}%, limit {100 * self.max_share:.2f}%)"
        )
        if not self.files:
            return line
        named = ", ".join(
            f"{path} ({count}x)" if count > 1 else path for path, count in self.files.most_common(max_files)
        )
        more = len(self.files) - max_files
        return f"{line}: {named}" + (f" and {more} more files" if more > 0 else "")
