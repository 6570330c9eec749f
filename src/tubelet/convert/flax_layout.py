"""JAX / Flax parameter trees (Google's ViT ``.npz`` releases, scenic) -> PyTorch layouts.

A Flax tree flattened to ``.npz`` names each array by its path joined with ``/``
(``Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel``). Flax stores a
``Dense`` kernel as ``[in, out]`` (PyTorch: ``[out, in]``), a ``Conv`` kernel as
``[*window, in, out]`` (PyTorch: ``[out, in, *window]``), a LayerNorm's weight as ``scale``,
and a multi-head attention's projections per head: ``query/key/value`` kernels
``[D, heads, d]`` with biases ``[heads, d]``, ``out`` kernel ``[heads, d, D]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch


def read_npz(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The arrays of an ``.npz`` file as float tensors, by name; a file that is missing or not
    an ``.npz`` archive is named."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: torch.from_numpy(np.asarray(archive[name], dtype=np.float32)) for name in archive.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} cannot be read as an .npz archive of arrays: {error}") from error


def dense(kernel: torch.Tensor) -> torch.Tensor:
    """``Dense`` kernel ``[in, out]`` -> ``nn.Linear`` weight ``[out, in]``."""
    return kernel.t().contiguous()


def conv(kernel: torch.Tensor) -> torch.Tensor:
    """``Conv`` kernel ``[*window, in, out]`` -> ``nn.ConvNd`` weight ``[out, in, *window]``."""
    window = kernel.ndim - 2
    return kernel.permute(window + 1, window, *range(window)).contiguous()


def fused_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Per-head ``query/key/value`` kernels ``[D, heads, d]`` (or biases ``[heads, d]``) -> one
    fused ``qkv`` weight ``[3 * heads * d, D]`` (or bias ``[3 * heads * d]``), in q, k, v order."""
    if query.ndim == 3:
        return torch.cat([dense(part.reshape(part.shape[0], -1)) for part in (query, key, value)])
    return torch.cat([part.reshape(-1) for part in (query, key, value)])


def out_projection(kernel: torch.Tensor) -> torch.Tensor:
    """Per-head ``out`` kernel ``[heads, d, D]`` -> ``nn.Linear`` weight ``[D, heads * d]``."""
    return dense(kernel.reshape(-1, kernel.shape[-1]))


def strip_tree_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names without the ``params/`` or ``optimizer/target/`` root that some exports keep."""
    for root in ("params/", "optimizer/target/"):
        if state and all(name.startswith(root) for name in state):
            return {name[len(root):]: value for name, value in state.items()}
    return dict(state)


def to_torch_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Arrays renamed to PyTorch module paths but still in Flax layout -> a PyTorch state dict.

    Only the Flax-specific names change: ``X.scale`` (a LayerNorm's) becomes ``X.weight``;
    ``X.kernel`` becomes ``X.weight`` in PyTorch layout (3 dimensions: a per-head ``out`` kernel;
    2: a ``Dense`` kernel; 4 or 5: a ``Conv`` kernel); ``X.query|key|value.kernel|bias`` (per-head
    kernels and biases) are fused into ``X.qkv.weight|bias``. Every other array (biases, tokens,
    positional tables) is kept as it is.
    """
    out = {}
    for name, value in state.items():
        split = re.fullmatch(r"(.*)\.(query|key|value)\.(kernel|bias)", name)
        if split:
            base, part, kind = split.groups()
            if part == "query":
                pieces = [state.get(f"{base}.{p}.{kind}") for p in ("query", "key", "value")]
                if any(piece is None for piece in pieces):
                    raise ValueError(f"{base}: the query, key and value {kind}s must all be present")
                out[f"{base}.qkv.{'weight' if kind == 'kernel' else 'bias'}"] = fused_qkv(*pieces)
            continue
        if name.endswith(".scale"):
            name = name[: -len("scale")] + "weight"
        elif name.endswith(".kernel"):
            name = name[: -len("kernel")] + "weight"
            value = out_projection(value) if value.ndim == 3 else dense(value) if value.ndim == 2 else conv(value)
        out[name] = value
    return out
