"""The official TimeSformer (facebookresearch/TimeSformer, ``timesformer/models/vit.py``) -> tubelet.

Its checkpoints (``.pyth``, PySlowFast's format) hold ``model_state`` with names under ``model.``
(the ``VisionTransformer`` inside the ``TimeSformer`` wrapper): ``patch_embed.proj`` (a per-frame
``Conv2d``), ``cls_token``, ``pos_embed [1, 1 + H*W, D]``, ``time_embed [1, T, D]`` (not in
space-only models), per block ``norm1``, ``attn.{qkv, proj}``, ``temporal_norm1``,
``temporal_attn.{qkv, proj}`` and ``temporal_fc`` (divided only), ``norm2``, ``mlp.{fc1, fc2}``;
then ``norm`` and ``head``.

``convert_timesformer_official(state, scheme)`` is the pure ``state_dict -> state_dict`` function
(``key_table(scheme)``); ``load_timesformer_official(path)`` reads a checkpoint, finds the scheme
from its keys (``temporal_attn``: divided; ``time_embed``: joint; neither: space-only) and loads
the registered TimeSformer it fills exactly. The official code orders patch tokens ``(h w t)``,
tubelet ``(t h w)``: that permutes hidden states, not weights. Its space-only model averages
every token over the frames, then normalises: the converted model uses ``head="frame_mean_norm"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.keys import Rule, load_into_registered, ranked_architectures, read_model_state, rename, square_grid

SOURCE = "official TimeSformer"
SCHEMES = ("divided", "joint", "space")
BLOCK = r"blocks\.(\d+)\."


def key_table(scheme: str) -> list[Rule]:
    """Official names -> tubelet names for the attention ``scheme`` (one of ``SCHEMES``)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown TimeSformer scheme {scheme!r}; expected one of {SCHEMES}")
    mixer = "attn" if scheme == "divided" else "attn.steps.0"
    rules = [
        (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
        (r"cls_token", "cls_token"),
        (BLOCK + r"norm1\.(weight|bias)", rf"blocks.\1.{mixer}.norm.\2"),
        (BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", rf"blocks.\1.{mixer}.attn.\2.\3"),
        (BLOCK + r"norm2\.(weight|bias)", r"blocks.\1.mlp_norm.\2"),
        (BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
        (r"head\.(weight|bias)", r"head.\1"),
    ]
    if scheme == "divided":
        rules += [
            (BLOCK + r"temporal_norm1\.(weight|bias)", r"blocks.\1.attn.temporal_norm.\2"),
            (BLOCK + r"temporal_attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.temporal_attn.\2.\3"),
            (BLOCK + r"temporal_fc\.(weight|bias)", r"blocks.\1.attn.temporal_fc.\2"),
        ]
    if scheme == "space":
        return rules + [(r"pos_embed", "pos_embed.weight"), (r"norm\.(weight|bias)", r"spatial_norm.\1")]
    return rules + [(r"pos_embed", "pos_embed.spatial"), (r"time_embed", "pos_embed.temporal"), (r"norm\.(weight|bias)", r"norm.\1")]


def convert_timesformer_official(state: Mapping[str, torch.Tensor], scheme: str) -> dict[str, torch.Tensor]:
    """Official ``VisionTransformer`` state dict (no ``model.`` prefix) -> tubelet state dict; the
    per-frame filter ``[D, C, P, P]`` becomes a one-frame tubelet filter ``[D, C, 1, P, P]``."""
    out = rename(state, key_table(scheme), SOURCE)
    if "patch_embed.proj.weight" in out:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)
    return out


def official_scheme(state: Mapping[str, torch.Tensor]) -> str:
    if any(".temporal_attn." in name for name in state):
        return "divided"
    return "joint" if "time_embed" in state else "space"


def load_timesformer_official(path: str | os.PathLike) -> nn.Module:
    """The tubelet model of an official TimeSformer checkpoint (``.pyth`` or a bare state dict)."""
    state = read_model_state(path, strip="model.")
    for key in ("patch_embed.proj.weight", "pos_embed", "head.weight"):
        if key not in state:
            raise ValueError(f"{path} has no {key}: not a checkpoint of the official TimeSformer")
    scheme = official_scheme(state)
    patch = state["patch_embed.proj.weight"].shape[-1]
    args = dict(num_classes=state["head.weight"].shape[0], patch_size=patch, in_chans=state["patch_embed.proj.weight"].shape[1],
                img_size=square_grid(state["pos_embed"], 1, "pos_embed") * patch)
    if scheme == "space":
        args["head"] = "frame_mean_norm"  # the official space-only pooling: average the frames, then normalise
    else:
        args["num_frames"] = state["time_embed"].shape[1]
    candidates = [(name, args) for name in ranked_architectures(f"timesformer_{scheme}_", args)]
    return load_into_registered(convert_timesformer_official(state, scheme), candidates, f"{path} ({SOURCE}, {scheme})")
