"""benchmarks/count_ops.py, the CPU count of a forward's GPU launches, on the tiny MViTv2: one
attention, two pooling convolutions and five LayerNorms a block, and CUDA's autocast policy for
LayerNorm (its bf16 inputs cast to float32 first, which CPU autocast does not do)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "count_ops.py"


def test_count_ops_counts_the_tiny_mvit_launches_by_kind():
    done = subprocess.run([sys.executable, str(SCRIPT), "mvitv2_tiny_8x32"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = {name: int(n) for name, n in re.findall(r"^\| ([a-z_/]+) \| (\d+) \|", done.stdout, re.M)}
    assert kinds["attention"] == 3 and kinds["convolution"] == 1 + 3 * 2 and kinds["layer_norm"] == 3 * 5 + 1
    assert sum(kinds.values()) == int(re.search(r"^(\d+) kernel launches", done.stdout, re.M).group(1))
    assert re.search(r"^\| aten::layer_norm -> aten::copy_ \| \d+ \|", done.stdout, re.M)


def _copy_launches(layout):
    done = subprocess.run([sys.executable, str(SCRIPT), "timesformer_divided_tiny_p8_8x32", "--batch", "2", "--dtype", "fp32",
                           "--layout", layout], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(re.search(r"^\| copy \| (\d+) \|", done.stdout, re.M).group(1))


def test_the_view_layout_leaves_out_three_copies_a_divided_block():
    assert _copy_launches("permute") - _copy_launches("view") == 3 * 2  # the tiny model's two blocks
