"""Parameters and FLOPs of registered models, counted without allocating their weights.

Models are built on the ``meta`` device and ``torch.utils.flop_counter`` counts one forward pass
at the default input (batch 1). Papers report "GFLOPs" that are multiply-accumulates; the table
gives both: GMACs = FLOPs / 2.

Counting takes seconds a model, so ``tubelet models`` reads the costs of the registered models
from ``costs.json`` beside this file, written by ``python -m tubelet.models.summary``. Each row
holds a fingerprint of its registration (class and default arguments); a model whose
registration is new or changed is counted when listed. tests/models/test_summary.py checks that
the file covers the registry and matches fresh counts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tubelet.files import atomic_write_text
from tubelet.models.registry import create_model, get_entry, list_models
from tubelet.models.video_transformer import as_pair

COSTS_FILE = Path(__file__).with_name("costs.json")


@dataclass(frozen=True)
class ModelCost:
    name: str
    params: int
    flops: int
    input_size: tuple[int, int, int, int]  # C, T, H, W

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9


def default_input_size(name: str, **overrides) -> tuple[int, int, int, int]:
    args = {**get_entry(name).defaults, **overrides}
    height, width = as_pair(args.get("img_size", 224))
    return args.get("in_chans", 3), args.get("num_frames", 8), height, width


def model_cost(name: str, **overrides) -> ModelCost:
    """Parameters and forward FLOPs of ``create_model(name, **overrides)`` for one clip."""
    size = default_input_size(name, **overrides)
    with torch.device("meta"):
        model = create_model(name, **overrides).eval()
        video = torch.empty(1, *size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(video)
    return ModelCost(name, params, counter.get_total_flops(), size)


def registration_fingerprint(name: str) -> str:
    """A short hash of what ``name`` is registered as: its class and default arguments."""
    entry = get_entry(name)
    text = f"{entry.cls.__module__}.{entry.cls.__qualname__}:{sorted(entry.defaults.items())!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_costs() -> dict[str, ModelCost]:
    """The costs in ``costs.json`` whose fingerprint matches the current registration."""
    if not COSTS_FILE.is_file():
        return {}
    rows = json.loads(COSTS_FILE.read_text())
    return {name: ModelCost(name, row["params"], row["flops"], tuple(row["input_size"]))
            for name, row in rows.items()
            if name in list_models() and row["fingerprint"] == registration_fingerprint(name)}


def write_cost_cache() -> Path:
    """Count every registered model and write ``costs.json`` (atomically)."""
    rows = {}
    for name in list_models():
        cost = asdict(model_cost(name))
        del cost["name"]
        rows[name] = {"fingerprint": registration_fingerprint(name), **cost}
        print(f"counted {name}", file=sys.stderr, flush=True)
    lines = ",\n".join(f" {json.dumps(name)}: {json.dumps(row)}" for name, row in rows.items())
    atomic_write_text(COSTS_FILE, "{\n" + lines + "\n}\n")  # one line a model: diffs stay readable
    return COSTS_FILE


def print_model_table(filter: str = "") -> None:
    """One line per model whose name contains ``filter``, printed as it is known (cached rows at
    once, others when counted)."""
    names = list_models(filter)
    if not names:
        raise ValueError(f"no registered model name contains {filter!r}")
    cached = cached_costs()
    print(f"{'model':<46} {'input CxTxHxW':>15} {'params (M)':>11} {'GFLOPs':>9} {'GMACs':>9}", flush=True)
    for name in names:
        cost = cached.get(name) or model_cost(name)
        shape = "x".join(str(s) for s in cost.input_size)
        print(f"{name:<46} {shape:>15} {cost.params / 1e6:>11.2f} {cost.flops / 1e9:>9.4g} {cost.gmacs:>9.4g}",
              flush=True)
    counted = [name for name in names if name not in cached]
    if counted:
        print(f"({len(counted)} not in {COSTS_FILE.name}, counted now; `python -m tubelet.models.summary` "
              f"stores them)", file=sys.stderr)


if __name__ == "__main__":
    print(f"wrote {write_cost_cache()}")
