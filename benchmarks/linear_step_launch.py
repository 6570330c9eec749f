"""The fused linear step kernel (``tubelet.kernels.linear_step``) under other launch
configurations: programs per multiprocessor, warps, software-pipelining stages and token block,
timed alone (forward, and forward + backward) on LVT base's two steps (``frame`` with the
temporal shift, ``tube`` with the spatial one; 8 heads of 64, one shared gate) on the seed's Table 8
grid, batch 1, bf16 operands. The defaults' row comes first; each row's
outputs are checked against the defaults' before it is timed.

    PYTHONPATH=src python3 benchmarks/linear_step_launch.py --out OUT [--shapes 16x224 96x448] [--backward]
        [--steps tube] [--programs 2] [--warps 4] [--stages 1] [--blocks 32 64]

The last five narrow the sweep (default: every step, and every value of the tuples below).

Writes ``OUT/linear_step_launch.md`` and ``.json`` after every row (a run stopped by its time
limit keeps what it measured).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from unittest import mock

import torch
import triton
import triton.testing

from tubelet.attention.linear import LinearAttention
from tubelet.attention.linear.fused import gate_arguments, group_layout
from tubelet.kernels.linear_step import STEP_DOT_OPERANDS, triton_linear_step
from tubelet.kernels.linear_step import triton as step_kernels
from tubelet.layers.shape import VideoShape

SHAPES = {f"{t}x{px}": (t, px // 16, px // 16) for t in (16, 32, 64, 96) for px in (224, 448)}  # Table 8's grid
PROGRAMS_PER_SM = (2, 4, 8, 0)  # 0: one program per group and head
WARPS = (4, 8)
STAGES = (1, 2, 3)
FORWARD_BLOCKS = (32, 64)
BACKWARD_BLOCKS = (16, 32)


def _launch(programs_per_sm: int, warps: int, stages: int, block: int):
    """Patches of the kernel module's launch choices (``_programs``, ``_config``) to one configuration."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    default_config = step_kernels._config

    def programs(total_groups, heads, device):
        if programs_per_sm == 0:
            return max(1, total_groups)
        return max(1, min(total_groups, programs_per_sm * sms // heads))

    def config(d, length, dtype, *, backward, two_gates):
        chosen = default_config(d, length, dtype, backward=backward, two_gates=two_gates)
        token_block = max(step_kernels.MIN_BLOCK, min(block, triton.next_power_of_2(length)))
        return dict(chosen, BLOCK_L=token_block, num_warps=warps, num_stages=stages)

    return mock.patch.multiple(step_kernels, _programs=programs, _config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shapes", nargs="+", default=["16x224", "16x448", "96x224", "96x448"], choices=list(SHAPES), help="default: the grid's corners")
    parser.add_argument("--backward", action="store_true", help="time forward + backward (backward blocks 16 and 32) instead of the forward")
    parser.add_argument("--steps", nargs="+", choices=["frame", "tube"], default=["frame", "tube"])
    parser.add_argument("--programs", nargs="+", type=int, default=list(PROGRAMS_PER_SM), help="programs per SM; 0: one per group and head")
    parser.add_argument("--warps", nargs="+", type=int, default=list(WARPS))
    parser.add_argument("--stages", nargs="+", type=int, default=list(STAGES))
    parser.add_argument("--blocks", nargs="+", type=int, help="token blocks (default: 32 64 forward, 16 32 backward)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    rows = []
    lines = ["| input | step | pass | programs/SM | warps | stages | block | ms | vs default |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    mixer = LinearAttention(512, 8).to(device)
    label = "forward + backward" if args.backward else "forward"
    blocks = args.blocks or (BACKWARD_BLOCKS if args.backward else FORWARD_BLOCKS)
    with STEP_DOT_OPERANDS.using("bf16"):
        for name in args.shapes:
            grid = SHAPES[name]
            tokens = grid[0] * grid[1] * grid[2]
            for step in (step for step in mixer.steps if step.grouping.name in args.steps):
                qkv = torch.randn(1, tokens, 3, 8, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
                grad = torch.randn(1, tokens, 8, 64, device=device, dtype=torch.bfloat16)
                options = dict(feature="relu", offset=step.features.offset, eps=step.attn.core.eps,
                               layout=group_layout(step.grouping.name, VideoShape(*grid)), grid=grid, shift=step.shift_table,
                               **gate_arguments(step.fixation))
                def run():
                    out = triton_linear_step(qkv, **options)
                    if label != "forward":
                        torch.autograd.grad(out, qkv, grad)
                    return out
                with torch.no_grad() if label == "forward" else torch.enable_grad():
                    reference = run().float()
                    default_ms = triton.testing.do_bench(run, return_mode="median")
                _record(rows, lines, args.out, dict(input=name, step=step.grouping.name, mode=label, programs_per_sm="default",
                                                    warps="default", stages="default", block="default", ms=default_ms, ratio=1.0))
                for programs, warps, stages, block in itertools.product(args.programs, args.warps, args.stages, blocks):
                    with _launch(programs, warps, stages, block), (torch.no_grad() if label == "forward" else torch.enable_grad()):
                        try:
                            error = (run().float() - reference).abs().max().item()
                            if error > 2e-2 * reference.abs().max().item():
                                raise AssertionError(f"output differs from the default's by {error:.3g}")
                            ms = triton.testing.do_bench(run, return_mode="median")
                        except Exception as failure:  # noqa: BLE001 - an unlaunchable configuration is a row, not a crash
                            ms, note = float("nan"), f"{type(failure).__name__}: {str(failure).splitlines()[0][:80]}"
                        else:
                            note = ""
                    _record(rows, lines, args.out, dict(input=name, step=step.grouping.name, mode=label, programs_per_sm=programs or "all",
                                                        warps=warps, stages=stages, block=block, ms=ms, ratio=default_ms / ms, note=note))


def _record(rows: list, lines: list, out: Path, row: dict) -> None:
    rows.append(row)
    lines.append(f"| {row['input']} | {row['step']} | {row['mode']} | {row['programs_per_sm']} | {row['warps']} | {row['stages']} | "
                 f"{row['block']} | {row['ms']:.4g} | {row['ratio']:.2f}x {row.get('note', '')} |")
    print(lines[-1], flush=True)
    (out / "linear_step_launch.md").write_text("\n".join(lines) + "\n")
    (out / "linear_step_launch.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
