"""Training configuration: typed dataclasses are the schema, recipes are YAML files checked against it.

A recipe has four sections, ``model``, ``data``, ``train`` and ``eval``. The model section is the
architecture name plus free constructor arguments (``model: {name: ..., depth: 4}``), checked
against the constructor's signature. ``key=value`` overrides address any field by its dotted name
(``train.lr=0.01``, ``model.depth=4``, ``model=NAME`` for the architecture). Values are parsed as
YAML (``4`` is an int, ``[2, 3]`` a list, ``null`` None). An unknown key or a value of the wrong
type is a ``ValueError`` naming the key and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tubelet.normalisation import IMAGENET_MEAN, IMAGENET_STD
from tubelet.files import atomic_write_text


@dataclass
class ModelConfig:
    """The architecture's registered name and overrides of its constructor arguments."""

    name: str = "timesformer_divided_tiny_p8_8x32"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the videos are and how clips are sampled and augmented."""

    train: str = ""  # video list (or folder) for training
    val: str = ""  # video list for validation; empty skips validation
    classes: str | None = None  # optional class-names file, one name a line
    num_frames: int = 8
    sampling: str = "uniform"  # "uniform": one frame from each of T equal segments; "dense": every frame_interval-th frame
    frame_interval: int = 8  # frames between sampled frames in dense sampling
    img_size: int = 224
    # normalisation (x / 255 - mean) / std, per RGB channel; unset (null): the one recorded with the
    # train.init weights, else ImageNet's (tubelet.engine.checkpoint.adopt_init_normalisation)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    num_workers: int = 4
    frame_cache: str | None = None  # a folder `tubelet cache-frames` wrote: training reads its frames instead of decoding
    max_decode_failures: float = 0.01  # stop training when a larger share of samples fails to decode
    scale: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range
    hflip: float = 0.5  # probability of a horizontal flip (0 for direction-sensitive data such as SSv2)
    auto_augment: str | None = None  # an AutoAugment policy name, e.g. "original"
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0  # 0 disables mixup
    cutmix_alpha: float = 0.0  # 0 disables cutmix
    mixup_prob: float = 1.0

    def normalisation(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)`` as the pipeline applies them: ImageNet's for a field left unset."""
        return tuple(self.mean or IMAGENET_MEAN), tuple(self.std or IMAGENET_STD)


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpointing and logging."""

    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimiser steps; the schedule then spans them
    batch_size: int = 32  # clips per optimiser step, summed over processes and accumulation steps
    accum_steps: int = 1  # gradient accumulation: each process runs batch_size / (world * accum) clips at a time
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adamw"
    lr: float = 0.005
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    layer_decay: float = 1.0  # layer-wise lr decay: block i gets lr * layer_decay ** (num_layers + 1 - layer_id)
    label_smoothing: float = 0.0
    clip_grad: float | None = None  # max global gradient norm
    ema_decay: float | None = None  # keep an exponential moving average of the weights; validate with it
    precision: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16", "fp16" or "fp32"
    grad_checkpointing: bool = False  # activation checkpointing: each block recomputed in backward (non-reentrant)
    parallel: str = "ddp"  # under torchrun: "ddp" (whole model per process) or "fsdp" (FSDP2, sharded per block)
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    init: str | None = None  # weights to start from: a checkpoint, a saved model folder, or an image model file (.pth/.pyth/.npz/.safetensors)
    new_head: bool = False  # with init: allow a classifier of another size, freshly initialised
    keep_last: int = 2  # checkpoints kept besides the best
    save_every_steps: int | None = None  # also checkpoint within epochs
    log_every: int = 10  # optimiser steps between metric-log lines
    progress: bool = True  # draw a progress bar


@dataclass
class EvalConfig:
    """Multi-view testing: ``views = [T, S]`` temporal clips x spatial crops per video."""

    views: tuple[int, int] = (1, 1)
    resize_to: int | None = None  # short side before cropping (None: data.img_size)
    batch_size: int = 8  # videos per batch (each with T*S views)
    every: int = 1  # validate every this many epochs (and after the last)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


PARALLEL = ("ddp", "fsdp")  # train.parallel (tubelet.engine.parallel)
_SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # package data; `recipes/` in the checkout links here


def _unknown_key(key: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(valid))})"
    return ValueError(f"unknown config key '{key}'{hint}")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a type annotation; ints widen to float, numeric strings ("1e-4") parse."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ValueError:
                pass
    elif origin is tuple and isinstance(value, (list, tuple)):
        items = typing.get_args(annotation)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(key, item, items[0]) for item in value)
        if len(items) == len(value):
            return tuple(_coerce(key, item, kind) for item, kind in zip(value, items))
    elif origin in (list, dict) and isinstance(value, origin):
        return value
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ValueError(f"config key '{key}' expects {_type_name(annotation)}, got {value!r}")


def model_arg_annotations(name: str) -> dict[str, Any]:
    """Constructor arguments of the registered model ``name``, with their annotations."""
    from tubelet.models.registry import constructor_arguments, get_entry

    cls = get_entry(name).cls
    hints = typing.get_type_hints(cls.__init__)
    return {arg: hints.get(arg, Any) for arg in constructor_arguments(cls)}


def _model_config(raw: Any) -> ModelConfig:
    if isinstance(raw, str):
        return ModelConfig(name=raw)
    if not isinstance(raw, dict):
        raise ValueError(f"config key 'model' expects a name or a mapping, got {raw!r}")
    raw = dict(raw)
    name = _coerce("model.name", raw.pop("name", ModelConfig.name), str)
    accepted = model_arg_annotations(name)
    args = {}
    for key, value in raw.items():
        if key not in accepted:
            raise _unknown_key(f"model.{key}", [f"model.{arg}" for arg in accepted] + ["model.name"])
        args[key] = _coerce(f"model.{key}", value, accepted[key])
    return ModelConfig(name=name, args=args)


def _section(name: str, schema: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"config key '{name}' expects a mapping, got {raw!r}")
    hints = typing.get_type_hints(schema)
    values = {}
    for key, value in raw.items():
        if key not in hints:
            raise _unknown_key(f"{name}.{key}", [f"{name}.{valid}" for valid in hints])
        values[key] = _coerce(f"{name}.{key}", value, hints[key])
    return schema(**values)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a nested mapping (a parsed recipe) into a ``Config``."""
    if not isinstance(raw, dict):
        raise ValueError(f"a recipe must be a mapping of sections, got {type(raw).__name__}")
    valid = ["model", *_SECTIONS]
    for key in raw:
        if key not in valid:
            raise _unknown_key(str(key), valid)
    sections = {name: _section(name, schema, raw.get(name)) for name, schema in _SECTIONS.items()}
    config = Config(model=_model_config(raw.get("model", {})), **sections)
    check_limits(config)
    return config


def _between(low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    def check(value: float) -> bool:
        return (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    return check


_COUNT, _ZERO_OR_MORE, _PROBABILITY = (lambda v: v >= 1, ">= 1"), (lambda v: v >= 0, ">= 0"), (_between(0, 1), "in [0, 1]")
# The values a field can take beyond its type: counts the engine divides by or loops over, rates,
# probabilities. A None where the type allows it (max_steps, clip_grad, ...) means "off" and passes.
LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.num_frames": _COUNT, "data.frame_interval": _COUNT, "data.img_size": _COUNT,
    "data.num_workers": _ZERO_OR_MORE, "data.max_decode_failures": _PROBABILITY, "data.hflip": _PROBABILITY,
    "data.random_erasing": _PROBABILITY, "data.mixup_alpha": _ZERO_OR_MORE, "data.cutmix_alpha": _ZERO_OR_MORE,
    "data.mixup_prob": _PROBABILITY,
    "train.epochs": _COUNT, "train.max_steps": _COUNT, "train.batch_size": _COUNT, "train.accum_steps": _COUNT,
    "train.lr": (lambda v: v > 0, "> 0"), "train.min_lr": _ZERO_OR_MORE, "train.warmup_epochs": _ZERO_OR_MORE,
    "train.momentum": (_between(0, 1, high_open=True), "in [0, 1)"),
    "train.betas": (lambda v: all(_between(0, 1, high_open=True)(b) for b in v), "two numbers in [0, 1)"),
    "train.weight_decay": _ZERO_OR_MORE, "train.layer_decay": (lambda v: v > 0, "> 0"),
    "train.label_smoothing": (_between(0, 1, high_open=True), "in [0, 1)"),
    "train.clip_grad": (lambda v: v > 0, "> 0 (or null: no clipping)"),
    "train.ema_decay": (_between(0, 1, low_open=True, high_open=True), "in (0, 1) (or null: no EMA)"),
    "train.keep_last": _COUNT, "train.save_every_steps": (lambda v: v >= 0, ">= 0 (0 or null: at epoch ends only)"),
    "train.log_every": _COUNT, "train.parallel": (lambda v: v in PARALLEL, " or ".join(map(repr, PARALLEL))),
    "eval.views": (lambda v: min(v) >= 1, "[T, S] with both >= 1"), "eval.resize_to": _COUNT,
    "eval.batch_size": _COUNT, "eval.every": _COUNT,
}


def check_limits(config: Config) -> None:
    """A ``ValueError`` naming the first key of ``LIMITS`` whose value is out of range."""
    for key, (ok, expected) in LIMITS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is not None and not ok(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise ValueError(f"config key '{key}' must be {expected}, got {shown!r}")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The nested mapping a recipe file would hold (tuples as lists), the inverse of ``config_from_dict``."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    out: dict[str, Any] = {"model": {"name": config.model.name, **config.model.args}}
    for name in _SECTIONS:
        section = getattr(config, name)
        out[name] = {f.name: plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
    return out


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` to a raw recipe mapping in place (checked later by ``config_from_dict``)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {override!r} is not of the form key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as error:
        raise ValueError(f"override {override!r}: the value is not YAML ({str(error).splitlines()[0]})") from None
    parts = key.split(".")
    if parts == ["model"]:
        parts = ["model", "name"]
    if len(parts) != 2:
        raise ValueError(f"override key '{key}' must be section.field (e.g. train.lr) or model")
    section, name = parts
    if section not in ("model", *_SECTIONS):
        raise _unknown_key(key, [f"{s}.{f}" for s, schema in _SECTIONS.items() for f in typing.get_type_hints(schema)])
    current = raw.setdefault(section, {})
    if section == "model" and isinstance(current, str):
        current = raw["model"] = {"name": current}
    current[name] = value


def resolve_recipe(recipe: str) -> Path:
    """A recipe path, or a name under ``recipes/`` (with or without ``.yaml``)."""
    path = Path(recipe)
    if path.is_file():
        return path
    for folder in (Path("recipes"), RECIPES_DIR):
        for candidate in (folder / recipe, folder / f"{recipe}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, known, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (recipes: {', '.join(known)})"
    raise FileNotFoundError(f"recipe '{recipe}' is neither a file nor a name under {RECIPES_DIR}{hint}")


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The raw mapping of sections in a recipe (or a run's config.yaml); a file that is not UTF-8
    YAML holding a mapping is a ``ValueError`` naming it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file (a recipe is YAML)") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{path} is not valid YAML{line}: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def _read_recipe(recipe: str | None) -> tuple[dict[str, Any], Path | None]:
    if recipe is None:
        return {}, None
    path = resolve_recipe(recipe)
    return read_recipe_file(path), path


def _check_recipe_model_args(raw: dict[str, Any], path: Path, overridden_name: str) -> None:
    """A ``model=NAME`` override on a recipe whose model section holds arguments ``NAME`` does not
    take: an error that says the argument comes from the recipe (not from the command line)."""
    section = raw.get("model")
    if not isinstance(section, dict):
        return
    accepted = model_arg_annotations(overridden_name)
    for key in section:
        if key != "name" and key not in accepted:
            raise ValueError(f"recipe {path} sets model.{key} for {section.get('name', ModelConfig.name)}, but "
                             f"model={overridden_name} (from the command line) has no argument '{key}'; use a "
                             f"recipe without it (a copy of {path.name}, for example)")


def load_config(recipe: str | None, overrides: list[str] = ()) -> Config:
    """Read a recipe (None: all defaults), apply ``key=value`` overrides, validate."""
    raw, path = _read_recipe(recipe)
    merged = copy.deepcopy(raw)
    for override in overrides:
        apply_override(merged, override)
    name = _model_name(merged)
    if path is not None and isinstance(name, str) and name != _model_name(raw):
        _check_recipe_model_args(raw, path, name)
    return config_from_dict(merged)


def _model_name(raw: dict[str, Any]) -> str:
    model = raw.get("model", {})
    return model if isinstance(model, str) else (model or {}).get("name", ModelConfig.name)


def config_sources(recipe: str | None, overrides: list[str] = ()) -> dict[str, str]:
    """Where each explicitly set dotted key comes from: ``"override"`` or ``"recipe FILE"``
    (keys absent here keep their defaults). ``model`` as a bare name counts as ``model.name``."""
    raw, path = _read_recipe(recipe)
    sources: dict[str, str] = {}
    for section, values in raw.items():
        if section == "model" and isinstance(values, str):
            values = {"name": values}
        for key in values or {}:
            sources[f"{section}.{key}"] = f"recipe {path}"
    for override in overrides:
        scratch: dict[str, Any] = {}
        apply_override(scratch, override)
        for section, values in scratch.items():
            for key in values:
                sources[f"{section}.{key}"] = "override"
    return sources


def describe_config(recipe: str | None, overrides: list[str] = ()) -> list[tuple[str, Any, str]]:
    """Every key of the resolved config as ``(dotted key, value, source)``, in recipe order. Model
    arguments include those the recipe leaves alone, from the registered model or its constructor;
    ``model.num_frames`` / ``img_size`` / ``num_classes`` not set come from the data."""
    from tubelet.models.registry import get_entry

    config = load_config(recipe, overrides)
    sources = config_sources(recipe, overrides)
    rows: list[tuple[str, Any, str]] = [("model.name", config.model.name, sources.get("model.name", "default"))]
    entry = get_entry(config.model.name)
    from_data = {"num_frames": "data.num_frames", "img_size": "data.img_size", "num_classes": "data.train"}
    for arg, parameter in list(inspect.signature(entry.cls.__init__).parameters.items())[1:]:
        key = f"model.{arg}"
        if arg in config.model.args:
            rows.append((key, config.model.args[arg], sources[key]))
        elif arg in from_data:
            value = getattr(config.data, arg) if arg != "num_classes" else "(its class count)"
            rows.append((key, value, f"from {from_data[arg]}"))
        elif arg in entry.defaults:
            rows.append((key, entry.defaults[arg], f"model {config.model.name}"))
        else:
            rows.append((key, parameter.default, "constructor default"))
    unset = "unset: as recorded with the train.init weights, else ImageNet's"
    for section, values in config_to_dict(config).items():
        if section != "model":
            rows.extend((f"{section}.{k}", v, sources.get(f"{section}.{k}", unset if v is None and k in ("mean", "std") else "default"))
                        for k, v in values.items())
    return rows


def list_recipes() -> list[tuple[str, str]]:
    """``(name, description)`` of every recipe under ``recipes/``: the first sentence of its
    leading comment."""
    recipes = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        text = " ".join(comment)
        end = text.find(". ")
        recipes.append((path.stem, text[: end + 1] if end >= 0 else text))
    return recipes


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically); ``load_config(path)`` reads it back."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
