"""Core ML packages of models with several named inputs and outputs: the names, shapes and types apps bind.

Core ML cannot run off macOS, so these tests prove what the package shows:
it keeps the source's input and output names (the SavedModel signature's
keys), fixes every input's shape, keeps integer inputs integer, and its
structural check compares it with the source by name.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.errors import StepError
from modelmake.formats.base import NotMeasurable
from modelmake.kinds import Precision
from modelmake.plan import InputSpec

pytest.importorskip("coremltools")
pytest.importorskip("tensorflow")

from modelmake.formats.coreml import runtime as coreml_runtime  # noqa: E402
from modelmake.steps import convert  # noqa: E402

from tests.unit.test_coreml_steps import IOS18, VARIANTS, WEIGHTS, _export, _job  # noqa: E402


def _two_in_two_out(width: int | None = 16):
    """An image and a float vector in; class scores and a box out (a dict, so the outputs have names)."""
    import keras

    image = keras.Input((16, width, 1), name="image")
    extra = keras.Input((5,), name="extra")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    # A dynamic width needs a pooling that drops it; either way Dense(64) gets above 2048 weights (compressed).
    x = keras.layers.GlobalAveragePooling2D()(x) if width is None else keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([x, extra])
    x = keras.layers.Dense(64 if width else 512, activation="relu")(x)
    scores = keras.layers.Dense(10, activation="softmax", name="scores_head")(x)
    box = keras.layers.Dense(4, name="box_head")(x)
    return keras.Model([image, extra], {"scores": scores, "box": box})


def _with_an_integer_input():
    """A float feature vector and an int64 sample rate in (as voice models take one), one output."""
    import keras

    features = keras.Input((8,), name="features")
    rate = keras.Input((1,), name="sample_rate", dtype="int64")
    x = keras.layers.Concatenate()([features, keras.ops.cast(rate, "float32") / 16000.0])
    return keras.Model([features, rate], keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    return _export(_two_in_two_out, tmp_path_factory.mktemp("two"))


@pytest.fixture(scope="module")
def built(model, tmp_path_factory) -> dict:
    """fp32, fp16, int8 and palettized 4-bit packages: variant -> (path, record)."""
    out_dir = tmp_path_factory.mktemp("artifacts")
    result = {}
    for variant, (precision, per_channel, bits) in VARIANTS.items():
        out = out_dir / f"two.{variant}.mlpackage.zip"
        convert.convert(_job(model["record"], precision, out, per_channel=per_channel, palettize=bits))
        result[variant] = (out, fsutil.read_json(str(out) + ".json"))
    return result


def _names(io: dict) -> tuple[list[str], list[str]]:
    return [e["name"] for e in io["inputs"]], [e["name"] for e in io["outputs"]]


def test_the_source_has_two_named_inputs_and_outputs(model):
    inputs, outputs = _names(model["signature"])
    assert sorted(inputs) == ["extra", "image"] and sorted(outputs) == ["box", "scores"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_keeps_the_source_names_and_passes_the_check(built, model, variant):
    path, record = built[variant]
    precision, _, bits = VARIANTS[variant]
    assert _names(record["io"]) == _names(model["signature"])
    assert coreml_runtime.io_details(path, what=variant) == record["io"]
    report = coreml_runtime.structural_check(path, what=variant, source_signature=model["signature"], precision=precision, palettize=bits)
    assert report["loads"] is True and report["io_matches"] is True
    assert report["weights"] == WEIGHTS[variant]
    assert report["io"] == record["io"]


def test_inputs_are_fixed_at_batch_1_and_outputs_float32(built):
    _, record = built["fp16"]
    shapes = {e["name"]: (e["shape"], e["dtype"]) for e in record["io"]["inputs"] + record["io"]["outputs"]}
    assert shapes == {
        "image": ([1, 16, 16, 1], "float32"),
        "extra": ([1, 5], "float32"),
        "scores": ([1, 10], "float32"),
        "box": ([1, 4], "float32"),
    }


def test_an_int8_palettized_package_keeps_the_names(model, tmp_path):
    out = tmp_path / "two.int8p4.mlpackage.zip"
    convert.convert(_job(model["record"], Precision.INT8, out, support=IOS18, palettize=4))
    assert _names(coreml_runtime.io_details(out, what="joint")) == _names(model["signature"])


def test_the_check_names_each_tensor_that_differs(built, model):
    path, _ = built["fp16"]

    def problems(edit) -> str:
        signature = copy.deepcopy(model["signature"])
        edit(signature)
        with pytest.raises(StepError) as error:
            coreml_runtime.structural_check(path, what="two", source_signature=signature, precision=Precision.FP16, palettize=None)
        return str(error.value)

    def entry(signature, role, name):
        return next(e for e in signature[role] if e["name"] == name)

    def rename_box(s):
        entry(s, "outputs", "box")["name"] = "boxes"

    def add_input(s):
        s["inputs"].append({"name": "state", "shape": [None, 8], "dtype": "float32"})

    message = problems(rename_box)
    assert "the source's output boxes is missing" in message and "its output box is not the source's" in message
    assert "the source's input state is missing" in problems(add_input)
    message = problems(lambda s: entry(s, "inputs", "extra").update(shape=[None, 6]))
    assert "input extra has shape (1, 5), the source's (?, 6)" in message and "image" not in message
    rank = problems(lambda s: entry(s, "inputs", "extra").update(shape=[None, 5, 1]))
    assert "input extra has shape (1, 5), the source's (?, 5, 1)" in rank
    assert "output scores is float32, the source's int64" in problems(lambda s: entry(s, "outputs", "scores").update(dtype="int64"))
    # float16 and float32 are one family: a float source is bound as float32
    signature = copy.deepcopy(model["signature"])
    entry(signature, "inputs", "extra")["dtype"] = "float16"
    coreml_runtime.structural_check(path, what="two", source_signature=signature, precision=Precision.FP16, palettize=None)


@pytest.mark.skipif(__import__("sys").platform == "darwin", reason="Core ML runs on macOS")
def test_running_takes_inputs_by_name_and_is_not_measurable_here(built):
    path, _ = built["fp16"]
    inputs = {"image": np.zeros((2, 16, 16, 1), np.float32), "extra": np.zeros((2, 5), np.float32)}
    with pytest.raises(NotMeasurable, match="needs macOS"):
        coreml_runtime.predict(path, inputs, what="two")
    with pytest.raises(NotMeasurable, match="needs macOS"):
        coreml_runtime.median_latency_ms(path, what="two", sample={name: array[0] for name, array in inputs.items()})


@pytest.fixture(scope="module")
def dynamic_width(tmp_path_factory) -> dict:
    return _export(lambda: _two_in_two_out(width=None), tmp_path_factory.mktemp("wide"))


def test_a_dynamic_width_without_a_declared_shape_is_refused(dynamic_width, tmp_path):
    out = tmp_path / "wide.fp16.mlpackage.zip"
    with pytest.raises(StepError, match=r"input image has shape \(\?, 16, \?, 1\).*set io -> inputs -> image -> shape"):
        convert.convert(_job(dynamic_width["record"], Precision.FP16, out))
    assert not out.exists()


def test_a_declared_shape_fixes_the_dynamic_width(dynamic_width, tmp_path):
    out = tmp_path / "wide.fp16.mlpackage.zip"
    inputs = (InputSpec(name="image", shape=(1, 16, 24, 1)), InputSpec(name="extra"))
    convert.convert(_job(dynamic_width["record"], Precision.FP16, out, inputs=inputs))
    io = fsutil.read_json(str(out) + ".json")["io"]
    assert {e["name"]: e["shape"] for e in io["inputs"]} == {"image": [1, 16, 24, 1], "extra": [1, 5]}
    assert _names(io) == _names(dynamic_width["signature"])
    report = coreml_runtime.structural_check(
        out, what="wide", source_signature=dynamic_width["signature"], precision=Precision.FP16, palettize=None
    )
    assert report["io_matches"] is True


@pytest.mark.parametrize(
    "spec, message",
    [
        (InputSpec(name="image", shape=(1, 16, 24)), r"io -> inputs -> image -> shape is \(1, 16, 24\).*\(\?, 16, \?, 1\)"),
        (InputSpec(name="image", shape=(1, 32, 24, 1)), r"io -> inputs -> image -> shape is \(1, 32, 24, 1\).*only the dynamic"),
        (InputSpec(name="picture", shape=(1, 16, 24, 1)), r"input picture, but the model's inputs are (image, extra|extra, image)"),
        (InputSpec(shape=(1, 16, 24, 1)), r"input \(unnamed\), but the model's inputs are (image, extra|extra, image)"),
    ],
)
def test_a_declared_shape_that_does_not_fit_is_refused(dynamic_width, tmp_path, spec, message):
    out = tmp_path / "wide.fp16.mlpackage.zip"
    with pytest.raises(StepError, match=message):
        convert.convert(_job(dynamic_width["record"], Precision.FP16, out, inputs=(spec,)))


def test_an_int64_input_stays_an_integer_as_int32(tmp_path):
    source = _export(_with_an_integer_input, tmp_path)
    assert {e["name"]: e["dtype"] for e in source["signature"]["inputs"]}["sample_rate"] == "int64"
    out = tmp_path / "rate.fp16.mlpackage.zip"
    convert.convert(_job(source["record"], Precision.FP16, out))
    io = fsutil.read_json(str(out) + ".json")["io"]
    inputs = {e["name"]: (e["shape"], e["dtype"]) for e in io["inputs"]}
    assert inputs == {"features": ([1, 8], "float32"), "sample_rate": ([1, 1], "int32")}
    report = coreml_runtime.structural_check(
        out, what="rate", source_signature=source["signature"], precision=Precision.FP16, palettize=None
    )
    assert report["io_matches"] is True


def test_a_name_core_ml_cannot_take_is_refused(tmp_path):
    import keras

    def build():
        features = keras.Input((4,), name="features")
        return keras.Model(features, {"speech-probability": keras.layers.Dense(1)(features)})

    source = _export(build, tmp_path)
    out = tmp_path / "odd.fp16.mlpackage.zip"
    with pytest.raises(StepError, match=r"output 'speech-probability' cannot keep its name in Core ML.*rename it in the model"):
        convert.convert(_job(source["record"], Precision.FP16, out))
    assert not out.exists()


def test_a_model_whose_weights_are_all_inline_gives_a_package_that_loads(tmp_path):
    """Too small for a weight file: coremltools leaves an empty weights directory, which the zip cannot hold."""
    import keras

    source = _export(lambda: keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(2)]), tmp_path)
    out = tmp_path / "small.fp32.mlpackage.zip"
    convert.convert(_job(source["record"], Precision.FP32, out))
    report = coreml_runtime.structural_check(
        out, what="small", source_signature=source["signature"], precision=Precision.FP32, palettize=None
    )
    assert report["io"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": [1, 4]}]
