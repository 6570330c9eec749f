"""Copies in one forward under each attention layout (``tubelet.attention.layout``), counted on the
CPU with ``torch.profiler``: calls of ``aten::copy_``, ``aten::clone``, ``aten::contiguous`` and
``aten::cat`` and the bytes they write (float32). ``clone`` and ``contiguous`` end in a
``copy_``, so the total is the bytes of ``copy_`` plus those of ``cat``. The CPU's ``addmm`` starts
from a ``copy_`` of the bias into its output (the GEMM's ``C``, not a layout copy): those are
counted apart. The numbers quoted in ``benchmarks/NOTES.md`` ("Copy-free temporal layout") come
from this script.

    PYTHONPATH=src python3 benchmarks/layout_copies.py [--models NAME ...] [--batch 2]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.profiler import profile

from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.models.registry import create_model
from tubelet.models.summary import default_input_size

OPS = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat")
FLOAT32_BYTES = 4


def _in_addmm(event) -> bool:
    parent = event.cpu_parent
    return parent is not None and parent.name == "aten::addmm"


def written_bytes(event) -> int:
    """Bytes an op writes: ``cat``'s output (what it allocates), the first argument of the others
    (``copy_``'s destination, ``clone``'s and ``contiguous``' input)."""
    if event.name == "aten::cat":
        return event.cpu_memory_usage
    shape = event.input_shapes[0] if event.input_shapes else []
    return math.prod(shape) * FLOAT32_BYTES


def count_copies(model: torch.nn.Module, video: torch.Tensor, layout: str) -> dict[str, list[int]]:
    """``op -> [calls, bytes written]`` in one forward of ``model`` under ``layout``; the key
    ``addmm bias`` holds the ``copy_`` s inside ``aten::addmm``, which ``aten::copy_`` leaves out."""
    with torch.no_grad(), ATTENTION_LAYOUT.using(layout):
        model(video)  # warm-up outside the profile
        with profile(record_shapes=True, profile_memory=True) as prof:
            model(video)
    counts = {op: [0, 0] for op in (*OPS, "addmm bias")}
    for event in prof.events():
        if event.name in counts:
            key = "addmm bias" if event.name == "aten::copy_" and _in_addmm(event) else event.name
            counts[key][0] += 1
            counts[key][1] += written_bytes(event)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["timesformer_divided_tiny_p8_8x32", "vivit_factorised_self_tiny_p8t2_8x32"])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print("| model | layout | " + " | ".join(f"{op} calls / KiB" for op in OPS) + " | total KiB (copy_ + cat) | addmm bias copies |")
    print("|" + " --- |" * (len(OPS) + 4))
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=3).eval()
        video = torch.randn(args.batch, *default_input_size(name))
        for layout in ATTENTION_LAYOUT.names:
            counts = count_copies(model, video, layout)
            cells = [f"{calls} / {size / 1024:.0f}" for calls, size in (counts[op] for op in OPS)]
            total = counts["aten::copy_"][1] + counts["aten::cat"][1]
            print(f"| {name} | {layout} | " + " | ".join(cells) + f" | {total / 1024:.0f} | {counts['addmm bias'][0]} |")


if __name__ == "__main__":
    main()
