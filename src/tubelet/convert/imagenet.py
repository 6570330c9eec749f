"""ImageNet initialisation: a ViT-based video model started from an image ViT (timm's layout).

``init_from_image(model, source)`` fills every parameter of the video model that has an image
counterpart and returns a ``LoadReport`` that lists what was loaded as it was, what was reshaped
(and how), which video parameters the image model has no counterpart for (they keep the video
model's own initialisation) and which image parameters were not used. Nothing is dropped
without being listed. ``train.init=FILE.pth|.npz|.safetensors`` calls it.

Rules (each family's default in ``FAMILY_INITS``; ``tubelet_init`` and ``temporal_init``
override them):
- patch filter ``[D, C, P, P]``: inflated to the tubelet depth, ``central_frame`` or
  ``average`` (ViViT, Arnab et al. 2021, Sec. 3.4; scenic's kernel initialisers);
- class token: copied (reshaped to one token per frame for XViT);
- positional table ``[1, 1 + g*g, D]``: the grid resized to the model's (bicubic, see
  ``tubelet.layers.pos_embed``); a joint space-time table tiles it over time (scenic's
  ``resize_tile``); a separate temporal table is set to zero, so that every frame starts as the
  image model saw it (TimeSformer's and XViT's code start ``time_embed`` / ``temp_embed`` at
  zero); a fixed sinusoid table (VideoMAE) and a temporal-only table (the official LVT
  architecture, whose temporal table starts at zero) take nothing from it;
- attention: a step over the image's own token set (a frame, or the whole clip) takes the image
  block's ``norm1`` and ``attn``; the steps the image model does not have (TimeSformer's temporal
  attention, ViViT model 3's temporal step, axial and local-global steps, LVT's tube step) follow
  ``temporal_init``: ``copy`` (norm and attention copied from the image block: TimeSformer's
  ``load_pretrained``), ``copy_attention`` (attention copied, LayerNorm fresh: scenic's
  ``init_encoderblock``) or ``fresh`` (left at initialisation: the LVT code loads its image
  model non-strictly by name); TimeSformer's ``temporal_fc`` keeps the model's initialisation
  (zero in every block but the first, as TimeSformer's code);
- MLP and its norm, the final norm: copied (ViViT model 2 and TimeSformer's space-only model:
  into the spatial encoder and ``spatial_norm``; the temporal encoder stays fresh, as in scenic);
- classifier, ``pre_logits`` and heads with parameters (XViT's temporal attention aggregation):
  never taken from the image model.
MViTv2 starts from an image MViTv2 instead (Li et al. 2022; the official image code,
facebookresearch/mvit, and PySlowFast's video MViT name their parameters alike): every 2D
convolution, the stem and the Q/K/V pooling, is inflated over its temporal kernel (``average``
by default, I3D's rule as PySlowFast's ``inflate_weight``; ``central_frame`` on request), the
spatial relative-position tables are taken (linearly interpolated where the grid differs), the
temporal ones keep their initialisation, and every other parameter of the same name is copied.
An initialisation that loads nothing is refused: the file is not an image model of the family.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tubelet.attention.divided import DividedSpaceTimeAttention
from tubelet.attention.factorised_dot import FactorisedDotProductAttention
from tubelet.attention.pooling import resize_table
from tubelet.attention.step import GroupedAttention
from tubelet.convert.timm import SUFFIXES, read_timm_vit
from tubelet.layers.patch_embed import TUBELET_INITS, inflate_patch_weight
from tubelet.layers.pos_embed import JointPosEmbed, SeparatePosEmbed, SinCosPosEmbed, TemporalPosEmbed, resize_grid_table
from tubelet.layers.shape import VideoShape
from tubelet.models.factorised_encoder import FactorisedEncoder
from tubelet.models.mvit import MViT
from tubelet.models.video_transformer import VideoTransformer
from tubelet.models.xvit import FrameTokenTransformer

TEMPORAL_INITS = ("copy", "copy_attention", "fresh")
IMAGE_GROUPINGS = ("joint", "frame")  # steps over the token set an image ViT attends over
NOT_TAKEN = {  # image parameters a video model never takes, and why
    "head.weight": "the image classifier", "head.bias": "the image classifier",
    "pre_logits.fc.weight": "the image model's representation layer", "pre_logits.fc.bias": "the image model's representation layer",
    "head.projection.weight": "the image classifier", "head.projection.bias": "the image classifier",  # MViT
}


@dataclass(frozen=True)
class ImageInit:
    """How a family starts from an image ViT: tubelet filter inflation, extra attention steps."""

    tubelet: str = "central_frame"
    temporal: str = "copy"


FAMILY_INITS = {  # by architecture name prefix
    "timesformer": ImageInit(temporal="copy"),  # TimeSformer's load_pretrained
    "vivit": ImageInit(tubelet="central_frame", temporal="copy_attention"),  # scenic's ViViT configs
    "videomae": ImageInit(),
    "lvt": ImageInit(temporal="fresh"),  # the LVT code's non-strict load
    "xvit": ImageInit(),  # a ViT per frame: every attention step is the image's
    "tsm_vit": ImageInit(),
    "mvitv2": ImageInit(tubelet="average"),  # PySlowFast's inflate_weight
}


def _grouped(names: list[str]) -> str:
    """``blocks.0.x, blocks.1.x`` -> ``blocks.*.x (2)``: names with block indices folded."""
    counts = Counter(re.sub(r"\.\d+\.", ".*.", name, count=1) for name in names)
    return ", ".join(f"{name} ({count})" if count > 1 else name for name, count in counts.items())


@dataclass
class LoadReport:
    """What an initialisation did to every parameter on both sides."""

    source: str
    loaded: list[str] = field(default_factory=list)  # video names filled from the checkpoint as they were
    reshaped: list[str] = field(default_factory=list)  # "video name <- image name: how"
    fresh: list[str] = field(default_factory=list)  # video names without an image counterpart (missing)
    unused: list[str] = field(default_factory=list)  # image names no video parameter took (unexpected), with why

    def lines(self) -> list[str]:
        """The report as printed by ``tubelet train``: one line per kind, every name listed."""
        lines = [f"init from {self.source}: {len(self.loaded)} tensors loaded as they are"]
        lines += [f"init reshaped: {entry}" for entry in self.reshaped]
        if self.fresh:
            lines.append(f"init missing (kept at the model's initialisation): {_grouped(self.fresh)}")
        if self.unused:
            lines.append(f"init unexpected (not used): {', '.join(self.unused)}")
        return lines


class _Plan:
    """The values an initialisation assigns, checked against the target's shapes as they come."""

    def __init__(self, image: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], report: LoadReport):
        self.image, self.target, self.report = image, target, report
        self.values: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def put(self, name: str, value: torch.Tensor, sources: tuple[str, ...], how: str | None = None) -> None:
        if name not in self.target:
            return
        expected = self.target[name].shape
        if value.shape != expected:
            raise ValueError(f"{self.report.source}: {sources[0]} {list(self.image[sources[0]].shape)} does not fit "
                             f"{name} {list(expected)}")
        self.values[name] = value.to(self.target[name].dtype)
        self.used.update(sources)
        if how is None:
            self.report.loaded.append(name)
        else:
            origin = f" <- {', '.join(sources)}" if sources else ""
            self.report.reshaped.append(f"{name}{origin}: {how}")

    def take(self, name: str, source: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             how: str | None = None) -> None:
        """``name`` from the image's ``source`` (through ``transform``), when both exist."""
        if source in self.image and name in self.target:
            value = self.image[source]
            self.put(name, transform(value) if transform else value, (source,), how)

    def take_layer(self, name: str, source: str) -> None:
        """A layer's ``weight`` and ``bias`` from the image layer ``source``."""
        for kind in ("weight", "bias"):
            self.take(f"{name}.{kind}", f"{source}.{kind}")


def attention_sublayers(mixer: nn.Module) -> list[tuple[str, str, bool]]:
    """``(norm, attention, is_image_step)`` paths inside a block's mixer: which LayerNorm and
    multi-head attention belong together, and whether the step attends over the token set of
    an image ViT (a frame or the whole clip) or is one the image model does not have."""
    if isinstance(mixer, DividedSpaceTimeAttention):
        return [("norm", "attn", True), ("temporal_norm", "temporal_attn", False)]
    if isinstance(mixer, FactorisedDotProductAttention):
        return [("norm", "attn", True)]
    if isinstance(mixer, GroupedAttention):
        return [(f"steps.{j}.norm", f"steps.{j}.attn", step.grouping.name in IMAGE_GROUPINGS) for j, step in enumerate(mixer.steps)]
    raise ValueError(f"attention {type(mixer).__name__} has no rule for initialisation from an image ViT")


def _image_grid(table: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """An image table ``[1, n, D]`` -> its grid rows ``[1, g*g, D]``, its class-token row (or
    None) and ``g``."""
    n = table.shape[1]
    for prefix in (1, 0):
        side = math.isqrt(n - prefix)
        if side * side == n - prefix:
            return table[:, prefix:], table[:, :prefix] if prefix else None, side
    raise ValueError(f"{source}: pos_embed {list(table.shape)} is not a square grid (with or without a class-token row)")


def _positions(plan: _Plan, module: nn.Module, name: str) -> None:
    """The positional table ``name`` (a ``tubelet.layers.pos_embed`` module) from ``pos_embed``."""
    if isinstance(module, TemporalPosEmbed):  # no spatial table to take; frames start as the image
        plan.put(f"{name}.temporal", torch.zeros_like(plan.target[f"{name}.temporal"]), (), "zeros (every frame starts as the image)")
    if "pos_embed" not in plan.image or isinstance(module, (SinCosPosEmbed, TemporalPosEmbed)):
        return
    grid, cls_row, side = _image_grid(plan.image["pos_embed"], plan.report.source)
    shape = module.shape
    spatial = resize_grid_table(grid, VideoShape(1, side, side), VideoShape(1, shape.h, shape.w))  # [1, h*w, D]
    how = f"grid {side}x{side} -> {shape.h}x{shape.w}" if (side, side) != (shape.h, shape.w) else "grid kept"
    key = f"{name}.spatial" if isinstance(module, SeparatePosEmbed) else f"{name}.weight"
    if isinstance(module, JointPosEmbed) and shape.t > 1:
        spatial = spatial.repeat(1, shape.t, 1)  # [1, t*h*w, D], time-major
        how += f", tiled over {shape.t} temporal positions"
    if module.num_prefix:
        current = plan.target[key][:, : module.num_prefix]
        prefix = cls_row if cls_row is not None and module.num_prefix == 1 else current
        how += ", class-token row kept" if prefix is cls_row else ", prefix rows left at initialisation"
    else:
        prefix = spatial[:, :0]
        if cls_row is not None:
            how += ", class-token row not used (the model has no class token)"
    plan.put(key, torch.cat([prefix, spatial], dim=1), ("pos_embed",), how)
    if isinstance(module, SeparatePosEmbed):
        plan.put(f"{name}.temporal", torch.zeros_like(plan.target[f"{name}.temporal"]), (), "zeros (every frame starts as the image)")


def _blocks(plan: _Plan, group: str, blocks: nn.ModuleList, temporal: str) -> None:
    for i, block in enumerate(blocks):
        video, image = f"{group}.{i}", f"blocks.{i}"
        for norm, attn, is_image_step in attention_sublayers(block.attn):
            if is_image_step or temporal == "copy":
                plan.take_layer(f"{video}.attn.{norm}", f"{image}.norm1")
            if is_image_step or temporal in ("copy", "copy_attention"):
                for layer in ("qkv", "proj"):
                    plan.take_layer(f"{video}.attn.{attn}.{layer}", f"{image}.attn.{layer}")
        plan.take_layer(f"{video}.mlp_norm", f"{image}.norm2")
        for layer in ("fc1", "fc2"):
            plan.take_layer(f"{video}.mlp.{layer}", f"{image}.mlp.{layer}")


def _multiscale(plan: _Plan, tubelet_init: str) -> None:
    """MViTv2 from an image MViTv2 of the same names (the module docstring's rule)."""
    for name, value in plan.target.items():
        source = plan.image.get(name)
        if source is None or name.startswith("head."):
            continue
        if source.ndim == 4 and value.ndim == 5:  # a 2D convolution of the image model
            depth = value.shape[2]
            plan.put(name, inflate_patch_weight(source, depth, tubelet_init), (name,),
                     f"[C', C, kh, kw] -> [C', C, {depth}, kh, kw] ({tubelet_init})")
        elif re.fullmatch(r"blocks\.\d+\.attn\.rel_pos_[hw]", name) and source.shape[0] != value.shape[0]:
            plan.put(name, resize_table(source, value.shape[0]), (name,), f"{source.shape[0]} -> {value.shape[0]} rows (linear)")
        else:
            plan.put(name, source, (name,))


def family_init(model: nn.Module) -> ImageInit:
    """The family's rules, from the registered architecture name (defaults for a bare model)."""
    name = getattr(model, "config", {}).get("architecture", "")
    return next((rule for prefix, rule in FAMILY_INITS.items() if name.startswith(prefix)), ImageInit())


def _image_vit(plan: _Plan, model: nn.Module, tubelet_init: str, temporal_init: str) -> None:
    """A ViT-based video model from an image ViT (the module docstring's rules)."""
    depth = model.patch_embed.tubelet_size
    inflate = f"[D, C, P, P] -> [D, C, {depth}, P, P] ({tubelet_init})" if depth > 1 else "[D, C, P, P] -> [D, C, 1, P, P]"
    plan.take("patch_embed.proj.weight", "patch_embed.proj.weight", lambda w: inflate_patch_weight(w, depth, tubelet_init), inflate)
    plan.take("patch_embed.proj.bias", "patch_embed.proj.bias")
    if "cls_token" in plan.target:
        shape = plan.target["cls_token"].shape
        plan.take("cls_token", "cls_token", lambda t: t.reshape(shape), None if len(shape) == 3 else f"-> {list(shape)}, shared by all frames")
    _positions(plan, model.pos_embed, "pos_embed")
    _blocks(plan, model.block_groups[0], getattr(model, model.block_groups[0]), temporal_init)
    plan.take_layer("spatial_norm" if isinstance(model, FactorisedEncoder) else "norm", "norm")


def init_from_image(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                    tubelet_init: str | None = None, temporal_init: str | None = None) -> LoadReport:
    """Fill ``model`` (a ViT-based tubelet video model, or an MViTv2) from an image model: a
    checkpoint file (``tubelet.convert.timm.read_timm_vit``) or a state dict, timm-named for a ViT,
    named as the official code names an image MViTv2. Returns the report; a tensor that cannot
    take its counterpart's shape is a ValueError naming both, and so is a file that fills nothing."""
    if not isinstance(model, (VideoTransformer, FactorisedEncoder, FrameTokenTransformer, MViT)):
        raise ValueError(f"{type(model).__name__} is not a ViT-based video model nor an MViT; it has no initialisation from an image model")
    defaults = family_init(model)
    tubelet_init = tubelet_init or defaults.tubelet
    temporal_init = temporal_init or defaults.temporal
    if tubelet_init not in TUBELET_INITS:
        raise ValueError(f"unknown tubelet_init {tubelet_init!r}; expected one of {TUBELET_INITS}")
    if temporal_init not in TEMPORAL_INITS:
        raise ValueError(f"unknown temporal_init {temporal_init!r}; expected one of {TEMPORAL_INITS}")
    label = "a state dict" if isinstance(source, Mapping) else str(source)
    image = dict(source) if isinstance(source, Mapping) else read_timm_vit(source)
    target = model.state_dict()
    report = LoadReport(label)
    plan = _Plan(image, target, report)

    if isinstance(model, MViT):
        _multiscale(plan, tubelet_init)
    else:
        _image_vit(plan, model, tubelet_init, temporal_init)
    if not plan.used:  # no image tensor taken
        raise ValueError(f"{label} fills no parameter of {type(model).__name__}: not an image model in the layout "
                         f"it takes (a video checkpoint of another code is converted with `tubelet convert --from FORMAT`)")

    with torch.no_grad():
        model.load_state_dict({**target, **plan.values})
    report.fresh = [name for name in target if name not in plan.values]
    report.unused = [f"{name} ({NOT_TAKEN[name]})" if name in NOT_TAKEN else name for name in image if name not in plan.used]
    return report


def is_image_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``train.init`` names an image checkpoint file rather than a tubelet checkpoint
    or model folder."""
    return Path(path).is_file() and Path(path).suffix in SUFFIXES


def load_image_initialised(path: str | os.PathLike, model: str | None = None, *, tubelet_init: str | None = None,
                           temporal_init: str | None = None, **model_args) -> nn.Module:
    """``create_model(model, **model_args)`` initialised from the image ViT file ``path``
    (``tubelet convert FILE --from timm --set model=NAME``); the report is ``.init_report``."""
    if model is None:
        raise ValueError("--from timm initialises a video architecture: name it with --set model=NAME (see `tubelet models`)")
    from tubelet.models.registry import create_model

    video = create_model(model, **model_args)
    video.init_report = init_from_image(video, path, tubelet_init=tubelet_init, temporal_init=temporal_init)
    return video
