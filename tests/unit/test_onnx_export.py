"""The ONNX export step: a TensorFlow source exported once per opset, which conversions start from without TensorFlow."""
from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, ExportJob, ExportRecord
from modelmake.errors import StepError
from modelmake.kinds import Precision
from modelmake.steps import convert, export
from modelmake.steps._selection import record_failure

from tests.support.workspaces import REPO

# The tiny Keras model, its targets and evaluation data as the convert step's tests make them (and skip without tf2onnx).
from tests.unit.test_onnx_steps import CPU, PREPROCESSING, QNN, Tiny, _evaluate_job, evaluation  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("onnx-export"))


def _export(tiny: Tiny, directory: Path, opset: int = 17) -> ExportJob:
    job = ExportJob(
        format="onnx", source_record=str(tiny.record), options={"opset": opset},
        out=str(directory / f"onnx-opset{opset}.onnx"), out_record=str(directory / f"onnx-opset{opset}.onnx.json"),
        out_prepared={kind: str(directory / f"onnx-opset{opset}.prepared-{kind}.onnx") for kind in ("any-batch", "batch-1")},
    )
    export.export(job)
    return job


@pytest.fixture(scope="module")
def exported(tiny) -> ExportJob:
    return _export(tiny, tiny.root / "exports")


def _convert_job(tiny: Tiny, precision: str, support, out: Path, *, export_record: str | None, per_channel: bool = True) -> ConvertJob:
    return ConvertJob(
        artifact_id=out.name,
        source_record=str(tiny.record),
        precision=Precision(precision),
        per_channel=per_channel,
        palettize=None,
        calibration=str(tiny.calibration) if precision == "int8" else None,
        calibration_origin=None,
        inputs=(PREPROCESSING,),
        support=support,
        out=str(out),
        out_record=str(out) + ".json",
        export_record=export_record,
    )


def test_the_export_is_the_float_model_and_its_record_describes_it(tiny, exported):
    record = ExportRecord.read(exported.out_record)
    content = Path(exported.out).read_bytes()
    assert record.model == exported.out and record.sha256 == hashlib.sha256(content).hexdigest() and record.size == len(content)
    assert record.source_record == str(tiny.record) and record.format == "onnx" and record.options == {"opset": 17}
    assert set(record.tools) == {"tf2onnx", "onnx", "onnxruntime"}
    np.testing.assert_allclose(tiny.predict(Path(exported.out)), tiny.reference, atol=1e-5)
    # Beside it, the same model as the quantizers take it, with any batch and with a batch of one.
    assert sorted(record.prepared) == ["any-batch", "batch-1"]
    for kind, out in exported.out_prepared.items():
        digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
        assert record.prepared[kind] == {"file": out, "sha256": digest, "name": "preprocessed.onnx"}
    np.testing.assert_allclose(tiny.predict(Path(exported.out_prepared["any-batch"])), tiny.reference, atol=1e-5)
    np.testing.assert_allclose(tiny.predict(Path(exported.out_prepared["batch-1"]), batch=1), tiny.reference, atol=1e-5)


def test_exporting_again_elsewhere_gives_the_same_bytes(tiny, exported, tmp_path):
    again = _export(tiny, tmp_path)
    assert Path(again.out).read_bytes() == Path(exported.out).read_bytes()
    for kind, out in exported.out_prepared.items():
        assert Path(again.out_prepared[kind]).read_bytes() == Path(out).read_bytes()


@pytest.mark.parametrize(
    "support, precision, per_channel",
    [(CPU, "fp32", True), (CPU, "fp16", True), (CPU, "dynamic_int8", True), (CPU, "int8", True), (CPU, "int8", False), (QNN, "int8", True)],
)
def test_a_conversion_from_the_export_gives_the_bytes_of_one_from_the_source(tiny, exported, tmp_path, support, precision, per_channel):
    paths = {}
    for way, record in (("source", None), ("export", exported.out_record)):
        out = tmp_path / way / f"tiny.{precision}.onnx"
        convert.convert(_convert_job(tiny, precision, support, out, export_record=record, per_channel=per_channel))
        paths[way] = out
    assert paths["export"].read_bytes() == paths["source"].read_bytes()
    assert Path(f"{paths['export']}.json").read_bytes() == Path(f"{paths['source']}.json").read_bytes()


CONVERT_AND_EVALUATE = """\
import json, pickle, sys
from modelmake.steps import convert, evaluate
jobs = pickle.load(open(sys.argv[1], "rb"))
convert.convert(jobs["convert"])
evaluate.evaluate(jobs["evaluate"])
print(json.dumps(sorted(m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules)))
"""


def test_an_int8_conversion_and_evaluation_from_the_export_import_neither_tensorflow_nor_tf2onnx(
    tiny, exported, evaluation, tmp_path  # noqa: F811 (the fixture)
):
    artifact = tmp_path / "tiny.int8.onnx"
    jobs = {
        "convert": _convert_job(tiny, "int8", QNN, artifact, export_record=exported.out_record),
        "evaluate": _evaluate_job(tiny, evaluation, artifact, QNN, ()),
    }
    (tmp_path / "jobs.pickle").write_bytes(pickle.dumps(jobs))
    result = subprocess.run(
        [sys.executable, "-c", CONVERT_AND_EVALUATE, str(tmp_path / "jobs.pickle")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert fsutil.read_json(jobs["evaluate"].out)["metrics"]["top1_agreement"] >= 0.9


def test_a_failed_export_fails_each_conversion_from_it_with_its_reason(tiny, tmp_path):
    out = str(tmp_path / "x.onnx")
    job = ExportJob(format="onnx", source_record=str(tiny.record), options={"opset": 17}, out=out, out_record=out + ".json")
    Path(job.out).write_bytes(b"left from an earlier export")
    line = record_failure(job, StepError("tf2onnx could not convert the recipe source: no\nmore"), "build/logs/export/x.log")
    assert "NOT EXPORTED: tf2onnx could not convert the recipe source: no" in line
    assert not Path(job.out).exists()
    conversion = _convert_job(tiny, "fp32", CPU, tmp_path / "tiny.fp32.onnx", export_record=job.out_record)
    expected = r"^tf2onnx could not convert the recipe source: no \(the export failed: details in build/logs/export/x\.log\)$"
    with pytest.raises(StepError, match=expected):
        convert.convert(conversion)


def test_an_export_changed_after_its_record_is_refused(tiny, tmp_path):
    job = _export(tiny, tmp_path)
    Path(job.out).write_bytes(Path(job.out).read_bytes() + b"\0")
    with pytest.raises(StepError, match="is not the file its export record .* describes"):
        convert.convert(_convert_job(tiny, "fp32", CPU, tmp_path / "tiny.fp32.onnx", export_record=job.out_record))


def test_an_opset_tf2onnx_cannot_write_fails_the_export(tiny, tmp_path):
    import tf2onnx

    newest = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    with pytest.raises(StepError, match=f"produces ONNX opsets up to {newest}"):
        _export(tiny, tmp_path, opset=newest + 1)
