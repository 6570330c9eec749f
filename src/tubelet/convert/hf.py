"""Hugging Face video classifiers -> tubelet models.

Converts ``TimesformerForVideoClassification`` (attention types ``divided_space_time``,
``joint_space_time``, ``space_only``), ``VivitForVideoClassification`` (ViViT model 1) and
``VideoMAEForVideoClassification`` (mean pooling with ``fc_norm``).

Two layers, as STYLE rule 7 asks:
- ``convert_timesformer``, ``convert_vivit``, ``convert_videomae``: pure ``state_dict -> state_dict``
  functions over Hugging Face parameter names as ``save_pretrained`` writes them (ViViT and
  VideoMAE also as transformers >= 5 holds them in memory);
- ``load_hf_model(folder)``: reads a ``save_pretrained`` folder (``config.json`` and the weights)
  without importing transformers, picks the registered tubelet architecture for the family and
  scheme, overrides its constructor arguments from the config, and loads the converted weights.
  Every tubelet parameter must be filled and every Hugging Face parameter used.

Hugging Face's TimeSformer orders patch tokens ``(h w t)``, tubelet time-major ``(t h w)``; that
permutes hidden states but changes no weight, so the logits agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tubelet.convert.keys import Rule, closest_architecture, load_converted, read_weight_file, rename
from tubelet.models.registry import create_model


# Hugging Face activation names -> tubelet ``act``; the three tanh forms are the same function.
ACTIVATIONS = {"gelu": "gelu", "gelu_fast": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
TIMESFORMER_SCHEMES = {"divided_space_time": "divided", "joint_space_time": "joint", "space_only": "space"}
SOURCE = "Hugging Face"
HEAD_RULE: Rule = (r"classifier\.(weight|bias)", r"head.\1")


def _layer_rules(prefix: str, mixer: str) -> list[Rule]:
    """One Hugging Face encoder layer (ViT naming, fused ``qkv``) -> a tubelet ``Block``.

    ``mixer`` is where the block keeps its spatial or joint attention: ``attn`` for divided
    attention, ``attn.steps.0`` for the one-step grouped schemes (joint, space).
    """
    layer = rf"{prefix}\.encoder\.layer\.(\d+)\."
    return [
        (layer + r"layernorm_before\.(weight|bias)", rf"blocks.\1.{mixer}.norm.\2"),
        (layer + r"attention\.attention\.qkv\.(weight|bias)", rf"blocks.\1.{mixer}.attn.qkv.\2"),
        (layer + r"attention\.output\.dense\.(weight|bias)", rf"blocks.\1.{mixer}.attn.proj.\2"),
        (layer + r"layernorm_after\.(weight|bias)", r"blocks.\1.mlp_norm.\2"),
        (layer + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
        (layer + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    ]


def _temporal_rules(prefix: str) -> list[Rule]:
    """TimeSformer's temporal attention of divided space-time layers."""
    layer = rf"{prefix}\.encoder\.layer\.(\d+)\."
    return [
        (layer + r"temporal_layernorm\.(weight|bias)", r"blocks.\1.attn.temporal_norm.\2"),
        (layer + r"temporal_attention\.attention\.qkv\.(weight|bias)", r"blocks.\1.attn.temporal_attn.qkv.\2"),
        (layer + r"temporal_attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.temporal_attn.proj.\2"),
        (layer + r"temporal_dense\.(weight|bias)", r"blocks.\1.attn.temporal_fc.\2"),
    ]


def _fuse_qkv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Separate ``attention.attention.{query,key,value}`` projections -> one ``...qkv``: weights
    ``[D, D]`` x 3 -> ``[3D, D]`` and biases concatenated in q, k, v order, the order in which
    ``MultiHeadAttention.split_heads`` reads them.

    VideoMAE keeps biases for q and v only (``q_bias`` and ``v_bias`` on disk, ``query.bias`` and
    ``value.bias`` in transformers >= 5 memory). The k part of the fused bias is zero, and that is
    exact: a k bias ``b`` adds ``q . b`` to every logit of query ``q``'s row, the same number for all
    keys, and softmax does not change when one number is added to a whole row.
    """
    out = dict(state)
    for key in [k for k in state if k.endswith("attention.attention.query.weight")]:
        base = key[: -len("query.weight")]
        weights = [_pop(out, base, f"{name}.weight") for name in ("query", "key", "value")]
        biases = [out.pop(base + f"{name}.bias", None) for name in ("query", "key", "value")]
        biases[0] = out.pop(base + "q_bias", biases[0])
        biases[2] = out.pop(base + "v_bias", biases[2])
        out[base + "qkv.weight"] = torch.cat(weights)  # [3D, D]
        if any(b is not None for b in biases):
            zeros = weights[0].new_zeros(weights[0].shape[0])
            out[base + "qkv.bias"] = torch.cat([zeros if b is None else b for b in biases])  # [3D]
    return out


def _pop(state: dict[str, torch.Tensor], base: str, name: str) -> torch.Tensor:
    if base + name not in state:
        raise ValueError(f"Hugging Face checkpoint has {base}query.weight but no {base}{name}")
    return state.pop(base + name)


def convert_timesformer(state: Mapping[str, torch.Tensor], attention_type: str) -> dict[str, torch.Tensor]:
    """``TimesformerForVideoClassification`` state dict -> tubelet state dict.

    ``attention_type`` (Hugging Face's name) picks the target: ``divided_space_time`` ->
    ``timesformer_divided_*`` (``VideoTransformer``), ``joint_space_time`` -> ``timesformer_joint_*``,
    ``space_only`` -> ``timesformer_space_*`` (``FactorisedEncoder`` with ``temporal_depth=0``).
    The per-frame patch filter ``[D, C, P, P]`` becomes a one-frame tubelet filter ``[D, C, 1, P, P]``.
    """
    if attention_type not in TIMESFORMER_SCHEMES:
        raise ValueError(f"attention_type={attention_type!r} is not supported; expected one of {sorted(TIMESFORMER_SCHEMES)}")
    scheme = TIMESFORMER_SCHEMES[attention_type]
    embeddings = r"timesformer\.embeddings\."
    rules = [
        (embeddings + r"cls_token", "cls_token"),
        (embeddings + r"patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
        *_layer_rules("timesformer", "attn" if scheme == "divided" else "attn.steps.0"),
        HEAD_RULE,
    ]
    if scheme == "space":
        rules += [(embeddings + r"position_embeddings", "pos_embed.weight"), (r"timesformer\.layernorm\.(weight|bias)", r"spatial_norm.\1")]
    else:
        rules += [
            (embeddings + r"position_embeddings", "pos_embed.spatial"),
            (embeddings + r"time_embeddings", "pos_embed.temporal"),
            (r"timesformer\.layernorm\.(weight|bias)", r"norm.\1"),
        ]
    if scheme == "divided":
        rules += _temporal_rules("timesformer")
    out = rename(state, rules, SOURCE)
    if "patch_embed.proj.weight" in out:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)  # [D, C, 1, P, P]
    return out


# transformers >= 5 renames ViViT's parameters in memory; save_pretrained and the hub use the names on the right.
_VIVIT_V5_NAMES: list[Rule] = [
    *((rf"vivit\.layers\.(\d+)\.attention\.{short}_proj\.(weight|bias)", rf"vivit.encoder.layer.\1.attention.attention.{long}.\2")
      for short, long in (("q", "query"), ("k", "key"), ("v", "value"))),
    (r"vivit\.layers\.(\d+)\.attention\.o_proj\.(weight|bias)", r"vivit.encoder.layer.\1.attention.output.dense.\2"),
    (r"vivit\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"vivit.encoder.layer.\1.intermediate.dense.\2"),
    (r"vivit\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"vivit.encoder.layer.\1.output.dense.\2"),
    (r"vivit\.layers\.(\d+)\.(layernorm_before|layernorm_after)\.(weight|bias)", r"vivit.encoder.layer.\1.\2.\3"),
]


def convert_vivit(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``VivitForVideoClassification`` state dict -> ``vivit_joint_*`` state dict: separate q, k, v
    fused into ``qkv``; the joint positional table ``[1, 1 + T'*H'*W', D]`` is time-major in both."""
    embeddings = r"vivit\.embeddings\."
    rules = [
        (embeddings + r"cls_token", "cls_token"),
        (embeddings + r"patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
        (embeddings + r"position_embeddings", "pos_embed.weight"),
        *_layer_rules("vivit", "attn.steps.0"),
        (r"vivit\.layernorm\.(weight|bias)", r"norm.\1"),
        HEAD_RULE,
    ]
    return rename(_fuse_qkv(rename(state, _VIVIT_V5_NAMES, SOURCE, strict=False)), rules, SOURCE)


def convert_videomae(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``VideoMAEForVideoClassification`` (mean pooling) state dict -> ``videomae_*`` state dict:
    q and v biases fused into ``qkv`` with a zero k bias (see ``_fuse_qkv``), ``fc_norm`` -> ``norm``.
    The sinusoidal positions are a fixed table on both sides, not a parameter."""
    rules = [
        (r"videomae\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
        *_layer_rules("videomae", "attn.steps.0"),
        (r"fc_norm\.(weight|bias)", r"norm.\1"),
        HEAD_RULE,
    ]
    return rename(_fuse_qkv(state), rules, SOURCE)


# ----- save_pretrained folders -----

_VIT_BASE = dict(image_size=224, num_channels=3, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
# Hugging Face configuration defaults: transformers 4.x writes only the values that differ from them.
HF_DEFAULTS = {
    "timesformer": dict(_VIT_BASE, patch_size=16, num_frames=8, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True, attention_type="divided_space_time"),
    "vivit": dict(_VIT_BASE, num_frames=32, tubelet_size=[2, 16, 16], hidden_act="gelu_fast", layer_norm_eps=1e-6, qkv_bias=True),
    "videomae": dict(_VIT_BASE, patch_size=16, num_frames=16, tubelet_size=2, hidden_act="gelu", layer_norm_eps=1e-12, use_mean_pooling=True),
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Family:
    """One Hugging Face model type: the classifier class it must be, and how to convert it.

    ``arguments(config) -> (registered-name filter, constructor arguments)`` beyond the shared ones;
    ``convert(state, config) -> tubelet state``.
    """

    classifier: str
    arguments: Callable[[dict], tuple[str, dict]]
    convert: Callable[[Mapping[str, torch.Tensor], dict], dict[str, torch.Tensor]]


def _square(value, name: str) -> int:
    """An int, or a list of equal ints; tubelet converts square images and patches only."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value and len(set(value)) == 1:
        return int(value[0])
    raise ValueError(f"{name}={value!r} is not square; tubelet converts square sizes only")


def _timesformer_arguments(config: dict) -> tuple[str, dict]:
    attention_type = config["attention_type"]
    if attention_type not in TIMESFORMER_SCHEMES:
        raise ValueError(f"attention_type={attention_type!r} is not supported; expected one of {sorted(TIMESFORMER_SCHEMES)}")
    args = dict(patch_size=_square(config["patch_size"], "patch_size"), tubelet_size=1, qkv_bias=config["qkv_bias"])
    return f"timesformer_{TIMESFORMER_SCHEMES[attention_type]}_", args


def _vivit_arguments(config: dict) -> tuple[str, dict]:
    tubelet = config["tubelet_size"]
    if not isinstance(tubelet, (list, tuple)) or len(tubelet) != 3:
        raise ValueError(f"tubelet_size={tubelet!r}: expected [frames, height, width]")
    args = dict(patch_size=_square(tubelet[1:], "tubelet_size[1:]"), tubelet_size=int(tubelet[0]), qkv_bias=config["qkv_bias"])
    return "vivit_joint_", args


def _videomae_bias(config: dict) -> bool:
    """Whether q and v have biases: transformers up to 5.17 calls it ``qkv_bias``, later ``qv_bias``."""
    return bool(config.get("qv_bias", config.get("qkv_bias", True)))


def _videomae_arguments(config: dict) -> tuple[str, dict]:
    if not config["use_mean_pooling"]:
        raise ValueError("use_mean_pooling=False is not supported: tubelet's VideoMAE pools by the mean with fc_norm")
    args = dict(
        patch_size=_square(config["patch_size"], "patch_size"), tubelet_size=int(config["tubelet_size"]), qkv_bias=_videomae_bias(config),
        head_norm_eps=1e-5,  # Hugging Face builds fc_norm with LayerNorm's default eps, whatever layer_norm_eps says
    )
    return "videomae_", args


FAMILIES = {
    "timesformer": Family("TimesformerForVideoClassification", _timesformer_arguments, lambda s, c: convert_timesformer(s, c["attention_type"])),
    "vivit": Family("VivitForVideoClassification", _vivit_arguments, lambda s, c: convert_vivit(s)),
    "videomae": Family("VideoMAEForVideoClassification", _videomae_arguments, lambda s, c: convert_videomae(s)),
}


def read_hf_config(folder: str | os.PathLike) -> dict:
    """``config.json`` of a ``save_pretrained`` folder with the family's defaults filled in."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a Hugging Face save_pretrained folder")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{path}: model_type={model_type!r} is not supported; expected one of {sorted(FAMILIES)}")
    architectures = config.get("architectures") or [FAMILIES[model_type].classifier]
    if FAMILIES[model_type].classifier not in architectures:
        raise ValueError(f"{path}: architectures={architectures}; tubelet converts {FAMILIES[model_type].classifier}")
    return {**HF_DEFAULTS[model_type], **config}


def read_hf_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parameters of a ``save_pretrained`` folder: ``model.safetensors`` or ``pytorch_model.bin``,
    single or sharded (``*.index.json``)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if (folder / name).is_file():
            return read_weight_file(folder / name)
        if index.is_file():
            state = {}
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                state.update(read_weight_file(folder / shard))
            return state
    raise FileNotFoundError(f"{folder} holds none of {', '.join(WEIGHT_FILES)} (nor their .index.json)")


def class_names(config: dict) -> list[str]:
    """``id2label`` as a list; Hugging Face's default is two classes ``LABEL_0``, ``LABEL_1``."""
    id2label = config["id2label"] if "id2label" in config else {i: f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
    names = {int(i): name for i, name in id2label.items()}  # JSON keys are strings
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"id2label has ids {sorted(names)}; expected 0 .. {len(names) - 1}")
    return [names[i] for i in range(len(names))]


def model_arguments(config: dict) -> tuple[str, dict]:
    """The registered tubelet architecture and constructor arguments for a Hugging Face config."""
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    mlp_ratio = intermediate / hidden
    if int(hidden * mlp_ratio) != intermediate:
        raise ValueError(f"intermediate_size={intermediate} is not representable as mlp_ratio * hidden_size={hidden}")
    act = config["hidden_act"]
    if act not in ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    family_filter, family_args = FAMILIES[config["model_type"]].arguments(config)
    args = dict(
        img_size=_square(config["image_size"], "image_size"), num_frames=config["num_frames"], in_chans=config["num_channels"],
        num_classes=len(class_names(config)), embed_dim=hidden, depth=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"], mlp_ratio=mlp_ratio, norm_eps=config["layer_norm_eps"],
        act=ACTIVATIONS[act], **family_args,
    )
    return closest_architecture(family_filter, args), args


def load_hf_model(folder: str | os.PathLike) -> nn.Module:
    """A tubelet model (``create_model`` + converted weights, ``class_names`` from ``id2label``)
    from a Hugging Face ``save_pretrained`` folder of a supported video classifier.

    For ``space_only`` TimeSformers, Hugging Face returns one logit row per frame (``[B*T, C]``);
    the tubelet model averages the frames' normalised class tokens before its linear head, which
    equals the mean of those rows: ``hf_logits.reshape(B, T, C).mean(1)``.
    """
    return _converted_model(read_hf_config(folder), lambda: read_hf_weights(folder), folder)


def convert_hf_module(module: nn.Module) -> nn.Module:
    """A tubelet model holding the weights of a live transformers classifier ``module`` (one that
    ``load_hf_model`` would read from its ``save_pretrained`` folder), on the same device."""
    config = module.config.to_dict()
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"model_type={model_type!r} is not supported; expected one of {sorted(FAMILIES)}")
    return _converted_model({**HF_DEFAULTS[model_type], **config}, module.state_dict)


# ----- preprocessing: the metadata a converted model carries -----

PREPROCESSOR_FILE = "preprocessor_config.json"
# The image processors' own defaults, used when a folder has no preprocessor_config.json
# (TimeSformer checkpoints use VideoMAE's processor; ViViT's rescales to [-1, 1] before normalising).
PROCESSOR_DEFAULTS = {
    "timesformer": dict(image_mean=[0.5] * 3, image_std=[0.5] * 3, rescale_factor=1 / 255, size={"shortest_edge": 224}),
    "videomae": dict(image_mean=[0.5] * 3, image_std=[0.5] * 3, rescale_factor=1 / 255, size={"shortest_edge": 224}),
    "vivit": dict(image_mean=[0.5] * 3, image_std=[0.5] * 3, rescale_factor=1 / 127.5, offset=True, size={"shortest_edge": 256}),
}
# How each family's Kinetics-400 checkpoints were tested; a save_pretrained folder does not record it.
TEST_PROTOCOLS = {
    "timesformer": dict(sampling="dense", frame_interval=32, views=(1, 3)),  # Bertasius et al. 2021, Sec. 4: 8 frames at 1/32, 1 clip x 3 crops
    "vivit": dict(sampling="dense", frame_interval=2, views=(4, 3)),  # Arnab et al. 2021, Sec. 4.1: stride 2, 4 views x 3 crops
    "videomae": dict(sampling="dense", frame_interval=4, views=(5, 3)),  # Tong et al. 2022, Sec. 4: 16 x 4, 5 clips x 3 crops
}


def hf_preprocessing(folder: str | os.PathLike | None, model_type: str, img_size: int) -> dict:
    """Metadata fields (``mean``, ``std``, ``resize_to``, sampling, views) equal to what the
    folder's image processor does to a frame for a model of ``img_size`` pixels. The processor
    computes ``((x * r - offset) - m) / s`` on pixels ``x`` in 0..255; tubelet normalises
    ``(x / 255 - mean) / std``, so ``mean = (offset + m) / (255 r)`` and ``std = s / (255 r)``.
    Its short side before the crop keeps its ratio to the crop (256 for 224)."""
    path = Path(folder) / PREPROCESSOR_FILE if folder is not None else None
    processor = {**PROCESSOR_DEFAULTS[model_type], **(json.loads(path.read_text()) if path and path.is_file() else {})}
    r = processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0
    offset = 1.0 if processor.get("offset") else 0.0
    m, s = (processor["image_mean"], processor["image_std"]) if processor.get("do_normalize", True) else ([0.0] * 3, [1.0] * 3)
    short_side = processor.get("size", {}).get("shortest_edge", 224)
    crop = processor.get("crop_size", {}).get("height", 224)
    resize_to = round(short_side * img_size / crop)
    return dict(mean=tuple(round((offset + mi) / (255 * r), 9) for mi in m), std=tuple(round(si / (255 * r), 9) for si in s),
                resize_to=None if resize_to == img_size else resize_to, **TEST_PROTOCOLS[model_type])


def _converted_model(config: dict, read_state: Callable[[], Mapping[str, torch.Tensor]],
                     folder: str | os.PathLike | None = None) -> nn.Module:
    """The configuration is checked first, then the weights are read, converted and loaded; the
    metadata follows the folder's image processor."""
    name, args = model_arguments(config)
    hf_state = read_state()
    state = FAMILIES[config["model_type"]].convert(hf_state, config)
    device = next(iter(hf_state.values())).device
    with torch.device(device):
        model = load_converted(create_model(name, **args), state)
    model.class_names = class_names(config)
    model.metadata = model.metadata.replace(**hf_preprocessing(folder, config["model_type"], model.metadata.img_size))
    return model
