"""Plots say what they show: one-view top-1 is not hidden, confusion matrices carry a title."""

import torch

from tubelet.engine import plots


def _val(epoch, top1, clip_top1):
    return {"kind": "val", "epoch": epoch, "step": 10 * epoch, "top1": top1, "top5": 100.0, "clip_top1": clip_top1}


def test_one_view_draws_top1_once_with_a_label_that_says_so():
    curves = plots.accuracy_curves([_val(0, 50.0, 50.0), _val(1, 75.0, 75.0)])
    assert list(curves) == ["top1 (= clip top1, 1 view)", "top5"]
    assert curves["top1 (= clip top1, 1 view)"] == ([0, 1], [50.0, 75.0])


def test_several_views_draw_top1_and_clip_top1():
    curves = plots.accuracy_curves([_val(0, 60.0, 50.0)])
    assert list(curves) == ["top1", "top5", "clip_top1"]


def test_confusion_matrix_carries_its_title(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: titles.append(figure.axes[0].get_title()))
    plots.plot_confusion(torch.eye(3, dtype=torch.long), ["a", "b", "c"], tmp_path / "c.png",
                         title="val.csv by runs/a\n2x3 views per video, top-1 100.0%")
    assert titles == ["val.csv by runs/a\n2x3 views per video, top-1 100.0%"]
