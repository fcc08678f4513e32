"""The reference client's telemetry: aggregates over many inferences, compared later with the bundle's baseline.

An app makes one ``TelemetryRecorder`` per installed model file, from that file's
baseline (``baselines/<artifact id>.json`` in the bundle, FORMAT.md) and the
context it runs in, calls ``observe`` after inferences (one or a batch at a
time), and ``export`` once per period, which appends one JSON line (OTA.md,
"Telemetry") and starts the next period:

    recorder = TelemetryRecorder(baseline, TelemetryContext(device=install_id, version="1.4.0", chipset="sm8650",
                                                            app_version="5.2.0", channel="stable", arm="b"))
    recorder.observe({"image": x}, {"logits": y}, latency_ms=8.4)
    recorder.export(upload_queue_path)

Privacy: the recorder keeps histogram counts, sums and maxima, never an input or
an output; nothing in a record can be turned back into one.  Pure Python and
numpy, like the Kotlin and Swift ports that write the same records: the
binning rule (``bin_indices``), the summaries (brightness, contrast, top-1
confidence, a sample's mean value) and the record id are defined here once.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

TELEMETRY_FORMAT = 1
BASELINE_FORMAT = 1

# The latency histogram's edges in milliseconds, the same on every device and for every model, so
# records from a whole fleet add up bin by bin.  The baseline's budgets are compared with percentiles
# read from it (``histogram_percentile``).
LATENCY_EDGES_MS: tuple[float, ...] = (
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 25.0, 30.0, 35.0, 40.0,
    50.0, 60.0, 70.0, 80.0, 100.0, 120.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0,
    2000.0, 3000.0, 5000.0, 10000.0,
)


class BaselineFormatError(ValueError):
    """A baseline document the recorder cannot use: the message names the key."""


# --- histogram semantics, shared with the build step that writes the baseline -----------------


def bin_indices(edges: np.ndarray, values: npt.ArrayLike) -> np.ndarray:
    """The bin of each value: bins are left-closed [e_i, e_i+1), the last one closed [e_n-1, e_n];
    a value below the first edge counts in the first bin, above the last edge (or NaN) in the last."""
    index = np.searchsorted(edges, values, side="right") - 1
    return np.clip(index, 0, len(edges) - 2)


def histogram_counts(edges, values) -> list[int]:
    """Counts of ``values`` in the bins of ``edges`` (``bin_indices``' rule), as plain ints."""
    edges = np.asarray(edges, dtype=np.float64)
    index = bin_indices(edges, np.asarray(values, dtype=np.float64).ravel())
    return [int(c) for c in np.bincount(index, minlength=len(edges) - 1)]


def histogram_percentile(edges, counts, q: float) -> float | None:
    """The ``q``-th percentile (0..100) read from a histogram, interpolated linearly inside its bin; None if empty."""
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        return None
    target = total * q / 100.0
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, target, side="left"))
    i = min(i, len(counts) - 1)
    before = cumulative[i - 1] if i else 0.0
    share = (target - before) / counts[i] if counts[i] else 0.0
    return float(edges[i] + (edges[i + 1] - edges[i]) * min(max(share, 0.0), 1.0))


# --- per-sample summaries (the same at build time and on the device) ----------------------------


def top1_confidence(scores: np.ndarray, *, logits: bool) -> np.ndarray:
    """Per sample of (samples, classes): the largest probability, after a softmax when the scores are logits."""
    scores = np.asarray(scores, dtype=np.float64)
    if not logits:
        return scores.max(axis=1)
    shifted = scores - scores.max(axis=1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=1)


def sample_means(values: np.ndarray) -> np.ndarray:
    """Per sample (leading axis): the mean of everything the sample holds."""
    flat = np.asarray(values).reshape(len(values), -1)
    return np.add.reduce(flat, axis=1, dtype=np.float64) / max(flat.shape[1], 1)


def image_summaries(images: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: brightness (mean) and contrast (population std) of the image scaled from [low, high] to [0, 1].

    Sums in float64 over the array as given (no scaled copy): mean and mean of squares, then the scaling."""
    flat = np.asarray(images).reshape(len(images), -1)
    if flat.dtype.kind != "f":
        flat = flat.astype(np.float64)
    count = max(flat.shape[1], 1)
    mean = np.add.reduce(flat, axis=1, dtype=np.float64) / count
    squares = np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / count
    std = np.sqrt(np.maximum(squares - mean * mean, 0.0))
    span = high - low
    return (mean - low) / span, std / span


def feature_vectors(values: np.ndarray) -> np.ndarray:
    """Per sample: one value per feature (the last axis), averaged over any axes between (time steps, say);
    a sample of one number is one feature."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values.reshape(-1, 1)
    return values.reshape(len(values), -1, values.shape[-1]).mean(axis=1)


# --- the recorder --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetryContext:
    """Where the records come from.  ``model``, ``file`` and ``artifact`` default to the baseline's."""

    device: str  # an opaque install id the app makes (never a hardware id or an account)
    version: str  # the bundle version of the installed model
    chipset: str
    app_version: str
    channel: str
    arm: str | None = None  # the A/B arm the update gave (UpdateResult.arm)
    model: str | None = None
    file: str | None = None
    artifact: str | None = None


def rfc3339(moment: datetime) -> str:
    """UTC, milliseconds, ``Z``: 2027-01-31T08:00:00.000Z."""
    if moment.tzinfo is None:
        raise ValueError("telemetry times must be timezone-aware (datetime.now(timezone.utc))")
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record_id(*, device: str, model: str, version: str, file: str, start: str, end: str) -> str:
    """SHA-256 of the fields joined by newlines, first 32 hex digits: a re-upload of a record repeats it."""
    text = "\n".join((device, model, version, file, start, end))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class _Histogram:
    __slots__ = ("edges", "counts", "_inner", "_last")

    def __init__(self, edges, where: str):
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise BaselineFormatError(f"{where}.edges must be at least two finite numbers, increasing")
        self.edges = edges
        self.counts = np.zeros(len(edges) - 1, dtype=np.int64)
        self._inner = edges.tolist()
        self._last = len(edges) - 2

    def add_one(self, value: float) -> None:
        """One value, without numpy's per-call cost: the same rule as ``bin_indices``."""
        if value != value:  # NaN
            index = self._last
        else:
            index = min(max(bisect.bisect_right(self._inner, value) - 1, 0), self._last)
        self.counts[index] += 1

    def add(self, values: np.ndarray) -> None:
        if values.size == 1:
            self.add_one(values.item())
        else:
            self.counts += np.bincount(bin_indices(self.edges, values), minlength=len(self.counts))

    def reset(self) -> None:
        self.counts[:] = 0

    def exported(self) -> dict:
        return {"counts": self.counts.tolist()}


class _ClassesOutput:
    def __init__(self, spec: Mapping, where: str):
        self.logits = spec.get("scores", "probabilities") == "logits"
        self.confidence = _Histogram(_part(spec, "confidence", where)["edges"], f"{where}.confidence")
        labels = _part(spec, "classes", where).get("labels")
        if not isinstance(labels, list) or not labels:
            raise BaselineFormatError(f"{where}.classes.labels must be a non-empty list")
        self.classes = np.zeros(len(labels), dtype=np.int64)

    def add(self, scores: np.ndarray) -> None:
        scores = scores.reshape(len(scores), -1)
        if scores.shape[1] != len(self.classes):
            raise ValueError(f"a classes output of {scores.shape[1]} scores per sample, but the baseline has "
                             f"{len(self.classes)} classes: is this the recorder for this model file?")
        self.confidence.add(top1_confidence(scores, logits=self.logits))
        predicted = np.argmax(scores, axis=1)
        if len(predicted) == 1:
            self.classes[predicted[0]] += 1
        else:
            self.classes += np.bincount(predicted, minlength=len(self.classes))

    def reset(self) -> None:
        self.confidence.reset()
        self.classes[:] = 0

    def exported(self) -> dict:
        return {"confidence": self.confidence.exported(), "classes": {"counts": self.classes.tolist()}}


class _ValuesOutput:
    def __init__(self, spec: Mapping, where: str):
        values = _part(spec, "values", where)
        statistic = values.get("statistic", "mean")
        if statistic != "mean":
            raise BaselineFormatError(f"{where}.values.statistic {statistic!r} is not one this client computes (mean)")
        self.values = _Histogram(values["edges"], f"{where}.values")

    def add(self, outputs: np.ndarray) -> None:
        self.values.add(sample_means(outputs))

    def reset(self) -> None:
        self.values.reset()

    def exported(self) -> dict:
        return {"values": self.values.exported()}


class _ImageInput:
    def __init__(self, spec: Mapping, where: str):
        low, high = spec.get("range", (0.0, 1.0))
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise BaselineFormatError(f"{where}.range must be [low, high] with low < high")
        self.low, self.high = float(low), float(high)
        self.brightness = _Histogram(_part(spec, "brightness", where)["edges"], f"{where}.brightness")
        self.contrast = _Histogram(_part(spec, "contrast", where)["edges"], f"{where}.contrast")

    def add(self, images: np.ndarray) -> None:
        brightness, contrast = image_summaries(images, self.low, self.high)
        self.brightness.add(brightness)
        self.contrast.add(contrast)

    def reset(self) -> None:
        self.brightness.reset()
        self.contrast.reset()

    def exported(self) -> dict:
        return {"brightness": self.brightness.exported(), "contrast": self.contrast.exported()}


class _FeaturesInput:
    def __init__(self, spec: Mapping, where: str):
        mean = spec.get("mean")
        if not isinstance(mean, list) or not mean:
            raise BaselineFormatError(f"{where}.mean must be a non-empty list")
        self.count = 0
        self.sum = np.zeros(len(mean), dtype=np.float64)
        self.sum_sq = np.zeros(len(mean), dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        vectors = feature_vectors(values)
        if vectors.shape[1] != len(self.sum):
            raise ValueError(f"an input of {vectors.shape[1]} features per sample, but the baseline has {len(self.sum)}")
        self.count += len(vectors)
        self.sum += vectors.sum(axis=0)
        self.sum_sq += np.square(vectors).sum(axis=0)

    def reset(self) -> None:
        self.count = 0
        self.sum[:] = 0.0
        self.sum_sq[:] = 0.0

    def exported(self) -> dict:
        return {"count": self.count, "sum": _floats(self.sum), "sum_sq": _floats(self.sum_sq)}


def _part(spec: Mapping, key: str, where: str) -> Mapping:
    part = spec.get(key)
    if not isinstance(part, Mapping) or "edges" not in part and key != "classes":
        raise BaselineFormatError(f"{where}.{key} is missing or not an object with edges")
    return part


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in values.tolist()]


def load_baseline(source: Mapping | str | Path) -> dict:
    """A baseline document from a dict, or from the JSON file at a path (as extracted from the bundle)."""
    if isinstance(source, Mapping):
        document = dict(source)
    else:
        document = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != BASELINE_FORMAT:
        raise BaselineFormatError(f"a baseline must be an object with \"format\": {BASELINE_FORMAT}")
    return document


class TelemetryRecorder:
    """Aggregates one installed model file's inferences over a period; ``export`` writes the period's record.

    Arrays have a leading batch axis (a single inference is a batch of one, as the
    model's own signature has it); ``observe`` takes any number of samples at once.
    Values are real numbers, as the baseline was measured: a file with integer inputs or
    outputs (quantization in its manifest io) has them dequantized first.
    """

    def __init__(
        self,
        baseline: Mapping | str | Path,
        context: TelemetryContext,
        *,
        start: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        document = load_baseline(baseline)
        self.context = context
        self.model = context.model or str(document.get("model", ""))
        self.file = context.file or str(document.get("file", ""))
        self.artifact = context.artifact or str(document.get("artifact", ""))
        self._clock = clock or (lambda: datetime.now(UTC))
        self._outputs: dict[str, _ClassesOutput | _ValuesOutput] = {}
        for name, spec in (document.get("outputs") or {}).items():
            where = f"outputs.{name}"
            if not isinstance(spec, Mapping):
                raise BaselineFormatError(f"{where} must be an object")
            self._outputs[name] = _ClassesOutput(spec, where) if spec.get("kind") == "classes" else _ValuesOutput(spec, where)
        self._inputs: dict[str, _ImageInput | _FeaturesInput] = {}
        for name, spec in (document.get("inputs") or {}).items():
            where = f"inputs.{name}"
            if not isinstance(spec, Mapping) or spec.get("kind") not in ("image", "features"):
                raise BaselineFormatError(f"{where}.kind must be image or features")
            self._inputs[name] = _ImageInput(spec, where) if spec["kind"] == "image" else _FeaturesInput(spec, where)
        self._latency = _Histogram(LATENCY_EDGES_MS, "latency_ms")
        self._start = rfc3339(start or self._clock())
        self._clear()

    def _clear(self) -> None:
        self.inferences = 0
        self.failures = 0
        self.fallbacks = 0
        self._frames: list[float] | None = None
        self._peak_memory: float | None = None
        self.labelled = 0
        self.correct = 0
        self._latency.reset()
        for part in (*self._outputs.values(), *self._inputs.values()):
            part.reset()

    # --- what the app reports ---------------------------------------------------------------

    def observe(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], latency_ms) -> None:
        """Inferences that succeeded: the arrays the model was given and gave, and each one's latency.

        ``latency_ms`` is one number (every sample in the batch took it: a batched call's
        time per sample) or one per sample.  Inputs and outputs the baseline does not
        describe (a stream model's state, say) are ignored; one it describes must be there.
        """
        samples = None
        for name, part in self._outputs.items():
            array = _named(outputs, name, "output")
            samples = _same_batch(samples, array, name)
            part.add(array)
        for name, reader in self._inputs.items():
            array = _named(inputs, name, "input")
            samples = _same_batch(samples, array, name)
            reader.add(array)
        latency = np.asarray(latency_ms, dtype=np.float64)
        if samples is None:
            samples = latency.size
        if latency.ndim == 0:
            if samples == 1:
                self._latency.add(latency)
            else:
                self._latency.counts[bin_indices(self._latency.edges, latency)] += samples
        elif latency.size == samples:
            self._latency.add(latency.ravel())
        else:
            raise ValueError(f"latency_ms holds {latency.size} values for a batch of {samples} samples: give one, or one per sample")
        self.inferences += samples

    def failure(self, latency_ms: float = 0.0, count: int = 1) -> None:
        """Inferences that raised or gave no output: counted, with the time they took, and nothing else."""
        self._latency.counts[bin_indices(self._latency.edges, np.float64(latency_ms))] += count
        self.inferences += count
        self.failures += count

    def fallback(self, count: int = 1) -> None:
        """The runtime fell back from the accelerator it was asked for (a delegate refused the model, say)."""
        self.fallbacks += count

    def frames(self, count: int, seconds: float) -> None:
        """Frames a camera or stream pipeline processed in ``seconds`` of wall time (adds up over calls)."""
        if self._frames is None:
            self._frames = [0, 0.0]
        self._frames[0] += int(count)
        self._frames[1] += float(seconds)

    def peak_memory(self, mb: float) -> None:
        """A memory reading where the platform reports one; the record keeps the largest."""
        self._peak_memory = float(mb) if self._peak_memory is None else max(self._peak_memory, float(mb))

    def outcome(self, correct) -> None:
        """Ground truth the app learnt (the user kept or corrected a prediction): one bool, or an array of them."""
        values = np.asarray(correct, dtype=bool)
        self.labelled += int(values.size)
        self.correct += int(np.count_nonzero(values))

    # --- the record --------------------------------------------------------------------------

    def record(self, end: datetime | None = None) -> dict:
        """The current period's record (OTA.md, "Telemetry"), ending now or at ``end``; nothing is reset."""
        end_text = rfc3339(end or self._clock())
        context = self.context
        return {
            "format": TELEMETRY_FORMAT,
            "record_id": record_id(device=context.device, model=self.model, version=context.version,
                                   file=self.file, start=self._start, end=end_text),
            "device": context.device,
            "model": self.model,
            "version": context.version,
            "file": self.file,
            "artifact": self.artifact,
            "chipset": context.chipset,
            "app_version": context.app_version,
            "channel": context.channel,
            "arm": context.arm,
            "period": {"start": self._start, "end": end_text},
            "inferences": self.inferences,
            "failures": self.failures,
            "fallbacks": self.fallbacks,
            "latency_ms": {"edges": list(LATENCY_EDGES_MS), "counts": self._latency.counts.tolist()},
            "frames": None if self._frames is None else {"count": self._frames[0], "seconds": self._frames[1]},
            "peak_memory_mb": self._peak_memory,
            "outputs": {name: part.exported() for name, part in self._outputs.items()},
            "inputs": {name: part.exported() for name, part in self._inputs.items()},
            "outcomes": {"labelled": self.labelled, "correct": self.correct},
        }

    def export(self, target: IO[str] | str | Path, *, end: datetime | None = None) -> dict:
        """Write the period's record as one JSON line (appended to a path, or to an open text stream),
        then start the next period where this one ended.  Returns the record."""
        record = self.record(end)
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        if isinstance(target, (str, Path)):
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(line)
        else:
            target.write(line)
        self._start = record["period"]["end"]
        self._clear()
        return record


def _named(arrays: Mapping[str, Any], name: str, what: str) -> np.ndarray:
    try:
        array = arrays[name]
    except KeyError:
        raise KeyError(f"observe: no {what} {name!r}, which the baseline describes "
                       f"(given: {', '.join(sorted(arrays)) or 'none'})") from None
    array = np.asarray(array)
    return array.reshape(1) if array.ndim == 0 else array


def _same_batch(samples: int | None, array: np.ndarray, name: str) -> int:
    if samples is not None and len(array) != samples:
        raise ValueError(f"observe: {name!r} holds {len(array)} samples but the others {samples}: "
                         "every array has the same leading batch axis")
    return len(array)
