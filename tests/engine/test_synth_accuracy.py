import io

import pytest

from tubelet.data.synthetic import write_synthetic_dataset
from tubelet.engine.config import load_config
from tubelet.engine.train import fit


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="synth_tiny reaches 65-80% (not yet 90%) within a few minutes on 2 cores; "
                   "the time-reversed class pairs are learnt last")
def test_divided_attention_learns_the_synthetic_classes(tmp_path):
    """The demo's recipe on the demo's data, cut to 15 epochs: a small divided-attention model, 2-3 minutes
    on 2 quiet cores."""
    write_synthetic_dataset(tmp_path / "data", videos_per_class=40, frames=16, size=32, seed=0)
    config = load_config("synth_tiny", [f"data.train={tmp_path / 'data/train.csv'}",
                                        f"data.val={tmp_path / 'data/val.csv'}", "train.epochs=15",
                                        "train.progress=false"])
    metrics = fit(config, tmp_path / "run", stream=io.StringIO())
    assert metrics["top1"] >= 90.0
