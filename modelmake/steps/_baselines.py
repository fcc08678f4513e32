"""What a device will be compared with: the distributions of an artifact's outputs and inputs on the evaluation data.

The evaluate step measures them (``measure``) from the outputs it computed
with the artifact, or, where this host cannot run the format (Core ML off
macOS), from the source model's reference outputs, and says which
(``measured_on``).  The package step completes them into the bundle's
``baselines/<artifact id>.json`` (``document``): names, class labels and the
budgets that apply on the device.  FORMAT.md ("Baselines") specifies the file.

Every histogram counts one summary per sample, binned as the reference
client bins it (``client.telemetry.bin_indices``), so a device's record and
the baseline add up bin by bin.  Only counts and rounded summaries are kept:
the same evaluation data gives the same bytes, and the bundle stays
reproducible (the build host's latency, which varies from run to run, is in
the metrics record and the report, not here).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics
from ..client.telemetry import (
    BASELINE_FORMAT,
    feature_vectors,
    histogram_counts,
    image_summaries,
    sample_means,
    top1_confidence,
)
from ..kinds import OutputKind
from ..tensors import INPUTS, Tensors, resolve
from . import _streams
from ._evaluation import EvaluationData

ARTIFACT = "artifact"
SOURCE_MODEL = "source model"

# Fixed edges: a confidence and a brightness are fractions, a contrast (the std of values in [0, 1]) at most 0.5.
BINS = 20
CONFIDENCE_EDGES = [round(i / BINS, 6) for i in range(BINS + 1)]
BRIGHTNESS_EDGES = CONFIDENCE_EDGES
CONTRAST_EDGES = [round(i * 0.5 / BINS, 6) for i in range(BINS + 1)]
# A value histogram spans the evaluation's range widened by this share of it on each side, so a shift shows in
# the bins before it reaches the end bins (which take every value beyond the edges).
VALUE_MARGIN = 0.25
IMAGE_LAYOUTS = ("NHWC", "NCHW")
# Scores whose every row lies in [0, 1] and sums to 1 within this are probabilities; others are logits.
PROBABILITY_SUM_TOLERANCE = 0.02


def rounded(value: float) -> float:
    """Six significant digits: a summary's last bits vary with summation order, its bytes must not."""
    return float(f"{float(value):.6g}")


def measure(data: EvaluationData, outputs: Tensors, *, measured_on: str) -> dict:
    """The distributions of ``outputs`` (one row per sample, or per step of a stream) and of the data's inputs."""
    states = data.states
    described: dict[str, dict] = {}
    for scored in data.scored:
        if scored.name in states or scored.name not in outputs:
            continue  # a stream's state goes back into the model; the app never reads it
        described[scored.name] = _output(scored.scoring.kind, np.asarray(outputs[scored.name]))
    inputs: dict[str, dict] = {}
    for spec in data.specs:
        name = resolve(data.signature, INPUTS, spec.name)
        if name in states.values() or name not in data.inputs:
            continue
        values = data.inputs[name]
        if states:
            values = _streams.flatten(values)
        inputs[name] = _input(spec.layout, values)
    return {"measured_on": measured_on, "samples": data.samples, "outputs": described, "inputs": inputs}


def _output(kind: OutputKind, values: np.ndarray) -> dict:
    if kind is OutputKind.CLASSES:
        scores = values.reshape(len(values), -1).astype(np.float64)
        logits = not _probabilities(scores)
        predicted = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
        return {
            "kind": str(kind),
            "scores": "logits" if logits else "probabilities",
            "confidence": {"edges": CONFIDENCE_EDGES, "counts": histogram_counts(CONFIDENCE_EDGES, top1_confidence(scores, logits=logits))},
            "classes": {"counts": [int(c) for c in np.bincount(predicted, minlength=scores.shape[1])]},
        }
    means = sample_means(values)
    edges = value_edges(means)
    return {"kind": str(kind), "values": {"statistic": "mean", "edges": edges, "counts": histogram_counts(edges, means)}}


def _probabilities(scores: np.ndarray) -> bool:
    if not scores.size or not np.all(np.isfinite(scores)):
        return False
    inside = scores.min() >= 0.0 and scores.max() <= 1.0
    return bool(inside and np.all(np.abs(scores.sum(axis=1) - 1.0) <= PROBABILITY_SUM_TOLERANCE))


def value_edges(values: np.ndarray) -> list[float]:
    """BINS equal bins over the values' range widened by VALUE_MARGIN each side; a bin of width 1 around a constant."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low
    if span <= 0.0:
        low, high, span = low - 0.5, high + 0.5, 1.0
    edges = [rounded(v) for v in np.linspace(low - VALUE_MARGIN * span, high + VALUE_MARGIN * span, BINS + 1)]
    return edges if all(b > a for a, b in zip(edges, edges[1:], strict=False)) else [float(v) for v in np.linspace(low, high, BINS + 1)]


def _input(layout: str, values: np.ndarray) -> dict:
    values = np.asarray(values)
    if layout in IMAGE_LAYOUTS and values.ndim >= 3 and np.issubdtype(values.dtype, np.floating):
        finite = values[np.isfinite(values)]
        low, high = (rounded(finite.min()), rounded(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            high = low + 1.0
        brightness, contrast = image_summaries(values, low, high)
        return {
            "kind": "image",
            "range": [low, high],
            "brightness": {"edges": BRIGHTNESS_EDGES, "counts": histogram_counts(BRIGHTNESS_EDGES, brightness)},
            "contrast": {"edges": CONTRAST_EDGES, "counts": histogram_counts(CONTRAST_EDGES, contrast)},
        }
    vectors = feature_vectors(values)
    return {
        "kind": "features",
        "mean": [rounded(v) for v in vectors.mean(axis=0)],
        "std": [rounded(v) for v in vectors.std(axis=0)],
    }


# --- the bundle's file ----------------------------------------------------------------------


def device_budgets(budgets) -> dict[str, float]:
    """The budgets a device's telemetry is held to: latency and frame rate, where the spec sets them."""
    keys = (f"max_{metrics.LATENCY_MS}", f"min_{metrics.FPS}")
    return {budget.key: budget.limit for budget in budgets if budget.key in keys}


def document(*, artifact, model, measured: dict | None) -> dict:
    """The bundle's baseline of one shipped artifact (``ArtifactInputs``) of a model (``ModelInputs``)."""
    outputs = {}
    if measured:
        labels = _labels_by_output(model)
        for name, entry in measured["outputs"].items():
            if entry.get("kind") == str(OutputKind.CLASSES):
                count = len(entry["classes"]["counts"])
                names = labels.get(name)
                entry = {**entry, "classes": {"labels": names if names and len(names) == count else [str(i) for i in range(count)],
                                              **entry["classes"]}}
            outputs[name] = entry
    return {
        "format": BASELINE_FORMAT,
        "artifact": artifact.id,
        "model": model.name,
        "variant": artifact.variant,
        "target": artifact.target,
        "file": artifact.bundle_path,
        "measured_on": measured["measured_on"] if measured else None,
        "samples": measured["samples"] if measured else 0,
        "outputs": outputs,
        "inputs": measured["inputs"] if measured else {},
        "budgets": device_budgets(artifact.budgets),
    }


def _labels_by_output(model) -> dict[str, list[str]]:
    """Class names by the model's output name, from the spec's label files (the only output: by its one name)."""
    from ..contracts import SourceRecord
    from ..tensors import OUTPUTS

    signature = SourceRecord.read(model.source_record).signature
    labels = {}
    for spec in model.outputs:
        if spec.labels:
            labels[resolve(signature, OUTPUTS, spec.name)] = Path(spec.labels).read_text(encoding="utf-8").splitlines()
    return labels
