"""A disk that fills up in the middle of a write, for the tests of atomic saving."""

from __future__ import annotations

import errno
from typing import Callable


def filling_disk(write: Callable, keep_bytes: int) -> Callable:
    """``write`` (a ``save(obj, path, ...)`` function) that leaves only ``keep_bytes`` of its file,
    then raises ENOSPC, as a full disk does."""

    def write_until_full(obj, path, *args, **kwargs):
        write(obj, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(keep_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write_until_full
