"""The report's training-time optimizations table: each QAT variant beside its post-training twin, each pruned variant
beside its dense twin, from the records a build leaves (no build here)."""
from __future__ import annotations

import dataclasses

from modelmake import fsutil
from modelmake.contracts import BundleInputs
from modelmake.kinds import Precision
from modelmake.plan import OutputSpec
from modelmake.report.markdown import markdown
from modelmake.report.optimizations import optimizations_table
from modelmake.report.views import bundle_view

from tests.support.report_records import BUNDLE, artifact, model


def _with_record(root, inputs, size: int, **extra):
    path = root / "artifacts" / f"{inputs.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(path, {"size": size, **extra})
    return dataclasses.replace(inputs, record=str(path))


def _bundle(tmp_path) -> BundleInputs:
    figures = {"size_kb": 30.0, "top1": 0.96, "accuracy_drop": 0.01, "cosine_similarity": 0.99}
    int8 = _with_record(tmp_path, artifact(tmp_path, "digits", "int8", "tflite", "pixel-8", figures, precision=Precision.INT8), 30 * 1024)
    qat = _with_record(
        tmp_path,
        artifact(tmp_path, "digits", "qat", "tflite", "pixel-8", {**figures, "accuracy_drop": 0.002}, precision=Precision.INT8),
        31 * 1024,
        training={"method": "qat", "epochs": 2, "learning_rate": 1e-4},
    )
    fp32 = _with_record(tmp_path, artifact(tmp_path, "digits", "fp32", "tflite", "pixel-8", {**figures, "size_kb": 100.0}), 100 * 1024)
    sparse = _with_record(
        tmp_path,
        artifact(tmp_path, "digits", "sparse", "tflite", "pixel-8", {**figures, "size_kb": 66.0, "sparsity": 0.5}),
        66 * 1024,
        training={"method": "fine_tune", "epochs": 3, "learning_rate": 1e-4},
        pruning={"target": 0.5, "sparsity": 0.5, "weights": 1000, "sparse_tensors": 3},
    )
    digits = model(tmp_path, "digits", OutputSpec(), {"top1": 0.97, "samples": 10}, [int8, qat, fp32, sparse])
    return BundleInputs(bundle=BUNDLE, targets={}, models=(digits,))


def test_each_qat_and_pruned_variant_stands_beside_its_twin(tmp_path):
    table = optimizations_table(list(bundle_view(_bundle(tmp_path)).models))
    assert table is not None
    rows = {row[3].text: {column.heading: cell.text for column, cell in zip(table.columns, row, strict=True)} for row in table.rows}
    assert set(rows) == {"qat", "sparse"}
    assert rows["qat"]["twin"] == "int8" and rows["qat"]["optimization"] == "QAT (2 epochs)"
    assert rows["qat"]["drop points (vs twin)"] == "+0.20 vs +1.00"
    assert rows["sparse"]["twin"] == "fp32" and rows["sparse"]["optimization"] == "pruned to 0.5 while fine-tuning (3 epochs)"
    assert rows["sparse"]["download KiB (vs twin)"] == "66.0 vs 100.0"
    assert rows["sparse"]["smaller than twin"] == "+34.0"
    assert rows["sparse"]["sparsity"] == "0.500"


def test_a_build_without_training_variants_has_no_such_table(tmp_path):
    inputs = _bundle(tmp_path)
    plain = dataclasses.replace(inputs.models[0], artifacts=inputs.models[0].artifacts[:1])
    view = bundle_view(dataclasses.replace(inputs, models=(plain,)))
    assert optimizations_table(list(view.models)) is None
    assert "Training-time optimizations" not in markdown(view, [])
    assert "## Training-time optimizations" in markdown(bundle_view(inputs), [])
