"""Prediction on video files: whole videos with multi-view testing, or long videos segment by segment.

``predict_videos`` classifies each file as evaluation does (``T x S`` views, probabilities
averaged). ``predict_segments`` slides a window of ``window`` seconds along one video, every
``stride`` seconds, and classifies each segment from ``num_frames`` frames spread evenly over it
(the centres of ``num_frames`` equal cells), with ``S`` spatial crops. When the strides leave the
end of the video uncovered, one more window ends at the video's end, so every moment is covered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from tubelet.data.decode import DecodeError, open_video, probe_video
from tubelet.data.lists import VideoEntry, VideoList
from tubelet.engine.config import DataConfig
from tubelet.engine.inputs import eval_dataset, eval_transform


def top_classes(probs: torch.Tensor, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of ``probs [K]`` as ``[{"class", "score"}]``."""
    top = probs.topk(min(k, probs.numel()))
    return [{"class": class_names[c], "score": round(float(p), 6)} for p, c in zip(top.values, top.indices.tolist())]


def _class_names(model: nn.Module) -> list[str]:
    return model.class_names or [str(k) for k in range(model.num_classes)]


@torch.no_grad()
def _probabilities(model: nn.Module, views: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``views [V, C, T, H, W]`` -> mean softmax ``[K]``."""
    return model(views.to(device)).float().softmax(dim=-1).mean(dim=0).cpu()


def predict_videos(model: nn.Module, paths: Sequence[str | Path], data: DataConfig, *, views: tuple[int, int],
                   topk: int = 5, resize_to: int | None = None,
                   device: torch.device = torch.device("cpu")) -> list[dict[str, Any]]:
    """One result per file: ``{"path", "top": [{"class", "score"}]}``, or ``{"path", "error"}`` for
    a file that cannot be decoded (the error says why)."""
    names = _class_names(model)
    videos = VideoList(tuple(VideoEntry(Path(p), 0) for p in paths), tuple(names))
    dataset = eval_dataset(data, videos, views=views, resize_to=resize_to)
    model.eval()
    results = []
    for index, path in enumerate(paths):
        try:
            probe_video(path)  # FFmpeg's reason for a file it cannot open, which the dataset only logs
        except DecodeError as error:
            results.append({"path": str(path), "error": f"cannot decode: {error.reason}"})
            continue
        item = dataset[index]
        if item["video"] is None:
            results.append({"path": str(path), "error": "cannot decode all the frames it needs"})
            continue
        results.append({"path": str(path), "top": top_classes(_probabilities(model, item["video"], device), names, topk)})
    return results


def segment_starts(duration: float, window: float, stride: float) -> list[float]:
    """Start times of the windows: every ``stride`` seconds while a whole window fits (at least one),
    and one more ending at ``duration`` when those leave the end uncovered."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window={window} and stride={stride} must be positive numbers of seconds")
    count = max(1, int((duration - window) // stride) + 1)
    starts = [k * stride for k in range(count)]
    if starts[-1] + window < duration - 1e-6:
        starts.append(duration - window)
    return starts


def predict_segments(model: nn.Module, path: str | Path, data: DataConfig, *, window: float, stride: float,
                     crops: int = 1, topk: int = 5, resize_to: int | None = None,
                     device: torch.device = torch.device("cpu")) -> list[dict[str, Any]]:
    """Per-segment predictions ``{"start", "end", "top"}`` (seconds from the first frame) for one video."""
    names = _class_names(model)
    transform = eval_transform(data, resize_to=resize_to, crops=crops)
    frames_per = data.num_frames
    model.eval()
    results = []
    with open_video(path) as video:
        duration = video.info.duration
        for start in segment_starts(duration, window, stride):
            length = min(window, duration - start)
            times = [start + (i + 0.5) * length / frames_per for i in range(frames_per)]
            clip = transform(video.frames_at(times))  # [S, C, T, H, W]
            results.append({"start": round(start, 3), "end": round(start + length, 3),
                            "top": top_classes(_probabilities(model, clip, device), names, topk)})
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    """Human-readable lines: the file (or segment) and its top classes with percentages."""
    lines = []
    for result in results:
        where = result.get("path") or f"{result['start']:.2f}-{result['end']:.2f}s"
        if "error" in result:
            lines.append(f"{where}: {result['error']}")
            continue
        shown = ", ".join(f"{t['class']} {100 * t['score']:.1f}%" for t in result["top"])
        lines.append(f"{where}: {shown}")
    return "\n".join(lines)

