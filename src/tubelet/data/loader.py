"""DataLoaders for :class:`~tubelet.data.datasets.VideoDataset`: sharding, per-sample seeds,
collation and dropping of failed rows in evaluation. (Mixup and CutMix are applied by the training
step, on the device, by :class:`~tubelet.data.mixup.MixupCutmix`.)

Batches are dicts::

    {"video": [B, C, T, H, W]         (eval: [B, V, C, T, H, W]); float, or uint8 from
                                      TrainTransform(output_dtype=torch.uint8),
     "label": Long [B]                (float [B, K] when multi-label or mixed),
     "index": Long [B],
     "failed": list[str]}             files that failed to decode for this batch

In training each failed file was replaced by another sample; in evaluation the failed rows are
left out, so ``B`` may be smaller than the batch size, and ``video`` is ``None`` when every row
of a batch failed.

Training is deterministic given ``seed`` whatever the number of workers: the index sampler
(in the main process) hands the dataset ``(index, sample_seed)`` pairs, with
``sample_seed = derive_seed(seed, epoch, index)``, and each item draws its randomness from that.
The epoch advances by itself at each pass over the loader; ``loader.sampler.set_epoch(e, start=k)``
sets it explicitly for a resumed run, the next pass skipping the rank's first ``k`` samples
without decoding them (a run resumed mid-epoch).

A training run takes its batches from one stream (``build_train_stream``): the epochs follow each
other in one DataLoader iterator, so the workers prepare the next epoch's first batches while this
epoch's last steps train. A new iterator each epoch starts with empty workers: a list of 48 clips at
batch 16 (three steps an epoch) trained at a fifth of the rate of a long list on one H200.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator

import torch

from tubelet.data.datasets import VideoDataset, derive_seed


def _check_shard(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")


class EpochShuffleSampler(torch.utils.data.Sampler):
    """This rank's share of a seeded permutation, as ``(index, sample_seed)`` pairs.

    The permutation is padded by wrapping around to a multiple of ``world_size`` so every rank
    yields the same count, ``ceil(size / world_size)`` (as ``DistributedSampler`` does).
    """

    def __init__(self, size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        _check_shard(rank, world_size)
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch of the next pass, which begins at this rank's ``start``-th sample."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        yield from self.pairs(epoch, start)

    def pairs(self, epoch: int, start: int = 0) -> Iterator[tuple[int, int]]:
        """This rank's pairs of ``epoch`` from its ``start``-th sample on (``set_epoch`` left alone)."""
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        padded = order.repeat(math.ceil(len(self) * self.world_size / self.size))[: len(self) * self.world_size]
        for index in padded[self.rank :: self.world_size][start:].tolist():
            yield index, derive_seed(self.seed, epoch, index)


class EpochStream(torch.utils.data.Sampler):
    """Batches of ``sampler``'s pairs, epoch after epoch without end, from the position ``seek`` sets.

    Each epoch yields its first ``batches_per_epoch`` batches of ``batch_size`` pairs: the largest
    multiple of ``group`` (micro-batches per optimiser step) that the epoch's samples fill, the
    rest of them left out as ``drop_last`` does.
    """

    def __init__(self, sampler: EpochShuffleSampler, *, batch_size: int, group: int = 1) -> None:
        if batch_size < 1 or group < 1:
            raise ValueError(f"batch_size and group must be at least 1, got batch_size={batch_size}, group={group}")
        self.sampler, self.batch_size = sampler, batch_size
        self.batches_per_epoch = len(sampler) // batch_size // group * group
        self.epoch = self.batch = 0

    def seek(self, epoch: int, batch: int = 0) -> None:
        """Start the next iterator at ``batch`` of ``epoch`` (a run resumed mid-epoch)."""
        if not 0 <= batch < max(self.batches_per_epoch, 1):
            raise ValueError(f"batch {batch} is outside an epoch of {self.batches_per_epoch} batches")
        self.epoch, self.batch = epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, batch = self.epoch, self.batch
        while self.batches_per_epoch:
            pairs = self.sampler.pairs(epoch, batch * self.batch_size)
            for _ in range(batch, self.batches_per_epoch):
                yield list(itertools.islice(pairs, self.batch_size))
            epoch, batch = epoch + 1, 0


class ShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world_size, ...`` in order: each video on exactly one rank."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_shard(rank, world_size)
        self.indices = range(rank, size, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def _stack_labels(labels: list) -> torch.Tensor:
    if isinstance(labels[0], torch.Tensor):
        return torch.stack(labels).float()  # [B, K]
    return torch.tensor(labels, dtype=torch.long)  # [B]


def collate_train(items: list[dict]) -> dict:
    """Stack training items."""
    return {
        "video": torch.stack([item["video"] for item in items]),  # [B, C, T, H, W]
        "label": _stack_labels([item["label"] for item in items]),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
        "failed": [path for item in items for path in item["failed"]],
    }


def collate_eval(items: list[dict]) -> dict:
    """Stack the items that decoded; list the files of the others in ``failed``."""
    kept = [item for item in items if item["video"] is not None]
    return {
        "video": torch.stack([item["video"] for item in kept]) if kept else None,  # [B, V, C, T, H, W]
        "label": _stack_labels([item["label"] for item in kept]) if kept else torch.zeros(0, dtype=torch.long),
        "index": torch.tensor([item["index"] for item in kept], dtype=torch.long),
        "failed": [path for item in items for path in item["failed"]],
    }


def _train_dataloader(dataset: VideoDataset, *, num_workers: int, seed: int, rank: int,
                      **batching) -> torch.utils.data.DataLoader:
    if dataset.mode != "train":
        raise ValueError(f"a training loader needs a dataset in train mode, got mode {dataset.mode!r}")
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=collate_train,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(derive_seed(seed, rank)),  # not the global one, the model's
        **batching,
    )


def build_train_loader(
    dataset: VideoDataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> torch.utils.data.DataLoader:
    """Shuffled, sharded, seeded loader of a train-mode dataset, one epoch a pass (see the module docstring)."""
    sampler = EpochShuffleSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)
    return _train_dataloader(dataset, num_workers=num_workers, seed=seed, rank=rank, sampler=sampler,
                             batch_size=batch_size, drop_last=drop_last)


def build_train_stream(dataset: VideoDataset, *, batch_size: int, num_workers: int, seed: int, rank: int = 0,
                       world_size: int = 1, group: int = 1) -> torch.utils.data.DataLoader:
    """The batches of ``build_train_loader``'s epochs (``drop_last``) in one endless pass, each epoch
    a whole number of ``group``-batch optimiser steps; ``loader.batch_sampler`` is its
    :class:`EpochStream` (``seek(epoch, batch)`` positions the next iterator)."""
    sampler = EpochShuffleSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)
    stream = EpochStream(sampler, batch_size=batch_size, group=group)
    return _train_dataloader(dataset, num_workers=num_workers, seed=seed, rank=rank, batch_sampler=stream)


def build_eval_loader(
    dataset: VideoDataset, *, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1
) -> torch.utils.data.DataLoader:
    """In-order loader of an eval-mode dataset; each video on exactly one rank, failed rows dropped."""
    if dataset.mode != "eval":
        raise ValueError(f"build_eval_loader needs a dataset in eval mode, got mode {dataset.mode!r}")
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank=rank, world_size=world_size),
        num_workers=num_workers,
        collate_fn=collate_eval,
        pin_memory=torch.cuda.is_available(),
    )
