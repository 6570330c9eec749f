"""`tubelet models` lists every scheme with its costs."""

from __future__ import annotations

import tubelet
from tubelet.attention import list_attention
from tubelet.cli import main


def test_models_command_lists_every_scheme(capsys):
    assert main(["models", "tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:]]
    assert rows == tubelet.list_models("tiny")
    for scheme in ["divided", "joint", "space", "local_global", "axial", "factorised_encoder", "factorised_self", "factorised_dot"]:
        assert any(f"_{scheme}_" in row for row in rows), scheme
    assert set(list_attention()) >= {"divided", "joint", "space", "local_global", "axial", "factorised_self", "factorised_dot"}


def test_models_command_rejects_a_filter_matching_nothing(capsys):
    assert main(["models", "no-such-model"]) == 2
    assert "no registered model name contains 'no-such-model'" in capsys.readouterr().err
