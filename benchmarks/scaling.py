"""Training throughput on 1, 2, 4 ... GPUs under torchrun, and the loss curve at the same global batch (issue 14).

TimeSformer-B divided 8x224 by default (dropout and drop path off, so curves compare), bf16
autocast on a GPU, AdamW, through tubelet's own ``train_step`` with the model wrapped as
``train.parallel`` says (``--parallel ddp`` or ``fsdp``). Every step trains one global batch of
``--global-batch`` clips drawn (seeded by the step) from a pool of clips resident in each GPU's
memory, split over the processes and ``--accum`` micro-batches: the optimisation is the same on
any number of GPUs, and the data loader is out of the measurement (``end_to_end.py`` measures
the loader's bound). Clips/s are timed over the steps after ``--warmup``.

Run without torchrun, it launches ``torchrun --standalone --nproc-per-node N`` for each N of
``--processes`` with NVLink multicast off (``tubelet.engine.distributed.NO_MULTICAST``), then
prints a table: clips/s, scaling efficiency (clips/s over N times the 1-process clips/s, the
first N given being the baseline), peak memory, and how far each loss curve is from the first's.

    PYTHONPATH=src python3 benchmarks/scaling.py --processes 1 2 4 [--parallel ddp] [--global-batch 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tubelet.data.datasets import derive_seed
from tubelet.engine.checkpoint import Progress
from tubelet.engine.config import TrainConfig
from tubelet.engine.device import autocast_dtype
from tubelet.engine.distributed import (barrier, gather_objects, init_distributed, launch_environment,
                                        launched_by_torchrun, shutdown_distributed)
from tubelet.engine.optim import build_optimizer
from tubelet.engine.parallel import wrap_model
from tubelet.engine.schedule import build_scheduler
from tubelet.engine.train import TrainState, train_step
from tubelet.models.registry import create_model

CLASSES = 16


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="process counts to launch")
    parser.add_argument("--model", default="timesformer_divided_base_p16_8x224")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--parallel", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--global-batch", type=int, default=32, help="clips per optimiser step, over all processes")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per step on each process")
    parser.add_argument("--pool", type=int, default=64, help="distinct clips the batches are drawn from")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="worker: where rank 0 writes its JSON record")
    return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> dict:
    """One process of the torchrun job: train ``args.steps`` steps; rank 0's record."""
    dist = init_distributed(args.device)
    per_process, left = divmod(args.global_batch, dist.world_size * args.accum)
    if left:
        raise SystemExit(f"--global-batch {args.global_batch} is not a multiple of {dist.world_size} processes "
                         f"x --accum {args.accum}")
    amp_dtype = autocast_dtype("auto", dist.device)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=CLASSES, num_frames=args.frames, img_size=args.size,
                         drop_rate=0.0, drop_path_rate=0.0)
    model.set_grad_checkpointing(args.grad_checkpointing)
    running = wrap_model(model.to(dist.device), args.parallel, dist, amp_dtype)
    settings = TrainConfig(optimizer="adamw", lr=args.lr, weight_decay=0.05)
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, total_steps=args.steps, warmup_steps=0, min_factor=1.0)
    state = TrainState(running, model, optimizer, scheduler, torch.amp.GradScaler(enabled=False), None, Progress())
    generator = torch.Generator().manual_seed(1)
    pool = torch.randn(args.pool, 3, args.frames, args.size, args.size, generator=generator).to(dist.device)
    labels = torch.randint(CLASSES, (args.pool,), generator=generator).to(dist.device)
    losses, began = [], None
    for step in range(args.steps):
        if step == args.warmup:
            _sync(dist.device)
            barrier()
            began = time.perf_counter()
        chosen = torch.randperm(args.pool, generator=torch.Generator().manual_seed(derive_seed(1, step)))
        mine = chosen[: args.global_batch].tolist()[dist.rank * per_process * args.accum:][: per_process * args.accum]
        micro = [{"video": pool[mine[i:i + per_process]], "label": labels[mine[i:i + per_process]]}
                 for i in range(0, len(mine), per_process)]
        stats = train_step(state, micro, device=dist.device, amp_dtype=amp_dtype, clip_grad=None,
                           loss_fn=F.cross_entropy, mixup=None, seed=derive_seed(0, step, dist.rank))
        losses.append(stats["loss"])
    _sync(dist.device)
    barrier()
    elapsed = time.perf_counter() - began
    losses = dist.mean(losses)  # the global batch's loss at each step
    peak = torch.cuda.max_memory_allocated(dist.device) / 2**30 if dist.device.type == "cuda" else float("nan")
    peak = max(gather_objects(peak))  # the fullest GPU
    timed = args.steps - args.warmup
    record = {"processes": dist.world_size, "parallel": args.parallel, "model": args.model,
              "global_batch": args.global_batch, "accum": args.accum, "grad_checkpointing": args.grad_checkpointing,
              "device": torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else "cpu",
              "torch": torch.__version__, "clips_per_s": timed * args.global_batch / elapsed,
              "step_s": elapsed / timed, "peak_gib": peak, "losses": losses}
    if dist.is_main and args.out is not None:
        args.out.write_text(json.dumps(record))
    return record


def launch(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Run the worker under torchrun once per process count; their records, in order."""
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.processes:
            out = Path(scratch) / f"{count}.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(count),
                       __file__, *argv, "--out", str(out)]
            done = subprocess.run(command, env=launch_environment(OMP_NUM_THREADS="1"), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{count} process(es) failed:\n{done.stderr[-3000:]}")
            records.append(json.loads(out.read_text()))
    return records


def table(records: list[dict]) -> str:
    base = records[0]
    per_process_base = base["clips_per_s"] / base["processes"]
    rows = ["| processes | clips/s | clips/s per GPU | scaling efficiency | peak GiB per GPU | final loss | "
            "largest loss difference from the first row |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        efficiency = r["clips_per_s"] / (r["processes"] * per_process_base)
        gap = max(abs(a - b) for a, b in zip(r["losses"], base["losses"]))
        rows.append(f"| {r['processes']} | {r['clips_per_s']:.1f} | {r['clips_per_s'] / r['processes']:.1f} | "
                    f"{100 * efficiency:.1f}% | {r['peak_gib']:.1f} | {r['losses'][-1]:.4f} | {gap:.2g} |")
    return "\n".join(rows)


def main() -> None:
    argv = sys.argv[1:]
    args = _parser().parse_args(argv)
    if launched_by_torchrun():
        try:
            worker(args)
        finally:
            shutdown_distributed()  # after the worker's frame is gone, so its FSDP2 objects can be collected first
        return
    records = launch(args, argv)
    first = records[0]
    print(f"{first['model']} {args.frames}x{args.size}, train.parallel={args.parallel}, global batch "
          f"{args.global_batch} (accum {args.accum}), grad checkpointing {args.grad_checkpointing}, "
          f"{first['device']}, torch {first['torch']}")
    print(table(records))
    print(json.dumps(records))


if __name__ == "__main__":
    main()
