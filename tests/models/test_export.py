"""Export: torch.export programs and ONNX files (run by onnxruntime) against the PyTorch model."""

from __future__ import annotations

import json
import re

import pytest
import torch

import tubelet
from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.cli import main
from tubelet.models.export import example_input, export_model, export_program, exported_record, write_program

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extras")

# One model of each family asked for, one block deep to keep the exports fast.
FAMILIES = {
    "timesformer_divided": ("timesformer_divided_tiny_p8_8x32", {"depth": 1}),
    "vivit_factorised_encoder": ("vivit_factorised_encoder_tiny_p8t2_8x32", {"depth": 1, "temporal_depth": 1}),
    "vivit_factorised_dot": ("vivit_factorised_dot_tiny_p8t2_8x32", {"depth": 1}),  # model 4: 4D attention inputs
    "xvit": ("xvit_tiny_p8_8x32", {"depth": 1}),
    "lvt": ("lvt_tiny_p8_8x32", {"depth": 1}),
    "mvitv2": ("mvitv2_tiny_8x32", {"stages": [dict(depth=1, dim=16, num_heads=1, stride=(1, 1, 1)),
                                              dict(depth=1, dim=32, num_heads=2)]}),
}


def _model(family: str):
    name, args = FAMILIES[family]
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, **args).eval()
    model.class_names = ["x", "y", "z"]
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exports_compute_the_model(family, tmp_path):
    model = _model(family)
    clip = torch.randn(3, *example_input(model).shape[1:], generator=torch.Generator().manual_seed(1))  # another batch size
    with torch.no_grad():
        expected = model(clip)

    traced = export_program(model)
    program = write_program(traced, model, tmp_path / "m.pt2", "torch-export")
    torch.testing.assert_close(torch.export.load(str(program)).module()(clip), expected, rtol=1e-5, atol=1e-5)

    onnx_file = write_program(traced, model, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: clip.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)

    if family == "lvt":  # the ONNX graph as torch.onnx writes it unoptimised is right too (no class token)
        unoptimised = torch.onnx.export(traced, dynamo=True, opset_version=18, verbose=False, optimize=False)
        unoptimised.save(str(tmp_path / "plain.onnx"), external_data=False)
        plain = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
        (logits,) = plain.run(None, {plain.get_inputs()[0].name: clip.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)
        (tmp_path / "plain.onnx").unlink()

    for path in (program, onnx_file):
        record = exported_record(path)
        assert record["class_names"] == ["x", "y", "z"] and record["architecture"] == FAMILIES[family][0]
        assert record["metadata"]["num_frames"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.pt2"]  # no temporary files left


@pytest.mark.parametrize("name", ["timesformer_divided_tiny_p8_8x32", "vivit_factorised_self_tiny_p8t2_8x32"])
def test_the_view_layout_exports_what_the_permute_layout_computes(name, tmp_path):
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, depth=1).eval()
    clip = torch.randn(3, *example_input(model).shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(clip)
    with ATTENTION_LAYOUT.using("view"):
        traced = export_program(model)
    program = write_program(traced, model, tmp_path / "m.pt2", "torch-export")
    torch.testing.assert_close(torch.export.load(str(program)).module()(clip), expected, rtol=1e-5, atol=1e-5)
    session = ort.InferenceSession(str(write_program(traced, model, tmp_path / "m.onnx", "onnx")), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: clip.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("public_rename", [True, False], ids=["rename_axes", "torch-without-rename_axes"])
def test_onnx_batch_dimension_is_named_batch(public_rename, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx", reason="onnx (in the test extras) reads the graph's shapes")
    if not public_rename:
        from torch.onnx._internal.exporter._onnx_program import ONNXProgram

        monkeypatch.delattr(ONNXProgram, "rename_axes", raising=False)
    proto = onnx.load(str(export_model(_model("lvt"), tmp_path / "m.onnx", "onnx")))
    (video,), (logits,) = proto.graph.input, proto.graph.output
    assert [d.dim_param or d.dim_value for d in video.type.tensor_type.shape.dim] == ["batch", 3, 8, 32, 32]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["batch", 3]
    symbols = {d.dim_param for v in proto.graph.value_info for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols and all(re.fullmatch(r"[\d*+\-/ ()]*batch[\d*+\-/ ()batch]*", s) for s in symbols), symbols


def test_onnx_opset_and_static_batch(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = _model("timesformer_divided")
    path = export_model(model, tmp_path / "m.onnx", "onnx", batch=1, dynamic_batch=False)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    with pytest.raises(ValueError, match="batch=1: a dynamic batch dimension is traced at a batch of at least 2"):
        export_model(model, tmp_path / "n.onnx", "onnx", batch=1)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(model, tmp_path / "n.tfl", "tflite")


def test_export_command_writes_a_program_of_a_saved_model(tmp_path, capsys):
    model = _model("vivit_factorised_encoder")
    tubelet.save_model(model, tmp_path / "saved")
    out = tmp_path / "out" / "model.pt2"
    assert main(["export", str(tmp_path / "saved"), "--format", "torch-export", "--out", str(out)]) == 0
    assert "input ['B', 3, 8, 32, 32]" in capsys.readouterr().out
    clip = example_input(model, 2)
    torch.testing.assert_close(torch.export.load(str(out)).module()(clip), model(clip), rtol=1e-5, atol=1e-5)
    assert json.dumps(exported_record(out)["metadata"]) == json.dumps(model.metadata.to_dict())
    assert main(["export", str(tmp_path / "missing"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "missing is not a checkpoint" in capsys.readouterr().err
