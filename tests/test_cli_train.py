"""The train / eval / predict command lines on a tiny synthetic dataset."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from tubelet.cli import main
from tubelet.data.synthetic import write_synthetic_dataset
from tubelet.engine.config import load_config, save_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run of a one-block model; returns (data folder, run folder, what train printed)."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_synthetic_dataset(data, videos_per_class=2, frames=8, size=32, seed=0)
    recipe = root / "recipe.yaml"
    save_config(load_config(None, ["model.depth=1", "model.embed_dim=32", "model.num_heads=2"]), recipe)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", str(recipe), f"data.train={data / 'train.csv'}", f"data.val={data / 'val.csv'}",
                     "data.num_frames=4", "data.img_size=16", "data.num_workers=0", "train.batch_size=4",
                     "train.epochs=1", "train.progress=false", "--out", str(root / "run")])
    assert code == 0
    return data, root / "run", printed.getvalue()


def test_train_ends_with_a_summary_of_the_run(trained):
    _, run, printed = trained
    assert printed.startswith(f"training finished: {run}\n")
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    best_line = next(line.split() for line in printed.splitlines() if "best top1" in line)
    assert best_line == ["best", "top1", f"{best['value']:.2f}", str(run / "checkpoints" / best["checkpoint"])]
    for line in ("resolved config", "metrics log", "TensorBoard", str(run / "plots" / "accuracy.png")):
        assert line in printed


def test_eval_writes_predictions_with_multi_view_testing(trained, tmp_path, capsys):
    data, run, _ = trained
    assert main(["eval", str(run), "--data", str(data / "val.csv"), "--views", "2x3", "--out",
                 str(tmp_path / "preds")]) == 0
    printed = capsys.readouterr().out
    assert "12 videos x 6 views: top1" in printed and "preds.csv" in printed
    report = json.loads((tmp_path / "preds.json").read_text())
    assert report["metrics"]["views"] == 6 and report["metrics"]["videos"] == 12
    assert set(report["per_class_accuracy"]) == set((data / "classes.txt").read_text().split())
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 13
    assert (tmp_path / "preds_confusion.png").stat().st_size > 1000


def test_predict_on_an_encoded_file(trained, capsys):
    data, run, _ = trained
    video = sorted((data / "videos").rglob("*.mp4"))[0]
    assert main(["predict", str(video), str(video), "--checkpoint", str(run), "--topk", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in results] == [str(video)] * 2
    top = results[0]["top"]
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert top[0]["class"] in (data / "classes.txt").read_text().split()
    assert main(["predict", str(video), "--checkpoint", str(run), "--views", "1x3"]) == 0
    assert capsys.readouterr().out.startswith(f"{video}: ")


def test_predict_sliding_window_gives_segments(trained, capsys):
    data, run, _ = trained
    video = sorted((data / "videos").rglob("*.mp4"))[0]  # 8 frames at 12 fps: 0.67 s
    assert main(["predict", str(video), "--checkpoint", str(run), "--window", "0.3", "--stride", "0.2",
                 "--json"]) == 0
    segments = json.loads(capsys.readouterr().out)[0]["segments"]
    # the strides cover 0-0.5 s; one more window ends at the video's end
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 0.3), (0.2, 0.5), (0.367, 0.667)]
    assert all(len(s["top"]) == 5 for s in segments)


@pytest.mark.parametrize("argv, message", [
    (["train", "synth_tiny", "train.lrr=0.1", "--out", "x"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    (["train", "synth_tiny", "data.num_frames=eight", "--out", "x"], "config key 'data.num_frames' expects int"),
    (["train", "no_such_recipe", "--out", "x"], "recipe 'no_such_recipe' is neither a file nor a name"),
    (["train", "synth_tiny", "--out", "x"], "data.train=synth_data/train.csv does not exist; to try tubelet without "
                                            "data, `tubelet synth DIR` writes a synthetic dataset"),
    (["train", "synth_tiny", "model=timesformer_space_tiny_p8_8x32", "--out", "x"],
     "synth_tiny.yaml sets model.pos_embed for timesformer_divided_tiny_p8_8x32, but "
     "model=timesformer_space_tiny_p8_8x32 (from the command line) has no argument 'pos_embed'"),
    (["eval", "nowhere", "--data", "list.csv"], "nowhere is not a checkpoint"),
    (["eval", "nowhere", "--data", "list.csv", "--views", "2by3"], "views '2by3' must be TxS"),
    (["eval", "nowhere", "--data", "list.csv", "--views", "9x9"], "views '9x9': spatial crops S must be 1 (centre) or 3"),
])
def test_bad_input_exits_2_naming_it(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_predict_on_an_unreadable_file_exits_2(trained, tmp_path, capsys):
    _, run, _ = trained
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert main(["predict", str(bad), "--checkpoint", str(run)]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: cannot decode: Invalid data found when processing input" in captured.out
    assert "1 of 1 videos could not be decoded" in captured.err and "evaluation" not in captured.err


@pytest.fixture
def classified_on(monkeypatch):
    """(device, autocast dtype, the weights' device) of every batch that eval and predict classify, with CUDA hidden."""
    import torch

    from engine.classified import record_classified

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return record_classified(monkeypatch)


def test_eval_and_predict_choose_the_device_and_precision(trained, classified_on, capsys):
    import torch

    data, run, _ = trained
    video = str(sorted((data / "videos").rglob("*.mp4"))[0])
    assert main(["eval", str(run), "--data", str(data / "val.csv")]) == 0  # auto without CUDA: the CPU in fp32
    assert main(["predict", video, "--checkpoint", str(run)]) == 0
    assert main(["predict", video, "--checkpoint", str(run), "--window", "0.3"]) == 0
    assert classified_on and set(classified_on) == {("cpu", None, "cpu")}
    classified_on.clear()
    assert main(["eval", str(run), "--data", str(data / "val.csv"), "--device", "cpu", "--precision", "bf16"]) == 0
    assert main(["predict", video, "--checkpoint", str(run), "--device", "cpu", "--precision", "bf16", "--json"]) == 0
    assert classified_on and set(classified_on) == {("cpu", torch.bfloat16, "cpu")}
    printed = capsys.readouterr().out
    top = json.loads(printed[printed.index("[\n"):])[0]["top"]
    assert len(top) == 5 and top[0]["score"] >= top[-1]["score"]


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("option, message", [
    (["--device", "cuda"], "--device is 'cuda' but CUDA is not available (use 'cpu' or 'auto')"),
    (["--device", "tpu"], "--device is 'tpu'; expected auto, cpu, cuda or cuda:N"),
    (["--precision", "fp16"], "--precision=fp16 needs a GPU; use bf16 or fp32 on the CPU"),
    (["--precision", "half"], "--precision must be one of auto, bf16, fp16, fp32, got 'half'"),
])
def test_a_device_or_precision_that_cannot_run_is_one_line_exit_2(trained, classified_on, capsys, command, option,
                                                                   message):
    data, run, _ = trained
    video = str(sorted((data / "videos").rglob("*.mp4"))[0])
    argv = (["eval", str(run), "--data", str(data / "val.csv")] if command == "eval"
            else ["predict", video, "--checkpoint", str(run)])
    assert main(argv + option) == 2
    err = capsys.readouterr().err
    assert err == f"tubelet {command}: error: {message}\n"
    assert not classified_on


def test_too_many_undecodable_training_videos_is_one_line_exit_2(trained, tmp_path, capsys, monkeypatch):
    """The share of failed samples passing ``data.max_decode_failures`` stops training (was a traceback)."""
    import functools
    import shutil

    from tubelet.data.failures import FailureTracker
    from tubelet.engine import train as train_module

    data = Path(shutil.copytree(trained[0], tmp_path / "data"))
    bad = data / (data / "train.csv").read_text().splitlines()[1].split(",")[0]
    bad.write_bytes(b"not a video")
    monkeypatch.setattr(train_module, "FailureTracker", functools.partial(FailureTracker, min_seen=1))  # not 100
    code = main(["train", "synth_tiny", "model.depth=1", "model.embed_dim=32", "model.num_heads=2",
                 f"data.train={data / 'train.csv'}", "data.val=", "data.num_frames=4", "data.img_size=16",
                 "data.num_workers=0", "train.batch_size=4", "train.epochs=1", "train.progress=false",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("tubelet train: error: 1 decode failures in ") and f"{bad}; stopping" in err
