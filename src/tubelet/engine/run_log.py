"""The metrics of a run: a JSON-lines file and TensorBoard events, written by rank 0 only.

Each line of ``metrics.jsonl`` is one record: ``{"kind": "train" | "val", "epoch", "step", ...values}``.
When a run resumes from step S, records past S (written after the checkpoint the run resumes
from) are dropped, so the log and the plots describe one consistent history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tubelet.files import atomic_write_text, remove_folder

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a torn last line (the process was killed while appending) is left out."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not a JSON record: {error}") from None
    return records


class RunLog:
    """Appends records to ``metrics.jsonl`` and mirrors numeric values to TensorBoard as
    ``kind/name`` scalars. ``resume_step``: drop records after it (None: start a new log).

    ``metrics.jsonl`` is the record; the TensorBoard folder is rebuilt from it when a run starts
    or resumes, so that it holds no events of steps that a killed process logged after its last
    checkpoint (a rebuild cut short by a kill is redone at the next resume)."""

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / METRICS
        kept = [r for r in read_metrics(run_dir) if r["step"] <= resume_step] if resume_step is not None else []
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        events = Path(run_dir) / TENSORBOARD
        if events.exists():
            remove_folder(events)
        self.writer = SummaryWriter(str(events))
        for record in kept:
            self._mirror(record)
        self.writer.flush()

    def _mirror(self, record: dict[str, Any]) -> None:
        for name, value in record.items():
            if name not in ("kind", "epoch", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{record['kind']}/{name}", value, record["step"])

    def write(self, kind: str, *, epoch: int, step: int, **values: Any) -> None:
        record = {"kind": kind, "epoch": epoch, "step": step, **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._mirror(record)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
