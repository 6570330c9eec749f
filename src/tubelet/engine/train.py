"""Training: ``fit`` runs a recipe end to end, as ``setup_run`` (build or restore everything the run
needs) then ``train_loop`` (train, validate, checkpoint); ``train_one_epoch`` is one pass over the data.

One optimiser step sees ``train.batch_size`` clips: ``accum_steps`` micro-batches on each of the
``world_size`` processes, so a recipe means the same optimisation on any number of GPUs. The
loss of a micro-batch is divided by ``accum_steps`` and DDP averages over processes, so the
gradient is the mean over the whole batch either way.

Randomness has one owner per purpose, each a function of the seed and of where training stands,
so that a run killed at any moment and resumed from its last checkpoint continues with the draws
the uninterrupted run made:
  data order     the sampler's permutation of (seed, epoch), sharded by rank
  augmentation   each sample's generator, seeded by (seed, epoch, index)
  mixup/cutmix   a generator of (seed, global step, rank, micro-batch)
  the model      dropout and drop path draw from torch's global generators, which ``train_step``
                 reseeds from (seed, global step, rank) before each step; Performer's random
                 features are redrawn between steps from their own state (a buffer)
A checkpoint stores the progress and everything else stateful (optimiser, scheduler, grad
scaler, EMA). Because no generator state is carried across steps, a run resumed on another
number of processes continues with the same data order and the same global batches; only the
split of each batch over the ranks and so the dropout masks differ (and float reductions).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TextIO

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from tubelet.convert.imagenet import init_from_image, is_image_checkpoint
from tubelet.data.datasets import derive_seed
from tubelet.data.failures import FailureTracker
from tubelet.data.mixup import MixupCutmix
from tubelet.data.transforms import normalised_on
from tubelet.engine import checkpoint as ckpt
from tubelet.engine.config import Config, check_limits, config_to_dict, load_config, save_config
from tubelet.engine.device import autocast, autocast_dtype
from tubelet.engine.distributed import DistContext, barrier, init_distributed, shutdown_distributed
from tubelet.engine.ema import ModelEma
from tubelet.engine.evaluate import evaluate
from tubelet.engine.inputs import eval_loader, read_split, train_split, train_stream
from tubelet.engine.optim import build_optimizer
from tubelet.engine.parallel import (check_parallel, clip_grad_norm, full_state, gradient_sync, load_full_state,
                                     whole_weights, wrap_model)
from tubelet.engine.plots import plot_confusion, plot_curves
from tubelet.engine.progress import ProgressBar, format_duration
from tubelet.engine.resume import RUN_CONFIG, check_resume_changes, read_run_config, resume_checkpoint
from tubelet.engine.run_log import RunLog, read_metrics
from tubelet.engine.schedule import build_scheduler
from tubelet.models.serialization import model_record

PLOTS = "plots"


def classification_loss(logits: torch.Tensor, target: torch.Tensor, *, multi_label: bool,
                        label_smoothing: float) -> torch.Tensor:
    """Mean loss of ``logits [B, K]``: binary cross-entropy for multi-hot targets ``[B, K]``; cross-entropy
    for class indices ``[B]`` (with label smoothing) or for soft targets ``[B, K]`` (mixup, already smoothed)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, target)
    if target.is_floating_point():
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


@dataclass
class TrainState:
    """Everything a checkpoint restores. ``model`` is what runs (DDP / compiled); ``module`` the plain model."""

    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    progress: ckpt.Progress


_MODEL_STREAM, _MIXUP_STREAM = 0, 1  # the two generators seeded from a step's seed


def advance_random_features(model: nn.Module) -> None:
    """Tell the modules that keep random features (Performer's ``after_optimizer_step``) that a step is done."""
    for module in model.modules():
        hook = getattr(module, "after_optimizer_step", None)
        if hook is not None:
            hook()


def train_step(state: TrainState, micro_batches: list[dict], *, device: torch.device, amp_dtype: torch.dtype | None,
               clip_grad: float | None, loss_fn: Callable, mixup: MixupCutmix | None, seed: int,
               normalisation: tuple[Sequence[float], Sequence[float]] | None = None) -> dict[str, float]:
    """One optimiser step over ``micro_batches`` (gradient accumulation); returns loss, lr, grad norm.

    ``seed`` (a function of the run's seed, the global step and the rank) seeds torch's global
    generators, which dropout and drop path draw from, and each micro-batch's mixup generator.
    A uint8 batch (``TrainTransform(output_dtype=torch.uint8)``) is normalised on ``device`` with
    ``normalisation = (mean, std)``."""
    state.model.train()
    torch.manual_seed(derive_seed(seed, _MODEL_STREAM))  # CPU and every CUDA device
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        video = normalised_on(device, batch["video"], normalisation, what="train_step")  # [B, C, T, H, W]
        target = batch["label"].to(device, non_blocking=True)
        if mixup is not None:
            generator = torch.Generator().manual_seed(derive_seed(seed, _MIXUP_STREAM, i))
            video, target = mixup(video, target, generator=generator)
        with gradient_sync(state.model, enabled=i == len(micro_batches) - 1):
            with autocast(device, amp_dtype):
                logits = state.model(video)
            loss = loss_fn(logits.float(), target) / len(micro_batches)
            state.scaler.scale(loss).backward()
        total += loss.detach()
    grad_norm = float("nan")
    if clip_grad is not None:
        state.scaler.unscale_(state.optimizer)
        grad_norm = clip_grad_norm(state.module.parameters(), clip_grad)
    lr = max(group["lr"] for group in state.optimizer.param_groups)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    advance_random_features(state.module)
    if state.ema is not None:
        state.ema.update(state.module)
    return {"loss": float(total), "lr": lr, "grad_norm": grad_norm}


def train_one_epoch(state: TrainState, batches: Iterable[dict], *, steps: int, accum_steps: int,
                    device: torch.device, amp_dtype: torch.dtype | None, clip_grad: float | None, loss_fn: Callable,
                    mixup: MixupCutmix | None, seed: int, rank: int, failures: FailureTracker,
                    normalisation: tuple[Sequence[float], Sequence[float]] | None = None) -> Iterator[dict[str, float]]:
    """Optimiser steps ``progress.step_in_epoch .. steps - 1`` of the epoch ``progress.epoch``,
    yielding each step's statistics (and the clips it saw) after updating ``state.progress``.
    ``batches`` (a loader, or the run's iterator over its stream) begins at the first of these steps."""
    batches = iter(batches)
    while state.progress.step_in_epoch < steps:
        micro = [next(batches) for _ in range(accum_steps)]
        for batch in micro:
            failures.update(batch["failed"], len(batch["index"]))
        stats = train_step(state, micro, device=device, amp_dtype=amp_dtype, clip_grad=clip_grad, loss_fn=loss_fn,
                           mixup=mixup, seed=derive_seed(seed, state.progress.global_step, rank), normalisation=normalisation)
        state.progress.step_in_epoch += 1
        state.progress.global_step += 1
        yield {**stats, "clips": sum(len(b["index"]) for b in micro)}


def build_model(config: Config, num_classes: int, class_names: list[str], multi_label: bool = False) -> nn.Module:
    """The recipe's architecture for ``num_classes`` classes, at the data's frame count and size
    unless ``model.num_frames`` / ``model.img_size`` say otherwise; its metadata from the recipe's
    data and eval sections, and whether the data is multi-label."""
    from tubelet import create_model

    args = {"num_frames": config.data.num_frames, "img_size": config.data.img_size, **config.model.args}
    if args.setdefault("num_classes", num_classes) != num_classes:
        raise ValueError(f"model.num_classes={args['num_classes']} but {config.data.train} has {num_classes} classes")
    model = create_model(config.model.name, **args)
    model.class_names = list(class_names)
    model.metadata = ckpt.metadata_from_config(config, model.metadata.num_frames, model.metadata.img_size,
                                               {"format": "tubelet train", "init": config.train.init}, multi_label)
    return model


def _micro_batch(config: Config, world_size: int) -> int:
    per_step = world_size * config.train.accum_steps
    if config.train.batch_size % per_step:
        raise ValueError(f"train.batch_size={config.train.batch_size} must be a multiple of processes x "
                         f"train.accum_steps = {world_size} x {config.train.accum_steps}")
    return config.train.batch_size // per_step


def _save(run: Run) -> Path | None:
    """A checkpoint of the current step (every rank calls it; rank 0 writes)."""
    state = run.state
    weights, optimizer = full_state(state.module, state.optimizer)  # gathered where FSDP shards them
    payload = {"optimizer": optimizer, "scheduler": state.scheduler.state_dict(), "scaler": state.scaler.state_dict()}
    if not run.dist.is_main:
        return None
    return ckpt.save_checkpoint(
        run.run_dir, model=state.module, weights=weights,
        model_config=model_record(state.module, state.module.class_names),
        state=payload, progress=state.progress, ema=state.ema.module if state.ema else None,
        recipe=yaml.safe_dump(config_to_dict(run.config), sort_keys=False), keep_last=run.config.train.keep_last,
    )


def _restore(state: TrainState, checkpoint: Path) -> None:
    saved = ckpt.load_state(checkpoint)
    load_full_state(state.module, state.optimizer, ckpt.read_matching_weights(state.module, checkpoint / ckpt.WEIGHTS),
                    saved["optimizer"])
    if state.ema is not None:
        ckpt.load_weights(state.ema.module, checkpoint / ckpt.EMA_WEIGHTS)
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    state.progress = saved["progress"]


def _say(dist: DistContext, stream: TextIO, message: str) -> None:
    if dist.is_main:
        print(message, file=stream)


def _prepare_run_dir(run_dir: Path, config: Config, resume: bool, allow_changes: bool, dist: DistContext,
                     stream: TextIO) -> Path | None:
    """The checkpoint to resume from (None: from the start). Without ``resume`` a folder that holds
    checkpoints is refused; with it, ``config`` is checked against the run's own config.yaml."""
    latest = None
    if resume:
        for note in check_resume_changes(read_run_config(run_dir), config, run_dir, allow_changes=allow_changes):
            _say(dist, stream, note)
        latest, notes = resume_checkpoint(run_dir)
        for note in notes:
            _say(dist, stream, note)
        if latest is None:
            _say(dist, stream, f"{run_dir} has no checkpoint yet (stopped before its first save): training from "
                               f"the start with its {RUN_CONFIG}")
    elif ckpt.latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds checkpoints (latest {ckpt.latest_checkpoint(run_dir).name}); "
                         f"pass --resume to continue it or choose another --out")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / RUN_CONFIG)
    barrier()
    return latest


def _training_model(config: Config, num_classes: int, class_names: list[str], multi_label: bool, dist: DistContext,
                    stream: TextIO) -> tuple[nn.Module, nn.Module]:
    """The model on its device, initialised as ``train.init`` says, and what runs it (DDP or sharded
    by FSDP as ``train.parallel`` says, compiled)."""
    train_cfg = config.train
    torch.manual_seed(train_cfg.seed)  # the same initial weights on every rank
    model = build_model(config, num_classes, class_names, multi_label)
    if train_cfg.init:
        if is_image_checkpoint(train_cfg.init):  # an image ViT or MViTv2: tubelet.convert.imagenet's rules
            notes = init_from_image(model, train_cfg.init).lines()
        else:
            notes = ckpt.load_init(model, train_cfg.init, new_head=train_cfg.new_head)
        for note in notes:
            _say(dist, stream, note)
    if train_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(dist.device)
    running = wrap_model(model, train_cfg.parallel, dist, autocast_dtype(train_cfg.precision, dist.device))
    if dist.distributed:
        _say(dist, stream, f"{'FSDP2' if train_cfg.parallel == 'fsdp' else 'DDP'} over {dist.world_size} "
                           f"process(es), {torch.distributed.get_backend()} backend, {dist.device.type}")
    if train_cfg.compile:
        running = torch.compile(running)
    return model, running


@dataclass
class Run:
    """Everything ``train_loop`` needs, built by ``setup_run``: the state a checkpoint restores, the
    loaders, the plan of steps, the metrics log (None off rank 0 and for a finished run) and the
    checkpoint the run resumed from (None: from the start)."""

    config: Config
    run_dir: Path
    dist: DistContext
    state: TrainState
    loader: torch.utils.data.DataLoader  # the training stream (build_train_stream): every epoch in one pass
    val_loader: torch.utils.data.DataLoader | None
    class_names: tuple[str, ...]
    multi_label: bool
    mixup: MixupCutmix | None
    amp_dtype: torch.dtype | None
    micro_batch: int  # clips a process runs at a time
    steps_per_epoch: int
    total_steps: int
    resumed_from: Path | None
    log: RunLog | None
    stream: TextIO

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def finished(self) -> bool:
        return self.state.progress.global_step >= self.total_steps

    @property
    def resumed_finished(self) -> bool:
        """Resumed from a checkpoint of the last step: there is nothing to train."""
        return self.resumed_from is not None and self.finished

    def say(self, message: str) -> None:
        """Print on rank 0."""
        _say(self.dist, self.stream, message)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits, target, multi_label=self.multi_label,
                                   label_smoothing=self.config.train.label_smoothing)


def setup_run(config: Config, run_dir: str | Path, *, resume: bool = False, allow_changes: bool = False,
              stream: TextIO | None = None) -> Run:
    """Build what training ``config`` into ``run_dir`` needs: the process group, the model, its
    optimiser, schedule, grad scaler and EMA, the loaders and the log. With ``resume``, restore
    them from the run's newest loadable checkpoint and say where the run resumes from."""
    stream = stream or sys.stderr
    run_dir = Path(run_dir)
    dist = init_distributed(config.train.device)
    config, notes = ckpt.adopt_init_normalisation(config)
    for note in notes:
        _say(dist, stream, note)
    check_limits(config)  # a Config built in Python has not been through config_from_dict
    check_parallel(config.train)
    train_cfg = config.train
    micro_batch = _micro_batch(config, dist.world_size)
    amp_dtype = autocast_dtype(train_cfg.precision, dist.device)
    resume_from = _prepare_run_dir(run_dir, config, resume, allow_changes, dist, stream)

    videos = train_split(config.data)
    val_videos = read_split(config.data.val, videos.class_names, "data.val") if config.data.val else None
    model, running = _training_model(config, videos.num_classes, list(videos.class_names), videos.multi_label, dist, stream)
    ema = ModelEma(model, train_cfg.ema_decay) if train_cfg.ema_decay is not None else None
    loader = train_stream(config.data, videos, seed=train_cfg.seed, batch_size=micro_batch,
                          accum_steps=train_cfg.accum_steps, rank=dist.rank, world_size=dist.world_size)
    val_loader = None
    if val_videos is not None:
        val_loader = eval_loader(config.data, val_videos, views=config.eval.views, resize_to=config.eval.resize_to,
                                 batch_size=config.eval.batch_size, rank=dist.rank, world_size=dist.world_size,
                                 frame_cache=config.data.frame_cache)

    steps_per_epoch = loader.batch_sampler.batches_per_epoch // train_cfg.accum_steps
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size={train_cfg.batch_size} is larger than the {len(videos)} training videos")
    total_steps = train_cfg.epochs * steps_per_epoch
    if train_cfg.max_steps is not None:
        total_steps = min(total_steps, train_cfg.max_steps)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, total_steps=total_steps,
                                warmup_steps=min(total_steps, round(train_cfg.warmup_epochs * steps_per_epoch)),
                                min_factor=train_cfg.min_lr / train_cfg.lr)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16)
    state = TrainState(running, model, optimizer, scheduler, scaler, ema, ckpt.Progress())
    mixup = None
    if config.data.mixup_alpha > 0 or config.data.cutmix_alpha > 0:
        mixup = MixupCutmix(videos.num_classes, mixup_alpha=config.data.mixup_alpha,
                            cutmix_alpha=config.data.cutmix_alpha, prob=config.data.mixup_prob,
                            label_smoothing=train_cfg.label_smoothing)
    run = Run(config, run_dir, dist, state, loader, val_loader, videos.class_names, videos.multi_label, mixup,
              amp_dtype, micro_batch, steps_per_epoch, total_steps, resume_from, log=None, stream=stream)
    if resume_from is not None:
        _restore(state, resume_from)
        progress = state.progress
        if run.finished:
            run.say(f"{run_dir} is finished ({resume_from.name}: step {progress.global_step} of {total_steps}, "
                    f"{run.epochs} epochs); nothing to resume (to train longer: train.epochs=N --allow-changes)")
        else:
            run.say(f"resuming from {resume_from}: step {progress.global_step} of {total_steps}, epoch "
                    f"{progress.epoch + 1} of {run.epochs} at step {progress.step_in_epoch} of {steps_per_epoch}")
    if dist.is_main and not run.resumed_finished:  # a finished run's log is left as it is
        run.log = RunLog(run_dir, resume_step=state.progress.global_step if resume_from else None)
    return run


def _train_epoch(run: Run, batches: Iterator[dict], failures: FailureTracker, began: float) -> None:
    """The rest of the current epoch's steps from ``batches`` (the run's stream), logging the mean
    loss every ``train.log_every`` steps and at the epoch's end, and checkpointing every
    ``train.save_every_steps`` within it."""
    state, cfg, dist = run.state, run.config.train, run.dist
    epoch = state.progress.epoch
    epoch_steps = min(run.steps_per_epoch, run.total_steps - epoch * run.steps_per_epoch)
    bar = ProgressBar(epoch_steps, desc=f"epoch {epoch + 1}/{run.epochs}", start=state.progress.step_in_epoch,
                      stream=run.stream, enabled=dist.is_main and cfg.progress)
    window: list[float] = []
    for stats in train_one_epoch(state, batches, steps=epoch_steps, accum_steps=cfg.accum_steps, device=dist.device,
                                 amp_dtype=run.amp_dtype, clip_grad=cfg.clip_grad, loss_fn=run.loss, mixup=run.mixup,
                                 seed=cfg.seed, rank=dist.rank, failures=failures,
                                 normalisation=run.config.data.normalisation()):
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"the loss is {stats['loss']} at step {state.progress.global_step}; lower "
                                     f"train.lr or set train.clip_grad, and resume from the last checkpoint")
        window.append(stats["loss"])
        bar.update(stats["clips"] * dist.world_size, loss=stats["loss"], lr=stats["lr"])
        step = state.progress.global_step
        if step % cfg.log_every == 0 or state.progress.step_in_epoch == epoch_steps:
            mean_loss = dist.mean([sum(window) / len(window)])[0]
            window.clear()
            if run.log is not None:
                run.log.write("train", epoch=epoch, step=step, loss=mean_loss, lr=stats["lr"],
                              grad_norm=stats["grad_norm"], elapsed=time.perf_counter() - began)
        if cfg.save_every_steps and step % cfg.save_every_steps == 0 and state.progress.step_in_epoch < epoch_steps:
            _save(run)
    bar.close()
    if state.progress.step_in_epoch == run.steps_per_epoch:
        state.progress.epoch += 1
        state.progress.step_in_epoch = 0


def _report_validation(run: Run, epoch: int, result, saved: Path, best_value: float, began: float,
                       first_step: int) -> float:
    """Rank 0: log and print ``result``, mark ``saved`` best if it is, plot the confusion matrix;
    returns the best value so far."""
    metrics, progress = result.metrics, run.state.progress
    run.log.write("val", epoch=epoch, step=progress.global_step,
                  **{k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
    summary = " ".join(f"{k} {metrics[k]:.2f}" for k in ("top1", "top5", "map", "loss") if k in metrics)
    elapsed = time.perf_counter() - began
    left = elapsed / (progress.global_step - first_step) * (run.total_steps - progress.global_step)
    run.say(f"epoch {epoch + 1}/{run.epochs} validation: {summary} ({format_duration(elapsed)} elapsed, "
            f"about {format_duration(left)} left)")
    key = "map" if run.multi_label else "top1"
    if metrics[key] > best_value:
        best_value = metrics[key]
        ckpt.mark_best(saved, key, best_value)
    if not run.multi_label:
        views = run.config.eval.views
        title = (f"validation ({Path(run.config.data.val).name}) after epoch {epoch + 1}\n"
                 f"{views[0]}x{views[1]} views per video, top-1 {metrics['top1']:.1f}%")
        plot_confusion(result.confusion, run.class_names, run.run_dir / PLOTS / "confusion.png", title=title)
    return best_value


def train_loop(run: Run) -> dict:
    """Train ``run`` from where its progress stands to its last step. Each epoch ends with validation
    (every ``eval.every`` epochs and after the last), a checkpoint and the plots. Returns the last
    validation metrics (empty when none ran)."""
    state = run.state
    best = ckpt.best_record(run.run_dir)
    best_value = best["value"] if best else -math.inf
    failures = FailureTracker(run.config.data.max_decode_failures)
    metrics: dict = {}
    began, first_step = time.perf_counter(), state.progress.global_step
    run.loader.batch_sampler.seek(state.progress.epoch, state.progress.step_in_epoch * run.config.train.accum_steps)
    batches = iter(run.loader)  # one pass for every epoch: the workers run on across their ends
    while not run.finished:
        epoch = state.progress.epoch
        _train_epoch(run, batches, failures, began)
        validate = run.val_loader is not None and ((epoch + 1) % run.config.eval.every == 0 or run.finished)
        if validate:
            with whole_weights(state.module):  # shards of the videos may differ in length
                result = evaluate(state.ema.module if state.ema else state.module, run.val_loader,
                                  device=run.dist.device, amp_dtype=run.amp_dtype, multi_label=run.multi_label,
                                  normalisation=run.config.data.normalisation())
            metrics = result.metrics
        saved = _save(run)
        if run.dist.is_main:
            if validate:
                best_value = _report_validation(run, epoch, result, saved, best_value, began, first_step)
            plot_curves(read_metrics(run.run_dir), run.run_dir / PLOTS)
        barrier()
    if run.log is not None:
        run.log.close()
    return metrics


def fit(config: Config, run_dir: str | Path, *, resume: bool = False, allow_changes: bool = False,
        stream: TextIO | None = None) -> dict:
    """Train ``config`` into ``run_dir``: checkpoints, metrics.jsonl, TensorBoard events, plots.

    With ``resume``, continue from the run's newest loadable checkpoint; ``config`` must then be the
    run's own (``read_run_config``) except for keys that do not change what is trained, unless
    ``allow_changes``. ``data.mean`` / ``data.std`` left unset take the normalisation recorded with
    ``train.init``'s weights (``tubelet.engine.checkpoint.adopt_init_normalisation``; a differing
    explicit one is warned about). Returns the last validation metrics (empty without ``data.val``;
    for a run that had finished, those it logged). Under ``torchrun`` every process calls this; rank 0 writes.
    """
    run = setup_run(config, run_dir, resume=resume, allow_changes=allow_changes, stream=stream)
    if run.resumed_finished:
        return next((r for r in reversed(read_metrics(run.run_dir)) if r["kind"] == "val"), {})
    return train_loop(run)


def train_from_recipe(recipe: str | None, overrides: list[str], run_dir: str | Path, *, resume: bool = False,
                      allow_changes: bool = False) -> dict:
    """``tubelet train``: load and check the recipe (when resuming, the run's own config.yaml: the
    recipe is not read again), then ``fit``; leaves the process group torchrun set up."""
    config = read_run_config(run_dir, overrides) if resume else load_config(recipe, overrides)
    try:
        return fit(config, run_dir, resume=resume, allow_changes=allow_changes)
    finally:
        shutdown_distributed()
