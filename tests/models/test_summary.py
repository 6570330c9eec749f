"""`tubelet models` reads its costs from costs.json: the file covers the registry and matches fresh counts."""

from __future__ import annotations

import pytest

import tubelet
from tubelet.models import summary


def test_cost_file_covers_every_registered_model():
    stale = sorted(set(tubelet.list_models()) - set(summary.cached_costs()))
    assert not stale, (f"{summary.COSTS_FILE.name} lacks or has stale rows for {stale}: run "
                       f"`python -m tubelet.models.summary` and commit the file")


@pytest.mark.parametrize("name", tubelet.list_models("tiny"))
def test_cached_costs_match_a_fresh_count(name):
    """The tiny variants run the same code as the large ones, so a change to a model's code that
    moves its cost shows here even when the registration (the fingerprint) stays the same."""
    assert summary.cached_costs()[name] == summary.model_cost(name)


def test_the_table_streams_and_counts_what_is_not_cached(capsys, monkeypatch):
    cached = summary.cached_costs()
    monkeypatch.setattr(summary, "cached_costs", lambda: {k: v for k, v in cached.items() if "joint" not in k})
    counted = []

    def count(name):
        printed = capsys.readouterr().out  # what was printed before this model is counted
        counted.append((name, printed))
        return cached[name]

    monkeypatch.setattr(summary, "model_cost", count)
    summary.print_model_table("tiny")
    assert [name for name, _ in counted] == ["timesformer_joint_tiny_p8_8x32", "vivit_joint_tiny_p8t2_8x32"]
    assert "timesformer_divided_tiny_p8_8x32" in counted[0][1]  # rows before it already on stdout
    assert "2 not in costs.json, counted now" in capsys.readouterr().err
