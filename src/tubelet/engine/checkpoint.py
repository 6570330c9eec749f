"""Checkpoints: one folder per save, written atomically, the last N kept plus the best.

A checkpoint folder ``RUN/checkpoints/step00001234/`` holds
  model.safetensors   the weights (also readable by ``tubelet.load_model``, with config.json)
  config.json         architecture, constructor arguments, class names and metadata (as save_model)
  recipe.yaml         the run's resolved config (frames, size, sampling and views for testing)
  ema.safetensors     the averaged weights, when EMA is on
  state.pt            optimiser, scheduler, grad scaler, progress (no generator states: training
                      seeds its generators from the progress, see ``tubelet.engine.train``)
It is assembled in a hidden temporary folder, every file fsynced, then renamed into place, so a
process killed while saving leaves the previous checkpoints untouched and no partial folder under a
checkpoint's name. ``best.json`` names the best checkpoint and is itself replaced atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tubelet.convert.imagenet import is_image_checkpoint
from tubelet.engine.config import Config, DataConfig, EvalConfig, ModelConfig, load_config
from tubelet.files import atomic_folder, atomic_write_json, remove_folder, sweep_temporary
from tubelet.models.serialization import for_input, load_model, read_config, read_weights
from tubelet.models.metadata import ModelMetadata

CHECKPOINTS = "checkpoints"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
STATE = "state.pt"
MODEL_CONFIG = "config.json"
RECIPE = "recipe.yaml"
BEST = "best.json"


@dataclass
class Progress:
    """Where training stands: ``step_in_epoch`` optimiser steps of ``epoch`` are done."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


def _plain(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return _plain(module.state_dict())


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: nn.Module,
    model_config: dict[str, Any],
    state: dict[str, Any],
    progress: Progress,
    ema: nn.Module | None = None,
    recipe: str = "",
    keep_last: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``RUN/checkpoints/step<global_step>/`` atomically and prune old ones; returns its path.

    ``weights`` are ``model``'s when they are not its ``state_dict()`` (a sharded model's, gathered:
    ``tubelet.engine.parallel.full_state``). ``model_config`` is the JSON written as config.json;
    ``state`` holds the optimiser, scheduler and scaler states (anything ``torch.save`` can store
    and ``weights_only`` can load); ``recipe`` is the run's config as YAML text.
    """
    folder = Path(run_dir) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temporary(folder)  # left by a process killed while saving
    final = folder / f"step{progress.global_step:08d}"
    with atomic_folder(final) as tmp:
        save_file(_weights(model) if weights is None else _plain(weights), str(tmp / WEIGHTS))
        if ema is not None:
            save_file(_weights(ema), str(tmp / EMA_WEIGHTS))
        (tmp / MODEL_CONFIG).write_text(json.dumps(model_config, indent=2) + "\n")
        torch.save({**state, "progress": asdict(progress)}, tmp / STATE)
        if recipe:
            (tmp / RECIPE).write_text(recipe)
    _prune(folder, keep_last)
    return final


def mark_best(checkpoint: Path, metric: str, value: float) -> None:
    """Record ``checkpoint`` as the best so far (``best.json`` beside it); pruning spares it."""
    atomic_write_json(checkpoint.parent / BEST, {"checkpoint": checkpoint.name, "metric": metric, "value": value})


def best_record(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CHECKPOINTS / BEST
    return json.loads(path.read_text()) if path.is_file() else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in folder.glob("step*") if p.is_dir())


def _prune(folder: Path, keep_last: int) -> None:
    best = best_record(folder.parent)
    keep = {best["checkpoint"]} if best else set()
    found = list_checkpoints(folder.parent)
    for old in found[: max(0, len(found) - keep_last)]:
        if old.name not in keep:
            remove_folder(old)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder (its best, else its latest) or a
    saved-model folder."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if (path / MODEL_CONFIG).is_file():
        raise FileNotFoundError(f"{path} has a {MODEL_CONFIG} but no {WEIGHTS}: the weights are missing")
    run_dir = path.parent if path.name == CHECKPOINTS else path
    best = best_record(run_dir)
    if best and (run_dir / CHECKPOINTS / best["checkpoint"] / WEIGHTS).is_file():
        return run_dir / CHECKPOINTS / best["checkpoint"]
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise FileNotFoundError(f"{path} is not a checkpoint, a saved model or a run folder with checkpoints")
    return latest


def load_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint (``progress`` as a ``Progress``), loaded with ``weights_only``
    (tensors and plain containers, no code); a missing or damaged file is an error naming it."""
    path = Path(checkpoint) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {checkpoint} is a saved model, not a training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["progress"] = Progress(**state["progress"])
    except Exception as error:  # torch.load raises many kinds on a torn or foreign file
        raise ValueError(f"{path} is not a readable training state (truncated or damaged: "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    return state


def check_checkpoint(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint folder (None: every file reads), without building a model."""
    try:
        read_config(checkpoint)
        read_weights(checkpoint / WEIGHTS)
        if (checkpoint / EMA_WEIGHTS).exists():
            read_weights(checkpoint / EMA_WEIGHTS)
        load_state(checkpoint)
    except (ValueError, FileNotFoundError) as error:
        return str(error)
    return None


def load_weights(
    model: nn.Module, path: str | Path, *, new_head: bool = False, head_prefix: str = "head."
) -> list[str]:
    """Load a safetensors file into ``model``, refusing any key that is missing, unexpected or of
    another shape, named in the error. With ``new_head``, differences confined to the classifier
    (``head_prefix``) are allowed: those parameters keep their fresh initialisation. Returns notes
    on what was left out (empty when everything matched)."""
    return _load_state(model, read_weights(path), path, new_head=new_head, head_prefix=head_prefix)


def read_matching_weights(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file, refused as ``load_weights`` refuses them unless they match
    ``model``'s keys and shapes, not loaded (a sharded model loads them its own way)."""
    loaded = read_weights(path)
    _check_state(model, loaded, path, new_head=False, head_prefix="head.")
    return loaded


def load_init(model: nn.Module, init: str | Path, *, new_head: bool = False) -> list[str]:
    """``train.init``'s weights (a checkpoint, a run's best, a saved or converted model) into
    ``model``, as ``load_weights`` loads them; a model saved for other frames or another size is
    first rebuilt for ``model``'s, its positional tables resized as ``tubelet.load_model(path,
    num_frames=..., img_size=...)`` resizes them, which the first note says."""
    folder = resolve_checkpoint(init)
    saved = load_model(folder)
    have = (saved.metadata.num_frames, saved.metadata.img_size)
    want = (model.metadata.num_frames, model.metadata.img_size)
    if have == want:
        return load_weights(model, folder / WEIGHTS, new_head=new_head)
    note = (f"init {folder}: saved for {have[0]} frames of {have[1]} px, rebuilt for {want[0]} of {want[1]} "
            f"(positional tables resized)")
    return [note, *_load_state(model, for_input(saved, *want).state_dict(), folder / WEIGHTS, new_head=new_head)]


def _load_state(model: nn.Module, loaded: dict[str, torch.Tensor], path: str | Path, *, new_head: bool,
                head_prefix: str = "head.") -> list[str]:
    notes = _check_state(model, loaded, path, new_head=new_head, head_prefix=head_prefix)
    model.load_state_dict(loaded, strict=False)
    return notes


def _check_state(model: nn.Module, loaded: dict[str, torch.Tensor], path: str | Path, *, new_head: bool,
                 head_prefix: str) -> list[str]:
    """Refuse ``loaded`` unless its keys and shapes are ``model``'s (with ``new_head``: except the
    classifier's, which are dropped from ``loaded``); returns notes on what was dropped."""
    own = model.state_dict()
    missing = [k for k in own if k not in loaded]
    unexpected = [k for k in loaded if k not in own]
    mismatched = [k for k in loaded if k in own and loaded[k].shape != own[k].shape]
    notes = []
    if new_head:
        for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (mismatched, "shape-mismatched")):
            head = [k for k in keys if k.startswith(head_prefix)]
            for k in head:
                keys.remove(k)
                loaded.pop(k, None)
            if head:
                notes.append(f"new head: {what} key(s) {', '.join(head)} left freshly initialised")
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if mismatched:
        shapes = [f"{k} (file {tuple(loaded[k].shape)}, model {tuple(own[k].shape)})" for k in mismatched]
        problems.append(f"shape mismatches: {', '.join(shapes)}")
    if problems:
        in_head = any(k.startswith(head_prefix) for k in missing + unexpected + mismatched)
        hint = "; pass train.new_head=true to train a new classifier" if in_head and not new_head else ""
        raise ValueError(f"cannot load {path}: {'; '.join(problems)}{hint}")
    return notes


def load_inference_model(path: str | Path) -> tuple[nn.Module, Config]:
    """The model of a checkpoint (its EMA weights when it has them, as validation used them), a
    run folder (its best checkpoint) or a saved-model folder, in eval mode; and the config to test
    it with: the run's recipe, or (for a bare saved model, a converted one say) its metadata."""
    from tubelet.models.serialization import load_model

    folder = resolve_checkpoint(path)
    model = load_model(folder)
    if (folder / EMA_WEIGHTS).is_file():
        load_weights(model, folder / EMA_WEIGHTS)
    if (folder / RECIPE).is_file():
        config = load_config(str(folder / RECIPE))
    else:
        config = config_from_metadata(model.config["architecture"], model.metadata)
    return model.eval(), config


def metadata_from_config(config: Config, num_frames: int, img_size: int, source: dict[str, Any] | None,
                         multi_label: bool = False) -> ModelMetadata:
    """The metadata of a model trained with ``config`` (its data and eval sections) for a
    ``num_frames x img_size`` input, on multi-label data or not."""
    data = config.data
    mean, std = data.normalisation()
    return ModelMetadata(num_frames=num_frames, img_size=img_size, mean=mean, std=std, sampling=data.sampling,
                         frame_interval=data.frame_interval, views=config.eval.views, resize_to=config.eval.resize_to,
                         multi_label=multi_label, source=source)


def config_from_metadata(architecture: str, metadata: ModelMetadata) -> Config:
    """The config to test a saved model with: its input, normalisation, sampling and views."""
    data = DataConfig(num_frames=metadata.num_frames, img_size=metadata.img_size, mean=metadata.mean, std=metadata.std,
                      sampling=metadata.sampling, frame_interval=metadata.frame_interval)
    return Config(model=ModelConfig(architecture), data=data,
                  eval=EvalConfig(views=metadata.views, resize_to=metadata.resize_to))


def recorded_normalisation(init: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` recorded with the weights ``train.init`` names: a checkpoint's, a run's (its
    best) or a saved model's metadata. None where nothing is recorded: an image ViT file; a model
    saved before metadata existed; an image initialisation converted ``--from timm`` (weights not yet
    trained on video, whose fine-tuning chooses, as the official code does: TimeSformer trains
    Google's ViT-B, made for inputs in [-1, 1], at mean 0.45 / std 0.225)."""
    if is_image_checkpoint(init):
        return None
    folder = resolve_checkpoint(init)
    raw = read_config(folder).get("metadata")
    if raw is None:
        return None
    metadata = ModelMetadata.from_dict(raw, f"{folder / MODEL_CONFIG} metadata")
    if (metadata.source or {}).get("format") == "timm":
        return None
    return metadata.mean, metadata.std


def adopt_init_normalisation(config: Config) -> tuple[Config, list[str]]:
    """The rule for the normalisation of a run that starts from ``train.init``'s weights, and
    what to tell the user about it.

    ``data.mean`` / ``data.std`` left unset take the values recorded with those weights (ImageNet's
    when none are recorded, or without ``train.init``), as the official code feeds its
    checkpoints the normalisation of the config that trained them. Set explicitly, they are kept;
    when they then differ from the recorded ones the notes hold a warning naming both. Returns
    the config with both fields set."""
    data = config.data
    recorded = recorded_normalisation(config.train.init) if config.train.init else None
    notes = []
    if recorded is None:
        mean, std = data.normalisation()
    else:
        mean, std = tuple(data.mean or recorded[0]), tuple(data.std or recorded[1])
        where = f"the train.init weights {config.train.init}"
        if data.mean is None and data.std is None:
            notes.append(f"data.mean={list(mean)} data.std={list(std)}: the normalisation recorded with {where} "
                         f"(set data.mean and data.std to choose another)")
        elif (mean, std) != tuple(recorded):
            notes.append(f"WARNING: data.mean={list(mean)} data.std={list(std)} differ from the normalisation "
                         f"recorded with {where} (mean={list(recorded[0])} std={list(recorded[1])}): the model "
                         f"starts on inputs scaled unlike those it learnt from; unset data.mean and data.std "
                         f"to adopt the recorded ones")
    return replace(config, data=replace(data, mean=mean, std=std)), notes
