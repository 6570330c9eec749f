"""Exporting a model for deployment: a ``torch.export`` program (``.pt2``) or ONNX (opset 18).

Both start from one ``torch.export`` trace of the model in eval mode at the input its metadata
names (``[B, C, T, S, S]``, the batch dimension dynamic unless asked otherwise); ONNX is
translated from that program by ``torch.onnx`` (which needs ``onnxscript``). The file carries the
model's record (architecture, constructor arguments, class names, metadata) as JSON under the key
``tubelet``: ONNX metadata properties, or an extra file of the ``.pt2`` archive
(``exported_record`` reads it back). Files are written to a temporary name beside the target,
flushed, then renamed, so a killed export never leaves a partial file under the target's name.
Other frame counts or sizes need another export (``tubelet.load_model(path, num_frames=...)``
first): the positional tables are traced at one input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from tubelet.files import atomic_write_with
from tubelet.models.serialization import model_record

FORMATS = ("onnx", "torch-export")
OPSET = 18
RECORD_KEY = "tubelet"
MAX_BATCH = 4096
BATCH_AXIS = "batch"  # the name of the dynamic batch dimension in an ONNX graph


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A ``[batch, C, T, S, S]`` input at the frames and size of the model's metadata."""
    meta = model.metadata
    channels = model.config["args"].get("in_chans", 3)
    return torch.randn(batch, channels, meta.num_frames, meta.img_size, meta.img_size,
                       generator=torch.Generator().manual_seed(0))


def export_program(model: nn.Module, *, batch: int = 2, dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (switched to eval mode) at its metadata's input; with
    ``dynamic_batch`` the program takes any batch size from 1 to ``MAX_BATCH`` (traced at
    ``batch``, which must then be at least 2: a batch of 1 would be specialised)."""
    if dynamic_batch and batch < 2:
        raise ValueError(f"batch={batch}: a dynamic batch dimension is traced at a batch of at least 2")
    model.eval()
    dynamic = {"video": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if dynamic_batch else None
    with torch.no_grad():
        return torch.export.export(model, (example_input(model, batch),), dynamic_shapes=dynamic)


def _record_json(model: nn.Module) -> str:
    return json.dumps(model_record(model, model.class_names))


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str, *, batch: int = 2,
                 dynamic_batch: bool = True) -> Path:
    """Write ``model`` to ``out`` as ``fmt`` (``"onnx"`` or ``"torch-export"``); returns the path."""
    _check_format(fmt)
    return write_program(export_program(model, batch=batch, dynamic_batch=dynamic_batch), model, out, fmt)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write_program(program: torch.export.ExportedProgram, model: nn.Module, out: str | os.PathLike, fmt: str) -> Path:
    """Write the program ``export_program(model)`` made to ``out`` as ``fmt``, with ``model``'s
    record; one trace can be written in both formats."""
    _check_format(fmt)
    path = Path(out)
    record = _record_json(model)
    if fmt == "torch-export":
        atomic_write_with(path, lambda tmp: torch.export.save(program, tmp, extra_files={f"{RECORD_KEY}.json": record}))
        return path
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET, verbose=False)
    _name_batch_axis(onnx_program)
    onnx_program.model.metadata_props[RECORD_KEY] = record
    atomic_write_with(path, lambda tmp: onnx_program.save(tmp, external_data=False))
    return path


def _name_batch_axis(onnx_program) -> None:
    """Call the dynamic batch dimension ``batch`` in every shape of the graph (``torch.export``
    names it after its symbol, ``s15`` say); a static batch is left as it is."""
    axis = onnx_program.model.graph.inputs[0].shape[0]
    if isinstance(axis, int):
        return
    mapping = {axis.value: BATCH_AXIS}  # by the symbol's name, which every version's pass takes
    if hasattr(onnx_program, "rename_axes"):
        onnx_program.rename_axes(mapping)
    else:  # torch before ONNXProgram.rename_axes (pytorch#172032): the pass behind it
        from torch.onnx._internal.exporter import _ir_passes

        _ir_passes.rename_axis(onnx_program.model, mapping)


def exported_record(path: str | os.PathLike) -> dict:
    """The model record an exported file carries (``.onnx``: needs the ``onnx`` package)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if RECORD_KEY not in props:
            raise ValueError(f"{path} has no '{RECORD_KEY}' metadata property: not exported by tubelet")
        return json.loads(props[RECORD_KEY])
    extra = {f"{RECORD_KEY}.json": ""}
    torch.export.load(str(path), extra_files=extra)
    if not extra[f"{RECORD_KEY}.json"]:
        raise ValueError(f"{path} has no {RECORD_KEY}.json: not exported by tubelet")
    return json.loads(extra[f"{RECORD_KEY}.json"])
