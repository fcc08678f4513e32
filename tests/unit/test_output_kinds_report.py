"""How the manifest and the report show a model whose output is not class scores, beside a classifier."""
from __future__ import annotations

from pathlib import Path

from modelmake import fsutil
from modelmake.bundle.manifest import _output
from modelmake.contracts import ArtifactInputs, BundleInputs, MetricsRecord, ModelInputs, ReportJob
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import BundleSpec, CustomMetrics, InputSpec, OutputSpec


def test_a_classifiers_output_entry_is_unchanged_and_other_kinds_name_theirs(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("background\ntext\n", encoding="utf-8")
    assert _output(OutputSpec(labels=str(labels), top_k=3)) == {"top_k": 3, "labels": ["background", "text"]}
    assert _output(OutputSpec(kind=OutputKind.MASK, threshold=0.3, labels=str(labels))) == {
        "kind": "mask", "threshold": "0.3", "labels": ["background", "text"],
    }
    assert _output(OutputSpec(kind=OutputKind.EMBEDDING)) == {"kind": "embedding"}
    assert _output(OutputSpec(kind=OutputKind.TENSOR)) == {"kind": "tensor"}


def _artifact(root: Path, model: str, figures: dict, not_measured: dict | None = None) -> ArtifactInputs:
    path = root / f"{model}.metrics.json"
    MetricsRecord(
        artifact=f"{model}.int8.tflite@pixel-8", size_bytes=2048, metrics={"size_kb": 2.0, "latency_ms": 0.1, **figures},
        not_measured=not_measured or {}, coverage=None, structure=None, source=None, budgets=[], tools={}, latency_host=None,
    ).write(str(path))
    return ArtifactInputs(
        id=f"{model}.int8.tflite@pixel-8", variant="int8", target="pixel-8", platform="android", format="tflite",
        precision=Precision.INT8, file="", record="", metrics=str(path), bundle_path="", selection=None, preference=0, budgets=(),
    )


def _model(
    root: Path, name: str, output: OutputSpec, reference: dict, artifact: ArtifactInputs, metrics: CustomMetrics | None = None
) -> ModelInputs:
    path = root / f"{name}.reference.json"
    fsutil.write_json(path, reference)
    return ModelInputs(
        name=name, description="", source_record="", reference=str(path), inputs=(InputSpec(),), outputs=(output,),
        datasets=(), conditions=(), artifacts=(artifact,), metrics=metrics,
    )


def test_the_report_shows_each_models_own_figures(tmp_path):
    classifier = _model(
        tmp_path, "digits", OutputSpec(), {"samples": 10, "top1": 0.9},
        _artifact(tmp_path, "digits", {"top1": 0.9, "accuracy_drop": 0.0, "cosine_similarity": 0.999, "top1_agreement": 1.0}),
    )
    segmenter = _model(
        tmp_path, "blobs", OutputSpec(kind=OutputKind.MASK), {"samples": 10, "mean_iou": 0.91, "pixel_accuracy": 0.97},
        _artifact(tmp_path, "blobs", {"mean_iou": 0.9, "pixel_accuracy": 0.96, "iou_drop": 0.01, "mask_agreement": 0.99,
                                      "cosine_similarity": 0.998, "snr_db": 41.5, "max_abs_error": 0.01}),
    )
    embedder = _model(
        tmp_path, "faces", OutputSpec(kind=OutputKind.EMBEDDING), {"samples": 10},
        _artifact(tmp_path, "faces", {"cosine_similarity": 0.9995, "worst_cosine_similarity": 0.998, "snr_db": 50.0,
                                      "max_abs_error": 0.002}),
    )
    from modelmake.steps import report

    bundle = BundleSpec(name="b", version="1", created=0, signing_key=None, release=False, encrypt=False, encryption_key=None)
    report.report(ReportJob(BundleInputs(bundle, {}, (classifier, segmenter, embedder)), str(tmp_path / "out")))
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    # Only the classifier has a row in today's table (rows start with the model); the others are in the source tables.
    rows = [line for line in lines if line.startswith("| digits ") or line.startswith("| blobs ") or line.startswith("| faces ")]
    assert [row.split(" | ")[0] for row in rows] == ["| digits", "| digits", "| blobs", "| faces"]
    assert "## blobs (mask output)" in lines and "## faces (embedding output)" in lines
    mask_header = lines[lines.index("## blobs (mask output)") + 2]
    assert mask_header == (
        "| target | format | variant | precision | size (KiB) | mean IoU | pixel accuracy | IoU drop (points) | mask agreement | "
        "cosine | SNR (dB) | max abs error | latency | accelerator coverage | budgets | bundle |"
    )
    mask_row = lines[lines.index("## blobs (mask output)") + 4]
    assert "| 0.9000 | 0.9600 | +1.00 | 0.9900 | 0.99800 | 41.5 | 0.01 |" in mask_row
    embedding_header = lines[lines.index("## faces (embedding output)") + 2]
    assert "worst cosine | cosine | SNR (dB) | max abs error |" in embedding_header
    assert "top-1" not in embedding_header and "mean IoU" not in embedding_header
    assert "| blobs | mask | mean_iou 0.9100, pixel_accuracy 0.9700 | 10 |" in lines
    assert "| faces | embedding | parity only (no labels) | 10 |" in lines


def test_a_model_with_two_outputs_shows_the_worst_and_each_outputs_figures(tmp_path):
    path = tmp_path / "detector.metrics.json"
    MetricsRecord(
        artifact="detector.int8.tflite@pixel-8", size_bytes=2048,
        metrics={"size_kb": 2.0, "latency_ms": 0.1, "cosine_similarity": 0.98, "max_abs_error": 0.2, "snr_db": 30.0},
        not_measured={}, coverage=None, structure=None, source=None, budgets=[], tools={}, latency_host=None,
        outputs={
            "boxes": {"cosine_similarity": 0.98, "max_abs_error": 0.2, "snr_db": 30.0},
            "scores": {"cosine_similarity": 0.999, "max_abs_error": 0.01, "snr_db": 45.0},
        },
    ).write(str(path))
    artifact = ArtifactInputs(
        id="detector.int8.tflite@pixel-8", variant="int8", target="pixel-8", platform="android", format="tflite",
        precision=Precision.INT8, file="", record="", metrics=str(path), bundle_path="", selection=None, preference=0, budgets=(),
    )
    reference = tmp_path / "detector.reference.json"
    fsutil.write_json(reference, {"samples": 10, "outputs": {}})
    detector = ModelInputs(
        name="detector", description="", source_record="", reference=str(reference), inputs=(InputSpec(name="image"),),
        outputs=(OutputSpec(name="boxes", kind=OutputKind.BOXES), OutputSpec(name="scores", kind=OutputKind.SCORES)),
        datasets=(), conditions=(), artifacts=(artifact,),
    )
    from modelmake.steps import report

    bundle = BundleSpec(name="b", version="1", created=0, signing_key=None, release=False, encrypt=False, encryption_key=None)
    report.report(ReportJob(BundleInputs(bundle, {}, (detector,)), str(tmp_path / "out")))
    lines = (tmp_path / "out" / "report.md").read_text(encoding="utf-8").splitlines()
    title = "## detector (outputs boxes: boxes, scores: scores; worst of the outputs)"
    assert title in lines
    assert "| 0.98000 | 30.0 | 0.2 |" in lines[lines.index(title) + 4]
    assert "| pixel-8 | tflite | int8 | boxes (boxes) | cosine_similarity 0.98, max_abs_error 0.2, snr_db 30 |" in lines
    assert "| pixel-8 | tflite | int8 | scores (scores) | cosine_similarity 0.999, max_abs_error 0.01, snr_db 45 |" in lines
    assert "| detector | boxes: boxes, scores: scores | parity only (no labels) | 10 |" in lines
