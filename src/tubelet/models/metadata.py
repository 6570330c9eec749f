"""What a model needs besides its weights to be used correctly: its metadata, as data.

As torchvision's weights metadata (categories, transforms, views) and timm's pretrained configs
(input size, mean, std, crop) describe a checkpoint, a saved tubelet model carries in its
``config.json``, beside the architecture and the class names:

    "metadata": {
      "num_frames": 8, "img_size": 224,            # the input it was built (and trained) for
      "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225],   # (x / 255 - mean) / std
      "sampling": "dense", "frame_interval": 32,   # how frames are picked (tubelet.data.sampling)
      "views": [1, 3], "resize_to": null,          # test views T x S, short side before cropping
      "multi_label": false,                        # scores: softmax over classes, or a sigmoid each
      "source": {"format": "hf", "path": "...", "sha256": "..."}   # where the weights came from
    }

``multi_label`` records that the model was trained on multi-label data (Charades-style lists:
binary cross-entropy), so its scores are independent sigmoids. The other field names are those of
the recipe sections they become (``data.*`` and ``eval.*``), so
``tubelet predict`` and ``tubelet eval`` prepare a video exactly as the metadata says, with no
flags. ``source`` is free-form JSON (``None``: randomly initialised).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tubelet.normalisation import IMAGENET_MEAN, IMAGENET_STD
from tubelet.suggest import check_keys

SAMPLINGS = ("uniform", "dense")


@dataclass(frozen=True)
class ModelMetadata:
    """How a model's input is prepared and where its weights came from (see the module docstring)."""

    num_frames: int
    img_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    sampling: str = "uniform"
    frame_interval: int = 8
    views: tuple[int, int] = (1, 1)
    resize_to: int | None = None
    multi_label: bool = False
    source: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self):
        for name in ("mean", "std", "views"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        for name in ("num_frames", "img_size", "frame_interval"):
            if not _positive_int(getattr(self, name)):
                problems.append(f"{name}={getattr(self, name)!r} must be a positive integer")
        if self.resize_to is not None and not _positive_int(self.resize_to):
            problems.append(f"resize_to={self.resize_to!r} must be a positive integer or null")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(isinstance(v, (int, float)) for v in self.mean + self.std):
            problems.append(f"mean={list(self.mean)} and std={list(self.std)} must hold three numbers each")
        elif min(self.std) <= 0:
            problems.append(f"std={list(self.std)} must be positive")
        if len(self.views) != 2 or not all(_positive_int(v) for v in self.views):
            problems.append(f"views={list(self.views)} must be [temporal clips, spatial crops], both positive")
        if not isinstance(self.multi_label, bool):
            problems.append(f"multi_label={self.multi_label!r} must be true or false")
        if self.sampling not in SAMPLINGS:
            problems.append(f"sampling={self.sampling!r} must be one of {', '.join(SAMPLINGS)}")
        if self.source is not None and not isinstance(self.source, dict):
            problems.append(f"source={self.source!r} must be a mapping or null")
        if problems:
            raise ValueError("model metadata: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into ``config.json`` (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "metadata") -> ModelMetadata:
        """Validate the JSON form; an unknown key or a bad value is a ValueError naming ``where``."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping, got {raw!r}")
        check_keys(raw, [f.name for f in dataclasses.fields(cls)], f"{where} has no field")
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None

    def replace(self, **changes) -> ModelMetadata:
        return dataclasses.replace(self, **changes)

    def resized(self, num_frames: int | None = None, img_size: int | None = None) -> ModelMetadata:
        """The metadata of the same weights rebuilt for another input; the short side before
        cropping keeps its ratio to the crop (256 for 224 becomes 384 for 336)."""
        size = img_size or self.img_size
        resize_to = None if self.resize_to is None else round(self.resize_to * size / self.img_size)
        return self.replace(num_frames=num_frames or self.num_frames, img_size=size, resize_to=resize_to)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def default_metadata(args: dict[str, Any]) -> ModelMetadata:
    """Metadata of a freshly built model with constructor arguments ``args``: its frames and
    (square) size, ImageNet normalisation, uniform sampling, one view, no source."""
    size = args.get("img_size", 224)
    return ModelMetadata(num_frames=args.get("num_frames", 8), img_size=size if isinstance(size, int) else size[0])


def file_source(fmt: str, path: str | os.PathLike, **details: Any) -> dict[str, Any]:
    """A ``source`` record for weights read from ``path`` in format ``fmt``: the path as given
    and, for a file, its SHA-256 (for a folder, that of the weights files in it)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in (".safetensors", ".bin", ".pth", ".pyth", ".npz", ".pt"))
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return {"format": fmt, "path": str(path), **({"sha256": digest.hexdigest()} if files else {}), **details}
