"""train.parallel (DDP, FSDP2), gradient accumulation and activation checkpointing over 2 gloo
processes on the CPU, against one process at the same global batch; checkpoints moved between
world sizes and strategies. One torchrun launch trains every 2-process run (tests/engine/parallel_worker.py)."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import load_config
from tubelet.engine.distributed import NO_MULTICAST, launch_environment
from tubelet.engine.resume import read_run_config
from tubelet.engine.run_log import read_metrics
from tubelet.engine.train import fit

from .synth_fixture import tiny_overrides

WORKER = Path(__file__).with_name("parallel_worker.py")
# Two blocks (FSDP shards each, checkpointing recomputes each), no dropout; SGD with clipping on
# (the norm of sharded gradients); 11 validation videos, one a batch: the ranks' shards (6 and 5)
# run different numbers of forward passes.
_SHARED = ["model.depth=2", "train.device=cpu", "train.optimizer=sgd", "train.lr=0.1", "train.clip_grad=0.5",
           "train.save_every_steps=null", "eval.batch_size=1"]
TWO_PROCESS = {  # run name -> overrides
    "ddp_accum_ckpt": ["train.parallel=ddp", "train.accum_steps=2", "train.grad_checkpointing=true"],
    "fsdp_accum": ["train.parallel=fsdp", "train.accum_steps=2"],
    "fsdp_ckpt": ["train.parallel=fsdp", "train.grad_checkpointing=true"],
}


def _overrides(synth: Path, val: Path, *extra: str) -> list[str]:
    return tiny_overrides(synth) + _SHARED + [f"data.val={val}", *extra]


def _weights(run: Path) -> tuple[str, dict[str, torch.Tensor]]:
    latest = ckpt.latest_checkpoint(run)
    return latest.name, safetensors.torch.load_file(str(latest / ckpt.WEIGHTS))


def _assert_same_weights(run: Path, reference: Path) -> None:
    (name, weights), (ref_name, expected) = _weights(run), _weights(reference)
    assert name == ref_name == "step00000006"
    assert weights.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=f"{run.name}: {key}")


def _truncated_copy(run: Path, to: Path) -> Path:
    """``run`` as it stood after its first epoch (step 3): later checkpoints and log lines dropped."""
    shutil.copytree(run, to)
    shutil.rmtree(to / ckpt.CHECKPOINTS / "step00000006")
    (to / ckpt.CHECKPOINTS / ckpt.BEST).unlink(missing_ok=True)
    return to


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_synth):
    """The one-process reference (accumulation and checkpointing off), then one torchrun launch of
    2 processes training each of ``TWO_PROCESS`` and resuming the reference's step-3 checkpoint
    under FSDP. Returns the root folder and the launch's stderr."""
    root = tmp_path_factory.mktemp("parallel")
    lines = (tiny_synth / "val.csv").read_text().splitlines(keepends=True)
    val = root / "val_odd.csv"
    val.write_text("".join(lines[:-1]).replace("videos/", f"{tiny_synth}/videos/"))  # header + 11 videos
    fit(load_config(None, _overrides(tiny_synth, val)), root / "single", stream=io.StringIO())
    _truncated_copy(root / "single", root / "single_to_fsdp2")
    jobs = [{"out": str(root / name), "overrides": _overrides(tiny_synth, val, *extra)}
            for name, extra in TWO_PROCESS.items()]
    jobs.append({"out": str(root / "single_to_fsdp2"), "resume": True, "overrides": ["train.parallel=fsdp"]})
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
         str(root / "jobs.json")],
        env=launch_environment(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", TWO_PROCESS)
def test_two_processes_match_one_at_the_same_global_batch(runs, name):
    """2 gloo processes (DDP or FSDP2; 2 micro-batches of 1 clip each with accumulation, else 1 of
    2; blocks recomputed in backward or not) end with the weights of one process taking batches of
    4 whole, and log the same clipped gradient norms and validation results."""
    root, _ = runs
    _assert_same_weights(root / name, root / "single")
    logged, expected = read_metrics(root / name), read_metrics(root / "single")
    assert any(r["grad_norm"] > 0.5 for r in expected if r["kind"] == "train")  # clipping acted
    assert [r["kind"] for r in logged] == [r["kind"] for r in expected]
    for got, want in zip(logged, expected):
        if got["kind"] == "train":
            assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
        else:
            assert got["videos"] == want["videos"] == 11
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
            assert got["top1"] == want["top1"]


@pytest.mark.slow
def test_fsdp_runs_say_so_and_shard(runs):
    _, stderr = runs
    assert "FSDP2 over 2 process(es), gloo backend, cpu" in stderr
    assert "DDP over 2 process(es), gloo backend, cpu" in stderr


@pytest.mark.slow
def test_checkpoints_move_between_one_and_two_processes_under_fsdp(runs, tmp_path):
    """A one-process run resumed on 2 FSDP2 processes, and an FSDP2 run of 2 processes resumed on
    one, each end where the uninterrupted one-process run does: the checkpoint holds the whole
    (gathered) weights and optimiser state, as a plain model's."""
    root, stderr = runs
    assert "step 3 of 6" in stderr
    _assert_same_weights(root / "single_to_fsdp2", root / "single")
    moved = _truncated_copy(root / "fsdp_ckpt", tmp_path / "fsdp2_to_single")
    log = io.StringIO()
    fit(read_run_config(moved, ["train.parallel=ddp"]), moved, resume=True, stream=log)
    assert "resuming from" in log.getvalue() and "step 3 of 6" in log.getvalue()
    _assert_same_weights(moved, root / "single")


@pytest.mark.slow
def test_an_fsdp_checkpoint_is_a_plain_one(runs):
    """The files are those of a one-process run: full tensors and an optimiser state numbered as
    ``optimizer.state_dict()`` numbers it (what ``tubelet eval`` and ``load_model`` read)."""
    root, _ = runs
    sharded, plain = ckpt.latest_checkpoint(root / "fsdp_accum"), ckpt.latest_checkpoint(root / "single")
    for key, value in safetensors.torch.load_file(str(plain / ckpt.WEIGHTS)).items():
        assert safetensors.torch.load_file(str(sharded / ckpt.WEIGHTS))[key].shape == value.shape
    got, want = ckpt.load_state(sharded)["optimizer"], ckpt.load_state(plain)["optimizer"]
    assert sorted(got["state"]) == sorted(want["state"])
    assert [g["params"] for g in got["param_groups"]] == [g["params"] for g in want["param_groups"]]
    for index, entry in want["state"].items():
        torch.testing.assert_close(got["state"][index]["momentum_buffer"], entry["momentum_buffer"],
                                   rtol=1e-4, atol=1e-5)


def test_launch_environment_turns_nvlink_multicast_off():
    env = launch_environment({"PATH": "/bin", "NCCL_NVLS_ENABLE": "1"}, OMP_NUM_THREADS="1")
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", **NO_MULTICAST}
    assert NO_MULTICAST == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                            "NVSHMEM_DISABLE_NVLS": "1"}


@pytest.fixture
def one_process_group():
    """A gloo process group of this process alone, as ``torchrun --nproc-per-node 1`` makes."""
    import socket

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _small_model():
    import tubelet

    torch.manual_seed(0)
    return tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", num_classes=3, depth=2)


def test_fsdp_shards_each_block_and_accumulates_without_reducing(one_process_group):
    """``wrap_model`` shards every block of every group and the root; under ``gradient_sync(False)``
    backward leaves the sharded gradients unset (nothing reduced), and the synced backward that
    follows holds the sum of both micro-batches' gradients."""
    from torch.distributed.fsdp import FSDPModule

    from tubelet.engine.distributed import DistContext
    from tubelet.engine.parallel import gradient_sync, transformer_blocks, wrap_model

    reference, model = _small_model(), _small_model()
    blocks = transformer_blocks(model)
    assert len(blocks) == len(model.blocks) + len(model.temporal_blocks) == 6  # 2 spatial, 4 temporal
    sharded = wrap_model(model, "fsdp", DistContext(0, 1, torch.device("cpu"), joined=True), None)
    assert sharded is model and all(isinstance(m, FSDPModule) for m in [model, *blocks])
    first, second = torch.randn(2, 3, 8, 32, 32), torch.randn(2, 3, 8, 32, 32)
    with gradient_sync(model, enabled=False):
        model(first).sum().backward()
    assert all(p.grad is None for p in model.parameters())
    with gradient_sync(model, enabled=True):
        model(second).sum().backward()
    (reference(first).sum() + reference(second).sum()).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_accumulation_micro_batches_skip_the_all_reduce(one_process_group):
    from tubelet.engine.distributed import DistContext
    from tubelet.engine.parallel import gradient_sync, wrap_model

    ddp = wrap_model(_small_model(), "ddp", DistContext(0, 1, torch.device("cpu"), joined=True), None)
    with gradient_sync(ddp, enabled=False):
        assert ddp.require_backward_grad_sync is False
    with gradient_sync(torch.compile(ddp), enabled=False):  # the wrapper train.compile adds
        assert ddp.require_backward_grad_sync is False
    assert ddp.require_backward_grad_sync is True


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "vivit_factorised_encoder_tiny_p8t2_8x32",
                                  "xvit_tiny_p8_8x32", "mvitv2_tiny_8x32", "lvt_tiny_p8_8x32"])
def test_activation_checkpointing_recomputes_each_block_with_the_same_gradients(name):
    """``train.grad_checkpointing``: every block of every family runs again in backward (its
    activations were not kept), and the gradients are those of the plain backward (no dropout)."""
    import tubelet
    from tubelet.engine.parallel import transformer_blocks

    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, drop_rate=0.0, drop_path_rate=0.0)
    calls = []
    for block in transformer_blocks(model):
        block.register_forward_pre_hook(lambda module, args: calls.append(module))  # recompute stops early
    video = torch.randn(2, 3, 8, 32, 32)
    grads = {}
    for checkpointing in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        calls.clear()
        model(video).sum().backward()
        grads[checkpointing] = [p.grad.clone() for p in model.parameters()]
        assert len(calls) == len(transformer_blocks(model)) * (2 if checkpointing else 1)
    for plain, recomputed in zip(grads[False], grads[True]):
        torch.testing.assert_close(recomputed, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["train.parallel=zero"], "config key 'train.parallel' must be 'ddp' or 'fsdp', got 'zero'"),
    (["train.parallel=fsdp", "train.ema_decay=0.99"], "train.ema_decay=0.99 is not supported with train.parallel=fsdp"),
    (["train.parallel=fsdp", "train.precision=fp16"], "train.precision=fp16 is not supported with train.parallel=fsdp"),
])
def test_settings_fsdp_cannot_train_with_are_refused_naming_the_key(tiny_synth, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        fit(load_config(None, tiny_overrides(tiny_synth) + ["train.device=cpu", *overrides]), tmp_path,
            stream=io.StringIO())
    assert not (tmp_path / "config.yaml").exists()


def test_fsdp_state_round_trips_in_a_plain_models_layout(one_process_group):
    """AdamW with layer-wise decay (one group per depth and decay): after the same two steps,
    ``full_state`` of the sharded model equals the plain model's ``state_dict()``s, and loading
    it into a fresh sharded model and optimiser gives it back (the FQN <-> index mapping)."""
    from tubelet.engine.config import TrainConfig
    from tubelet.engine.distributed import DistContext
    from tubelet.engine.optim import build_optimizer
    from tubelet.engine.parallel import full_state, load_full_state, wrap_model

    settings = TrainConfig(optimizer="adamw", lr=1e-3, layer_decay=0.75, weight_decay=0.05)
    context = DistContext(0, 1, torch.device("cpu"), joined=True)
    plain, sharded = _small_model(), wrap_model(_small_model(), "fsdp", context, None)
    plain_opt, sharded_opt = build_optimizer(plain, settings), build_optimizer(sharded, settings)
    assert len(plain_opt.param_groups) > 2
    for seed in (1, 2):
        video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))
        for model, optimizer in ((plain, plain_opt), (sharded, sharded_opt)):
            model(video).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    weights, state = full_state(sharded, sharded_opt)
    expected = plain_opt.state_dict()

    def assert_same(weights, state):
        torch.testing.assert_close(weights, plain.state_dict(), rtol=1e-5, atol=1e-6)
        assert [g["params"] for g in state["param_groups"]] == [g["params"] for g in expected["param_groups"]]
        assert [g["lr"] for g in state["param_groups"]] == [g["lr"] for g in expected["param_groups"]]
        torch.testing.assert_close(state["state"], expected["state"], rtol=1e-5, atol=1e-6)

    assert_same(weights, state)
    fresh = wrap_model(_small_model(), "fsdp", context, None)
    fresh_opt = build_optimizer(fresh, settings)
    load_full_state(fresh, fresh_opt, weights, state)
    assert_same(*full_state(fresh, fresh_opt))


def _tiny_models() -> list[str]:
    import tubelet

    return [name for name in tubelet.list_models() if "_tiny_" in name]


def test_every_family_has_a_tiny_model_here():
    families = {name.split("_")[0] for name in _tiny_models()}
    assert {"timesformer", "vivit", "videomae", "xvit", "tsm", "mvitv2", "lvt"} <= families


@pytest.mark.parametrize("name", _tiny_models())
def test_every_model_uses_every_parameter_and_shards_under_fsdp(one_process_group, name):
    """Every parameter gets a gradient (DDP needs no find_unused_parameters), and the model sharded
    by FSDP2 gives the plain model's logits and gradients."""
    import tubelet
    from tubelet.engine.distributed import DistContext
    from tubelet.engine.parallel import wrap_model

    def build():
        torch.manual_seed(0)
        return tubelet.create_model(name, num_classes=3, drop_rate=0.0, drop_path_rate=0.0)

    plain, sharded = build(), wrap_model(build(), "fsdp", DistContext(0, 1, torch.device("cpu"), joined=True), None)
    meta = plain.metadata
    video = torch.randn(2, 3, meta.num_frames, meta.img_size, meta.img_size)
    expected, got = plain(video), sharded(video)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    expected.square().sum().backward()
    got.square().sum().backward()
    assert [k for k, p in plain.named_parameters() if p.grad is None] == []
    for (key, p), q in zip(sharded.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-6, msg=key)
