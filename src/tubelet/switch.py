"""``Switch``: a process-wide choice among named implementations of one computation (the fast
paths: ``tubelet.attention.fast_paths`` lists them). A switch chooses an implementation, never a
result: every setting must compute the same function within the tolerance its tests state."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator


class Switch:
    """One named choice: ``set(name)``, ``get()``, ``using(name)`` (a block; None keeps the current),
    ``add(name)`` for an implementation registered later."""

    def __init__(self, what: str, names: Iterable[str], default: str):
        self.what = what
        self.names = list(names)
        self._active = default
        self.set(default)

    def add(self, name: str) -> None:
        if name in self.names:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self.names.append(name)

    def set(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown {self.what} {name!r}; expected one of {', '.join(self.names)}")
        self._active = name

    def get(self) -> str:
        return self._active

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        previous = self._active
        self.set(name or previous)
        try:
            yield
        finally:
            self._active = previous
