"""Error hints for misspelt names: the closest valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: str, valid: Iterable[str], otherwise: str = "") -> str:
    """``"; did you mean a, b?"`` with up to three close matches, else ``otherwise``."""
    close = difflib.get_close_matches(value, list(valid), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else otherwise


def check_keys(keys: Iterable[str], valid: list[str], what: str) -> None:
    """ValueError ``"{what} {key!r}; did you mean ..."`` for the first key not in ``valid``."""
    for key in keys:
        if key not in valid:
            raise ValueError(f"{what} {key!r}{did_you_mean(key, valid, '; valid: ' + ', '.join(valid))}")
