"""Start-up cost of the `tubelet` command: CPU and wall seconds of whole processes, best of N.

CPU time (user + system) is the number to compare on a shared machine: a loaded machine stretches
the wall time without the command doing more. ``--src`` runs another checkout's ``src`` (for
example a worktree of an older commit) with this interpreter, for before/after tables.

    python benchmarks/cli_startup.py [--src OTHER/src] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["eval", "run", "--data", "list.csv", "--views", "2by3"], ["models", "vivit_joint"])


def measure(argv: list[str], src: Path, runs: int) -> tuple[float, float]:
    """The least CPU and the least wall seconds of ``runs`` runs of ``python -m tubelet.cli argv``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cpu, wall = [], []
    for _ in range(runs):
        before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-m", "tubelet.cli", *argv], env=env, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.append(time.perf_counter() - began)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(cpu), min(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| command | CPU s | wall s |\n| --- | --- | --- |")
    for argv in COMMANDS:
        cpu, wall = measure(argv, args.src, args.runs)
        print(f"| `tubelet {' '.join(argv)}` | {cpu:.2f} | {wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
