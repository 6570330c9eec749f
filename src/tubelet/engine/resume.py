"""Continuing a run: its own ``config.yaml`` is the truth, changes to it are refused unless asked,
and a damaged checkpoint gives way to the one before it.

``RUN/config.yaml`` is written when the run starts. ``tubelet train --resume RUN`` reads it back
(the recipe is not read again, so overrides given at the start are kept); ``key=value`` given with
``--resume`` apply on top of it. A change that alters what is trained (architecture, data,
schedule, optimiser, seed) is refused, naming the key and both values, unless ``--allow-changes``;
the keys of ``FREE_ON_RESUME`` change only how the run is executed or reported and are accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import Config, apply_override, config_from_dict, config_to_dict, read_recipe_file

RUN_CONFIG = "config.yaml"

FREE_ON_RESUME = frozenset({
    "data.num_workers", "train.device", "train.compile", "train.progress", "train.log_every", "train.keep_last",
    "train.save_every_steps", "eval.batch_size", "train.parallel", "train.grad_checkpointing",
})


def read_run_config(run_dir: str | Path, overrides: list[str] = ()) -> Config:
    """The config a run was started with (``RUN/config.yaml``), with ``overrides`` applied."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {run_dir} is not a run folder (it has no {RUN_CONFIG})")
    raw = read_recipe_file(path)
    for override in overrides:
        apply_override(raw, override)
    try:
        return config_from_dict(raw)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _flat(config: Config) -> dict[str, Any]:
    out = {}
    for section, fields in config_to_dict(config).items():
        for key, value in fields.items():
            out["model" if (section, key) == ("model", "name") else f"{section}.{key}"] = value
    return out


def changed_keys(before: Config, after: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ, with (before, after); model arguments absent on one side count."""
    old, new = _flat(before), _flat(after)
    return {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)}


def check_resume_changes(saved: Config, config: Config, run_dir: str | Path, *, allow_changes: bool) -> list[str]:
    """Refuse (``ValueError`` naming every key) a config that trains something else than ``saved``,
    unless ``allow_changes``; returns one note per accepted change that alters the run."""
    altering = {k: v for k, v in changed_keys(saved, config).items() if k not in FREE_ON_RESUME}
    described = [f"{key}={old!r} -> {new!r}" for key, (old, new) in altering.items()]
    if described and not allow_changes:
        raise ValueError(f"resuming {run_dir} would change the run: {', '.join(described)} (its "
                         f"{RUN_CONFIG} says otherwise); pass --allow-changes to continue with them")
    return [f"resuming with a changed config: {change}" for change in described]


def resume_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of a run that loads (None: it has none yet), and warnings: a damaged
    one (a file torn by a full disk or edited by hand) gives way to the one before it, both named."""
    found = ckpt.list_checkpoints(run_dir)
    notes = []
    for i in range(len(found) - 1, -1, -1):
        problem = ckpt.check_checkpoint(found[i])
        if problem is None:
            return found[i], notes
        fallback = f"falling back to {found[i - 1]}" if i > 0 else "no earlier checkpoint to fall back to"
        notes.append(f"warning: checkpoint {found[i]} is damaged ({problem}); {fallback}")
    if found:
        raise ValueError(f"nothing to resume: every checkpoint of {run_dir} is damaged ("
                         f"{'; '.join(notes)})")
    return None, notes
