"""Step `evaluate`: prove an artifact loads and runs, measure it against its source, hold it to its budgets.

The measuring is the same for every format; what differs (how to load and
run a file, which ops an accelerator takes) comes from the format's runtime
module.  A figure this host cannot measure (Core ML off macOS) is recorded
as not measured, with the reason, never as a number.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from .. import fsutil, metrics
from ..errors import BudgetExceeded
from ..plan import Budget
from ..versions import tool_versions
from . import _conditions
from ._arrays import preprocess, read_dataset
from ._runtime import NotMeasurable
from ._scoring import accuracy_figures, fallback_ops

RUNTIMES = {"tflite": "_tflite_runtime", "onnx": "_onnx_runtime", "coreml": "_coreml_runtime"}
RUNTIME_TOOLS = {"tflite": ("ai-edge-litert",), "onnx": ("onnxruntime",), "coreml": ("coremltools",)}


def parity(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely an artifact reproduces its source model's outputs on the same inputs."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    return {
        metrics.MAX_ABS_ERROR: float(np.max(np.abs(a - b))),
        metrics.COSINE_SIMILARITY: float(np.mean(cosine)),
        metrics.TOP1_AGREEMENT: float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1))),
    }


def _measure(runtime, artifact: str, what: str, evaluation, reference, reference_outputs, preprocessing, top_k, conditions) -> dict:
    figures: dict[str, float] = {}
    sample = None
    if evaluation:
        raw, labels = read_dataset(evaluation, what="evaluation data")
        x = preprocess(raw, preprocessing)
        sample = x[0]
        outputs = runtime.predict(artifact, x, what=what)
        figures |= accuracy_figures(outputs, labels, top_k)
        figures[metrics.ACCURACY_DROP] = fsutil.read_json(reference)[metrics.top_k_metric(1)] - figures[metrics.top_k_metric(1)]
        with np.load(reference_outputs) as saved:
            figures |= parity(outputs, saved["outputs"])
        for condition, strength in conditions:
            changed = preprocess(_conditions.apply(raw, condition, strength, preprocessing["layout"]), preprocessing)
            figures[metrics.condition_metric(condition)] = accuracy_figures(runtime.predict(artifact, changed, what=what), labels, 1)["top1"]
    figures[metrics.LATENCY_MS] = runtime.median_latency_ms(artifact, what=what, sample=sample)
    return figures


def _verdict(budget: dict, figures: dict, not_measured: dict) -> dict:
    value = figures.get(budget["metric"])
    if value is None:
        reason = not_measured.get(budget["metric"], "not measured for this target")
        return {**budget, "value": None, "passed": None, "note": f"not checked: {reason}"}
    return {**budget, "value": value, "passed": Budget(**budget).holds_for(value)}


def _reason(verdict: dict, coverage: dict | None) -> str:
    side = "over" if verdict["bound"] == "max" else "under"
    text = f"{verdict['metric']} is {verdict['value']:.4g}, {side} its {verdict['key']} of {verdict['limit']:g}"
    if verdict["metric"] == metrics.ACCELERATOR_COVERAGE and coverage:
        text += f" (ops the {coverage['accelerator']} accelerator does not take: {fallback_ops(coverage)}; replace them or drop the coverage requirement)"
    return text


def evaluate(
    format: str,
    artifact: str,
    artifact_id: str,
    record: str,
    source_record: str,
    evaluation: str | None,
    reference: str | None,
    reference_outputs: str | None,
    preprocessing: dict,
    top_k: int,
    conditions: list,
    budgets: list,
    target_format: dict,
    enforce_budgets: bool,
    out: str,
) -> str:
    runtime = importlib.import_module(f"modelmake.steps.{RUNTIMES[format]}")
    what = f"artifact {artifact_id}"
    size = Path(artifact).stat().st_size
    figures: dict[str, float] = {metrics.SIZE_KB: size / 1024.0}
    not_measured: dict[str, str] = {}
    structure = None
    if hasattr(runtime, "structural_check"):
        built = fsutil.read_json(record)
        structure = runtime.structural_check(
            artifact,
            what=what,
            source_signature=fsutil.read_json(source_record)["signature"],
            precision=built["precision"],
            palettize_bits=built.get("palettize"),
        )
    try:
        figures |= _measure(runtime, artifact, what, evaluation, reference, reference_outputs, preprocessing, top_k, conditions)
    except NotMeasurable as reason:
        names = metrics.available_metrics(has_evaluation_data=bool(evaluation), top_k=top_k, conditions=[c for c, _ in conditions])
        not_measured = {name: str(reason) for name in names if name not in figures and name != metrics.ACCELERATOR_COVERAGE}
    coverage = runtime.accelerator_coverage(artifact, target_format)
    if coverage is not None:
        figures[metrics.ACCELERATOR_COVERAGE] = coverage["on_accelerator"] / coverage["ops"] if coverage["ops"] else 1.0

    verdicts = [_verdict(budget, figures, not_measured) for budget in budgets]
    fsutil.write_json(
        out,
        {
            "artifact": artifact_id,
            "size_bytes": size,
            "metrics": figures,
            "not_measured": not_measured,
            "coverage": coverage,
            "structure": structure,
            "source": fsutil.read_json(reference) if reference else None,
            "budgets": verdicts,
            "tools": tool_versions(*RUNTIME_TOOLS[format]),
            "latency_host": "build host CPU, 1 thread, median of 50 runs" if metrics.LATENCY_MS in figures else None,
        },
    )
    broken = [v for v in verdicts if v["passed"] is False]
    summary = ", ".join(f"{name} {value:.4g}" for name, value in figures.items())
    if not_measured:
        summary += f"; not measured ({next(iter(not_measured.values()))}): {', '.join(not_measured)}"
    if broken and enforce_budgets:
        raise BudgetExceeded(f"{artifact_id} breaks its budget: {'; '.join(_reason(v, coverage) for v in broken)}")
    status = "budgets ok" if not broken else f"over budget ({', '.join(v['key'] for v in broken)}), a candidate for selection"
    return f"{artifact_id}: {summary}; {status if verdicts else 'no budgets'}"
