"""benchmarks/scaling.py, the issue 14 measurement, at a tiny size on the CPU (gloo): it launches
torchrun per process count, and the loss curve of 2 processes is the 1-process one (the same
global batches), so a GPU session spends its time measuring, not debugging."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


@pytest.mark.slow
def test_scaling_script_runs_fsdp_on_one_and_two_processes_with_the_same_losses():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--processes", "1", "2", "--device", "cpu", "--model",
         "timesformer_divided_tiny_p8_8x32", "--frames", "4", "--size", "16", "--global-batch", "4", "--accum", "2",
         "--pool", "8", "--steps", "4", "--warmup", "1", "--parallel", "fsdp", "--grad-checkpointing"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| processes | clips/s | clips/s per GPU | scaling efficiency |" in done.stdout
    one, two = json.loads(done.stdout.strip().splitlines()[-1])
    assert (one["processes"], two["processes"]) == (1, 2) and two["parallel"] == "fsdp"
    assert len(one["losses"]) == len(two["losses"]) == 4
    assert one["losses"][-1] < one["losses"][0]  # it learns the pool
    assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) < 1e-5
