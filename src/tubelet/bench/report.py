"""The results of ``run_bench`` as a markdown table, JSON, and a plot of throughput and peak memory
against the number of frames. Files are written atomically."""

from __future__ import annotations

import io
import json
import shlex
from collections import defaultdict
from pathlib import Path

from tubelet.files import atomic_write_bytes, atomic_write_text

GIB = 2**30
COLUMNS = ("model", "implementation", "frames", "size", "batch", "videos/s", "latency (ms)", "peak memory (GiB)",
           "params (M)", "step GFLOPs/clip", "GMACs/clip", "MFU", "notes")


def command_line(config) -> str:
    """The ``tubelet bench`` command that measures ``config`` (a ``BenchConfig``)."""
    words = ["tubelet", "bench", *config.models]
    for flag, values in (("--frames", config.frames), ("--size", config.sizes), ("--batch", config.batches)):
        if values:
            words += [flag, *map(str, values)]
    words += ["--mode", config.mode, "--device", config.device, "--dtype", config.dtype,
              "--reps", str(config.reps), "--warmup", str(config.warmup)]
    if config.compare:
        words.append("--compare")
    if config.compile:
        words += ["--compile", config.compile]
    if config.cuda_graph:
        words.append("--cuda-graph")
    if config.linear_backend:
        words += ["--linear-backend", config.linear_backend]
    if config.sdpa_backend:
        words += ["--sdpa-backend", config.sdpa_backend]
    if config.norm_backend:
        words += ["--norm-backend", config.norm_backend]
    if config.layout:
        words += ["--layout", config.layout]
    if config.overrides:
        words += ["--set", *(f"{key}={json.dumps(value)}" for key, value in config.overrides.items())]
    return shlex.join(words)


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _notes(row: dict) -> str:
    notes = [row.get("note", ""), row.get("message", "")]
    if row.get("logits_relative_difference") is not None:
        notes.append(f"logits agree to {row['logits_relative_difference']:.1e}")
    return "; ".join(n for n in notes if n).replace("|", "/")


def _cells(row: dict) -> list[str]:
    ok = row["status"] == "ok"
    status = "-" if row["status"] == "unavailable" else row["status"]
    memory = row.get("peak_memory_bytes")
    return [
        row["model"], row["implementation"], str(row["frames"]), str(row["size"]), str(row["batch"]),
        _number(row["videos_per_s"]) if ok else status,
        _number(row["latency_ms"]) if ok else "-",
        _number(memory / GIB if memory is not None else None) if ok else "-",
        _number(row["params"] / 1e6, 4) if "params" in row else "-",
        _number(row["flops_per_clip"] / 1e9, 4), _number(row["gmacs_per_clip"], 4),
        f"{row['mfu']:.1%}" if ok else "-",
        _notes(row),
    ]


def markdown(result: dict, command: str | None = None) -> str:
    """A heading that says what was measured and how, then one table row per result row."""
    env = result["environment"]
    mode = "inference" if env["mode"] == "infer" else "training step (forward, backward, AdamW)"
    precision = "bf16 autocast" if env["dtype"] == "bf16" else "float32"
    lines = [
        f"- device: {env['device']}, torch {env['torch']}",
        f"- {mode}, {precision}, torch.compile: {env['compile'] or 'no'}, CUDA graph: {'yes' if env['cuda_graph'] else 'no'}, "
        f"linear attention backend: {env['linear_backend']}, softmax attention backend: {env.get('sdpa_backend', 'auto')}, "
        f"LayerNorm backend: {env.get('norm_backend', 'auto')}, attention layout: {env.get('layout', 'auto')}",
        f"- timing: {env['timer']}, median of {env['reps']} steps after {env['warmup']} untimed",
        f"- MFU against a {env['matmul_peak_dtype']} {env['matmul_peak_size']}^3 matrix product measured in this run: "
        f"{env['matmul_peak_flops'] / 1e12:.4g} TFLOP/s",
        f"- date: {env['date']}",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in result["rows"]]
    return "\n".join(lines) + "\n"


def plot(result: dict) -> bytes:
    """PNG: videos/s (log scale) and peak memory against frames, one line per model,
    implementation, size and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = defaultdict(list)
    for row in result["rows"]:
        if row["status"] == "ok":
            series[(row["model"], row["implementation"], row["size"], row["batch"])].append(row)
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (model, impl, size, batch), rows in sorted(series.items()):
        rows.sort(key=lambda r: r["frames"])
        label = f"{model} ({impl}) {size}px, batch {batch}"
        frames = [r["frames"] for r in rows]
        speed.plot(frames, [r["videos_per_s"] for r in rows], "o-", label=label)
        if rows[0].get("peak_memory_bytes") is not None:
            memory.plot(frames, [r["peak_memory_bytes"] / GIB for r in rows], "o-", label=label)
    speed.set(xlabel="frames", ylabel="videos/s", yscale="log", title="throughput")
    memory.set(xlabel="frames", ylabel="GiB", title="peak CUDA memory (none on CPU)")
    frames = sorted({row["frames"] for rows in series.values() for row in rows})
    for axes in (speed, memory):
        axes.grid(alpha=0.3)
        if frames:
            axes.set_xscale("log", base=2)  # frames come in doublings, 8 to 128
            axes.set_xticks(frames, [str(f) for f in frames])
    if series:
        speed.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_report(result: dict, out_dir: str | Path, command: str | None = None) -> list[Path]:
    """``bench.md``, ``bench.json`` and ``bench.png`` in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / "bench.md", out_dir / "bench.json", out_dir / "bench.png"]
    atomic_write_text(paths[0], markdown(result, command))
    atomic_write_text(paths[1], json.dumps(dict(result, command=command), indent=2) + "\n")
    atomic_write_bytes(paths[2], plot(result))
    return paths
