"""Model files as sources: a .keras file and a SavedModel directory build like a recipe does."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support.workspaces import subprocess_env, tflite_cpu_profile

SAVE_MODELS = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
model = keras.Sequential(
    [keras.Input((64,), name="pixels"), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10, activation="softmax")]
)
model.save(sys.argv[1] + "/model.keras")
model.export(sys.argv[1] + "/saved_model", verbose=False)
rng = np.random.default_rng(0)
np.savez(sys.argv[1] + "/eval.npz", x=rng.random((40, 64), dtype=np.float32), y=rng.integers(0, 10, 40))
"""

SPEC = """\
format: 1
bundle: {name: files, version: "1.0.0"}
models:
  from-keras:
    source: {keras: models/model.keras}
    data:
      evaluation: {file: models/eval.npz}
    io: {input: {layout: NC}}
    variants: {fp32: {}}
    targets: {android-arm64-cpu: [fp32]}
  from-saved-model:
    source: {saved_model: models/saved_model}
    data:
      evaluation: {file: models/eval.npz}
    io: {input: {layout: NC}}
    variants: {fp32: {}}
    targets: {android-arm64-cpu: [fp32]}
"""


def test_keras_and_saved_model_sources_build_the_same_model(fresh_workspace):
    workspace = fresh_workspace
    (workspace.root / "models").mkdir()
    subprocess.run(
        [sys.executable, "-c", SAVE_MODELS, str(workspace.root / "models")], check=True, env=subprocess_env(), capture_output=True
    )
    workspace.write("models.yaml", SPEC)
    workspace.write("targets/android-arm64-cpu.yaml", tflite_cpu_profile("fp32"))

    workspace.doit()

    manifest = json.loads(next((workspace.build / "bundles").rglob("manifest.json")).read_text())
    keras_variant = manifest["models"]["from-keras"]["variants"]["from-keras.fp32.tflite@android-arm64-cpu"]
    saved_variant = manifest["models"]["from-saved-model"]["variants"]["from-saved-model.fp32.tflite@android-arm64-cpu"]
    assert manifest["models"]["from-keras"]["provenance"]["source"]["kind"] == "keras"
    assert manifest["models"]["from-saved-model"]["provenance"]["source"]["kind"] == "saved_model"
    # The same weights reach the artifact by either route: the same predictions, so the same accuracy.
    assert keras_variant["metrics"]["top1"] == saved_variant["metrics"]["top1"]
    assert keras_variant["io"]["input"]["shape"] == saved_variant["io"]["input"]["shape"] == [-1, 64]
