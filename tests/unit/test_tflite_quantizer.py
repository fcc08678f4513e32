"""A .tflite source quantized by LiteRT Quantizer: fp16, dynamic int8 and calibrated int8, held to the float model.

The model is a small CNN trained a few epochs on scikit-learn's digits and
written by the TFLite converter, as a user's float .tflite file would be;
the convert step reads it through the source step, as a build does.  Two
real-world variants of the file are made from it: one without a signature
(older converters) and one whose weights are float16 behind DEQUANTIZE ops.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelmake.contracts import ArtifactRecord, ConvertJob
from modelmake.formats.tflite import TfliteSettings
from modelmake.formats.tflite import runtime as tflite_runtime
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec
from modelmake.steps import convert
from modelmake.steps._arrays import preprocess, write_npz
from modelmake.tensors import INPUTS, OUTPUTS

from tests.support.tflite_models import saved_model_signature, write_source_record

pytest.importorskip("ai_edge_quantizer")

PREPROCESSING = InputSpec(layout="NHWC", scale="1/16", offset="0")
TFLITE = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings())
INTEGER_IO = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings(integer_io=True))
TRAIN = 1200  # the rest of the 1797 digits is held out
THRESHOLDS = {"fp16": 0.999, "dynamic_int8": 0.99, "int8": 0.98}
MAX_TOP1_DROP = 0.02
WEIGHTED_LAYERS = 4  # two Conv2D and two Dense kernels


class Digits:
    """The trained model as a SavedModel and a float .tflite file, its calibration data and the held-out set."""

    def __init__(self, root: Path):
        import keras
        import tensorflow as tf
        from sklearn.datasets import load_digits

        keras.utils.set_random_seed(0)
        digits = load_digits()
        raw = digits.images[..., None].astype(np.float32)  # 0..16, as the data files hold them
        self.root = root
        self.x_test, self.y_test = raw[TRAIN:], digits.target[TRAIN:]
        self.calibration = root / "calibration.npz"
        write_npz(self.calibration, x=raw[:256], y=digits.target[:256])

        inputs = keras.Input((8, 8, 1), name="image")
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(64, activation="relu")(h)
        model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="digits_cnn")
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(preprocess(raw[:TRAIN], PREPROCESSING), digits.target[:TRAIN], epochs=8, batch_size=32, verbose=0)
        self.saved_model = root / "saved_model"
        model.export(str(self.saved_model), verbose=False)

        self.float_file = root / "given" / "digits.tflite"
        self.float_file.parent.mkdir()
        self.float_file.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model)).convert())
        self.float_outputs = self.predict(self.float_file)

    def predict(self, path: Path) -> np.ndarray:
        """The logits, fed and read under the file's own names (the signature's, or the tensors' without one)."""
        io = tflite_runtime.io_details(path, what=path.name)
        (image,), (logits,) = io[INPUTS], io[OUTPUTS]
        outputs = tflite_runtime.predict(path, {image["name"]: preprocess(self.x_test, PREPROCESSING)}, what=path.name)
        return outputs[logits["name"]]

    def top1(self, outputs: np.ndarray) -> float:
        return float(np.mean(outputs.argmax(1) == self.y_test))


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Digits:
    return Digits(tmp_path_factory.mktemp("litertq"))


def _materialize(root: Path, kind: str, path: Path) -> Path:
    """The source record the source step writes for the file or SavedModel."""
    signature = tflite_runtime.source_signature(path, what=str(path)) if kind == "tflite" else saved_model_signature(path)
    return write_source_record(root, kind, path, signature)


def _convert(record: Path, precision: str, out: Path, calibration: Path, support: FormatSupport = TFLITE) -> Path:
    job = ConvertJob(
        artifact_id=out.name,
        source_record=str(record),
        precision=Precision(precision),
        per_channel=True,
        palettize=None,
        calibration=str(calibration) if precision == "int8" else None,
        calibration_origin=None,
        inputs=(PREPROCESSING,),
        support=support,
        out=str(out),
        out_record=str(out) + ".json",
    )
    convert.convert(job)
    return out


def _cosine(reference: np.ndarray, outputs: np.ndarray) -> float:
    per_sample = np.sum(reference * outputs, 1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(outputs, axis=1))
    return float(np.mean(per_sample))


def _strip_signatures(data: bytes) -> bytes:
    """The file as older converters wrote it: the same graph with no SignatureDef."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _signatures(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()


@pytest.mark.parametrize("precision", ["fp16", "dynamic_int8", "int8"])
def test_a_float_tflite_source_quantizes_close_to_the_float_model_and_reproducibly(digits, tmp_path, precision):
    record = _materialize(tmp_path / "source", "tflite", digits.float_file)
    first = _convert(record, precision, tmp_path / f"digits.{precision}.tflite", digits.calibration)
    again = _convert(record, precision, tmp_path / "again" / first.name, digits.calibration)

    assert first.read_bytes() == again.read_bytes()
    outputs = digits.predict(first)
    cosine = _cosine(digits.float_outputs, outputs)
    assert cosine >= THRESHOLDS[precision], cosine
    drop = digits.top1(digits.float_outputs) - digits.top1(outputs)
    assert drop <= MAX_TOP1_DROP, drop
    assert first.stat().st_size < 0.6 * digits.float_file.stat().st_size
    share = tflite_runtime.weight_share(first, Precision(precision))
    assert share is not None and share >= 0.95, share

    written = ArtifactRecord.read(str(first) + ".json")
    quantization = written.extra["quantization"]
    assert quantization["tool"] == "ai-edge-quantizer"
    assert quantization["recipe"] == {"fp16": "weight_only_wf16_afp32", "dynamic_int8": "dynamic_wi8_afp32"}.get(
        precision, "static_wi8_ai8_float_io"
    )
    assert quantization["tensors_quantized"] == WEIGHTED_LAYERS
    assert "ai-edge-quantizer" in written.tools
    # Float I/O unless the target asks for integer tensors, as for the TFLite converter's int8 artifacts.
    assert [entry["dtype"] for entry in written.io[INPUTS] + written.io[OUTPUTS]] == ["float32", "float32"]


def test_int8_takes_integer_tensors_where_the_target_asks_for_them(digits, tmp_path):
    record = _materialize(tmp_path / "source", "tflite", digits.float_file)
    out = _convert(record, "int8", tmp_path / "digits.int8.tflite", digits.calibration, INTEGER_IO)

    written = ArtifactRecord.read(str(out) + ".json")
    assert written.integer_io
    assert [entry["dtype"] for entry in written.io[INPUTS] + written.io[OUTPUTS]] == ["int8", "int8"]
    assert _cosine(digits.float_outputs, digits.predict(out)) >= THRESHOLDS["int8"]


def test_a_source_without_a_signature_is_calibrated_and_keeps_its_interface(digits, tmp_path):
    unsigned = tmp_path / "given" / "unsigned.tflite"
    unsigned.parent.mkdir()
    unsigned.write_bytes(_strip_signatures(digits.float_file.read_bytes()))
    assert _signatures(unsigned) == {}
    record = _materialize(tmp_path / "source", "tflite", unsigned)

    out = _convert(record, "int8", tmp_path / "unsigned.int8.tflite", digits.calibration)

    assert _signatures(out) == {}
    outputs = digits.predict(out)
    assert _cosine(digits.float_outputs, outputs) >= THRESHOLDS["int8"]
    assert digits.top1(digits.float_outputs) - digits.top1(outputs) <= MAX_TOP1_DROP
    quantization = _quantization(out)
    assert quantization["tensors_quantized"] == WEIGHTED_LAYERS
    assert any("no signature" in note for note in quantization["notes"])


@pytest.mark.parametrize("precision", ["dynamic_int8", "int8"])
def test_float16_weights_behind_dequantize_ops_are_widened_and_quantized_to_int8(digits, tmp_path, precision, capfd):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(digits.saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    half = tmp_path / "given" / "digits_fp16.tflite"
    half.parent.mkdir()
    half.write_bytes(converter.convert())
    record = _materialize(tmp_path / "source", "tflite", half)

    out = _convert(record, precision, tmp_path / f"half.{precision}.tflite", digits.calibration)

    quantization = _quantization(out)
    assert quantization["weights_in_source"] == {"FLOAT16": WEIGHTED_LAYERS * 2}  # kernels and biases
    assert quantization["tensors_quantized"] == WEIGHTED_LAYERS
    assert "FLOAT16" not in quantization["weights_in_artifact"]
    assert any("float16 weight tensors of the source widened" in note for note in quantization["notes"])
    assert "DEQUANTIZE ops; they were widened to float32" in capfd.readouterr().out
    assert _cosine(digits.float_outputs, digits.predict(out)) >= THRESHOLDS[precision]


def test_an_fp16_variant_of_a_float16_source_says_nothing_was_quantized(digits, tmp_path, capfd):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(digits.saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    half = tmp_path / "given" / "digits_fp16.tflite"
    half.parent.mkdir()
    half.write_bytes(converter.convert())
    record = _materialize(tmp_path / "source", "tflite", half)

    out = _convert(record, "fp16", tmp_path / "half.fp16.tflite", digits.calibration)

    assert _quantization(out)["tensors_quantized"] == 0
    assert "nothing was quantized" in capfd.readouterr().out
    assert _cosine(digits.float_outputs, digits.predict(out)) >= THRESHOLDS["fp16"]


def test_the_two_int8_paths_meet_the_same_thresholds(digits, tmp_path):
    """The TFLite converter's int8 from the SavedModel (modelmake's path for TensorFlow sources) and LiteRT
    Quantizer's from the float .tflite file, on the same model and data."""
    converter_out = _convert(
        _materialize(tmp_path / "sm", "saved_model", digits.saved_model), "int8", tmp_path / "converter.int8.tflite", digits.calibration
    )
    quantizer_out = _convert(
        _materialize(tmp_path / "tfl", "tflite", digits.float_file), "int8", tmp_path / "quantizer.int8.tflite", digits.calibration
    )
    float_top1 = digits.top1(digits.float_outputs)
    figures = {}
    for name, path in (("tflite converter", converter_out), ("litert quantizer", quantizer_out)):
        outputs = digits.predict(path)
        figures[name] = (_cosine(digits.float_outputs, outputs), digits.top1(outputs), path.stat().st_size)
    print(f"\nfloat: top-1 {float_top1:.4f}, {digits.float_file.stat().st_size} bytes")
    for name, (cosine, top1, size) in figures.items():
        print(f"{name}: cosine {cosine:.5f}, top-1 {top1:.4f}, {size} bytes")
        assert cosine >= THRESHOLDS["int8"] and float_top1 - top1 <= MAX_TOP1_DROP, (name, cosine, top1)


def _quantization(path: Path) -> dict:
    from modelmake import fsutil

    return fsutil.read_json(str(path) + ".json")["quantization"]
