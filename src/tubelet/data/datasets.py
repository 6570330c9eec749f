"""``VideoDataset``: videos of a :class:`~tubelet.data.lists.VideoList` decoded into clips.

Each item is a dict ``{"video", "label", "index", "failed"}``:

- train mode: ``video`` float ``[C, T, H, W]`` from ``transform(frames, label, generator)``
  (frames uint8 ``[T, H, W, C]``; the transform returns ``(clip, label)``, since a flip may change
  the label). A video that fails to decode is replaced by another, drawn deterministically from
  the sample's seed; ``failed`` names the files that were replaced and ``index`` is the index of
  the video actually returned.
- eval mode: ``video`` float ``[V, C, T, H, W]`` with ``V = clips * crops`` ordered clip-major
  (``v = clip * S + crop``): the sampler gives ``views[0]`` temporal clips and
  ``transform(frames) -> [S, C, T, H, W]`` the spatial crops. Nothing is substituted: a video
  that fails to decode gives ``video=None`` and ``failed=[its path]``, and the eval loader drops
  that row.

``label`` is an ``int`` (single-label) or a float multi-hot ``[K]`` (multi-label lists).
Random choices (clip position, augmentation) come from a ``torch.Generator`` seeded per sample:
``dataset[(index, sample_seed)]`` as the train loader asks, or ``dataset[index]``, which derives
the sample seed from the dataset's ``seed`` and the index.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import torch

from tubelet.data.decode import DecodeError, VideoReader, check_backend, open_video
from tubelet.data.frame_cache import CachedReader, missing_entries
from tubelet.data.lists import VideoList
from tubelet.data.rng import randint
from tubelet.data.sampling import ClipSampler

MODES = ("train", "eval")
log = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (``SeedSequence``): nearby inputs give unrelated seeds."""
    low, high = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2)
    return (int(high) << 31 | int(low)) & 0x7FFFFFFFFFFFFFFF


class VideoDataset(torch.utils.data.Dataset):
    """Clips of the videos in ``video_list`` (see the module docstring for items and modes).

    ``views=(clips, crops)`` is used in eval mode only; ``crops`` must match the eval transform's
    crop count. ``max_substitutes`` bounds how many replacements one training sample may try
    before the error is raised. ``backend`` is the decoder (``"pyav"`` or ``"torchcodec"``);
    with ``frame_cache`` (a folder ``tubelet.data.frame_cache`` wrote) frames are read from there
    instead, and a video without an entry there is an error at construction.
    """

    def __init__(
        self,
        video_list: VideoList,
        *,
        num_frames: int,
        sampler: ClipSampler,
        transform: Callable,
        mode: str = "train",
        views: tuple[int, int] = (1, 1),
        seed: int = 0,
        backend: str = "pyav",
        max_substitutes: int = 10,
        frame_cache: str | os.PathLike | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if len(views) != 2 or min(views) < 1:
            raise ValueError(f"views must be (temporal clips, spatial crops), each >= 1, got {views}")
        if len(video_list) == 0:
            raise ValueError(f"{video_list.source or 'video list'} holds no videos")
        check_backend(backend)
        if frame_cache is not None:
            _check_cached(video_list, frame_cache)
        self.video_list = video_list
        self.num_frames = num_frames
        self.sampler = sampler
        self.transform = transform
        self.mode = mode
        self.views = tuple(views)
        self.seed = seed
        self.backend = backend
        self.max_substitutes = max_substitutes
        self.frame_cache = frame_cache

    def reader(self, path) -> VideoReader:
        """The open video of ``path``: its frame cache entry, or the decoder."""
        if self.frame_cache is not None:
            return CachedReader(path, self.frame_cache)
        return open_video(path, backend=self.backend)

    def __len__(self) -> int:
        return len(self.video_list)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, sample_seed = key if isinstance(key, tuple) else (key, derive_seed(self.seed, key))
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} videos")
        if self.mode == "eval":
            return self._eval_item(index)
        return self._train_item(index, sample_seed)

    def _label(self, label: int | tuple[int, ...]) -> int | torch.Tensor:
        if not self.video_list.multi_label:
            return label
        target = torch.zeros(self.video_list.num_classes)  # [K]
        target[list(label)] = 1.0
        return target

    def _train_item(self, index: int, sample_seed: int) -> dict:
        failed: list[str] = []
        for attempt in range(self.max_substitutes + 1):
            entry = self.video_list[index]
            generator = torch.Generator().manual_seed(derive_seed(sample_seed, attempt))
            try:
                with self.reader(entry.path) as video:
                    frames = video.frames_at(self.sampler.sample(video.info, self.num_frames, generator))
            except DecodeError as error:
                failed.append(str(entry.path))
                index = self._substitute(index, generator)
                substitute = self.video_list[index].path
                log.warning("cannot decode %s (%s); training on %s instead", error.path, error.reason, substitute)
                continue
            clip, label = self.transform(frames, entry.label, generator)
            return {"video": clip, "label": self._label(label), "index": index, "failed": failed}
        raise DecodeError(
            failed[0], f"this video and {self.max_substitutes} substitutes all failed to decode: {', '.join(failed)}"
        )

    def _substitute(self, index: int, generator: torch.Generator) -> int:
        if len(self) == 1:
            raise DecodeError(self.video_list[index].path, "cannot decode the only video of the dataset")
        other = randint(0, len(self) - 1, generator)
        return other + 1 if other >= index else other

    def _eval_item(self, index: int) -> dict:
        entry = self.video_list[index]
        num_clips, num_crops = self.views
        try:
            with self.reader(entry.path) as video:
                times = self.sampler.views(video.info, self.num_frames, num_clips)
                frames = video.frames_at([t for clip in times for t in clip])  # [J*T, H, W, C]
        except DecodeError as error:
            log.warning("cannot decode %s (%s); left out of the evaluation", error.path, error.reason)
            return {"video": None, "label": self._label(entry.label), "index": index, "failed": [str(entry.path)]}
        clips = frames.reshape(num_clips, self.num_frames, *frames.shape[1:])  # [J, T, H, W, C]
        crops = torch.stack([self.transform(clip) for clip in clips])  # [J, S, C, T, H', W']
        if crops.shape[1] != num_crops:
            raise ValueError(f"the eval transform made {crops.shape[1]} crops per clip, but views asks for {num_crops}")
        video = crops.flatten(0, 1)  # [J*S, C, T, H', W'], clip-major
        return {"video": video, "label": self._label(entry.label), "index": index, "failed": []}


def _check_cached(video_list: VideoList, frame_cache: str | os.PathLike) -> None:
    missing = missing_entries([entry.path for entry in video_list], frame_cache)
    if missing:
        raise ValueError(f"{len(missing)} of {len(video_list)} videos of {video_list.source or 'the video list'} are not in "
                         f"the frame cache {frame_cache}, {missing[0]} first; write them with "
                         f"`tubelet cache-frames {video_list.source or 'LIST'} --out {frame_cache}`")
