"""A .tflite file as a source builds at every precision, quantized by LiteRT Quantizer, through a real build."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support.workspaces import subprocess_env, tflite_cpu_profile

SAVE_MODEL = """
import sys
import keras
import numpy as np
import tensorflow as tf

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((200, 8, 8, 1), dtype=np.float32) * 16
y = (x.reshape(200, -1)[:, :32].sum(1) > x.reshape(200, -1)[:, 32:].sum(1)).astype(np.int64)
inputs = keras.Input((8, 8, 1), name="image")
h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
h = keras.layers.Flatten()(h)
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(32, activation="relu")(h)))
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x / 16, y, epochs=3, verbose=0)
open(sys.argv[1] + "/model.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
np.savez(sys.argv[1] + "/calibration.npz", x=x[:100], y=y[:100])
np.savez(sys.argv[1] + "/evaluation.npz", x=x[100:], y=y[100:])
"""

SPEC = """\
format: 1
bundle: {name: files, version: "1.0.0"}
models:
  given:
    source: {tflite: models/model.tflite}
    data:
      calibration: {file: models/calibration.npz}
      evaluation: {file: models/evaluation.npz}
    io: {input: {layout: NHWC, scale: 1/16}}
    variants: {fp32: {}, fp16: {quantize: fp16}, dynamic_int8: {quantize: dynamic_int8}, int8: {quantize: int8}}
    targets: {android-arm64-cpu: [fp32, fp16, dynamic_int8, int8]}
    budgets: {min_quantized_share: 0.9}
"""


def test_a_tflite_source_builds_every_precision(fresh_workspace):
    workspace = fresh_workspace
    (workspace.root / "models").mkdir()
    subprocess.run(
        [sys.executable, "-c", SAVE_MODEL, str(workspace.root / "models")], check=True, env=subprocess_env(), capture_output=True
    )
    workspace.write("models.yaml", SPEC)
    workspace.write("targets/android-arm64-cpu.yaml", tflite_cpu_profile("fp32", "fp16", "dynamic_int8", "int8"))

    workspace.doit()

    manifest = json.loads(next((workspace.build / "bundles").rglob("manifest.json")).read_text())
    variants = manifest["models"]["given"]["variants"]
    for precision in ("fp16", "dynamic_int8", "int8"):
        metrics = variants[f"given.{precision}.tflite@android-arm64-cpu"]["metrics"]
        print(precision, metrics)
        assert float(metrics["quantized_share"]) >= 0.9
    record = json.loads((workspace.build / "artifacts" / "android-arm64-cpu" / "given.int8.tflite.json").read_text())
    assert record["quantization"]["recipe"] == "static_wi8_ai8_float_io" and record["quantization"]["tensors_quantized"] == 3
