"""A Keras 3 recipe and a tf-keras recipe build in one workspace, the tf-keras one with pruned variants fine-tuned by the
train task; each pruned artifact records the sparsity measured from its file, and min_sparsity fails a variant whose
fine-tuning left the weights dense."""
from __future__ import annotations

import json

import pytest

from tests.support.workspaces import tflite_cpu_profile

# Both recipes say which Keras they ran under: the legacy-Keras worker must not leak into the Keras 3 build.
KERAS3_RECIPE = """\
import os

import numpy as np

METADATA = {"seed": 1, "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS", "unset")}


def load_data(split):
    rng = np.random.default_rng({"train": 0, "test": 1, "calibration": 2}[split])
    x = rng.random((64, 16), dtype=np.float32)
    return x, (x[:, :4].argmax(axis=1)).astype(np.int64)


def build_model():
    import keras

    assert keras.__version__.startswith("3."), keras.__version__
    x, y = load_data("train")
    model = keras.Sequential(
        [keras.Input((16,), name="features"), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    return model
"""

KERAS3_CHECK = 'import keras\n\n    assert keras.__version__.startswith("3."), keras.__version__'
TF_KERAS_RECIPE = KERAS3_RECIPE.replace(KERAS3_CHECK, "import tf_keras as keras") + """

def fine_tune(model, training):
    import tf_keras as keras

    x, y = load_data("train")
    model.compile(optimizer=keras.optimizers.Adam(training.learning_rate), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=training.epochs, batch_size=16, callbacks=training.callbacks, verbose=0)
    return model


def skip_training(model, training):
    return model  # never fits: the pruning wrappers never prune
"""

SPEC = """\
format: 1
bundle: {name: flavours, version: "1.0.0", signing: {key: "file:keys/signing.pem"}}
models:
  modern:
    source: {recipe: recipes/modern.py}
    data:
      evaluation: {recipe: recipes/modern.py, split: test}
    io: {input: {layout: NC}}
    variants: {fp32: {}}
    targets: {android-arm64-cpu: [fp32]}
  legacy:
    source: {recipe: recipes/legacy.py, framework: tf-keras}
    data:
      calibration: {recipe: recipes/legacy.py, split: calibration}
      evaluation: {recipe: recipes/legacy.py, split: test}
    io: {input: {layout: NC}}
    variants:
      fp32: {}
      sparse: {prune: {sparsity: 0.5}, training: {method: fine_tune, epochs: 2, learning_rate: 0.001}}
      lazy: {prune: {sparsity: 0.5, schedule: constant}, training: {method: fine_tune, function: skip_training}}
      qat: {quantize: int8, training: {method: qat, epochs: 1}}
    targets: {android-arm64-cpu: [fp32, sparse, lazy, qat]}
    budgets: {min_sparsity: 0.4, max_accuracy_drop: 1}
"""


@pytest.mark.slow
def test_keras_flavours_share_a_workspace_and_min_sparsity_fails_dense_weights(fresh_workspace):
    workspace = fresh_workspace
    workspace.write("models.yaml", SPEC)
    workspace.write("recipes/modern.py", KERAS3_RECIPE)
    workspace.write("recipes/legacy.py", TF_KERAS_RECIPE)
    workspace.write("targets/android-arm64-cpu.yaml", tflite_cpu_profile("fp32", "int8"))

    run = workspace.doit(ok=False)  # the package step refuses the bundle: lazy broke its budget

    assert {"train:legacy.sparse", "train:legacy.lazy", "train:legacy.qat", "source:modern", "source:legacy"} <= run.executed, (
        run.describe()
    )
    modern = json.loads((workspace.build / "sources/modern/source.json").read_text())
    legacy = json.loads((workspace.build / "sources/legacy/source.json").read_text())
    assert modern["metadata"]["legacy_keras"] == "unset"
    assert legacy["metadata"]["legacy_keras"] == "1"
    assert "tf-keras" in legacy["tools"] and "tf-keras" not in modern["tools"]

    def metrics(variant: str) -> dict:
        return json.loads((workspace.build / f"metrics/android-arm64-cpu/legacy.{variant}.tflite.json").read_text())

    def verdict(variant: str) -> dict:
        return next(v for v in metrics(variant)["budgets"] if v["key"] == "min_sparsity")

    sparse_record = json.loads((workspace.build / "artifacts/android-arm64-cpu/legacy.sparse.tflite.json").read_text())
    assert sparse_record["pruning"]["target"] == 0.5
    assert sparse_record["pruning"]["sparsity"] >= 0.45, sparse_record["pruning"]
    assert metrics("sparse")["metrics"]["sparsity"] == sparse_record["pruning"]["sparsity"]
    assert verdict("sparse")["passed"] is True
    assert metrics("lazy")["metrics"]["sparsity"] < 0.05
    assert verdict("lazy")["passed"] is False
    assert "sparsity" not in metrics("fp32")["metrics"]
    assert "min_sparsity" in run.output and "legacy.lazy" in run.output
    qat_record = json.loads((workspace.build / "artifacts/android-arm64-cpu/legacy.qat.tflite.json").read_text())
    assert qat_record["training"]["method"] == "qat" and qat_record["precision"] == "int8"
    assert metrics("qat")["metrics"]["quantized_share"] > 0.5  # mostly int8 weights, from the fake-quantized model
    report = next((workspace.build / "reports").rglob("report.md")).read_text()
    assert "## Training-time optimizations" in report
