"""The ONNX convert step, its runtime module and its per-chip quantization settings.

The models are built in code: a tiny Keras recipe exported to a SavedModel
and described as the source step does, a few hand-written ONNX graphs, and
a SavedModel with an op ONNX lacks.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, EvaluateJob, MetricsRecord, ReferenceJob, SourceRecord
from modelmake.errors import StepError
from modelmake.formats.onnx import OnnxSettings
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import Precision
from modelmake.plan import Budget, FormatSupport, InputSpec, OutputSpec

from tests.support.onnx_workspaces import ONNX_CPU as CPU
from tests.support.onnx_workspaces import onnx_source

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelmake.formats.base import tensor_signature  # noqa: E402
from modelmake.formats.onnx import chips  # noqa: E402
from modelmake.formats.onnx import runtime as onnx_runtime  # noqa: E402
from modelmake.steps import convert  # noqa: E402
from modelmake.steps._arrays import preprocess, write_npz  # noqa: E402

PREPROCESSING = InputSpec(layout="NHWC", scale="1/16", offset="0")
RECORD_KEYS = {"precision", "integer_io", "per_channel", "delegates", "io", "sha256", "size", "tools"}

QNN = FormatSupport(
    format="onnx",
    precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
    settings=OnnxSettings(
        execution_providers=("QNNExecutionProvider", "CPUExecutionProvider"), quantization="qnn", activation_type="uint16"
    ),
    accelerator="qnn",
)
TARGETS = {"cpu": CPU, "qnn": QNN}


def _with(support: FormatSupport, **settings) -> FormatSupport:
    """The same target with some of its ONNX settings changed."""
    return replace(support, settings=replace(support.settings, **settings))


def _convert(
    record: Path | str,
    precision: str,
    support: FormatSupport,
    out: Path | str,
    *,
    calibration: Path | None = None,
    per_channel: bool = True,
) -> Path:
    """Convert as the convert task does: one ConvertJob, through the step's dispatch to the ONNX backend."""
    job = ConvertJob(
        artifact_id=Path(out).name,
        source_record=str(record),
        precision=Precision(precision) if precision in set(Precision) else cast(Precision, precision),
        per_channel=per_channel,
        palettize=None,
        calibration=str(calibration) if calibration else None,
        calibration_origin=None,
        inputs=(PREPROCESSING,),
        support=support,
        out=str(out),
        out_record=str(out) + ".json",
    )
    convert.convert(job)
    return Path(out)


def _source_record(path: Path, kind: str, source_path: str, model: str | Path, signature: dict) -> Path:
    """A source record written by hand, for sources the source step does not make."""
    SourceRecord(
        kind=kind, path=source_path, model=str(model), model_sha256="", source_files={}, signature=signature, metadata={}, tools={}
    ).write(str(path))
    return path

TINY_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 11}


    def build_model():
        import keras

        # Wide initial weights spread the class scores apart, so top-1 is stable without training.
        init = keras.initializers.RandomNormal(stddev=0.6, seed=11)
        inputs = keras.Input((8, 8, 1), name="image")
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init)(inputs)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init)(h)
        h = keras.layers.Flatten()(h)
        outputs = keras.layers.Dense(5, activation="softmax", kernel_initializer=init, name="probabilities")(h)
        return keras.Model(inputs, outputs, name="tiny")
    '''
)

# About 240k parameters (~0.95 MB of float32 weights), nearly all in 3x3 convolutions.
MEDIUM_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 5}


    def build_model():
        import keras

        inputs = keras.Input((16, 16, 3), name="image")
        h = inputs
        for filters in (32, 64, 128, 128):
            h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        outputs = keras.layers.Dense(10, activation="softmax")(h)
        return keras.Model(inputs, outputs, name="medium")
    '''
)


def _materialize(directory: Path, recipe: str) -> Path:
    """The recipe's model as the source step leaves it: a SavedModel and a record with its signature."""
    import importlib.util

    import keras
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.py").write_text(recipe, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"recipe_{directory.name}", directory / "recipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.backend.clear_session()
    keras.utils.set_random_seed(module.METADATA["seed"])
    saved_model = directory / "out" / "saved_model"
    module.build_model().export(str(saved_model), format="tf_saved_model", verbose=False)
    function = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    inputs = [tensor_signature(name, t.shape.as_list(), t.dtype.name) for name, t in function.structured_input_signature[1].items()]
    outputs = [tensor_signature(name, t.shape.as_list(), t.dtype.name) for name, t in function.structured_outputs.items()]
    record = directory / "source.json"
    _source_record(record, "recipe", str(directory / "recipe.py"), saved_model, {"inputs": inputs, "outputs": outputs})
    return record


def _saved_model_outputs(directory: Path, x: dict) -> dict:
    import tensorflow as tf

    function = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return {name: value.numpy() for name, value in function(**{name: tf.constant(array) for name, array in x.items()}).items()}


class Tiny:
    """The tiny recipe's source record, calibration data and the SavedModel's own outputs on it, by name."""

    def __init__(self, root: Path):
        self.root = root
        self.record = _materialize(root / "tiny", TINY_RECIPE)
        signature = fsutil.read_json(self.record)["signature"]
        self.input = signature["inputs"][0]["name"]
        self.output = signature["outputs"][0]["name"]
        rng = np.random.default_rng(3)
        self.raw = rng.integers(0, 17, size=(48, 8, 8, 1)).astype(np.float32)
        self.calibration = root / "calibration.npz"
        write_npz(self.calibration, x=self.raw, y=np.zeros(len(self.raw), np.int64))
        self.x = {self.input: preprocess(self.raw, PREPROCESSING)}
        self.reference = _saved_model_outputs(Path(fsutil.read_json(self.record)["model"]), self.x)[self.output]

    def predict(self, path: Path, x: dict | None = None, **options) -> np.ndarray:
        """The artifact's only output on ``x`` (the preprocessed samples, by default)."""
        return onnx_runtime.predict(path, self.x if x is None else x, what=path.name, **options)[self.output]

    def convert(self, precision: str, target: FormatSupport, out: Path, per_channel: bool = True, record: Path | None = None) -> Path:
        calibration = self.calibration if precision == "int8" else None
        return _convert(record or self.record, precision, target, out, calibration=calibration, per_channel=per_channel)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("onnx-tiny"))


@pytest.fixture(scope="module")
def converted(tiny) -> dict:
    """Every variant for both quantization schemes, converted once for the tests that only read them."""
    out = tiny.root / "converted"
    return {
        (scheme, precision): tiny.convert(precision, target, out / f"tiny.{precision}.{scheme}.onnx")
        for scheme, target in TARGETS.items()
        for precision in ("fp32", "fp16", "dynamic_int8", "int8")
        if precision in target.precisions
    }


def _model(path: Path):
    return onnx.load(str(path))


def _initializers(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "scheme, precision, tolerance",
    [("cpu", "fp32", 1e-5), ("cpu", "fp16", 1e-2), ("qnn", "fp32", 1e-5), ("qnn", "fp16", 1e-2)],
)
def test_float_variants_match_the_keras_model(tiny, converted, scheme, precision, tolerance):
    path = converted[(scheme, precision)]
    onnx.checker.check_model(str(path), full_check=True)
    outputs = tiny.predict(path)
    assert outputs.dtype == np.float32 and outputs.shape == tiny.reference.shape
    np.testing.assert_allclose(outputs, tiny.reference, atol=tolerance)


@pytest.mark.parametrize("scheme, precision", [("cpu", "int8"), ("qnn", "int8"), ("cpu", "dynamic_int8")])
def test_int8_variants_keep_top1(tiny, converted, scheme, precision):
    path = converted[(scheme, precision)]
    onnx.checker.check_model(str(path), full_check=True)
    outputs = tiny.predict(path)
    agreement = np.mean(outputs.argmax(axis=1) == tiny.reference.argmax(axis=1))
    assert agreement >= 0.9, agreement
    assert np.abs(outputs - tiny.reference).mean() < 0.02


def test_fp16_stores_half_weights_behind_float32_io(converted):
    model = _model(converted[("cpu", "fp16")])
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_record_describes_the_artifact(tiny, converted):
    path = converted[("cpu", "int8")]
    record = fsutil.read_json(str(path) + ".json")
    assert set(record) == RECORD_KEYS
    assert record["precision"] == "int8" and record["integer_io"] is False and record["per_channel"] is True
    assert record["delegates"] == ["CPUExecutionProvider"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["size"] == path.stat().st_size
    assert set(record["tools"]) == {"tf2onnx", "onnx", "onnxruntime"}
    assert "not installed" not in record["tools"].values()
    assert record["io"] == {
        "inputs": [{"name": tiny.input, "dtype": "float32", "shape": [-1, 8, 8, 1]}],
        "outputs": [{"name": tiny.output, "dtype": "float32", "shape": [-1, 5]}],
    }


def test_static_shape_providers_get_a_batch_of_one(tiny, converted):
    path = converted[("qnn", "fp32")]
    io = fsutil.read_json(str(path) + ".json")["io"]
    assert io["inputs"][0]["shape"] == [1, 8, 8, 1] and io["outputs"][0]["shape"] == [1, 5]
    # A fixed batch of one runs the samples one at a time: same figures as the batched CPU artifact.
    np.testing.assert_allclose(tiny.predict(path, {tiny.input: tiny.x[tiny.input][:7]}), tiny.reference[:7], atol=1e-5)


# ---------------------------------------------------------------- static int8 settings


def _qdq_summary(model) -> dict:
    """Activation zero-point types, and (dtype, per-channel axis, scale count) of each convolution's weights."""
    initializers = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    activations: Counter[str] = Counter()
    conv_weights = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            activations[initializers[node.input[2]].dtype.name] += 1
        if node.op_type == "Conv":
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            conv_weights.append(
                (initializers[dq.input[0]].dtype.name, axis, initializers[dq.input[1]].size, int(np.abs(initializers[dq.input[2]]).max()))
            )
    return {"activations": dict(activations), "conv_weights": conv_weights}


def test_qnn_int8_is_qdq_with_uint16_activations_and_per_channel_int8_weights(converted):
    model = _model(converted[("qnn", "int8")])
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    summary = _qdq_summary(model)
    assert set(summary["activations"]) == {"uint16"}
    # Conv weights: int8, one scale per output channel (axis 0), symmetric (zero point 0).
    assert summary["conv_weights"] == [("int8", 0, 8, 0), ("int8", 0, 16, 0)]
    # 16-bit Q/DQ below opset 21 live in the com.microsoft domain; the profile's opset is kept.
    assert {n.domain for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")} == {"com.microsoft"}
    assert next(o.version for o in model.opset_import if o.domain == "") == QNN.settings.opset


def test_cpu_int8_is_qdq_with_uint8_activations_and_per_channel_int8_weights(converted):
    model = _model(converted[("cpu", "int8")])
    summary = _qdq_summary(model)
    assert set(summary["activations"]) == {"uint8"}
    assert summary["conv_weights"] == [("int8", 0, 8, 0), ("int8", 0, 16, 0)]
    assert {n.domain for n in model.graph.node} == {""}


def test_per_channel_off_gives_per_tensor_weights(tiny):
    path = tiny.convert("int8", CPU, tiny.root / "per-tensor" / "tiny.int8.onnx", per_channel=False)
    assert [(dtype, scales) for dtype, _, scales, _ in _qdq_summary(_model(path))["conv_weights"]] == [("int8", 1), ("int8", 1)]
    assert fsutil.read_json(str(path) + ".json")["per_channel"] is False


def test_chip_settings():
    qnn = chips.static_quantization_settings(QNN.settings, per_channel=True)
    assert (qnn.scheme, qnn.activation_type, qnn.weight_type, qnn.per_channel) == ("qnn", "uint16", "int8", True)
    assert qnn.preprocess is not None
    cpu = chips.static_quantization_settings(CPU.settings, per_channel=False)
    assert (cpu.scheme, cpu.activation_type, cpu.weight_type, cpu.per_channel) == ("cpu", "uint8", "int8", False)
    assert chips.needs_static_batch(QNN.settings) and not chips.needs_static_batch(CPU.settings)
    with pytest.raises(StepError, match="quantization 'hexagon'"):
        chips.static_quantization_settings(replace(CPU.settings, quantization="hexagon"), per_channel=True)


def test_static_int8_of_a_medium_model_is_at_least_3_5x_smaller(tmp_path):
    record = _materialize(tmp_path / "medium", MEDIUM_RECIPE)
    calibration = tmp_path / "calibration.npz"
    raw = np.random.default_rng(0).integers(0, 17, size=(16, 16, 16, 3)).astype(np.float32)
    write_npz(calibration, x=raw, y=np.zeros(len(raw), np.int64))
    sizes = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"medium.{precision}.onnx"
        _convert(record, precision, CPU, out, calibration=calibration if precision == "int8" else None)
        sizes[precision] = out.stat().st_size
    assert sizes["fp32"] > 900_000
    assert sizes["fp32"] / sizes["int8"] >= 3.5, sizes


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("scheme, precision", [("cpu", "fp32"), ("qnn", "int8"), ("cpu", "int8"), ("cpu", "fp16")])
def test_converting_again_gives_the_same_bytes(tiny, converted, tmp_path, scheme, precision):
    """Same process (tf2onnx's name counters have moved on), another build directory: same file."""
    moved = tmp_path / "elsewhere" / "saved_model"
    record = fsutil.read_json(tiny.record)
    shutil.copytree(record["model"], moved)
    moved_record = tmp_path / "source.json"
    fsutil.write_json(moved_record, {**record, "model": moved.as_posix()})
    first = converted[(scheme, precision)]
    # tf2onnx's own choices vary from run to run within a process, so one repeat could pass by luck.
    for attempt in range(3):
        again = tiny.convert(precision, TARGETS[scheme], tmp_path / f"again{attempt}.onnx", record=moved_record)
        assert again.read_bytes() == first.read_bytes()
        assert fsutil.read_json(str(again) + ".json") == fsutil.read_json(str(first) + ".json")


# ---------------------------------------------------------------- other sources


def _tiny_onnx(path: Path, *, broken: bool = False, extra_op: str | None = None, opset: int = 17, batch: int | str = "batch") -> Path:
    """x (N, 4) -> MatMul -> [extra op] -> Softmax -> y (N, 3), written with onnx.helper."""
    weights = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul")]
    last = "h"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["h"], ["h2"], name=extra_op.lower()))
        last = "h2"
    nodes.append(helper.make_node("Softmax", ["missing" if broken else last], ["y"], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="test")
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _onnx_record(tmp_path: Path, model_file: Path) -> Path:
    return onnx_source(model_file, tmp_path / "source")


def test_onnx_source_is_materialized_and_shipped_as_is(tmp_path):
    original = _tiny_onnx(tmp_path / "given" / "classifier.onnx")
    record_path = _onnx_record(tmp_path, original)
    record = fsutil.read_json(record_path)
    assert record["kind"] == "onnx" and Path(record["model"]).name == "model.onnx"
    assert record["signature"] == {
        "inputs": [{"name": "x", "shape": [None, 4], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [None, 3], "dtype": "float32"}],
    }
    out = tmp_path / "classifier.fp32.onnx"
    _convert(record_path, "fp32", CPU, out)
    assert out.read_bytes() == original.read_bytes()


def test_onnx_source_can_be_quantized(tmp_path):
    record_path = _onnx_record(tmp_path, _tiny_onnx(tmp_path / "given" / "classifier.onnx"))
    calibration = tmp_path / "calibration.npz"
    raw = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32) * 16
    write_npz(calibration, x=raw, y=np.zeros(len(raw), np.int64))
    out = tmp_path / "classifier.int8.onnx"
    _convert(record_path, "int8", QNN, out, calibration=calibration)
    ops = Counter(n.op_type for n in _model(out).graph.node)
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"] and ops["MatMul"] == 1


def test_onnx_source_with_a_broken_graph_fails_clearly(tmp_path):
    broken = _tiny_onnx(tmp_path / "given" / "broken.onnx", broken=True)
    with pytest.raises(StepError) as caught:
        _onnx_record(tmp_path, broken)
    message = str(caught.value)
    assert str(broken) in message and "fails the ONNX checker" in message and "missing" in message
    # The convert step checks again, should a record point at a broken file.
    record = _source_record(tmp_path / "record.json", "onnx", str(broken), broken, {})
    with pytest.raises(StepError, match="fails the ONNX checker"):
        _convert(record, "fp32", CPU, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_onnx_source_newer_than_the_profile_opset_fails(tmp_path):
    record_path = _onnx_record(tmp_path, _tiny_onnx(tmp_path / "given" / "new.onnx", opset=19))
    with pytest.raises(StepError, match="opset 19, newer than the opset 17"):
        _convert(record_path, "fp32", CPU, tmp_path / "o.onnx")


def _tflite_source(tiny, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny model as a .tflite file, and its source record: named by the file's signature keys, the SavedModel's."""
    import tensorflow as tf

    saved_model = fsutil.read_json(tiny.record)["model"]
    tflite_file = tmp_path / "given" / "tiny.tflite"
    tflite_file.parent.mkdir(parents=True)
    tflite_file.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved_model).convert())
    signature = fsutil.read_json(tiny.record)["signature"]
    return tflite_file, _source_record(tmp_path / "source.json", "tflite", str(tflite_file), tflite_file, signature)


def test_tflite_source_converts_through_tf2onnx(tiny, tmp_path):
    _, record = _tflite_source(tiny, tmp_path)
    out = tmp_path / "tiny.fp32.onnx"
    _convert(record, "fp32", CPU, out)
    np.testing.assert_allclose(tiny.predict(out), tiny.reference, atol=1e-5)


def test_the_reference_step_runs_a_tflite_source_in_litert(tiny, tmp_path):
    tflite_file, record = _tflite_source(tiny, tmp_path)
    data = tmp_path / "evaluation.npz"
    write_npz(data, x=tiny.raw, y=tiny.reference.argmax(axis=1))
    from modelmake.steps import reference

    outputs = (OutputSpec(top_k=1),)
    out = (str(tmp_path / "ref.json"), str(tmp_path / "ref.npz"))
    job = ReferenceJob(str(record), str(data), "evaluation.npz", (PREPROCESSING,), outputs, *out)
    assert reference.evaluate_source(job) == f"source {tflite_file}: top1 1.0000"


# ---------------------------------------------------------------- conversion errors


def test_an_opset_tf2onnx_cannot_write_is_a_step_error(tiny, tmp_path):
    with pytest.raises(StepError, match=r"produces ONNX opsets up to 18, but the target profile asks for opset 21"):
        tiny.convert("fp32", _with(CPU, opset=21), tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def _tf_function_source(tmp_path: Path, function, shape) -> Path:
    """A SavedModel whose serving_default signature is ``function`` of one float input ``x``."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": function(x)}, input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures={"serving_default": module.serve})
    signature = {
        "inputs": [{"name": "x", "shape": list(shape), "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": list(shape), "dtype": "float32"}],
    }
    return _source_record(tmp_path / "source.json", "saved_model", "function.py", tmp_path / "saved_model", signature)


def test_a_tensorflow_op_onnx_lacks_is_named(tmp_path):
    import tensorflow as tf

    record = _tf_function_source(tmp_path, tf.math.lgamma, [None, 4])
    with pytest.raises(
        StepError, match=r"cannot express these TensorFlow ops in ONNX opset 17: Lgamma \(node [^;]*; tf2onnx has no conversion for it\)"
    ):
        _convert(record, "fp32", CPU, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_an_op_that_needs_a_newer_opset_names_it(tmp_path):
    import tensorflow as tf

    record = _tf_function_source(tmp_path, lambda x: tf.tensor_scatter_nd_max(x, [[0]], x[:1]), [4, 3])
    target = _with(CPU, opset=15)
    with pytest.raises(StepError, match=r"TensorScatterMax \(node [^;]*; tf2onnx converts it from opset 16: set opset: 16"):
        _convert(record, "fp32", target, tmp_path / "o.onnx")
    _convert(record, "fp32", _with(CPU, opset=16), tmp_path / "o.onnx")


def test_integer_io_and_unknown_precisions_are_refused(tiny, tmp_path):
    # ONNX artifacts keep float inputs and outputs (QDQ quantizes inside the graph): its settings have no integer_io.
    with pytest.raises(TypeError, match="integer_io"):
        OnnxSettings(integer_io=True)
    with pytest.raises(StepError, match="not 'int4'"):
        tiny.convert("int4", CPU, tmp_path / "o.onnx")


def test_calibration_samples_of_the_wrong_shape_are_refused(tiny, tmp_path):
    calibration = tmp_path / "wrong.npz"
    write_npz(calibration, x=np.zeros((4, 7, 7, 1), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(StepError, match=r"shape \(7, 7, 1\)"):
        _convert(tiny.record, "int8", CPU, tmp_path / "o.onnx", calibration=calibration)


# ---------------------------------------------------------------- runtime module


def test_runtime_io_latency_and_errors(tiny, converted, tmp_path):
    path = converted[("cpu", "fp32")]
    details = onnx_runtime.io_details(path, what="tiny")
    assert details["inputs"][0]["shape"] == [-1, 8, 8, 1] and "quantization" not in details["inputs"][0]
    assert onnx_runtime.median_latency_ms(path, what="tiny", runs=5) > 0
    sample = {tiny.input: tiny.x[tiny.input][0]}
    assert onnx_runtime.median_latency_ms(converted[("qnn", "int8")], what="tiny", sample=sample, runs=5) > 0
    with pytest.raises(StepError, match=rf"takes samples of shape \(8, 8, 1\) for its input {tiny.input}"):
        onnx_runtime.predict(path, {tiny.input: np.zeros((2, 4, 4, 1), np.float32)}, what="tiny")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(StepError, match="does not load in ONNX Runtime"):
        onnx_runtime.load_session(garbage, what="garbage")


def test_io_details_reports_quantization_of_integer_io(tmp_path):
    """An integer input read by a DequantizeLinear carries that node's scale and zero point."""
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "scale", "zero"], ["xf"], name="dq"),
        helper.make_node("Relu", ["xf"], ["y"], name="relu"),
    ]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "scale"), numpy_helper.from_array(np.array(3, np.uint8), "zero")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    path = tmp_path / "integer.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    details = onnx_runtime.io_details(path, what="integer")
    assert details["inputs"] == [{"name": "x", "dtype": "uint8", "shape": [1, 4], "quantization": {"scale": "0.5", "zero_point": 3}}]
    outputs = onnx_runtime.predict(path, {"x": np.array([[3, 5, 1, 4]], np.float32)}, what="integer")
    np.testing.assert_allclose(outputs["y"], [[0, 1, 0, 0.5]])


# ---------------------------------------------------------------- accelerator coverage


def test_coverage_is_reported_only_for_the_qnn_accelerator(converted):
    assert onnx_runtime.accelerator_coverage(converted[("cpu", "fp32")], CPU) is None
    coverage = onnx_runtime.accelerator_coverage(converted[("qnn", "int8")], QNN)
    assert coverage["accelerator"] == "qnn"
    assert coverage == {"accelerator": "qnn", "ops": coverage["ops"], "on_accelerator": coverage["ops"], "fallback": {}}
    assert coverage["ops"] > 10


def test_an_op_qnn_lacks_falls_back_by_name(tmp_path):
    path = _tiny_onnx(tmp_path / "erf.onnx", extra_op="Erf", batch=1)
    coverage = onnx_runtime.accelerator_coverage(path, QNN)
    assert coverage == {"accelerator": "qnn", "ops": 3, "on_accelerator": 2, "fallback": {"Erf": 1}}


def test_a_dynamic_shape_keeps_the_whole_model_off_qnn(converted):
    coverage = onnx_runtime.accelerator_coverage(converted[("cpu", "fp32")], QNN)
    assert coverage["on_accelerator"] == 0 and coverage["ops"] > 0
    assert all(name.endswith(" (dynamic shape)") for name in coverage["fallback"])
    assert sum(coverage["fallback"].values()) == coverage["ops"]


def test_float_ops_outside_qdq_fall_back_in_a_quantized_model(tmp_path):
    """x -> Q -> DQ -> MatMul(DQ weights) -> Q -> DQ -> Softmax -> y: the Softmax runs in float."""
    weights = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    inits = [
        numpy_helper.from_array(np.round(weights / 0.01).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zero"], ["x_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["x_q", "a_scale", "a_zero"], ["x_dq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w"),
        helper.make_node("MatMul", ["x_dq", "w"], ["h"], name="matmul"),
        helper.make_node("QuantizeLinear", ["h", "a_scale", "a_zero"], ["h_q"], name="q_h"),
        helper.make_node("DequantizeLinear", ["h_q", "a_scale", "a_zero"], ["h_dq"], name="dq_h"),
        helper.make_node("Softmax", ["h_dq"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    coverage = onnx_runtime.accelerator_coverage(path, QNN)
    assert coverage == {"accelerator": "qnn", "ops": 7, "on_accelerator": 6, "fallback": {"Softmax (float)": 1}}


def test_dynamic_int8_runs_on_qnn_as_the_fused_pattern_only(tiny, tmp_path):
    path = tiny.convert("dynamic_int8", replace(QNN, precisions=(Precision.DYNAMIC_INT8,)), tmp_path / "tiny.dynamic_int8.onnx")
    ops = Counter(n.op_type for n in _model(path).graph.node)
    assert ops["DynamicQuantizeLinear"] and ops["ConvInteger"] and ops["MatMulInteger"]
    coverage = onnx_runtime.accelerator_coverage(path, QNN)
    assert coverage["fallback"] == {} and coverage["on_accelerator"] == coverage["ops"]
    # Without the Cast -> Mul that dequantizes its result, a ConvInteger has no QNN builder.
    model = _model(path)
    cast = next(n for n in model.graph.node if n.op_type == "Cast" and n.input[0].endswith("_output_quantized"))
    for node in model.graph.node:
        if cast.output[0] in node.input and node.op_type == "Mul":
            node.op_type = "Sub"
            break
    broken = tmp_path / "unfused.onnx"
    onnx.save(model, str(broken))
    assert onnx_runtime.accelerator_coverage(broken, QNN)["fallback"] == {"ConvInteger": 1, "DynamicQuantizeLinear": 1}


# ---------------------------------------------------------------- the steps through the registry

METRICS_KEYS = {
    "artifact", "size_bytes", "metrics", "not_measured", "coverage", "structure", "source", "budgets", "tools", "latency_host", "batching",
    "baseline",
}
TFLITE_NPU = FormatSupport(
    format="tflite", precisions=tuple(Precision), settings=TfliteSettings(delegates=("nnapi",), integer_io=True), accelerator="npu"
)


@pytest.fixture(scope="module")
def evaluation(tiny) -> dict:
    """Evaluation data labelled with the source model's own classes, and the reference step's figures on it."""
    from modelmake.steps import reference

    out = tiny.root / "reference"
    data = out / "evaluation.npz"
    out.mkdir(exist_ok=True)
    write_npz(data, x=tiny.raw, y=tiny.reference.argmax(axis=1))
    job = ReferenceJob(
        source_record=str(tiny.record),
        evaluation=str(data),
        evaluation_origin="evaluation.npz",
        inputs=(PREPROCESSING,),
        outputs=(OutputSpec(top_k=2),),
        out_metrics=str(out / "metrics.json"),
        out_outputs=str(out / "outputs.npz"),
    )
    reference.evaluate_source(job)
    assert fsutil.read_json(job.out_metrics) == {"samples": 48, "top1": 1.0, "top2": 1.0}
    return {"evaluation": str(data), "reference": job.out_metrics, "reference_outputs": job.out_outputs}


def _evaluate_job(tiny, evaluation: dict, artifact: Path, support: FormatSupport, budgets: tuple) -> EvaluateJob:
    return EvaluateJob(
        artifact_id=artifact.name,
        format=support.format,
        artifact=str(artifact),
        record=str(artifact) + ".json",
        source_record=str(tiny.record),
        **evaluation,
        inputs=(PREPROCESSING,),
        outputs=(OutputSpec(top_k=2),),
        conditions=(("dim", 0.5),),
        budgets=budgets,
        support=support,
        out=str(artifact) + ".metrics.json",
    )


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_evaluate_measures_an_int8_artifact_through_its_format_backend(tiny, converted, evaluation, tmp_path, fmt):
    from modelmake.steps import evaluate

    if fmt == "onnx":
        artifact, support, tools = converted[("qnn", "int8")], QNN, {"onnxruntime"}
    else:
        artifact, support, tools = tmp_path / "tiny.int8.tflite", TFLITE_NPU, {"ai-edge-litert"}
        _convert(tiny.record, "int8", support, artifact, calibration=tiny.calibration)
        record = fsutil.read_json(str(artifact) + ".json")
        assert set(record) == RECORD_KEYS and record["integer_io"] is True and record["delegates"] == ["nnapi"]
        assert record["io"]["inputs"][0]["dtype"] == "int8" and "quantization" in record["io"]["inputs"][0]
    budgets = (Budget.parse("max_size_kb", 100), Budget.parse("min_accelerator_coverage", 1.0), Budget.parse("min_top1_agreement", 0.9))
    job = _evaluate_job(tiny, evaluation, artifact, support, budgets)
    summary = evaluate.evaluate(job)
    written = fsutil.read_json(job.out)
    assert set(written) == METRICS_KEYS
    figures = MetricsRecord.read(job.out)
    assert figures.artifact == artifact.name and figures.size_bytes == artifact.stat().st_size
    assert set(figures.tools) == tools and "not installed" not in figures.tools.values()
    assert figures.structure is None and figures.not_measured == {}
    assert figures.coverage["accelerator"] == support.accelerator and figures.metrics["accelerator_coverage"] == 1.0
    assert figures.metrics["top1"] >= 0.9 and figures.metrics["top1_agreement"] >= 0.9 and figures.metrics["latency_ms"] > 0
    assert {"top2", "accuracy_drop", "max_abs_error", "cosine_similarity", "top1_dim"} <= set(figures.metrics)
    assert figures.source == {"samples": 48, "top1": 1.0, "top2": 1.0}
    assert [(v["key"], v["passed"]) for v in figures.budgets] == [(b.key, True) for b in budgets]
    assert figures.latency_host.startswith("build host CPU") and "budgets ok" in summary

    tight = _evaluate_job(tiny, evaluation, artifact, support, (Budget.parse("max_size_kb", 0.5),))
    # A broken budget is a verdict in the record, not a failed task: the package step refuses the bundle on it.
    assert re.search(r"OVER BUDGET: size_kb is .*, over its max_size_kb of 0.5 \(\+\d+%\)$", evaluate.evaluate(tight))
    assert [v["passed"] for v in MetricsRecord.read(tight.out).budgets] == [False]
