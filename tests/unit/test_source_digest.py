"""The source record's model digest: the same for a source run again unchanged, different for any change to the model.

TensorFlow numbers the functions it traces per process and Keras lists a
model's variables in an order that changes from one export to the next, so
two exports of one model differ in their bytes; the record must not, or every
conversion after a re-run of the source would run again.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelmake import fsutil
from modelmake.contracts import SourceJob
from modelmake.plan import Source
from modelmake.steps import source

from tests.support.onnx_workspaces import mlp_onnx
from tests.support.recipes import flat_digits_recipe
from tests.support.tflite_models import tflite_from_saved_model

RECIPE = flat_digits_recipe("A linear classifier trained for one epoch.", seed=2, epochs=1, batch_size=64)


def _materialize(kind: str, path: Path, out: Path) -> bytes:
    """Run the source step into ``out`` and return the bytes of the record it writes."""
    record = out / "source.json"
    source.materialize(SourceJob(Source(kind=kind, path=str(path), function="build_model"), str(out), str(record)))
    return record.read_bytes()


def _digest(kind: str, path: Path, out: Path) -> str:
    return json.loads(_materialize(kind, path, out))["model_sha256"]


def _save_keras(path: Path, *, activation: str = "relu", input_name: str = "pixels", nudge: float = 0.0) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((64,), name=input_name),
        keras.layers.Dense(16, activation=activation),
        keras.layers.Dense(10, activation="softmax"),
    ])
    if nudge:
        kernel = model.layers[0].kernel
        values = kernel.numpy()
        values[5, 0] += nudge  # one weight of 1,210
        kernel.assign(values)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _save_keras(root / "model.keras")
    (root / "recipe.py").write_text(RECIPE, encoding="utf-8")
    return root


@pytest.mark.parametrize("kind, name", [("keras", "model.keras"), ("recipe", "recipe.py")])
def test_a_source_run_again_writes_the_same_record(models, tmp_path, kind, name):
    out = tmp_path / "source"
    first = _materialize(kind, models / name, out)
    exported = fsutil.sha256_tree(out / "saved_model")
    _materialize("keras", models / "model.keras", tmp_path / "other")  # TensorFlow's function numbers move on
    second = _materialize(kind, models / name, out)
    assert fsutil.sha256_tree(out / "saved_model") != exported, "the two exports were expected to differ in their bytes"
    assert second == first


@pytest.mark.parametrize(
    "change", [{"nudge": 1e-3}, {"activation": "tanh"}, {"input_name": "image"}], ids=["weight", "operation", "signature"]
)
def test_any_change_to_the_model_changes_the_digest(models, tmp_path, change):
    changed = _save_keras(tmp_path / "changed.keras", **change)
    assert _digest("keras", changed, tmp_path / "changed") != _digest("keras", models / "model.keras", tmp_path / "source")


def test_a_foreign_file_run_again_writes_the_same_record(models, tmp_path):
    onnx_file = mlp_onnx(tmp_path / "given" / "model.onnx")
    _materialize("keras", models / "model.keras", tmp_path / "keras")
    tflite_file = tflite_from_saved_model(tmp_path / "keras" / "saved_model", tmp_path / "given" / "model.tflite")
    for kind, path in (("onnx", onnx_file), ("tflite", tflite_file)):
        first = _materialize(kind, path, tmp_path / kind)
        assert _materialize(kind, path, tmp_path / kind) == first
        assert json.loads(first)["model_sha256"] == fsutil.sha256_file(path)
    other = mlp_onnx(tmp_path / "given" / "other.onnx", seed=1)
    assert _digest("onnx", other, tmp_path / "other") != _digest("onnx", onnx_file, tmp_path / "onnx")


def _save_table_model(directory: Path, values: list[float]) -> Path:
    """A SavedModel that looks ids up in a table: a resource that stays outside a frozen graph, with its contents."""
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self):
            initializer = tf.lookup.KeyValueTensorInitializer(tf.constant([1, 2], tf.int64), tf.constant(values))
            self.table = tf.lookup.StaticHashTable(initializer, default_value=-1.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"scores": self.table.lookup(ids)}

    module = Lookup()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def test_a_model_that_cannot_be_frozen_whole_is_digested_by_its_files(tmp_path):
    first = _save_table_model(tmp_path / "first", [3.0, 4.0])
    changed = _save_table_model(tmp_path / "changed", [3.0, 5.0])
    digest = _digest("saved_model", first, tmp_path / "source")
    assert digest == fsutil.sha256_tree(tmp_path / "source" / "saved_model")
    assert _digest("saved_model", changed, tmp_path / "changed-source") != digest


def _save_compiled_model(directory: Path, scale: float) -> Path:
    """A SavedModel whose serving function calls one compiled with XLA: freezing keeps that call, by its numbered name."""
    import tensorflow as tf

    class Compiled(tf.Module):
        def __init__(self):
            self.bias = tf.Variable([1.0, 2.0])

        @tf.function(jit_compile=True)
        def square(self, x):
            return tf.matmul(x, x) * scale

        @tf.function(input_signature=[tf.TensorSpec([2, 2], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.square(x) + self.bias}

    module = Compiled()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def test_a_function_the_frozen_graph_still_calls_is_known_by_its_content(tmp_path):
    first = _save_compiled_model(tmp_path / "first", 1.0)
    again = _save_compiled_model(tmp_path / "again", 1.0)
    changed = _save_compiled_model(tmp_path / "changed", 2.0)
    assert (first / "saved_model.pb").read_bytes() != (again / "saved_model.pb").read_bytes()  # the function's number differs
    digest = _digest("saved_model", first, tmp_path / "first-source")
    assert _digest("saved_model", again, tmp_path / "again-source") == digest
    assert _digest("saved_model", changed, tmp_path / "changed-source") != digest
