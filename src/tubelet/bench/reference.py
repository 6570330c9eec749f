"""Reference implementations for ``tubelet bench --compare``: the same architecture built by
another library, and a tubelet model holding the very same weights.

Hugging Face transformers has TimeSformer (divided, joint and space-only attention), ViViT
(model 1, joint) and VideoMAE's classifier; torchvision has MViTv2 (``mvit_v2_s`` and its
``MViT`` class for other block settings). For a tubelet architecture of one of those families,
``build_reference`` writes the transformers configuration that describes it, builds that model
(random weights), converts its weights with ``tubelet.convert.hf.convert_hf_module``, and checks
that the converted model's constructor arguments are those asked for: the two sides then compute
the same function, which ``bench`` confirms on the logits before it times anything.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tubelet.convert.hf import TIMESFORMER_SCHEMES, convert_hf_module
from tubelet.convert.torchvision_mvit import convert_torchvision_mvit
from tubelet.models.registry import create_model, get_entry

# tubelet ``act`` -> the transformers activation name of the same function.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
HF_TIMESFORMER_TYPES = {scheme: hf_name for hf_name, scheme in TIMESFORMER_SCHEMES.items()}
# Arguments that change training but not the function a model in eval mode computes.
IGNORED = ("drop_rate", "attn_drop_rate", "drop_path_rate")


class ReferenceUnavailable(Exception):
    """No reference implementation can run this architecture here; the message says why."""


@dataclass
class Reference:
    """``module`` (the other library's model) and ``tubelet`` (the same weights as a tubelet model).

    ``forward(video [B, C, T, H, W]) -> logits [B, K]`` calls ``module`` in its own input layout;
    ``prepare(video)`` makes that layout once, outside the timed region.
    """

    library: str
    module: nn.Module
    tubelet: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]
    forward: Callable[[torch.Tensor], torch.Tensor]
    note: str


def full_arguments(name: str, overrides: dict) -> dict:
    """Every constructor argument of ``create_model(name, **overrides)``: the class's defaults,
    then the registered ones, then ``overrides``."""
    entry = get_entry(name)
    signature = inspect.signature(entry.cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    return {**defaults, **entry.defaults, **overrides}


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ReferenceUnavailable(f"{module} is not importable ({error})") from None


def _hf_family(name: str, args: dict) -> tuple[str, dict]:
    """``(transformers config class name, its family-specific fields)`` for a tubelet architecture."""
    patch, frames = args["patch_size"], args["tubelet_size"]
    if name.startswith("timesformer_"):
        scheme = "space" if name.startswith("timesformer_space_") else args["attention"]
        if scheme not in HF_TIMESFORMER_TYPES:
            raise ReferenceUnavailable(f"transformers' TimeSformer has no {scheme!r} attention")
        return "Timesformer", dict(patch_size=patch, attention_type=HF_TIMESFORMER_TYPES[scheme])
    if name.startswith("vivit_joint_"):
        return "Vivit", dict(tubelet_size=[frames, patch, patch])
    if name.startswith("videomae_"):
        # transformers up to 5.17 names q and v biases ``qkv_bias``, later versions ``qv_bias``
        return "VideoMAE", dict(patch_size=patch, tubelet_size=frames, use_mean_pooling=True, qv_bias=args["qkv_bias"])
    raise ReferenceUnavailable(f"no reference implementation of {name} in transformers (it has TimeSformer, ViViT model 1, VideoMAE)")


def _hf_config(name: str, args: dict):
    family, fields = _hf_family(name, args)
    if args["act"] not in HF_ACTIVATIONS:
        raise ReferenceUnavailable(f"act={args['act']!r} has no transformers counterpart")
    transformers = _import("transformers")
    config_cls = getattr(transformers, f"{family}Config")
    config = config_cls(
        image_size=args["img_size"], num_frames=args["num_frames"], num_channels=args["in_chans"],
        hidden_size=args["embed_dim"], num_hidden_layers=args["depth"], num_attention_heads=args["num_heads"],
        intermediate_size=int(args["embed_dim"] * args["mlp_ratio"]), hidden_act=HF_ACTIVATIONS[args["act"]],
        layer_norm_eps=args["norm_eps"], qkv_bias=args["qkv_bias"], num_labels=args["num_classes"], **fields,
    )
    return getattr(transformers, f"{family}ForVideoClassification"), config, transformers.__version__


def _check_same_architecture(name: str, args: dict, converted: nn.Module) -> None:
    converted_args = full_arguments(converted.config["architecture"], converted.config["args"])
    differences = [
        f"{key}={args[key]!r} (transformers' model: {converted_args.get(key)!r})"
        for key in sorted(args)
        if key not in IGNORED and converted_args.get(key) != args[key]
    ]
    if differences:
        raise ReferenceUnavailable(f"transformers cannot express {name} with " + ", ".join(differences))


def _torchvision_mvit(name: str, args: dict, device: torch.device) -> Reference:
    """torchvision's ``MViT`` with the block settings of the tubelet MViTv2 ``name`` (for
    ``mvitv2_small_16x224`` that is ``mvit_v2_s``), and the tubelet model with its weights."""
    fixed = dict(pool_mode="conv", qkv_bias=True, rel_pos=True, mlp_ratio=4.0, norm_eps=1e-6, in_chans=3)
    differences = [f"{key}={args[key]!r}" for key, value in fixed.items() if args[key] != value]
    if differences:
        raise ReferenceUnavailable(f"torchvision's MViT cannot express {name} with " + ", ".join(differences))
    mvit = _import("torchvision.models.video.mvit")
    version = _import("torchvision").__version__
    with torch.device("meta"):
        plans = create_model(name, **args).plans
    kernel = list(args["pool_kernel"])
    blocks = [
        mvit.MSBlockConfig(num_heads=p.num_heads, input_channels=p.dim, output_channels=p.dim_out, kernel_q=kernel,
                           kernel_kv=kernel, stride_q=list(p.stride_q), stride_kv=list(p.stride_kv))
        for p in plans
    ]
    with torch.device(device):
        module = mvit.MViT(
            spatial_size=(args["img_size"], args["img_size"]), temporal_size=args["num_frames"], block_setting=blocks,
            residual_pool=args["residual_pool"], residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
            dropout=args["drop_rate"], num_classes=args["num_classes"], patch_embed_kernel=tuple(args["patch_kernel"]),
            patch_embed_stride=tuple(args["patch_stride"]), patch_embed_padding=tuple(args["patch_padding"]),
        ).eval()
        tubelet = create_model(name, **args).eval()
    tubelet.load_state_dict(convert_torchvision_mvit(module.state_dict()))
    return Reference(
        library=f"torchvision {version}", module=module, tubelet=tubelet, prepare=lambda video: video, forward=module,
        note="torchvision.models.video.MViT",
    )


def build_reference(name: str, overrides: dict, device: torch.device) -> Reference:
    """The transformers (or, for MViTv2, torchvision) model of architecture ``name`` with
    ``overrides`` (random weights, eval mode, on ``device``) and a tubelet model with its weights;
    ReferenceUnavailable otherwise."""
    args = full_arguments(name, overrides)
    if name.startswith("mvitv2_"):
        return _torchvision_mvit(name, args, device)
    model_cls, config, version = _hf_config(name, args)
    with torch.device(device):
        module = model_cls(config).eval()
    tubelet = convert_hf_module(module).eval()
    _check_same_architecture(name, args, tubelet)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        logits = module(pixel_values=pixels).logits
        return logits.reshape(pixels.shape[0], -1, logits.shape[-1]).mean(1)  # space-only: one row per frame

    return Reference(
        library=f"transformers {version}",
        module=module,
        tubelet=tubelet,
        prepare=lambda video: video.transpose(1, 2).contiguous(),  # [B, C, T, H, W] -> [B, T, C, H, W]
        forward=forward,
        note=f"{module.config._attn_implementation} attention",
    )
