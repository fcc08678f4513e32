"""A `tflite:` source whose Reshape hard-codes batch 1 builds with the figures it has one sample at a time."""
from __future__ import annotations

import json

import numpy as np

from tests.support import batch_one
from tests.support.workspaces import tflite_cpu_profile

SPEC = """\
format: 1
bundle: {name: detectors, version: "1.0.0"}
models:
  detector:
    source: {tflite: models/detector.tflite}
    data:
      evaluation: {file: models/eval.npz}
    io: {input: {layout: NHWC}}
    variants: {fp32: {}}
    targets: {android-arm64-cpu: [fp32]}
"""

NOTE = "one sample at a time: batched outputs have shape (1, 5), single-sample outputs (4, 5)"


def test_a_batch_one_tflite_source_is_measured_one_sample_at_a_time(fresh_workspace):
    workspace = fresh_workspace
    model = batch_one.write_model(workspace.root / "models" / "detector.tflite")
    x = batch_one.evaluation_data()
    expected = batch_one.one_at_a_time(model, x)
    labels = batch_one.labels_for(expected)
    np.savez(workspace.root / "models" / "eval.npz", x=x, y=labels)
    workspace.write("models.yaml", SPEC)
    workspace.write("targets/android-arm64-cpu.yaml", tflite_cpu_profile("fp32"))

    run = workspace.doit()

    top1 = float(np.mean(expected.argmax(axis=1) == labels))
    assert top1 == 0.75
    source = json.loads((workspace.build / "reference" / "detector.json").read_text())
    assert source == {"samples": 40, "top1": top1, "batching": NOTE}
    measured = json.loads((workspace.build / "metrics" / "android-arm64-cpu" / "detector.fp32.tflite.json").read_text())
    assert measured["batching"] == NOTE
    figures = measured["metrics"]
    assert figures["top1"] == top1 and figures["accuracy_drop"] == 0.0 and figures["top1_agreement"] == 1.0
    assert figures["cosine_similarity"] > 1 - 1e-6 and figures["max_abs_error"] <= 1e-5
    assert NOTE in run.stdout
    manifest = json.loads(next((workspace.build / "bundles").rglob("manifest.json")).read_text())
    assert manifest["models"]["detector"]["source_metrics"] == {"top1": "0.750000", "samples": 40}
