import io

import pytest
import safetensors.torch
import torch

import tubelet
from tubelet.data.loader import EpochStream
from tubelet.engine import checkpoint as ckpt
from tubelet.engine import train as train_module
from tubelet.engine.config import load_config
from tubelet.engine.train import TrainState, classification_loss, fit, train_step

from .synth_fixture import tiny_overrides


@pytest.mark.slow
def test_a_model_overfits_one_batch():
    torch.manual_seed(0)
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=4, depth=1, embed_dim=32, num_heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    state = TrainState(model, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                       torch.amp.GradScaler("cpu", enabled=False), None, ckpt.Progress())
    batch = {"video": torch.randn(4, 3, 4, 16, 16), "label": torch.tensor([0, 1, 2, 3])}

    def loss_fn(logits, target):
        return classification_loss(logits, target, multi_label=False, label_smoothing=0.0)

    losses = [train_step(state, [batch], device=torch.device("cpu"), amp_dtype=None, clip_grad=1.0, loss_fn=loss_fn,
                         mixup=None, seed=0)["loss"] for _ in range(60)]
    assert losses[0] > 1.0 and losses[-1] < 0.05
    model.eval()
    assert model(batch["video"]).argmax(1).tolist() == [0, 1, 2, 3]


def test_a_uint8_batch_is_normalised_in_the_step_as_the_workers_would():
    """``train_step`` on a uint8 batch with ``normalisation`` takes the same step (loss and weights)
    as on the batch normalised beforehand; without ``normalisation`` it is refused."""
    from tubelet.data.transforms import normalize

    mean, std = (0.45, 0.40, 0.35), (0.22, 0.23, 0.24)
    video = torch.randint(0, 256, (2, 3, 4, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    label = torch.tensor([0, 1])

    def step(batch, **options):
        torch.manual_seed(0)
        model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=2, depth=1, embed_dim=32, num_heads=2,
                                     num_frames=4, img_size=16)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        state = TrainState(model, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                           torch.amp.GradScaler("cpu", enabled=False), None, ckpt.Progress())
        loss = train_step(state, [batch], device=torch.device("cpu"), amp_dtype=None, clip_grad=None, mixup=None, seed=0,
                          loss_fn=lambda logits, target: torch.nn.functional.cross_entropy(logits, target), **options)["loss"]
        return loss, model.head.weight.detach()

    loss, weight = step({"video": video, "label": label}, normalisation=(mean, std))
    expected_loss, expected_weight = step({"video": normalize(video, mean, std, channel_dim=-4), "label": label})
    assert loss == expected_loss and torch.equal(weight, expected_weight)
    with pytest.raises(ValueError, match="a uint8 video batch needs train_step's normalisation"):
        step({"video": video, "label": label})


def test_losses_match_their_definitions():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    soft = torch.nn.functional.one_hot(labels, 3).float() * 0.9 + 0.1 / 3
    smoothed = classification_loss(logits, labels, multi_label=False, label_smoothing=0.1)
    assert torch.allclose(smoothed, classification_loss(logits, soft, multi_label=False, label_smoothing=0.0))
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = -(multi * torch.log(torch.sigmoid(logits)) + (1 - multi) * torch.log(1 - torch.sigmoid(logits))).mean()
    assert torch.allclose(classification_loss(logits, multi, multi_label=True, label_smoothing=0.0), expected)


def _final_weights(run):
    latest = ckpt.latest_checkpoint(run)
    return (safetensors.torch.load_file(str(latest / ckpt.WEIGHTS)),
            safetensors.torch.load_file(str(latest / ckpt.EMA_WEIGHTS)), latest.name)


# drop path, mixup and EMA make every source of randomness and state matter
_EXTRA = ["model.drop_path_rate=0.2", "data.mixup_alpha=0.8", "data.cutmix_alpha=1.0", "train.ema_decay=0.9",
          "train.label_smoothing=0.1"]


@pytest.mark.slow
@pytest.mark.parametrize("crash_at_step", [3, 5])  # 3: at an epoch boundary; 5: in the middle of epoch 2
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, tiny_synth, monkeypatch, crash_at_step):
    config = load_config(None, tiny_overrides(tiny_synth) + _EXTRA)
    fit(config, tmp_path / "straight", stream=io.StringIO())
    expected = _final_weights(tmp_path / "straight")

    real_step, calls = train_module.train_step, []

    def crashing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_at_step + 1:  # dies during the step after checkpoint `crash_at_step`
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "resumed", stream=io.StringIO())
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(tmp_path / "resumed").name == f"step{crash_at_step:08d}"
    with pytest.raises(ValueError, match="already holds checkpoints"):
        fit(config, tmp_path / "resumed", stream=io.StringIO())
    log = io.StringIO()
    fit(config, tmp_path / "resumed", resume=True, stream=log)
    assert "resuming from" in log.getvalue()
    weights, ema, name = _final_weights(tmp_path / "resumed")
    assert name == expected[2] == "step00000006"
    for key in expected[0]:
        assert torch.equal(weights[key], expected[0][key]), key
        assert torch.equal(ema[key], expected[1][key]), key
    steps = [r["step"] for r in train_module.read_metrics(tmp_path / "resumed") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # records of the lost step were dropped on resume


def test_every_epoch_of_a_run_comes_from_one_pass_over_the_training_stream(tmp_path, tiny_synth, monkeypatch):
    passes, real_iter = [], EpochStream.__iter__

    def counted(stream):  # a generator: counted when a pass begins, not when the DataLoader merely calls iter()
        passes.append(stream.batches_per_epoch)
        yield from real_iter(stream)

    monkeypatch.setattr(EpochStream, "__iter__", counted)
    config = load_config(None, tiny_overrides(tiny_synth) + ["data.num_workers=1", "train.save_every_steps=null"])
    fit(config, tmp_path, stream=io.StringIO())
    steps = [r["step"] for r in train_module.read_metrics(tmp_path) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6] and passes == [3]  # two epochs of three steps, one iterator


def test_run_folder_holds_config_logs_plots_and_best(tmp_path, tiny_synth):
    config = load_config(None, tiny_overrides(tiny_synth) + ["train.epochs=1", "train.save_every_steps=null"])
    metrics = fit(config, tmp_path, stream=io.StringIO())
    saved = load_config(str(tmp_path / "config.yaml"))
    assert (saved.data.mean, saved.data.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the normalisation used
    assert saved == ckpt.adopt_init_normalisation(config)[0]
    assert {"top1", "top5", "clip_top1", "per_class", "loss"} <= set(metrics)
    assert ckpt.best_record(tmp_path)["checkpoint"] == "step00000003"
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    records = train_module.read_metrics(tmp_path)
    assert [r["kind"] for r in records] == ["train", "train", "train", "val"]
    model = tubelet.load_model(ckpt.resolve_checkpoint(tmp_path))  # a checkpoint is a saved model too
    assert model.class_names[0] == "moving_right"


def test_init_from_a_checkpoint_refuses_another_head_unless_asked(tmp_path, tiny_synth):
    base = tiny_overrides(tiny_synth) + ["train.max_steps=1"]
    fit(load_config(None, base), tmp_path / "a", stream=io.StringIO())
    saved = ckpt.latest_checkpoint(tmp_path / "a")
    other = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=5, depth=1, embed_dim=32, num_heads=2,
                                 num_frames=4, img_size=16)
    tubelet.save_model(other, tmp_path / "five")
    with pytest.raises(ValueError, match=r"head.weight \(file \(5, 32\), model \(12, 32\)\).*train.new_head=true"):
        fit(load_config(None, base + [f"train.init={tmp_path / 'five'}"]), tmp_path / "b", stream=io.StringIO())
    log = io.StringIO()
    fit(load_config(None, base + [f"train.init={tmp_path / 'five'}", "train.new_head=true"]), tmp_path / "c",
        stream=log)
    assert "new head: shape-mismatched key(s) head.bias, head.weight" in log.getvalue()
    fit(load_config(None, base + [f"train.init={saved}"]), tmp_path / "d", stream=io.StringIO())


def test_init_from_a_model_saved_for_another_input_resizes_its_tables(tmp_path, tiny_synth):
    """transformers #38027: a checkpoint of 8 frames x 32 px starts a run of 4 x 16 as
    ``tubelet.load_model(path, num_frames=4, img_size=16)`` would rebuild it; another depth stays refused."""
    torch.manual_seed(0)
    tubelet.save_model(tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=12, depth=1, embed_dim=32,
                                            num_heads=2, num_frames=8, img_size=32), tmp_path / "k8x32")
    target = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=12, depth=1, embed_dim=32, num_heads=2,
                                  num_frames=4, img_size=16)
    notes = ckpt.load_init(target, tmp_path / "k8x32")
    assert notes == [f"init {tmp_path / 'k8x32'}: saved for 8 frames of 32 px, rebuilt for 4 of 16 (positional tables resized)"]
    expected = tubelet.load_model(tmp_path / "k8x32", num_frames=4, img_size=16).state_dict()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert target.state_dict()["pos_embed.temporal"].shape == (1, 4, 32)

    log = io.StringIO()
    fit(load_config(None, tiny_overrides(tiny_synth) + ["train.max_steps=1", f"train.init={tmp_path / 'k8x32'}"]),
        tmp_path / "run", stream=log)
    assert "rebuilt for 4 of 16 (positional tables resized)" in log.getvalue()

    deeper = tubelet.create_model("timesformer_divided_tiny_p8_8x32", num_classes=12, depth=2, embed_dim=32, num_heads=2,
                                  num_frames=4, img_size=16)
    with pytest.raises(ValueError, match=r"k8x32/model.safetensors: missing keys: blocks.1.attn.temporal_norm.weight") as error:
        ckpt.load_init(deeper, tmp_path / "k8x32")
    assert "new_head" not in str(error.value)  # the hint only where the classifier differs
