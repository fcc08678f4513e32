"""Batches only where the model runs them correctly: the decision, and the reference and evaluate steps on a batch-1 file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, EvaluateJob, MetricsRecord, ReferenceJob, SourceJob, SourceRecord
from modelmake.formats.base import NotMeasurable
from modelmake.formats.onnx import OnnxSettings
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport, InputSpec, OutputSpec, Source
from modelmake.steps import _batching

from tests.support import batch_one

WEIGHTS = np.random.default_rng(0).normal(size=(6, 3))
SAMPLES = {"x": np.random.default_rng(1).normal(size=(10, 6))}


class Fake:
    """A model y = x @ W (input "x", output "y") whose batched runs go wrong in one chosen way; it records the batch of
    every call."""

    def __init__(self, batched=None):
        self.batched = batched
        self.calls: list[int | None] = []

    def __call__(self, inputs: dict, batch: int | None) -> dict:
        self.calls.append(batch)
        x = inputs["x"]
        if batch is None and len(x) > 1 and self.batched is not None:
            return {"y": self.batched(x)}
        return {"y": x @ WEIGHTS}


def _folds(x):
    """Every sample mixed into every other, as a batch-dependent reshape does, at the right shape."""
    return np.repeat((x.sum(axis=0, keepdims=True)) @ WEIGHTS, len(x), axis=0)


def _fails(x):
    raise ValueError("operands could not be broadcast together with shapes (4,3) (1,3)")


@pytest.mark.parametrize(
    ("batched", "why"),
    [
        (_folds, "batched outputs differ from single-sample outputs"),
        (lambda x: _folds(x)[:1], "batched outputs have shape (1, 3), single-sample outputs (4, 3)"),
        (_fails, "a batch of 4 samples fails to run (ValueError: operands could not be broadcast"),
    ],
    ids=["differ", "one-row", "raises"],
)
def test_a_model_that_mishandles_batches_runs_one_sample_at_a_time(batched, why):
    predict = Fake(batched)
    decision = _batching.decide(predict, SAMPLES, batch_dimensions=[-1], tolerance=_batching.FLOAT_TOLERANCE)
    assert not decision.batched and decision.mishandled
    assert decision.note.startswith("one sample at a time: ") and why in decision.note
    assert predict.calls == [1, None]
    outputs = decision.run(predict, SAMPLES)
    assert predict.calls[-1] == 1
    np.testing.assert_array_equal(outputs["y"], SAMPLES["x"] @ WEIGHTS)


def test_a_model_that_batches_correctly_is_batched():
    # Float32 noise of a different summation order stays within the tolerance.
    predict = Fake(lambda x: (x @ WEIGHTS) * (1 + 1e-6))
    decision = _batching.decide(predict, SAMPLES, batch_dimensions=[None], tolerance=_batching.FLOAT_TOLERANCE)
    assert decision.batched and not decision.mishandled
    assert decision.note == "batched: 4 samples batched give their single-sample outputs"
    decision.run(predict, SAMPLES)
    assert predict.calls == [1, None, None]


def test_reduced_precision_files_get_the_looser_tolerance():
    # Half a percent of the output scale: two int8 steps of rounding, not a mishandled batch.
    shifted = Fake(lambda x: x @ WEIGHTS + 5e-3 * np.abs(x @ WEIGHTS).max())
    assert _batching.tolerance(Precision.INT8) == _batching.tolerance(Precision.FP16) == _batching.REDUCED_TOLERANCE
    assert _batching.tolerance(Precision.FP32) == _batching.tolerance(None) == _batching.FLOAT_TOLERANCE
    assert _batching.decide(shifted, SAMPLES, batch_dimensions=[-1], tolerance=_batching.tolerance(Precision.INT8)).batched
    assert not _batching.decide(shifted, SAMPLES, batch_dimensions=[-1], tolerance=_batching.tolerance(Precision.FP32)).batched


def test_nan_on_one_side_only_is_a_difference():
    decision = _batching.decide(
        Fake(lambda x: np.full((len(x), 3), np.nan)), SAMPLES, batch_dimensions=[-1], tolerance=_batching.REDUCED_TOLERANCE
    )
    assert not decision.batched and "max abs diff inf" in decision.note


def test_a_declared_batch_of_one_runs_one_sample_at_a_time_unchecked():
    predict = Fake(_fails)
    decision = _batching.decide(predict, SAMPLES, batch_dimensions=[1], tolerance=_batching.FLOAT_TOLERANCE)
    assert predict.calls == []
    assert not decision.batched and not decision.mishandled
    assert decision.note == "one sample at a time: the input's batch dimension is fixed at 1"


def test_a_host_that_cannot_run_the_file_is_not_a_batching_problem():
    def predict(x, batch):
        raise NotMeasurable("needs macOS")

    with pytest.raises(NotMeasurable):
        _batching.decide(predict, SAMPLES, batch_dimensions=[-1], tolerance=_batching.FLOAT_TOLERANCE)


def test_any_input_fixed_at_one_sample_runs_one_sample_at_a_time():
    predict = Fake(_fails)
    decision = _batching.decide(predict, SAMPLES, batch_dimensions=[None, 1], tolerance=_batching.FLOAT_TOLERANCE)
    assert predict.calls == [] and not decision.batched


class TwoHeads:
    """boxes = x @ W and scores = softmax(x @ W); a batch breaks only the chosen head."""

    def __init__(self, broken: str):
        self.broken = broken

    def __call__(self, inputs: dict, batch: int | None) -> dict:
        x = inputs["x"]
        boxes = x @ WEIGHTS
        scores = np.exp(boxes) / np.exp(boxes).sum(axis=1, keepdims=True)
        outputs = {"boxes": boxes, "scores": scores}
        if batch is None and len(x) > 1:
            outputs[self.broken] = _folds(x) if self.broken == "scores" else outputs[self.broken][:1]
        return outputs


def test_a_batch_that_breaks_one_output_of_several_names_it():
    differ = _batching.decide(TwoHeads("scores"), SAMPLES, batch_dimensions=[None], tolerance=_batching.FLOAT_TOLERANCE)
    assert not differ.batched and differ.mishandled
    assert differ.note.startswith("one sample at a time: batched output scores differ from single-sample output scores (max abs diff ")
    shape = _batching.decide(TwoHeads("boxes"), SAMPLES, batch_dimensions=[None], tolerance=_batching.FLOAT_TOLERANCE)
    assert shape.note == "one sample at a time: batched output boxes have shape (1, 3), single-sample output boxes (4, 3)"


# ---------------------------------------------------------------- a TFLite file whose Reshape writes batch 1

PREPROCESSING = InputSpec(layout="NHWC", scale="1", offset="0")
TFLITE_CPU = FormatSupport(format="tflite", precisions=(Precision.FP32,), settings=TfliteSettings())
ONNX_CPU = FormatSupport(
    format="onnx", precisions=(Precision.FP32,), settings=OnnxSettings(execution_providers=("CPUExecutionProvider",), quantization="cpu")
)
MISHANDLED = "one sample at a time: batched outputs have shape (1, 5), single-sample outputs (4, 5)"


class BatchOne:
    """The file as a `tflite:` source, its evaluation data, and the reference step's records for it."""

    def __init__(self, root: Path):
        from modelmake.steps import reference, source
        from modelmake.steps._arrays import write_npz

        self.root = root
        self.file = batch_one.write_model(root / "given" / "detector.tflite")
        self.record = root / "source" / "source.json"
        source.materialize(SourceJob(Source(kind="tflite", path=str(self.file)), str(root / "source"), str(self.record)))
        self.x = batch_one.evaluation_data()
        self.expected = batch_one.one_at_a_time(self.file, self.x)
        self.labels = batch_one.labels_for(self.expected)
        self.evaluation = root / "evaluation.npz"
        write_npz(self.evaluation, x=self.x, y=self.labels)
        self.job = ReferenceJob(
            str(self.record), str(self.evaluation), "evaluation.npz", (PREPROCESSING,), (OutputSpec(),),
            str(root / "reference" / "metrics.json"), str(root / "reference" / "outputs.npz"),
        )
        self.summary = reference.evaluate_source(self.job)


@pytest.fixture(scope="module")
def batch_1(tmp_path_factory) -> BatchOne:
    pytest.importorskip("ai_edge_litert")
    return BatchOne(tmp_path_factory.mktemp("batch-one"))


def test_the_file_really_mishandles_a_batch(batch_1):
    from modelmake.formats.tflite import runtime

    assert batch_1.expected.shape == (40, 5) and len(set(batch_1.expected.argmax(axis=1))) > 1
    signature = SourceRecord.read(str(batch_1.record)).signature
    (image,) = (entry["name"] for entry in signature["inputs"])
    (garbage,) = runtime.predict(batch_1.file, {image: batch_1.x}, what="the file", batch=None).values()
    assert garbage.shape == (1, 5)


def test_the_reference_step_reports_the_one_at_a_time_figures(batch_1):
    top1 = float(np.mean(batch_1.expected.argmax(axis=1) == batch_1.labels))
    assert top1 == 0.75
    assert fsutil.read_json(batch_1.job.out_metrics) == {"samples": 40, "top1": top1, "batching": MISHANDLED}
    from modelmake.steps.reference import reference_outputs

    (outputs,) = reference_outputs(batch_1.job.out_outputs).values()
    np.testing.assert_array_equal(outputs, batch_1.expected)
    assert batch_1.summary == f"source {batch_1.file}: top1 0.7500; {MISHANDLED}"


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_the_evaluate_step_reports_the_one_at_a_time_figures(batch_1, tmp_path, fmt):
    from modelmake.steps import convert, evaluate

    support = {"tflite": TFLITE_CPU, "onnx": ONNX_CPU}[fmt]
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
    artifact = tmp_path / f"detector.fp32.{fmt}"
    convert.convert(
        ConvertJob(
            artifact_id=artifact.name, source_record=str(batch_1.record), precision=Precision.FP32, per_channel=True, palettize=None,
            calibration=None, calibration_origin=None, inputs=(PREPROCESSING,), support=support,
            out=str(artifact), out_record=str(artifact) + ".json",
        )
    )
    job = EvaluateJob(
        artifact_id=artifact.name, format=fmt, artifact=str(artifact), record=str(artifact) + ".json",
        source_record=str(batch_1.record), evaluation=str(batch_1.evaluation), reference=batch_1.job.out_metrics,
        reference_outputs=batch_1.job.out_outputs, inputs=(PREPROCESSING,), outputs=(OutputSpec(),), conditions=(), budgets=(),
        support=support, out=str(artifact) + ".metrics.json",
    )
    summary = evaluate.evaluate(job)
    measured = MetricsRecord.read(job.out)
    figures = measured.metrics
    assert measured.batching == MISHANDLED and MISHANDLED in summary
    assert figures["top1"] == 0.75 and figures["accuracy_drop"] == 0.0 and figures["top1_agreement"] == 1.0
    # The same file (tflite) or the same graph (onnx) one sample at a time: the source's outputs, to float32 rounding.
    assert figures["cosine_similarity"] > 1 - 1e-6 and figures["max_abs_error"] <= 1e-5
    assert measured.source == {"samples": 40, "top1": 0.75, "batching": MISHANDLED}
