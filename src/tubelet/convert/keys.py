"""What every converter shares: renaming by a key table, reading weight files, loading converted
weights into a tubelet model with errors that name every key that does not fit."""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from tubelet.models.registry import create_model, get_entry, list_models

Rule = tuple[str, str]  # (regular expression over a foreign name, tubelet name template)
SHOWN = 8  # names listed in one error message before "and N more"


def listing(names: list[str]) -> str:
    """``a, b, c`` for the first ``SHOWN`` names, then ``and N more``."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def rename(state: Mapping[str, torch.Tensor], rules: list[Rule], source: str, *, strict: bool = True) -> dict[str, torch.Tensor]:
    """Apply the first rule whose pattern matches a whole name. With ``strict``, a name that no
    rule matches is a ValueError listing such names (``source`` says whose they are); otherwise
    it is kept as it is."""
    out, unused = {}, []
    for key, value in state.items():
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match:
                out[match.expand(template)] = value
                break
        else:
            if strict:
                unused.append(key)
            out[key] = value
    if unused:
        raise ValueError(f"{source} parameters with no tubelet counterpart: {listing(sorted(unused))}")
    return out


def read_weight_file(path: str | os.PathLike) -> dict:
    """A ``.safetensors`` file, or a ``torch.save`` file read with ``weights_only=True`` (no code
    from the file runs); a file that is missing or does not unpickle safely is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} cannot be read as a torch.save file of tensors: {first_line}") from error


def load_converted(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a converted ``state`` into ``model``; a ValueError lists every tubelet parameter left
    unfilled, every converted name the model lacks, and every shape that differs."""
    problems = mismatches(model.state_dict(), state)
    if problems:
        raise ValueError("converted weights do not fit the tubelet model; " + describe(problems))
    model.load_state_dict(state)
    return model


def mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """What keeps ``state`` from loading where ``expected`` is: missing names, extra names, shapes."""
    found = {
        "unfilled tubelet parameters": sorted(set(expected) - set(state)),
        "names the tubelet model lacks": sorted(set(state) - set(expected)),
        "shape mismatches": [
            f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in expected.items() if k in state and state[k].shape != v.shape
        ],
    }
    return {label: items for label, items in found.items() if items}


def describe(problems: dict[str, list[str]]) -> str:
    return "; ".join(f"{label}: {listing(items)}" for label, items in problems.items())


def load_into_registered(state: Mapping[str, torch.Tensor], candidates: list[tuple[str, dict]], source: str) -> nn.Module:
    """``create_model(name, **args)`` for the first candidate whose parameters ``state`` fills
    exactly, with ``state`` loaded; otherwise a ValueError naming the closest candidate and what
    differs (a checkpoint of another architecture)."""
    misfits = []
    for name, args in candidates:
        try:
            with torch.device("meta"):
                expected = create_model(name, **args).state_dict()
        except ValueError as error:  # the implied input does not fit this architecture
            misfits.append((len(state), name, {"cannot be built": [str(error)]}))
            continue
        problems = mismatches(expected, state)
        if not problems:
            return load_converted(create_model(name, **args), state)
        misfits.append((sum(map(len, problems.values())), name, problems))
    _, name, problems = min(misfits, key=lambda misfit: misfit[:2])
    raise ValueError(f"{source} fits no tubelet architecture; closest is {name}: {describe(problems)}")


def read_model_state(path: str | os.PathLike, strip: str = "") -> dict[str, torch.Tensor]:
    """The parameters of a PySlowFast-style checkpoint (``torch.save`` of a dict with
    ``model_state``) or of a bare state dict, without DDP's ``module.`` and without ``strip``."""
    checkpoint = read_weight_file(path)
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no model_state nor a state dict (a mapping of parameter names to tensors)")
    out = {}
    for name, value in state.items():
        name = name[len("module."):] if name.startswith("module.") else name
        out[name[len(strip):] if strip and name.startswith(strip) else name] = value
    return out


def square_grid(table: torch.Tensor, prefix: int, key: str) -> int:
    """The side ``g`` of a positional table ``[1, prefix + g*g, D]``; a ValueError names ``key``."""
    side = math.isqrt(table.shape[1] - prefix)
    if side * side != table.shape[1] - prefix:
        raise ValueError(f"{key} {list(table.shape)} is not a square grid of positions after {prefix} prefix rows")
    return side


def ranked_architectures(family_filter: str, args: dict) -> list[str]:
    """The registered names containing ``family_filter``, those whose defaults differ from ``args``
    in the fewest arguments first (the 16x448 TimeSformer for an HR checkpoint, say)."""
    def differences(name: str) -> int:
        defaults = get_entry(name).defaults
        return sum(defaults.get(key) != value for key, value in args.items())

    return sorted(list_models(family_filter), key=differences)


def closest_architecture(family_filter: str, args: dict) -> str:
    """The first of ``ranked_architectures``; ``args`` override its defaults anyway."""
    return ranked_architectures(family_filter, args)[0]
