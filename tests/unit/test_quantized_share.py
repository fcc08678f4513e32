"""Honest labels: the share of weight bytes each artifact really stores at its precision, and fp16's range."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelmake.contracts import EvaluateJob, MetricsRecord
from modelmake.errors import StepError
from modelmake.formats.onnx import runtime as onnx_runtime
from modelmake.kinds import Precision
from modelmake.plan import Budget, FormatSupport, OutputSpec
from modelmake.report.views import precision_cell
from modelmake.steps import evaluate
from modelmake.steps._arrays import write_npz
from modelmake.steps._selection import broken_budgets

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelmake.formats.tflite import TfliteSettings  # noqa: E402
from modelmake.formats.tflite import runtime as tflite_runtime  # noqa: E402

from .test_onnx_steps import CPU, MEDIUM_RECIPE, PREPROCESSING, _convert, _materialize, _onnx_record  # noqa: E402

TFLITE = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings(delegates=(), integer_io=False))
FORMATS = {"onnx": (CPU, onnx_runtime), "tflite": (TFLITE, tflite_runtime)}

# Two Dense layers of 16x16 and 16x4: every weight under the 1024 elements TFLite's dynamic-range quantizer needs.
SMALL_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 1}


    def build_model():
        import keras

        inputs = keras.Input((16,), name="features")
        h = keras.layers.Dense(16, activation="relu")(inputs)
        return keras.Model(inputs, keras.layers.Dense(4, name="scores")(h), name="small")
    '''
)
# A Dense kernel holding 1e6, which float16 cannot hold.
HUGE_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 2}


    def build_model():
        import keras
        import numpy as np

        def init(shape, dtype=None):
            w = np.full(shape, 0.1, np.float32)
            w[0, 0] = 1e6
            return w

        inputs = keras.Input((4,), name="features")
        return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=init, name="huge")(inputs), name="huge")
    '''
)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("share")
    calibration = root / "calibration.npz"
    raw = np.random.default_rng(2).integers(0, 17, size=(16, 16, 16, 3)).astype(np.float32)
    write_npz(calibration, x=raw, y=np.zeros(len(raw), np.int64))
    return {"root": root, "record": _materialize(root / "medium", MEDIUM_RECIPE), "calibration": calibration}


def _evaluate(artifact: Path, support: FormatSupport, record: Path, budgets: tuple = ()) -> MetricsRecord:
    job = EvaluateJob(
        artifact_id=artifact.name,
        format=support.format,
        artifact=str(artifact),
        record=str(artifact) + ".json",
        source_record=str(record),
        evaluation=None,
        reference=None,
        reference_outputs=None,
        inputs=(PREPROCESSING,),
        outputs=(OutputSpec(),),
        conditions=(),
        budgets=budgets,
        support=support,
        out=str(artifact) + ".metrics.json",
    )
    evaluate.evaluate(job)
    return MetricsRecord.read(job.out)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8", "int8"])
def test_a_conv_model_stores_nearly_all_its_weights_at_the_requested_precision(medium, fmt, precision):
    support, _ = FORMATS[fmt]
    out = medium["root"] / f"medium.{precision}.{fmt}"
    calibration = medium["calibration"] if precision == "int8" else None
    _convert(medium["record"], precision, support, out, calibration=calibration)
    figures = _evaluate(out, support, medium["record"]).metrics
    if precision == "fp32":
        assert "quantized_share" not in figures
    else:
        assert figures["quantized_share"] >= 0.98, figures["quantized_share"]


def test_weights_too_small_to_quantize_give_a_low_share_and_break_the_budget(tmp_path):
    record = _materialize(tmp_path / "small", SMALL_RECIPE)
    out = _convert(record, "dynamic_int8", TFLITE, tmp_path / "small.dynamic_int8.tflite")
    assert tflite_runtime.weight_share(out, Precision.DYNAMIC_INT8) == 0.0
    measured = _evaluate(out, TFLITE, record, (Budget.parse("min_quantized_share", 0.9),))
    assert re.match(r"quantized_share is 0, under its min_quantized_share of 0.9 \(-100%\) \(the converter left", *broken_budgets(measured))


def _elementwise_onnx(path: Path) -> Path:
    """x (N, 256) * w + b: ORT's dynamic quantizer has no pattern for Mul or Add and leaves their weights float."""
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["h"], name="scale"), helper.make_node("Add", ["h", "b"], ["y"], name="shift")],
        "elementwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256])],
        [numpy_helper.from_array(rng.normal(size=(1, 256)).astype(np.float32), n) for n in ("w", "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_weights_the_quantizer_skips_give_a_low_share_and_break_the_budget(tmp_path):
    record = _onnx_record(tmp_path, _elementwise_onnx(tmp_path / "given" / "elementwise.onnx"))
    out = _convert(record, "dynamic_int8", CPU, tmp_path / "elementwise.dynamic_int8.onnx")
    assert onnx_runtime.weight_share(out, Precision.DYNAMIC_INT8) == 0.0
    measured = _evaluate(out, CPU, record, (Budget.parse("min_quantized_share", 0.9),))
    assert re.match(r"quantized_share is 0, under its min_quantized_share of 0.9 \(-100%\)", *broken_budgets(measured))


def _overflowing_onnx(path: Path) -> Path:
    """Conv -> BatchNormalization with a variance of 9.8e7 -> Mul by a Constant node of 1e6."""
    rng = np.random.default_rng(5)
    init = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.ones(4, np.float32), "gamma"),
        numpy_helper.from_array(np.array([0.001, -0.002, 0.003, 0.0], np.float32), "beta"),
        numpy_helper.from_array(np.zeros(4, np.float32), "mean"),
        numpy_helper.from_array(np.full(4, 9.8e7, np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], name="norm"),
        helper.make_node("Constant", [], ["big"], name="big_factor", value=numpy_helper.from_array(np.array(1e6, np.float32))),
        helper.make_node("Mul", ["n", "big"], ["y"], name="amplify"),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_onnx_fp16_keeps_ops_fed_constants_beyond_its_range_in_float32(tmp_path, capsys):
    import onnx

    source = _overflowing_onnx(tmp_path / "given" / "overflow.onnx")
    record = _onnx_record(tmp_path, source)
    out = _convert(record, "fp16", CPU, tmp_path / "overflow.fp16.onnx")
    log = capsys.readouterr().out
    assert "kept in float32" in log and "norm (var)" in log and "amplify (big)" in log
    initializers = {t.name: t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert initializers["var"] == initializers["big"] == TensorProto.FLOAT and initializers["conv_w"] == TensorProto.FLOAT16
    x = {"x": np.random.default_rng(6).normal(size=(8, 1, 8, 8)).astype(np.float32)}
    expected = onnx_runtime.predict(source, x, what="float model", batch=None)["y"]
    assert _cosine(onnx_runtime.predict(out, x, what="fp16 model", batch=None)["y"], expected) >= 0.999
    # The float32 BatchNormalization parameters are most of the weight bytes, and the share says so.
    assert 0.0 < onnx_runtime.weight_share(out, Precision.FP16) < 0.9


def test_tflite_fp16_refuses_a_constant_beyond_its_range_naming_it(tmp_path):
    record = _materialize(tmp_path / "huge", HUGE_RECIPE)
    with pytest.raises(StepError, match=r"constant tensor \S*huge\S* holds values beyond float16's range"):
        _convert(record, "fp16", TFLITE, tmp_path / "huge.fp16.tflite")
    _convert(record, "dynamic_int8", TFLITE, tmp_path / "huge.dynamic_int8.tflite")


def test_the_report_flags_a_quantized_label_on_mostly_float_weights():
    def measured(share):
        return MetricsRecord(
            artifact="a", size_bytes=1, metrics={"size_kb": 1.0, **({} if share is None else {"quantized_share": share})},
            not_measured={}, coverage=None, structure=None, source=None, budgets=[], tools={}, latency_host=None,
        )

    assert precision_cell("int8", measured(0.04)) == "int8 **(mostly float: int8 label, 4% of weights int8)**"
    assert precision_cell("fp16", measured(0.3)) == "fp16 **(mostly float: fp16 label, 30% of weights fp16)**"
    assert precision_cell("int8", measured(0.97)) == "int8"
    assert precision_cell("fp32", measured(None)) == "fp32"
