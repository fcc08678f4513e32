"""ONNX files people already have: an older opset, If bodies, and ONNX Runtime's stray files.

The models are written in code with onnx.helper from fixed numpy seeds; each
converted file is run in ONNX Runtime and compared with its float source.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from modelmake.contracts import ConvertJob
from modelmake.errors import StepError
from modelmake.formats.onnx import OnnxSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec

from tests.support.onnx_workspaces import ONNX_CPU as CPU
from tests.support.onnx_workspaces import onnx_source

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelmake.formats.onnx import runtime as onnx_runtime  # noqa: E402
from modelmake.formats.onnx.subgraphs import all_graphs  # noqa: E402
from modelmake.steps import convert  # noqa: E402
from modelmake.steps._arrays import write_npz  # noqa: E402

QNN = FormatSupport(
    format="onnx",
    precisions=(Precision.FP32, Precision.INT8),
    settings=OnnxSettings(execution_providers=("QNNExecutionProvider", "CPUExecutionProvider"), quantization="cpu", opset=17),
    accelerator="qnn",
)
IMAGE = (1, 8, 8)
CLASSES = 10


def _classifier(path: Path, *, opset: int, batch: int | str = "n") -> Path:
    """x (N, 1, 8, 8) -> Conv 3x3 -> Relu -> Flatten -> Gemm -> Softmax -> y (N, 10)."""
    rng = np.random.default_rng(7)
    conv_w = rng.normal(0.0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.1, 8).astype(np.float32)
    dense_w = rng.normal(0.0, 0.15, (CLASSES, 8 * 64)).astype(np.float32)
    dense_b = rng.normal(0.0, 0.1, CLASSES).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "dense_w", "dense_b"], ["logits"], name="dense", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    weights = {"conv_w": conv_w, "conv_b": conv_b, "dense_w": dense_w, "dense_b": dense_b}
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *IMAGE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CLASSES])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def _branch(name: str, seed: int):
    """A body that convolves the outer scope's ``x``: Conv 3x3 (1 -> 8 channels) -> Relu."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0.0, 0.5, (8, 1, 3, 3)).astype(np.float32), f"{name}_w"),
        numpy_helper.from_array(rng.normal(0.0, 0.1, 8).astype(np.float32), f"{name}_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", f"{name}_w", f"{name}_b"], [f"{name}_c"], name=f"{name}_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{name}_c"], [f"{name}_out"], name=f"{name}_relu"),
    ]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)], weights)


def _if_classifier(path: Path, *, constant: bool = False, batch: int | str = "n") -> Path:
    """The classifier with its convolution chosen by an If: bright images (mean > 0.5) take one branch, dark ones the other."""
    rng = np.random.default_rng(9)
    inits = [
        numpy_helper.from_array(rng.normal(0.0, 0.15, (8 * 64, CLASSES)).astype(np.float32), "dense_w"),
        numpy_helper.from_array(np.array([-1, 8 * 64], np.int64), "flat"),
    ]
    nodes = []
    if constant:
        inits.append(numpy_helper.from_array(np.array(True), "bright"))
    else:
        inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
        nodes += [
            helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
            helper.make_node("Greater", ["mean", "half"], ["bright"], name="bright"),
        ]
    nodes += [
        helper.make_node("If", ["bright"], ["h"], name="choose", then_branch=_branch("then", 1), else_branch=_branch("else", 2)),
        helper.make_node("Reshape", ["h", "flat"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "dense_w"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "if_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *IMAGE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CLASSES])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _record(tmp_path: Path, model_file: Path) -> Path:
    return onnx_source(model_file, tmp_path / "source")


def _convert(record: Path, precision: str, out: Path, *, calibration: Path | None = None, support: FormatSupport = CPU) -> Path:
    convert.convert(
        ConvertJob(
            artifact_id=out.name,
            source_record=str(record),
            precision=Precision(precision),
            per_channel=True,
            palettize=None,
            calibration=str(calibration) if calibration else None,
            calibration_origin=None,
            inputs=(InputSpec(layout="NCHW"),),
            support=support,
            out=str(out),
            out_record=str(out) + ".json",
        )
    )
    return out


def _images(seed: int, count: int, *, shape=IMAGE) -> np.ndarray:
    """Images of varied brightness, so both branches of the If model see data."""
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(0.1, 0.9, (count,) + (1,) * len(shape))
    return np.clip(rng.normal(brightness, 0.2, (count, *shape)), 0.0, 1.0).astype(np.float32)


def _calibration(tmp_path: Path, *, shape=IMAGE) -> Path:
    path = tmp_path / "calibration.npz"
    x = _images(1, 64, shape=shape)
    write_npz(path, x=x, y=np.zeros(len(x), np.int64))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _parity(float_model: Path, converted: Path) -> tuple[float, float]:
    """(cosine similarity, max abs error) of the converted model's outputs against the float model's, on held-out images."""
    x = _images(2, 200)
    expected, actual = _run(float_model, x).ravel(), _run(converted, x).ravel()
    cosine = float(expected @ actual / (np.linalg.norm(expected) * np.linalg.norm(actual)))
    return cosine, float(np.abs(expected - actual).max())


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def _ops(graph) -> Counter:
    return Counter(node.op_type for node in graph.node)


# ---------------------------------------------------------------- an older opset


# (precision, lowest cosine, highest max abs error on probabilities)
PARITY = [("fp32", 0.99999, 1e-5), ("fp16", 0.9999, 0.005), ("dynamic_int8", 0.99, 0.05), ("int8", 0.99, 0.1)]


@pytest.mark.parametrize(("precision", "cosine", "max_error"), PARITY)
def test_an_opset_11_source_is_upgraded_and_matches_the_float_model(tmp_path, capsys, precision, cosine, max_error):
    original = _classifier(tmp_path / "given" / "classifier.onnx", opset=11)
    out = _convert(_record(tmp_path, original), precision, tmp_path / f"classifier.{precision}.onnx", calibration=_calibration(tmp_path))
    measured = _parity(original, out)
    assert measured[0] >= cosine and measured[1] <= max_error, measured
    if precision == "fp32":  # a float file the device's runtime loads as it is ships byte for byte
        assert out.read_bytes() == original.read_bytes()
        return
    assert _opset(out) == 17
    log = capsys.readouterr().out
    assert "uses ONNX opset 11, older than the opset 17" in log and "upgraded from opset 11 to 17" in log
    if precision == "int8":
        ops = _ops(onnx.load(str(out)).graph)
        assert ops["QuantizeLinear"] and ops["DequantizeLinear"] and ops["Conv"] == 1 and ops["Gemm"] == 1


def test_an_opset_the_converter_cannot_upgrade_names_the_source_opset(tmp_path, monkeypatch):
    from onnx import version_converter

    def refuse(model, target):
        raise RuntimeError("No adapter for Softmax")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    record = _record(tmp_path, _classifier(tmp_path / "given" / "old.onnx", opset=11))
    with pytest.raises(StepError) as caught:
        _convert(record, "int8", tmp_path / "old.int8.onnx", calibration=_calibration(tmp_path))
    message = str(caught.value)
    assert "uses ONNX opset 11" in message and "could not upgrade it to the profile's opset 17" in message
    assert "No adapter for Softmax" in message and "re-export it at opset 17" in message
    assert not (tmp_path / "old.int8.onnx").exists()


def test_a_source_at_the_profile_opset_is_not_touched_by_the_upgrade(tmp_path, capsys):
    original = _classifier(tmp_path / "given" / "current.onnx", opset=17)
    _convert(_record(tmp_path, original), "fp16", tmp_path / "current.fp16.onnx")
    assert "version converter" not in capsys.readouterr().out


# ---------------------------------------------------------------- If bodies


def _body_ops(path: Path) -> Counter:
    graphs = all_graphs(onnx.load(str(path)).graph)[1:]
    return sum((_ops(body) for body in graphs), Counter())


def test_dynamic_int8_quantizes_the_convolutions_inside_if_branches(tmp_path):
    original = _if_classifier(tmp_path / "given" / "branches.onnx")
    out = _convert(_record(tmp_path, original), "dynamic_int8", tmp_path / "branches.dynamic_int8.onnx")
    inside = _body_ops(out)
    assert inside["ConvInteger"] == 2 and inside["Conv"] == 0
    cosine, max_error = _parity(original, out)
    assert cosine >= 0.99 and max_error <= 0.05, (cosine, max_error)


def test_static_int8_names_the_branch_nodes_it_leaves_float(tmp_path, capsys):
    original = _if_classifier(tmp_path / "given" / "branches.onnx")
    out = _convert(_record(tmp_path, original), "int8", tmp_path / "branches.int8.onnx", calibration=_calibration(tmp_path))
    # ONNX Runtime's static QDQ quantizer does not descend into bodies: the top-level MatMul is quantized, the branches are not.
    assert _ops(onnx.load(str(out)).graph)["DequantizeLinear"]
    inside = _body_ops(out)
    assert inside["Conv"] == 2 and not inside["DequantizeLinear"]
    log = capsys.readouterr().out
    assert "2 weighted node(s) there stay float" in log
    assert "choose/then_branch/then_conv" in log and "choose/else_branch/else_conv" in log
    cosine, max_error = _parity(original, out)
    assert cosine >= 0.99 and max_error <= 0.05, (cosine, max_error)


def test_static_int8_that_would_quantize_nothing_is_refused(tmp_path):
    """Every weighted node in a branch: an 'int8' file would be the float model under another name."""
    branches = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="choose", then_branch=_branch("then", 1), else_branch=_branch("else", 2))],
        "only_branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *IMAGE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])],
        [],
    )
    branches.node.insert(0, helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0))
    branches.node.insert(1, helper.make_node("Greater", ["m", "half"], ["c"], name="bright"))
    branches.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    model = _save(helper.make_model(branches, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "given" / "only.onnx")
    with pytest.raises(StepError, match="int8 quantized nothing: every weighted node sits inside an If/Loop/Scan body"):
        _convert(_record(tmp_path, model), "int8", tmp_path / "only.int8.onnx", calibration=_calibration(tmp_path))


def test_a_constant_condition_is_inlined_and_quantized(tmp_path):
    original = _if_classifier(tmp_path / "given" / "constant.onnx", constant=True)
    out = _convert(_record(tmp_path, original), "int8", tmp_path / "constant.int8.onnx", calibration=_calibration(tmp_path))
    ops = _ops(onnx.load(str(out)).graph)
    assert ops["If"] == 0 and ops["Conv"] == 1 and ops["DequantizeLinear"] >= 4
    cosine, max_error = _parity(original, out)
    assert cosine >= 0.99 and max_error <= 0.05, (cosine, max_error)


def test_coverage_counts_the_nodes_inside_if_branches(tmp_path):
    path = _if_classifier(tmp_path / "branches.onnx", batch=1)
    coverage = onnx_runtime.accelerator_coverage(path, QNN)
    assert coverage is not None
    # ReduceMean, Greater, If, Reshape, MatMul, Softmax at the top (ReduceMean/Greater may fold), Conv + Relu in each branch.
    top = len(onnx_runtime._as_partitioned(path).graph.node)
    assert coverage["ops"] == top + 4
    assert coverage["fallback"] == {"If": 1}
    assert coverage["on_accelerator"] == coverage["ops"] - 1


# ---------------------------------------------------------------- the workspace root


def test_an_int8_conversion_leaves_nothing_in_the_current_directory(tmp_path, monkeypatch):
    """Inverse (com.microsoft) has no rule in ONNX Runtime's symbolic shape inference,
    which then saves its partial model in the current directory."""
    w = numpy_helper.from_array((np.eye(4) * 2 + 0.1).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
            helper.make_node("Inverse", ["h"], ["y"], name="inverse", domain="com.microsoft"),
        ],
        "inverse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    original = _save(model, tmp_path / "given" / "inverse.onnx")
    record = _record(tmp_path, original)
    calibration = tmp_path / "calibration.npz"
    x = (np.eye(4) + np.random.default_rng(3).uniform(0, 0.2, (32, 4, 4))).astype(np.float32)
    write_npz(calibration, x=x, y=np.zeros(len(x), np.int64))
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.chdir(root)
    out = _convert(record, "int8", tmp_path / "inverse.int8.onnx", calibration=calibration)
    assert os.listdir(root) == []
    assert Path.cwd() == root
    assert _ops(onnx.load(str(out)).graph)["DequantizeLinear"]


def test_coverage_of_an_int8_model_sees_the_float_branches(tmp_path):
    original = _if_classifier(tmp_path / "given" / "single.onnx", batch=1)
    out = _convert(_record(tmp_path, original), "int8", tmp_path / "single.int8.onnx", calibration=_calibration(tmp_path))
    coverage = onnx_runtime.accelerator_coverage(out, QNN)
    assert coverage is not None
    body_nodes = sum(len(body.node) for body in all_graphs(onnx_runtime._as_partitioned(out).graph)[1:])
    assert body_nodes == 4 and coverage["ops"] == len(onnx_runtime._as_partitioned(out).graph.node) + body_nodes
    # The branches were left float, so their nodes split the quantized graph: each one is a CPU fallback.
    assert coverage["fallback"]["If"] == 1
    assert coverage["fallback"]["Conv (float)"] == 2 and coverage["fallback"]["Relu (float)"] == 2
