"""TFLite files with several inputs and outputs, fed and read by name, at every precision, held to the SavedModel.

Models are built in code (tests/support/tflite_models.py): a detector-style
model whose Reshapes write batch 1, and a model with a float image and an
int32 input.  Names are the SavedModel's signature keys for every file the
converter writes, and the tensor names for a file without a signature.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ArtifactRecord
from modelmake.errors import StepError
from modelmake.formats.tflite import convert as tflite_convert
from modelmake.formats.tflite import runtime
from modelmake.plan import InputSpec
from modelmake.steps._arrays import write_npz
from modelmake.tensors import INPUTS, OUTPUTS, names

from tests.support import tflite_models as models

pytest.importorskip("ai_edge_litert")

TWO_INPUTS = (InputSpec(name="image"), InputSpec(name="class_id"))
MIN_COSINE = {"fp32": 0.99, "fp16": 0.99, "dynamic_int8": 0.95, "int8": 0.95}
EVALUATION_SAMPLES = 32


class TwoInput:
    """The two-input model as a SavedModel and a float .tflite file, with calibration and evaluation data."""

    def __init__(self, root: Path):
        self.root = root
        self.saved_model = models.export_two_input(root / "saved_model")
        self.signature = models.saved_model_signature(self.saved_model)
        self.record = models.write_source_record(root / "source", "saved_model", self.saved_model, self.signature)
        self.calibration = root / "calibration.npz"
        write_npz(self.calibration, **models.two_input_data(64, seed=1))
        self.x = models.two_input_data(EVALUATION_SAMPLES, seed=2)
        self.reference = models.saved_model_outputs(self.saved_model, self.x)
        self.float_file = models.tflite_from_saved_model(self.saved_model, root / "given" / "two_input.tflite")

    def figures(self, outputs: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
        return {name: _figures(self.reference[name], outputs[name]) for name in self.reference}


@pytest.fixture(scope="module")
def two_input(tmp_path_factory) -> TwoInput:
    return TwoInput(tmp_path_factory.mktemp("two-input"))


def _convert(record: Path, precision: str, out: Path, *, calibration: Path | None = None, inputs=TWO_INPUTS) -> Path:
    tflite_convert.convert(models.convert_job(record, precision, out, inputs=inputs, calibration=calibration))
    return out


def _figures(reference: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    """Cosine similarity and max abs error of an output against the float model's."""
    return models.cosine(reference, outputs), models.max_abs_error(reference, outputs)


def _report(what: str, figures: dict[str, tuple[float, float]]) -> None:
    for name, (cosine, error) in figures.items():
        print(f"\n{what} {name}: cosine {cosine:.6f}, max abs error {error:.3g}")


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The detector's SavedModel, its source record and calibration data."""
    root = tmp_path_factory.mktemp("detector")
    directory = models.export_detector(root / "saved_model")
    record = models.write_source_record(root / "source", "saved_model", directory, models.saved_model_signature(directory))
    calibration = root / "calibration.npz"
    write_npz(calibration, x=models.detector_data(32, seed=4)["image"])
    return directory, record, calibration


@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8", "int8"])
def test_a_detector_with_batch_one_reshapes_gives_each_output_by_name_one_sample_at_a_time(detector, tmp_path, precision):
    directory, record, calibration = detector
    file = _convert(record, precision, tmp_path / f"detector.{precision}.tflite", calibration=calibration, inputs=(InputSpec(),))
    x = models.detector_data(6, seed=3)

    outputs = runtime.predict(file, x, what="detector", batch=1)

    reference = models.saved_model_outputs(directory, x)
    assert set(outputs) == {"boxes", "scores"}
    assert outputs["boxes"].shape == (6, models.ANCHORS, 4)
    assert outputs["scores"].shape == (6, models.ANCHORS, models.DETECTOR_CLASSES)
    figures = {name: _figures(reference[name], outputs[name]) for name in reference}
    _report(f"detector SavedModel -> {precision}, batch 1", figures)
    for name, (cosine, _) in figures.items():
        assert outputs[name].dtype == np.float32
        assert cosine > MIN_COSINE[precision], (name, cosine)
    if precision == "fp32":
        for name in reference:
            np.testing.assert_allclose(outputs[name], reference[name], atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8", "int8"])
def test_a_two_input_model_converts_and_predicts_by_name_close_to_the_saved_model(two_input, tmp_path, precision):
    out = _convert(two_input.record, precision, tmp_path / f"two_input.{precision}.tflite", calibration=two_input.calibration)

    outputs = runtime.predict(out, two_input.x, what=out.name)
    one_at_a_time = runtime.predict(out, two_input.x, what=out.name, batch=1)

    figures = two_input.figures(outputs)
    _report(f"two-input SavedModel -> {precision}", figures)
    assert set(outputs) == {"logits", "features"}
    for name, (cosine, _) in figures.items():
        assert cosine > MIN_COSINE[precision], (name, cosine)
        np.testing.assert_allclose(one_at_a_time[name], outputs[name], atol=1e-5)
    written = ArtifactRecord.read(str(out) + ".json")
    assert names(written.io, INPUTS) == names(two_input.signature, INPUTS) == ["class_id", "image"]
    assert names(written.io, OUTPUTS) == names(two_input.signature, OUTPUTS) == ["features", "logits"]
    dtypes = {entry["name"]: entry["dtype"] for entry in written.io[INPUTS]}
    assert dtypes == {"image": "float32", "class_id": "int32"}
    assert all(entry["shape"][0] == -1 for entry in written.io[INPUTS])


def test_io_details_name_the_saved_model_signature_keys(two_input):
    details = runtime.io_details(two_input.float_file, what="two_input.tflite")

    # -1 marks a dynamic dimension, as the file writes it; each key's tensor is named too, for apps that bind tensors.
    assert details == {
        "inputs": [
            {"name": "class_id", "shape": [-1, 1], "dtype": "int32", "tensor": "serving_default_class_id:0"},
            {"name": "image", "shape": [-1, *models.IMAGE], "dtype": "float32",
             "tensor": "serving_default_image:0"},
        ],
        "outputs": [
            {"name": "features", "shape": [-1, 16], "dtype": "float32", "tensor": "StatefulPartitionedCall_1:0"},
            {"name": "logits", "shape": [-1, 6], "dtype": "float32", "tensor": "StatefulPartitionedCall_1:1"},
        ],
    }
    assert runtime.source_signature(two_input.float_file, what="source") == two_input.signature


def test_a_missing_input_is_named_with_the_inputs_the_file_has(two_input):
    with pytest.raises(StepError, match=r"no array for its input class_id: its inputs are class_id, image"):
        runtime.predict(two_input.float_file, {"image": two_input.x["image"]}, what="two_input.tflite")


def test_a_file_without_a_signature_is_fed_and_read_by_tensor_names(two_input, tmp_path):
    unsigned = tmp_path / "unsigned.tflite"
    unsigned.write_bytes(models.strip_signatures(two_input.float_file.read_bytes()))
    assert models.signatures(unsigned) == {}

    details = runtime.io_details(unsigned, what=unsigned.name)
    by_key = {name.removeprefix("serving_default_").removesuffix(":0"): name for name in names(details, INPUTS)}
    assert set(by_key) == {"image", "class_id"}
    outputs = runtime.predict(unsigned, {by_key[key]: values for key, values in two_input.x.items()}, what=unsigned.name)

    # The graph lists its outputs in its own order under tensor names: match them to the signed file's by value.
    signed = runtime.predict(two_input.float_file, two_input.x, what="signed")
    assert set(outputs) == set(names(details, OUTPUTS))
    for name, values in signed.items():
        assert any(other.shape == values.shape and np.allclose(other, values, atol=1e-6) for other in outputs.values()), name


def _tflite_source(two_input: TwoInput, root: Path) -> Path:
    return models.write_source_record(root, "tflite", two_input.float_file, runtime.source_signature(two_input.float_file, what="source"))


@pytest.mark.parametrize(("kind", "precision"), [("saved_model", "fp32"), ("saved_model", "int8"), ("tflite", "fp32"), ("tflite", "int8")])
def test_fixed_input_shapes_are_written_into_the_file_under_the_same_names(two_input, tmp_path, kind, precision):
    record = two_input.record if kind == "saved_model" else _tflite_source(two_input, tmp_path / "source")
    inputs = (InputSpec(name="image", shape=(1, *models.IMAGE)), InputSpec(name="class_id", shape=(1, 1)))
    out = _convert(record, precision, tmp_path / f"fixed.{precision}.tflite", calibration=two_input.calibration, inputs=inputs)

    details = runtime.io_details(out, what=out.name)
    assert {entry["name"]: entry["shape"] for entry in details[INPUTS]} == {"image": [1, *models.IMAGE], "class_id": [1, 1]}
    assert names(details, OUTPUTS) == ["features", "logits"]
    outputs = runtime.predict(out, two_input.x, what=out.name)  # a static batch of 1: one sample per invoke
    for name, (cosine, _) in two_input.figures(outputs).items():
        assert cosine > MIN_COSINE[precision], (name, cosine)


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_integer_io_quantizes_the_float_input_and_leaves_the_integer_input_as_it_is(two_input, tmp_path, kind):
    record = two_input.record if kind == "saved_model" else _tflite_source(two_input, tmp_path / "source")
    out = tmp_path / "integer_io.int8.tflite"
    tflite_convert.convert(
        models.convert_job(record, "int8", out, inputs=TWO_INPUTS, calibration=two_input.calibration, support=models.INTEGER_IO)
    )

    details = runtime.io_details(out, what=out.name)
    assert {entry["name"]: entry["dtype"] for entry in details[INPUTS] + details[OUTPUTS]} == {
        "class_id": "int32", "image": "int8", "features": "int8", "logits": "int8"
    }
    assert "quantization" not in details[INPUTS][0] and "quantization" in details[INPUTS][1]
    figures = two_input.figures(runtime.predict(out, two_input.x, what=out.name))
    _report(f"two-input {kind} -> int8 integer io", figures)
    for name, (cosine, _) in figures.items():
        assert cosine > MIN_COSINE["int8"], (name, cosine)


def test_a_fixed_shape_that_contradicts_the_model_is_refused(two_input, tmp_path):
    inputs = (InputSpec(name="image", shape=(1, 4, 4, 1)), InputSpec(name="class_id"))
    with pytest.raises(StepError, match=r"io fixes input image to \(1, 4, 4, 1\), but the model takes \(\?, 8, 8, 1\)"):
        _convert(two_input.record, "fp32", tmp_path / "wrong.fp32.tflite", inputs=inputs)


@pytest.mark.parametrize("precision", ["fp16", "dynamic_int8", "int8"])
def test_litert_quantizer_quantizes_a_two_input_tflite_source(two_input, tmp_path, precision):
    record = _tflite_source(two_input, tmp_path / "source")
    signature = runtime.source_signature(two_input.float_file, what="source")

    out = _convert(record, precision, tmp_path / f"given.{precision}.tflite", calibration=two_input.calibration)

    outputs = runtime.predict(out, two_input.x, what=out.name)
    figures = two_input.figures(outputs)
    _report(f"two-input .tflite -> LiteRT Quantizer {precision}", figures)
    for name, (cosine, _) in figures.items():
        assert cosine > MIN_COSINE[precision], (name, cosine)
    assert runtime.source_signature(out, what=out.name) == signature
    assert fsutil.read_json(str(out) + ".json")["quantization"]["tensors_quantized"] > 0


def test_litert_quantizer_calibrates_a_two_input_source_without_a_signature_by_tensor_names(two_input, tmp_path):
    unsigned = tmp_path / "given" / "unsigned.tflite"
    unsigned.parent.mkdir()
    unsigned.write_bytes(models.strip_signatures(two_input.float_file.read_bytes()))
    signature = runtime.source_signature(unsigned, what="source")
    record = models.write_source_record(tmp_path / "source", "tflite", unsigned, signature)
    tensor_names = {name.removeprefix("serving_default_").removesuffix(":0"): name for name in names(signature, INPUTS)}
    inputs = tuple(InputSpec(name=name) for name in names(signature, INPUTS))
    calibration = tmp_path / "calibration.npz"
    with np.load(two_input.calibration) as data:
        write_npz(calibration, **{tensor_names[key]: data[key] for key in data.files})

    out = _convert(record, "int8", tmp_path / "unsigned.int8.tflite", calibration=calibration, inputs=inputs)

    assert models.signatures(out) == {}
    assert runtime.source_signature(out, what="artifact") == signature  # the source's tensor names, inputs and outputs
    outputs = runtime.predict(out, {tensor_names[key]: values for key, values in two_input.x.items()}, what=out.name)
    signed = runtime.predict(_convert(two_input.record, "fp32", tmp_path / "signed.fp32.tflite"), two_input.x, what="signed")
    for name, values in signed.items():
        best = max(models.cosine(values, other) for other in outputs.values() if other.shape == values.shape)
        assert best > MIN_COSINE["int8"], (name, best)


def test_latency_is_timed_on_one_sample_by_name_or_on_zeros(two_input):
    sample = {"image": two_input.x["image"][0], "class_id": two_input.x["class_id"][0].astype(np.int64)}

    assert runtime.median_latency_ms(two_input.float_file, what="two_input.tflite", sample=sample) > 0
    assert runtime.median_latency_ms(two_input.float_file, what="two_input.tflite") > 0
    with pytest.raises(StepError, match="no input named label"):
        runtime.median_latency_ms(two_input.float_file, what="two_input.tflite", sample={**sample, "label": np.zeros(1)})


def test_an_input_without_a_batch_axis_is_fed_one_sample_at_a_time(tmp_path):
    """A scalar int64 sample rate beside a batch of audio, as voice models take it: one value per invoke."""
    import tensorflow as tf

    class Scaled(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([], tf.int64)])
        def serve(self, audio, sample_rate):
            return {"scaled": audio * tf.cast(sample_rate, tf.float32)}

    module = Scaled()
    tf.saved_model.save(module, str(tmp_path / "saved_model"), signatures={"serving_default": module.serve})
    file = models.tflite_from_saved_model(tmp_path / "saved_model", tmp_path / "scaled.tflite")
    assert runtime.io_details(file, what=file.name)[INPUTS][1] == {
        "name": "sample_rate", "shape": [], "dtype": "int64", "tensor": "serving_default_sample_rate:0"
    }
    x = {"audio": np.ones((3, 3), np.float32), "sample_rate": np.array([8000, 16000, 24000], np.int64)}

    outputs = runtime.predict(file, x, what=file.name)

    np.testing.assert_array_equal(outputs["scaled"], np.repeat([[8000.0], [16000.0], [24000.0]], 3, axis=1))
    assert runtime.median_latency_ms(file, what=file.name, sample={"audio": x["audio"][0], "sample_rate": x["sample_rate"][0]}) > 0
