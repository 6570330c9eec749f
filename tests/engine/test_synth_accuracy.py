import io

import pytest

from tubelet.data.synthetic import write_synthetic_dataset
from tubelet.engine.config import load_config
from tubelet.engine.train import fit


@pytest.mark.slow
def test_divided_attention_learns_the_synthetic_classes(tmp_path):
    """The demo's recipe on the demo's data: a small divided-attention model (3 blocks, 2x4x4 tubelets),
    30 epochs, about 5 minutes on 2 cores."""
    write_synthetic_dataset(tmp_path / "data", videos_per_class=40, frames=16, size=32, seed=0)
    config = load_config("synth_tiny", [f"data.train={tmp_path / 'data/train.csv'}",
                                        f"data.val={tmp_path / 'data/val.csv'}",
                                        "train.progress=false"])
    metrics = fit(config, tmp_path / "run", stream=io.StringIO())
    assert metrics["top1"] >= 90.0
