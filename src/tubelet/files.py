"""Atomic writes of files and folders, below every other module (``data/``, ``models/`` and
``engine/`` all write through it).

A file is written to a temporary file in the same folder, fsynced, then moved over the target
with ``os.replace``; a folder (a saved model, a checkpoint) is assembled in a hidden temporary
sibling and renamed into place. A reader, or a resumed run, therefore sees the old version or
the complete new one, never a half-written one, whether the writer is killed or the disk fills
up. Files get the mode an ordinary ``open`` would give (0666 less the umask), not the 0600 of a
temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush one already-written file to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically through ``write(tmp)``, which fills a temporary file beside it
    (its name ends in ``path``'s suffix, for writers that look at it, as ``torch.export.save`` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        write(Path(tmp))
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_folder(folder: Path) -> None:
    """Delete a folder so that a kill at any moment leaves it whole or gone from its name: it is
    renamed to a hidden temporary name first (atomic), then deleted."""
    doomed = folder.with_name(f"{TMP_PREFIX}old-{folder.name}-{os.getpid()}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Assemble the folder ``path`` in a temporary sibling (yielded); on success every file in it
    gets the umask's mode and is fsynced, and the folder replaces ``path``, on any error (a full disk included) it is deleted and
    ``path`` is left as it was. Only between the two renames of a replacement can a kill leave
    the old folder under its hidden temporary name instead of ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        mode = 0o666 & ~_umask()
        for file in tmp.iterdir():
            os.chmod(file, mode)  # some writers (safetensors) create their files 0600
            fsync_file(file)
        fsync_dir(tmp)
        if final.exists():
            remove_folder(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final.parent)


def sweep_temporary(folder: Path) -> None:
    """Delete what writers killed mid-way left in ``folder`` (hidden temporary files and folders)."""
    for stale in folder.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
