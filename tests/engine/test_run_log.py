import json

import pytest

from tubelet.engine.run_log import METRICS, read_metrics


def test_a_torn_last_record_is_dropped_and_a_damaged_one_named(tmp_path):
    good = json.dumps({"kind": "train", "epoch": 0, "step": 1, "loss": 1.0})
    (tmp_path / METRICS).write_text(f"{good}\n{good[:20]}")  # killed while appending the second record
    assert read_metrics(tmp_path) == [json.loads(good)]
    (tmp_path / METRICS).write_text(f"{good[:20]}\n{good}\n")
    with pytest.raises(ValueError, match=f"{METRICS} line 1 is not a JSON record"):
        read_metrics(tmp_path)
