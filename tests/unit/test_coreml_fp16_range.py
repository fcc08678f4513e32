"""A constant beyond float16's range in a Core ML float16 conversion: its op stays float32, named in the log.

Core ML cannot run off macOS, so this asserts what the package shows: the
constant is stored as float32 and feeds a float32 op, every other weight is
float16, and the structural check accepts exactly that.
"""
from __future__ import annotations

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.errors import StepError
from modelmake.kinds import Precision

pytest.importorskip("coremltools")
pytest.importorskip("tensorflow")

from modelmake.formats.coreml import runtime as coreml_runtime  # noqa: E402
from modelmake.steps import convert  # noqa: E402

from tests.unit.test_coreml_steps import _export, _job  # noqa: E402

GAIN = 1e6


def _gain_model():
    """A per-channel gain of 1e6 (64 values: stored in the weight file, not inline) between two Dense layers."""
    import keras

    class Gain(keras.layers.Layer):
        def build(self, shape):
            self.factor = self.add_weight(shape=(shape[-1],), initializer=keras.initializers.Constant(GAIN), trainable=False, name="factor")

        def call(self, x):
            return x * self.factor

    return keras.Sequential(
        [
            keras.Input((16, 16, 1), name="image"),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            Gain(name="gain"),
            keras.layers.Dense(10, name="scores"),
        ]
    )


@pytest.fixture(scope="module")
def gain(tmp_path_factory) -> dict:
    return _export(_gain_model, tmp_path_factory.mktemp("gain"))


def _program_weights(path):
    """(output name, dtype, consumer op types) of every weight-file constant, and the dtype each op computes in."""
    from coremltools.proto import MIL_pb2

    with coreml_runtime.unpacked(path, what="test") as package:
        spec = coreml_runtime._load_spec(package, what="test")
    ops = list(coreml_runtime._operations(next(iter(spec.mlProgram.functions["main"].block_specializations.values()))))
    consumers: dict[str, list] = {}
    for op in ops:
        for binding in op.inputs.values():
            for argument in binding.arguments:
                if argument.name:
                    consumers.setdefault(argument.name, []).append(op)
    weights = {}
    for op in ops:
        value = op.attributes["val"] if op.type == "const" else None
        if value is not None and value.WhichOneof("value") == "blobFileValue":
            name = op.outputs[0].name
            dtype = MIL_pb2.DataType.Name(value.type.tensorType.dataType)
            computes = {MIL_pb2.DataType.Name(c.outputs[0].type.tensorType.dataType) for c in consumers[name]}
            weights[name] = (dtype, {c.type for c in consumers[name]}, computes)
    return weights


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.INT8])
def test_the_gain_stays_float32_and_is_named(gain, tmp_path, capsys, precision):
    out = tmp_path / f"gain.{precision}.mlpackage.zip"
    convert.convert(_job(gain["record"], precision, out))
    log = capsys.readouterr().out
    record = fsutil.read_json(str(out) + ".json")

    kept = record["float32_ops"]
    assert len(kept) == 1
    [(op, constants)] = kept.items()
    assert "gain" in op and constants and all("gain" in c for c in constants)
    assert "kept in float32" in log and op in log and constants[0] in log

    weights = _program_weights(out)
    float32 = {name: w for name, w in weights.items() if w[0] == "FLOAT32"}
    assert set(float32) == set(constants)
    assert float32[constants[0]][1] == {"mul"} and float32[constants[0]][2] == {"FLOAT32"}
    # Every other weight is float16 (int8 leaves tensors under 2048 elements in float16 too).
    assert all(w[0] == "FLOAT16" for name, w in weights.items() if name not in float32)

    report = coreml_runtime.structural_check(out, what="gain", source_signature=gain["signature"], precision=precision, palettize=None)
    assert report["float32_ops"] == kept
    assert report["weights"] == ("fp16" if precision == Precision.FP16 else "int8 (linear, per-channel)")
    share = coreml_runtime.weight_share(out, precision)
    # The 64 float32 values (256 bytes) are the only bytes not at the requested precision.
    assert share is not None and 0.9 < share < 1.0


def test_a_float32_weight_in_range_is_still_refused(gain, tmp_path):
    """The check accepts float32 weights only where the file shows values beyond float16's range."""
    out = tmp_path / "gain.fp32.mlpackage.zip"
    convert.convert(_job(gain["record"], Precision.FP32, out))
    with pytest.raises(StepError, match="its weights are fp32, not fp16"):
        coreml_runtime.structural_check(out, what="gain", source_signature=gain["signature"], precision=Precision.FP16, palettize=None)


def test_without_such_constants_nothing_is_recorded(tmp_path):
    from tests.unit.test_coreml_steps import _tiny_cnn

    source = _export(_tiny_cnn, tmp_path)
    out = tmp_path / "cnn.fp16.mlpackage.zip"
    convert.convert(_job(source["record"], Precision.FP16, out))
    assert "float32_ops" not in fsutil.read_json(str(out) + ".json")
    report = coreml_runtime.structural_check(
        out, what="cnn", source_signature=source["signature"], precision=Precision.FP16, palettize=None
    )
    assert "float32_ops" not in report
    assert np.isclose(coreml_runtime.weight_share(out, Precision.FP16), 1.0)
