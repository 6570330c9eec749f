"""From a ``DataConfig`` to the data pipeline's datasets and loaders: the one place where ``fit``
(training and validation), ``tubelet eval`` and ``tubelet predict`` get them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from tubelet.data.datasets import VideoDataset
from tubelet.data.lists import VideoList, read_any, read_class_names
from tubelet.data.loader import build_eval_loader, build_train_stream
from tubelet.data.sampling import ClipSampler, DenseSampler, UniformSampler
from tubelet.data.transforms import EvalTransform, TrainTransform, mirror_label_map
from tubelet.engine.config import DataConfig

SAMPLINGS = ("uniform", "dense")


def make_sampler(data: DataConfig) -> ClipSampler:
    """``uniform``: one frame from each of T equal segments (TSN / SSv2); ``dense``: T frames, one
    every ``frame_interval`` (Kinetics)."""
    if data.sampling == "uniform":
        return UniformSampler()
    if data.sampling == "dense":
        return DenseSampler(interval=data.frame_interval)
    raise ValueError(f"data.sampling must be one of {', '.join(SAMPLINGS)}, got {data.sampling!r}")


def read_split(path: str, class_names: Sequence[str] | None, what: str) -> VideoList:
    """A video list (any format ``read_any`` knows), with the given class names if any."""
    if not path:
        raise ValueError(f"{what} is empty: set it to a video list, e.g. {what}=videos/train.csv")
    if not Path(path).exists():
        raise FileNotFoundError(f"{what}={path} does not exist; to try tubelet without data, `tubelet synth DIR` "
                                f"writes a synthetic dataset with DIR/train.csv and DIR/val.csv")
    return read_any(path, class_names=class_names)


def train_split(data: DataConfig) -> VideoList:
    names = read_class_names(data.classes) if data.classes else None
    return read_split(data.train, names, "data.train")


def train_dataset(data: DataConfig, videos: VideoList, *, seed: int) -> VideoDataset:
    """Random clips with the training augmentation of ``data``. The flip swaps the labels of
    direction-named classes ("left" <-> "right"), so flipping stays correct on SSv2-like data.
    Clips leave the workers uint8, for ``train_step`` to normalise on its device (a quarter of the
    bytes to collate, pin and copy), unless random erasing needs them normalised there."""
    mean, std = data.normalisation()
    transform = TrainTransform(
        data.img_size, scale=data.scale, hflip=data.hflip, flip_label_map=mirror_label_map(videos.class_names),
        auto_augment=data.auto_augment, random_erasing=data.random_erasing, mean=mean, std=std,
        output_dtype=torch.float32 if data.random_erasing > 0 else torch.uint8,
    )
    return VideoDataset(videos, num_frames=data.num_frames, sampler=make_sampler(data), transform=transform,
                        mode="train", seed=seed, frame_cache=data.frame_cache)


def eval_transform(data: DataConfig, *, resize_to: int | None, crops: int) -> EvalTransform:
    """Short side to ``resize_to`` (None: ``data.img_size``), ``crops`` crops, uint8 views for
    ``classify_views`` to normalise on the model's device with ``data.normalisation()``."""
    mean, std = data.normalisation()
    return EvalTransform(data.img_size, resize_to=resize_to, num_crops=crops, mean=mean, std=std, output_dtype=torch.uint8)


def eval_dataset(data: DataConfig, videos: VideoList, *, views: tuple[int, int],
                 resize_to: int | None = None, frame_cache: str | None = None) -> VideoDataset:
    """All ``views = (T, S)`` test views of each video, uint8 (``eval_transform``): T temporal clips x S spatial crops, decoded,
    or read from ``frame_cache`` (training's validation passes ``data.frame_cache``; ``eval`` and
    ``predict`` decode the files they are given)."""
    transform = eval_transform(data, resize_to=resize_to, crops=views[1])
    return VideoDataset(videos, num_frames=data.num_frames, sampler=make_sampler(data), transform=transform,
                        mode="eval", views=views, frame_cache=frame_cache)


def train_stream(data: DataConfig, videos: VideoList, *, seed: int, batch_size: int, accum_steps: int = 1,
                 rank: int = 0, world_size: int = 1) -> torch.utils.data.DataLoader:
    """This rank's shuffled, seeded batches of ``train_dataset``, epoch after epoch in one pass
    (``build_train_stream``; ``data.num_workers`` workers), each epoch whole steps of ``accum_steps``
    batches."""
    return build_train_stream(train_dataset(data, videos, seed=seed), batch_size=batch_size, num_workers=data.num_workers,
                              seed=seed, rank=rank, world_size=world_size, group=accum_steps)


def eval_loader(data: DataConfig, videos: VideoList, *, views: tuple[int, int], resize_to: int | None,
                batch_size: int, num_workers: int | None = None, rank: int = 0, world_size: int = 1,
                frame_cache: str | None = None) -> torch.utils.data.DataLoader:
    """This rank's share of ``eval_dataset``, in order, ``batch_size`` videos a batch, with
    ``num_workers`` workers (None: ``data.num_workers``; never more than there are videos)."""
    workers = data.num_workers if num_workers is None else num_workers
    dataset = eval_dataset(data, videos, views=views, resize_to=resize_to, frame_cache=frame_cache)
    return build_eval_loader(dataset, batch_size=batch_size,
                             num_workers=min(workers, len(videos)), rank=rank, world_size=world_size)
