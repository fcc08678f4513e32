"""A bundle's records written straight to a directory, for report tests that need no build.

``broken_bundle`` is a build in which almost everything that can go wrong did: an artifact over its size
budget on a target that ships all it builds, a selecting target where one candidate was not built and the
other breaks a budget, a Core ML package that cannot be measured on Linux, and a model without labels with
an artifact whose evaluation failed.
"""
from __future__ import annotations

from pathlib import Path

from modelmake import fsutil
from modelmake.contracts import ArtifactInputs, BundleInputs, MetricsRecord, ModelInputs, ReportJob
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import Budget, BundleSpec, InputSpec, OutputSpec

BUNDLE = BundleSpec(name="acme", version="2.0.0", created=0, signing_key=None, release=False, encrypt=False, encryption_key=None)


def verdict(key: str, value: float | None, limit: float) -> dict:
    budget = Budget.parse(key, limit)
    passed = None if value is None else budget.holds_for(value)
    return {"bound": budget.bound, "key": key, "limit": limit, "metric": budget.metric, "passed": passed, "value": value}


def artifact(
    root: Path, model: str, variant: str, fmt: str, target: str, figures: dict | None, *,
    budgets: dict[str, float] | None = None, selection: str | None = None, preference: int = 0,
    coverage: dict | None = None, not_measured: dict | None = None, not_built: str | None = None,
    not_evaluated: str | None = None, precision: Precision = Precision.FP32,
) -> ArtifactInputs:
    """One artifact and its metrics record; figures None: it was not built or not evaluated."""
    artifact_id = f"{model}.{variant}.{fmt}@{target}"
    path = root / "metrics" / target / f"{model}.{variant}.{fmt}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = figures or {}
    limits = budgets or {}
    MetricsRecord(
        artifact=artifact_id, size_bytes=int(figures.get("size_kb", 0) * 1024), metrics=figures,
        not_measured=not_measured or {}, coverage=coverage, structure=None, source=None,
        budgets=[verdict(key, figures.get(Budget.parse(key, 0).metric), limit) for key, limit in limits.items()],
        tools={}, latency_host=None, not_built=not_built, not_evaluated=not_evaluated,
    ).write(str(path))
    return ArtifactInputs(
        id=artifact_id, variant=variant, target=target, platform="android", format=fmt, precision=precision, file="",
        record="", metrics=str(path), bundle_path="", selection=selection, preference=preference,
        budgets=tuple(Budget.parse(key, limit) for key, limit in limits.items()),
    )


def model(root: Path, name: str, output: OutputSpec, reference: dict, artifacts: list[ArtifactInputs]) -> ModelInputs:
    path = root / "reference" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(path, reference)
    return ModelInputs(
        name=name, description=f"{name}, a test model", source_record="", reference=str(path), inputs=(InputSpec(),),
        outputs=(output,), datasets=(), conditions=(), artifacts=tuple(artifacts),
    )


def _classifier(top1: float, size_kb: float, latency_ms: float, drop: float) -> dict:
    return {"size_kb": size_kb, "latency_ms": latency_ms, "top1": top1, "accuracy_drop": drop,
            "cosine_similarity": 0.9999, "top1_agreement": 0.99}


DIGITS_BUDGETS = {"max_size_kb": 500.0, "max_accuracy_drop": 0.01}
NPU_COVERAGE = {"accelerator": "npu", "fallback": {"SOFTMAX": 1, "MEAN": 2}, "on_accelerator": 12, "ops": 15}


def broken_bundle(root: Path) -> BundleInputs:
    digits = model(root, "digits", OutputSpec(top_k=1), {"samples": 100, "top1": 0.95}, [
        artifact(root, "digits", "fp32", "tflite", "pixel-8", _classifier(0.95, 420.0, 0.42, 0.0), budgets=DIGITS_BUDGETS,
                 coverage={"accelerator": "gpu", "fallback": {}, "on_accelerator": 9, "ops": 9}),
        artifact(root, "digits", "fp16", "tflite", "pixel-8", _classifier(0.95, 612.0, 1.5, 0.0), budgets=DIGITS_BUDGETS,
                 precision=Precision.FP16),
        artifact(root, "digits", "fp16", "tflite", "npu-phone", None, budgets=DIGITS_BUDGETS, selection="first_passing",
                 not_built="the converter crashed", precision=Precision.FP16),
        artifact(root, "digits", "int8", "tflite", "npu-phone", _classifier(0.93, 130.0, 0.012, 0.02), budgets=DIGITS_BUDGETS,
                 selection="first_passing", preference=1, coverage=NPU_COVERAGE, precision=Precision.INT8),
        artifact(root, "digits", "fp16", "coreml", "apple-a17", {"size_kb": 250.0}, budgets={"max_size_kb": 500.0},
                 not_measured={"top1": "needs macOS", "latency_ms": "needs macOS"}, precision=Precision.FP16),
    ])
    faces = model(root, "faces", OutputSpec(kind=OutputKind.EMBEDDING), {"samples": 50}, [
        artifact(root, "faces", "fp16", "onnx", "pixel-8", None, budgets={"min_snr_db": 30.0}, precision=Precision.FP16,
                 not_evaluated="onnxruntime crashed on it"),
        artifact(root, "faces", "fp32", "tflite", "pixel-8",
                 {"size_kb": 900.0, "latency_ms": 2.5, "snr_db": 80.0, "cosine_similarity": 1.0, "max_abs_error": 1e-5},
                 budgets={"min_snr_db": 30.0}),
        artifact(root, "faces", "int8", "tflite", "pixel-8",
                 {"size_kb": 240.0, "latency_ms": 0.8, "snr_db": 31.5, "cosine_similarity": 0.999, "max_abs_error": 0.02},
                 budgets={"min_snr_db": 30.0}, precision=Precision.INT8),
    ])
    return BundleInputs(BUNDLE, {}, (digits, faces))


def write_report(root: Path, inputs: BundleInputs) -> Path:
    """Runs the report step; returns its directory."""
    from modelmake.steps import report

    out = root / "report"
    report.report(ReportJob(inputs, str(out)))
    return out
