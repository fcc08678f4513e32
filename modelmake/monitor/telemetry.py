"""Reading telemetry JSON lines (OTA.md, "Telemetry") into tallies per group, fast, and bad lines into counted messages.

One record is one device's aggregates for one installed model file over one period. A record is
counted once (by its ``record_id``: a re-upload is a duplicate, not more evidence) and only when it
holds together: a known model, version and file, counts that add up, a period that makes sense.
Anything else is left out of the figures with a message naming its file and line, and counted by
kind in the report; nothing a device sends can crash the monitor.

Speed: each line is parsed with orjson, checked with plain comparisons, and its histograms are
buffered per group and summed with numpy in blocks, so a million records take seconds.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from .baselines import Catalog, KnownFile

FORMAT = 1
MALFORMED, UNKNOWN, INCONSISTENT, DUPLICATE, CLOCK_SKEW = "malformed", "unknown", "inconsistent", "duplicate", "clock_skew"
CATEGORIES = (MALFORMED, UNKNOWN, INCONSISTENT, DUPLICATE, CLOCK_SKEW)
MAX_MESSAGES = 20  # kept per kind for the report; every one is counted
_FLUSH = 1024  # records buffered per group before their histograms are summed
_STRINGS = ("record_id", "device", "model", "version", "file", "chipset", "app_version", "channel")
_SECTIONS = ("outputs", "inputs")


class Rejected(Exception):
    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category
        self.message = message


@dataclass(frozen=True)
class GroupKey:
    model: str
    version: str
    artifact: str
    chipset: str
    channel: str
    arm: str | None

    def label(self) -> str:
        arm = f" arm {self.arm}" if self.arm else ""
        return f"{self.model} {self.version} on {self.chipset} ({self.channel}{arm})"


class Tally:
    """Everything counted for one group; histograms as int64 arrays once ``finish`` has run."""

    def __init__(self, known: KnownFile):
        self.known = known
        self.records = 0
        self.devices: set[str] = set()
        self.inferences = self.failures = self.fallbacks = 0
        self.labelled = self.correct = 0
        self.frame_count = 0
        self.frame_seconds = 0.0
        self.frame_records = 0
        self.peak_memory_mb: float | None = None
        self.latency: dict[tuple, np.ndarray] = {}
        self.histograms: dict[str, np.ndarray] = {}
        self.feature_counts: dict[str, int] = {}  # feature input -> values counted
        self.features: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # feature input -> (sums, sums of squares)
        self._feature_buffer: dict[str, tuple[list, list]] = {}
        self._latency_buffer: dict[tuple, list] = {}
        self.buffer: dict[str, list] = {}
        self._pending = 0

    def add_latency(self, edges: tuple, counts: list) -> None:
        self._latency_buffer.setdefault(edges, []).append(counts)

    def add_features(self, name: str, count: int, total: list, squares: list) -> None:
        self.feature_counts[name] = self.feature_counts.get(name, 0) + count
        rows = self._feature_buffer.setdefault(name, ([], []))
        rows[0].append(total)
        rows[1].append(squares)

    def counted(self) -> None:
        self._pending += 1
        if self._pending >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        for name, rows in self.buffer.items():
            summed = _column_sums(rows)
            self.histograms[name] = self.histograms[name] + summed if name in self.histograms else summed
        for edges, rows in self._latency_buffer.items():
            summed = _column_sums(rows)
            self.latency[edges] = self.latency[edges] + summed if edges in self.latency else summed
        for name, (totals, squares) in self._feature_buffer.items():
            sums = (np.asarray(totals, dtype=np.float64).sum(axis=0), np.asarray(squares, dtype=np.float64).sum(axis=0))
            before = self.features.get(name)
            self.features[name] = sums if before is None else (before[0] + sums[0], before[1] + sums[1])
        self._feature_buffer = {}
        self.buffer, self._latency_buffer, self._pending = {}, {}, 0


def _column_sums(rows: list[list[int]]) -> np.ndarray:
    """The sum of equally long lists of ints, column by column (faster than converting them to an array first)."""
    return np.array([sum(column) for column in zip(*rows, strict=True)], dtype=np.int64)


@dataclass
class Intake:
    """What the reader made of the telemetry: tallies per group, and what it left out, by kind."""

    groups: dict[GroupKey, Tally] = field(default_factory=dict)
    lines: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    messages: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CATEGORIES})

    def reject(self, where: str, category: str, message: str) -> None:
        self.rejected[category] += 1
        if len(self.messages[category]) < MAX_MESSAGES:
            self.messages[category].append(f"{where}: {message}")


def read_telemetry(paths: Iterable[Path], catalog: Catalog, *, now: float | None = None, max_clock_skew_minutes: float = 10) -> Intake:
    intake = Intake()
    reader = _Reader(catalog, time.time() if now is None else now, max_clock_skew_minutes * 60, intake)
    # The reader keeps a million ids and devices and makes no reference cycles: the cyclic collector, which would
    # walk them again and again, has nothing to find while it reads (a fifth of the time saved).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for path in paths:
            reader.read_file(Path(path))
    finally:
        if collecting:
            gc.enable()
    for tally in intake.groups.values():
        tally.flush()
    return intake


class _Reader:
    def __init__(self, catalog: Catalog, now: float, skew_seconds: float, intake: Intake):
        self.catalog = catalog
        self.now = now
        self.latest_end = datetime.fromtimestamp(now + skew_seconds, UTC)
        self.intake = intake
        self.seen: dict[str, int] = {}  # record_id -> the place it was first counted
        self.paths: list[Path] = []
        self.good_edges: set[tuple] = set()  # latency edges already checked
        self.layouts: dict[tuple, dict] = {}  # (model, version, file) -> its baseline, as the checks read it
        self.tallies: dict[tuple, Tally] = {}  # (model, version, file, chipset, channel, arm) -> its tally

    def read_file(self, path: Path) -> None:
        intake = self.intake
        self.paths.append(path)
        base = (len(self.paths) - 1) << 40  # a line's place: file index and line number in one int, worded when needed
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.isspace():  # a blank line (no copy of the line made to find out)
                    continue
                intake.lines += 1
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    intake.reject(f"{path}:{number}", MALFORMED, "not JSON: each line is one JSON object, as export() writes it")
                    continue
                try:
                    self.take(record, base + number)
                except Rejected as rejected:
                    intake.reject(f"{path}:{number}", rejected.category, rejected.message)
                except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
                    intake.reject(f"{path}:{number}", MALFORMED, describe_malformed(record))

    def where(self, place: int) -> str:
        return f"{self.paths[place >> 40]}:{place & ((1 << 40) - 1)}"

    def take(self, record, place: int) -> None:
        if type(record) is not dict:
            raise Rejected(MALFORMED, "not a JSON object: each line is one record object")
        if record.get("format") != FORMAT:
            raise Rejected(MALFORMED, f"format {record.get('format')!r} is not {FORMAT}: this modelmake reads telemetry format {FORMAT}")
        for name in _STRINGS:
            if type(record[name]) is not str:
                raise TypeError(name)
        arm = record.get("arm")
        if arm is not None and type(arm) is not str:
            raise TypeError("arm")
        model, version, file = record["model"], record["version"], record["file"]
        known = self.catalog.files.get((model, version, file))
        if known is None:
            raise Rejected(UNKNOWN, self.unknown(model, version, file))
        artifact = record.get("artifact")
        if artifact is not None and artifact != known.artifact:
            raise Rejected(INCONSISTENT, f"artifact {artifact!r} is not what {model} {version} ships as {file} ({known.artifact})")
        inferences, failures, fallbacks = record["inferences"], record["failures"], record["fallbacks"]
        if type(inferences) is not int or type(failures) is not int or type(fallbacks) is not int:
            raise TypeError("counts")
        if inferences < 0 or failures < 0 or fallbacks < 0:
            raise Rejected(INCONSISTENT, f"negative counts: inferences {inferences}, failures {failures}, fallbacks {fallbacks}")
        if failures > inferences or fallbacks > inferences:
            raise Rejected(
                INCONSISTENT,
                f"{failures} failures and {fallbacks} fallbacks out of {inferences} inferences: neither can exceed the inferences",
            )
        period = record["period"]
        start, end = _time(period["start"]), _time(period["end"])
        if end < start:
            raise Rejected(
                CLOCK_SKEW, f"the period ends ({period['end']}) before it starts ({period['start']}): the device's clock moved back"
            )
        if end > self.latest_end:
            raise Rejected(
                CLOCK_SKEW,
                f"the period ends at {period['end']}, in the future of this monitor's clock "
                f"({_stamp(self.now)}): the device's clock is ahead",
            )
        served = inferences - failures
        latency = record["latency_ms"]
        edges, latency_counts = latency["edges"], latency["counts"]
        if (type(latency_counts) is not list or len(latency_counts) != len(edges) - 1 or sum(latency_counts) != inferences
                or (latency_counts and min(latency_counts) < 0)):
            _histogram(latency_counts, len(edges) - 1, inferences, "latency_ms", "inferences")
        edges = tuple(edges)
        if edges not in self.good_edges:
            if not all(type(e) in (int, float) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise Rejected(MALFORMED, "latency_ms.edges are not ascending numbers")
            self.good_edges.add(edges)
        frames = record.get("frames")
        if frames is not None:
            count, seconds = frames["count"], frames["seconds"]
            if type(count) is not int or type(seconds) not in (int, float) or count < 0 or seconds < 0:
                raise Rejected(INCONSISTENT, f"frames {{count: {count!r}, seconds: {seconds!r}}}: both must be numbers of at least 0")
        memory = record.get("peak_memory_mb")
        if memory is not None and (type(memory) not in (int, float) or memory < 0):
            raise Rejected(MALFORMED, f"peak_memory_mb {memory!r} is not a number of megabytes")
        outcomes = record.get("outcomes") or {"labelled": 0, "correct": 0}
        labelled, correct = outcomes["labelled"], outcomes["correct"]
        if type(labelled) is not int or type(correct) is not int:
            raise TypeError("outcomes")
        if not 0 <= correct <= labelled <= inferences:
            raise Rejected(
                INCONSISTENT,
                f"outcomes: {correct} correct of {labelled} labelled out of {inferences} inferences: "
                "0 <= correct <= labelled <= inferences",
            )
        layout = self.layouts.get((model, version, file))
        if layout is None:
            layout = self.layouts[(model, version, file)] = _layout(known)
        histograms = []
        features = None
        for section in _SECTIONS:
            observed_section = record.get(section)
            if not observed_section:
                continue
            specs = layout[section]
            for name, observed in observed_section.items():
                parts = specs.get(name) if specs is not None else None
                if parts is None:
                    if specs is not None:
                        raise Rejected(UNKNOWN, f"{section}.{name}: {known.artifact} has no {section[:-1]} {name!r} in its baseline")
                    parts = {}  # no baseline: histograms are checked against their own length
                if "count" in observed:  # a feature input: count, sum, sum_sq
                    if specs is not None and "count" not in parts:
                        raise Rejected(UNKNOWN, f"{section}.{name}: the baseline of {known.artifact} describes no features")
                    features = features or []
                    features.append(_features(section, name, observed, parts, served))
                    continue
                for part, value in observed.items():
                    entry = parts.get(part)
                    counts = value["counts"]
                    if entry is None:
                        if specs is not None:
                            raise Rejected(UNKNOWN, f"{section}.{name}.{part}: the baseline of {known.artifact} has no {part!r} histogram")
                        entry = (f"{section}.{name}.{part}", len(counts))
                    if type(counts) is not list or len(counts) != entry[1] or sum(counts) != served or (counts and min(counts) < 0):
                        _histogram(counts, entry[1], served, entry[0], "inferences - failures")
                    histograms.append((entry[0], counts))
        record_id = record["record_id"]
        first = self.seen.get(record_id)
        if first is not None:
            raise Rejected(DUPLICATE, f"record_id {record_id} was already counted at {self.where(first)}: a re-upload counts once")
        self.seen[record_id] = place
        chipset, channel = record["chipset"], record["channel"]
        tally = self.tallies.get((model, version, file, chipset, channel, arm))
        if tally is None:
            tally = self.tallies[(model, version, file, chipset, channel, arm)] = Tally(known)
            self.intake.groups[GroupKey(model, version, known.artifact, chipset, channel, arm)] = tally
        tally.records += 1
        tally.devices.add(record["device"])
        tally.inferences += inferences
        tally.failures += failures
        tally.fallbacks += fallbacks
        tally.labelled += labelled
        tally.correct += correct
        if frames is not None:
            tally.frame_count += frames["count"]
            tally.frame_seconds += frames["seconds"]
            tally.frame_records += 1
        if memory is not None:
            tally.peak_memory_mb = memory if tally.peak_memory_mb is None else max(tally.peak_memory_mb, memory)
        tally.add_latency(edges, latency_counts)
        buffer = tally.buffer
        for path, values in histograms:
            rows = buffer.get(path)
            if rows is None:
                buffer[path] = [values]
            else:
                rows.append(values)
        if features:
            for name, count, total, squares in features:
                tally.add_features(name, count, total, squares)
        tally.counted()
        self.intake.accepted += 1

    def unknown(self, model: str, version: str, file: str) -> str:
        catalog = self.catalog
        if model not in catalog.models():
            return f"unknown model {model!r}: no verified bundle ships it (known: {', '.join(catalog.models()) or 'none'})"
        versions = catalog.versions(model)
        if version not in versions:
            return f"unknown version {version!r} of {model}: the verified bundles have {', '.join(versions)}"
        return f"unknown file {file!r}: {model} {version} ships {', '.join(catalog.files_of(model, version))}"


def _layout(known: KnownFile) -> dict:
    """For each section of a file's baseline: input or output name -> part -> (path, bins); None without a baseline."""
    layout: dict[str, dict | None] = {}
    for section in _SECTIONS:
        if known.baseline is None:
            layout[section] = None
            continue
        described: dict[str, dict] = {}
        layout[section] = described
        for name, spec in (known.baseline.get(section) or {}).items():
            parts = {}
            for part, histogram in (spec.items() if isinstance(spec, dict) else ()):
                if isinstance(histogram, dict) and ("edges" in histogram or "labels" in histogram):
                    bins = len(histogram["edges"]) - 1 if "edges" in histogram else len(histogram["labels"])
                    parts[part] = (f"{section}.{name}.{part}", bins)
            if isinstance(spec, dict) and "mean" in spec:
                parts["count"] = (f"{section}.{name}", len(spec["mean"]))
            described[name] = parts
    return layout


def _features(section: str, name: str, observed: dict, parts: dict, served: int) -> tuple:
    """(name, count, sums, sums of squares) of a feature input, once its counts hold together."""
    path, width = parts.get("count") or (f"{section}.{name}", None)
    count, total, squares = observed["count"], observed["sum"], observed["sum_sq"]
    if count != served:
        raise Rejected(INCONSISTENT, f"{path}.count is {count!r}, not inferences - failures = {served}")
    width = len(total) if width is None else width
    if type(total) is not list or type(squares) is not list or len(total) != width or len(squares) != width:
        raise Rejected(INCONSISTENT, f"{path}: sum and sum_sq need {width} values, one per feature")
    return path, count, total, squares


def _histogram(counts, bins: int, total: int, path: str, what: str) -> None:
    if type(counts) is not list:
        raise TypeError(path)
    if len(counts) != bins:
        raise Rejected(INCONSISTENT, f"{path} has {len(counts)} counts, but its bins number {bins}")
    added = sum(counts)
    if type(added) is not int:
        raise Rejected(MALFORMED, f"{path}.counts are not all whole numbers")
    if added != total or (counts and min(counts) < 0):
        raise Rejected(INCONSISTENT, f"{path} counts add up to {added}, not {what} = {total}")


def _time(text: str) -> datetime:
    """An RFC 3339 time with a zone (Z or an offset), as an aware datetime (compared without converting it)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise Rejected(MALFORMED, f"period time {text!r} has no time zone: write RFC 3339 UTC, such as 2026-11-30T08:00:00Z")
    return moment


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


_FIELDS = {
    "record_id": str, "device": str, "model": str, "version": str, "file": str, "chipset": str, "app_version": str,
    "channel": str, "inferences": int, "failures": int, "fallbacks": int, "period": dict, "latency_ms": dict,
}


def describe_malformed(record) -> str:
    """Why a record that failed the fast path is malformed, in words: the first field missing or of the wrong type."""
    if type(record) is not dict:
        return "not a JSON object: each line is one record object"
    for name, kind in _FIELDS.items():
        if name not in record:
            return f"missing field {name!r}"
        if type(record[name]) is not kind:
            return f"field {name!r} is {type(record[name]).__name__}, not {_KIND_NAMES[kind]}"
    if record.get("arm") is not None and type(record["arm"]) is not str:
        return "field 'arm' must be a string or null"
    for key in ("start", "end"):
        value = record["period"].get(key)
        if type(value) is not str:
            return f"period.{key} must be an RFC 3339 time string"
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return f"period.{key} {value!r} is not an RFC 3339 time"
    latency = record["latency_ms"]
    if type(latency.get("edges")) is not list or type(latency.get("counts")) is not list:
        return "latency_ms needs lists edges and counts"
    if not all(type(e) in (int, float) for e in latency["edges"]):
        return "latency_ms.edges are not all numbers"
    frames = record.get("frames")
    if frames is not None and (type(frames) is not dict or "count" not in frames or "seconds" not in frames):
        return "frames must be {count, seconds} or null"
    outcomes = record.get("outcomes")
    if outcomes is not None and (type(outcomes) is not dict or type(outcomes.get("labelled")) is not int
                                 or type(outcomes.get("correct")) is not int):
        return "outcomes must be {labelled: integer, correct: integer}"
    for section in ("outputs", "inputs"):
        value = record.get(section)
        if value is not None and (type(value) is not dict or not all(type(v) is dict for v in value.values())):
            return f"{section} must map each name to its histograms"
        for name, parts in (value or {}).items():
            for part, histogram in parts.items():
                if part in ("count", "sum", "sum_sq"):
                    if part != "count" and type(histogram) is not list:
                        return f"{section}.{name}.{part} must be a list of numbers"
                    continue
                if type(histogram) is not dict or type(histogram.get("counts")) is not list:
                    return f"{section}.{name}.{part} must be {{counts: [...]}}"
    return "a field has the wrong shape: compare the record with OTA.md's telemetry record"


_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object"}
