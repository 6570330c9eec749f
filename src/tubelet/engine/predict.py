"""Prediction on video files: whole videos with multi-view testing, or long videos segment by segment.

``predict_checkpoint`` is ``tubelet predict``. ``predict_videos`` classifies each file as evaluation
does (``T x S`` views, probabilities averaged, batches from ``engine.inputs.eval_loader``). ``predict_segments`` slides a window of ``window`` seconds along one video, every
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
from tubelet.data.transforms import Normalisation
from tubelet.engine.config import DataConfig
from tubelet.engine.evaluate import classify_views
from tubelet.engine.graphs import InferenceGraphs
from tubelet.engine.inputs import eval_loader, eval_transform


def top_classes(probs: torch.Tensor, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of ``probs [K]`` as ``[{"class", "score"}]``."""
    top = probs.topk(min(k, probs.numel()))
    return [{"class": class_names[c], "score": round(float(p), 6)} for p, c in zip(top.values, top.indices.tolist())]


def _class_names(model: nn.Module) -> list[str]:
    return model.class_names or [str(k) for k in range(model.num_classes)]


@torch.no_grad()
def _probabilities(model: nn.Module, video: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None,
                   normalisation: Normalisation | None = None, graphs: InferenceGraphs | None = None) -> torch.Tensor:
    """``video [B, V, C, T, H, W]`` (float, or uint8 for ``normalisation``) -> the mean over its
    views ``[B, K]``, on the CPU, of the softmax, or for a model trained on multi-label data (its
    metadata says) of each class's sigmoid. ``graphs``: as for ``classify_views``."""
    logits = classify_views(model, video, device=device, amp_dtype=amp_dtype, normalisation=normalisation,
                            graphs=graphs)  # [B*V, K]
    scores = logits.sigmoid() if model.metadata.multi_label else logits.softmax(dim=-1)
    return scores.reshape(*video.shape[:2], -1).mean(dim=1).cpu()


def predict_videos(model: nn.Module, paths: Sequence[str | Path], data: DataConfig, *, views: tuple[int, int],
                   topk: int = 5, resize_to: int | None = None, batch_size: int = 8, num_workers: int = 0,
                   device: torch.device = torch.device("cpu"),
                   amp_dtype: torch.dtype | None = None) -> list[dict[str, Any]]:
    """One result per file: ``{"path", "top": [{"class", "score"}]}``, or ``{"path", "error"}`` for
    a file that cannot be decoded (the error says why). ``model`` is on ``device``; ``amp_dtype``:
    autocast (None: float32)."""
    names = _class_names(model)
    results: list[dict[str, Any] | None] = [None] * len(paths)
    readable = []  # indices into paths of the files FFmpeg opens
    for index, path in enumerate(paths):
        try:
            probe_video(path)  # FFmpeg's reason for a file it cannot open, which the dataset only logs
            readable.append(index)
        except DecodeError as error:
            results[index] = {"path": str(path), "error": f"cannot decode: {error.reason}"}
    model.eval()
    graphs = InferenceGraphs(model)
    if readable:
        videos = VideoList(tuple(VideoEntry(Path(paths[i]), 0) for i in readable), tuple(names))
        for batch in eval_loader(data, videos, views=views, resize_to=resize_to, batch_size=batch_size,
                                 num_workers=num_workers):
            if batch["video"] is None:
                continue
            probs = _probabilities(model, batch["video"], device, amp_dtype, data.normalisation(), graphs)  # [B, K]
            for row, p in zip(batch["index"].tolist(), probs):
                results[readable[row]] = {"path": str(paths[readable[row]]), "top": top_classes(p, names, topk)}
    return [result or {"path": str(path), "error": "cannot decode all the frames it needs"}
            for path, result in zip(paths, results)]


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
                     device: torch.device = torch.device("cpu"),
                     amp_dtype: torch.dtype | None = None) -> list[dict[str, Any]]:
    """Per-segment predictions ``{"start", "end", "top"}`` (seconds from the first frame) for one video."""
    names = _class_names(model)
    transform = eval_transform(data, resize_to=resize_to, crops=crops)
    frames_per = data.num_frames
    model.eval()
    graphs = InferenceGraphs(model)  # one segment's crops at a time: a small batch, replayed from a graph on CUDA
    results = []
    with open_video(path) as video:
        duration = video.info.duration
        for start in segment_starts(duration, window, stride):
            length = min(window, duration - start)
            times = [start + (i + 0.5) * length / frames_per for i in range(frames_per)]
            clip = transform(video.frames_at(times))  # [S, C, T, H, W]
            probs = _probabilities(model, clip[None], device, amp_dtype, data.normalisation(), graphs)[0]  # [K]
            results.append({"start": round(start, 3), "end": round(start + length, 3),
                            "top": top_classes(probs, names, topk)})
    return results


def predict_checkpoint(checkpoint: str | Path, paths: Sequence[str | Path], *, views: tuple[int, int] | None = None,
                       topk: int = 5, window: float | None = None, stride: float | None = None, device: str = "auto",
                       precision: str = "auto") -> list[dict[str, Any]]:
    """``tubelet predict``: the top classes of each file by a checkpoint (or run folder, or saved
    model) with ``views`` (default: its ``eval.views``), on ``device`` at ``precision`` (``auto``:
    the GPU in bf16 when there is one, see ``tubelet.engine.device``). With ``window`` (seconds),
    each file's results are ``{"path", "segments"}``, one segment every ``stride`` (default: ``window``)."""
    from tubelet.engine.checkpoint import load_inference_model
    from tubelet.engine.device import autocast_dtype, resolve_device

    resolved = resolve_device(device, what="--device")
    amp_dtype = autocast_dtype(precision, resolved, what="--precision")
    model, config = load_inference_model(checkpoint)
    model.to(resolved)
    views = views or config.eval.views
    if window is not None:
        return [{"path": str(path), "segments": predict_segments(
            model, path, config.data, window=window, stride=stride or window, crops=views[1], topk=topk,
            resize_to=config.eval.resize_to, device=resolved, amp_dtype=amp_dtype)} for path in paths]
    return predict_videos(model, paths, config.data, views=views, topk=topk, resize_to=config.eval.resize_to,
                          batch_size=config.eval.batch_size, num_workers=config.data.num_workers, device=resolved,
                          amp_dtype=amp_dtype)


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

