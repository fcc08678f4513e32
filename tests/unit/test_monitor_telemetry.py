"""Bad telemetry is an input, not a crash: each bad line is left out with its exact message and counted by kind."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from modelmake.monitor.baselines import load_catalog
from modelmake.monitor.telemetry import read_telemetry

from tests.support import fleet as F

NOW = int(time.time())
FILE = F.model_path("pixel-8")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return load_catalog([F.make_bundle(root, "1.0.0")[1]["all"], F.make_bundle(root, "2.0.0")[0]], F.PUBLIC_KEY)


def good(**changes) -> dict:
    """A record the reference client's recorder wrote, with ``changes`` applied (dotted keys reach inside)."""
    device = F.Fleet(1).devices[0]
    start, end = datetime.fromtimestamp(NOW - 3600, UTC), datetime.fromtimestamp(NOW - 60, UTC)
    record = F.record(np.random.default_rng(0), device, "1.0.0", None, FILE, F.Behaviour(inferences=50), "stable", start, end)
    for key, value in changes.items():
        *parents, last = key.split(".")
        holder = record
        for parent in parents:
            holder = holder[parent]
        holder[last] = value
    return record


def read(tmp_path, catalog, *lines):
    path = tmp_path / "telemetry.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path, read_telemetry([path], catalog, now=NOW)


def left_out(intake) -> list[tuple[str, str]]:
    return [(kind, message) for kind, messages in intake.messages.items() for message in messages]


def test_a_good_record_is_counted_once(tmp_path, catalog):
    _, intake = read(tmp_path, catalog, good())
    assert (intake.lines, intake.accepted, sum(intake.rejected.values())) == (1, 1, 0)
    [tally] = intake.groups.values()
    assert tally.inferences == 50 and tally.devices == {"device-0-0"}
    record = good()
    assert [list(counts) for counts in tally.latency.values()] == [record["latency_ms"]["counts"]]
    assert tally.histograms["inputs.image.brightness"].tolist() == record["inputs"]["image"]["brightness"]["counts"]


RECORD = good()
LATENCY_SUM = sum(RECORD["latency_ms"]["counts"])
SERVED = RECORD["inferences"] - RECORD["failures"]
CASES = [
    ("{not json", "malformed", "not JSON: each line is one JSON object, as export() writes it"),
    ("[1, 2]", "malformed", "not a JSON object: each line is one record object"),
    (good(format=2), "malformed", "format 2 is not 1: this modelmake reads telemetry format 1"),
    ({k: v for k, v in RECORD.items() if k != "device"}, "malformed", "missing field 'device'"),
    (good(inferences="50"), "malformed", "field 'inferences' is str, not an integer"),
    (good(**{"period.start": "yesterday"}), "malformed", "period.start 'yesterday' is not an RFC 3339 time"),
    (good(model="faces"), "unknown", "unknown model 'faces': no verified bundle ships it (known: digits)"),
    (good(version="9.9.9"), "unknown", "unknown version '9.9.9' of digits: the verified bundles have 1.0.0, 2.0.0"),
    (good(file="files/x/digits.tflite"), "unknown", "unknown file 'files/x/digits.tflite': digits 1.0.0 ships "
     "files/android-arm64-cpu/digits.int8.tflite, files/pixel-8/digits.int8.tflite, files/snapdragon-8-gen-3/digits.int8.tflite"),
    (good(outputs={"boxes": {"values": {"counts": [1]}}}), "unknown",
     "outputs.boxes: digits.int8.tflite@pixel-8 has no output 'boxes' in its baseline"),
    (good(artifact="digits.int8.tflite@apple-a17"), "inconsistent", "artifact 'digits.int8.tflite@apple-a17' is not what digits "
     "1.0.0 ships as files/pixel-8/digits.int8.tflite (digits.int8.tflite@pixel-8)"),
    (good(failures=60, fallbacks=0), "inconsistent", "60 failures and 0 fallbacks out of 50 inferences: neither can exceed the inferences"),
    (good(inferences=51), "inconsistent", f"latency_ms counts add up to {LATENCY_SUM}, not inferences = 51"),
    (good(**{"inputs.image.brightness.counts": [SERVED] + [0] * 18}), "inconsistent",
     "inputs.image.brightness has 19 counts, but its bins number 20"),
    (good(**{"outputs.logits.classes.counts": [SERVED + 1] + [0] * 9}), "inconsistent",
     f"outputs.logits.classes counts add up to {SERVED + 1}, not inferences - failures = {SERVED}"),
    (good(outcomes={"labelled": 5, "correct": 6}), "inconsistent",
     "outcomes: 6 correct of 5 labelled out of 50 inferences: 0 <= correct <= labelled <= inferences"),
    (good(period={"start": "2026-11-30T08:00:00Z", "end": "2026-11-30T07:00:00Z"}), "clock_skew",
     "the period ends (2026-11-30T07:00:00Z) before it starts (2026-11-30T08:00:00Z): the device's clock moved back"),
    (good(period={"start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}), "clock_skew",
     "the period ends at 2099-01-02T00:00:00Z, in the future of this monitor's clock "
     f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(NOW))}): the device's clock is ahead"),
]


@pytest.mark.parametrize(("line", "kind", "message"), CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_each_bad_line_is_left_out_with_its_message(tmp_path, catalog, line, kind, message):
    path, intake = read(tmp_path, catalog, good(device="first"), line)
    assert left_out(intake) == [(kind, f"{path}:2: {message}")]
    assert intake.rejected[kind] == 1 and intake.accepted == 1
    [tally] = intake.groups.values()
    assert tally.devices == {"first"}  # the bad line added nothing to the figures


def test_a_re_upload_is_counted_once_whatever_the_order(tmp_path, catalog):
    record = good()
    path, intake = read(tmp_path, catalog, record, good(device="other", record_id="x" * 32), record)
    assert left_out(intake) == [("duplicate", f"{path}:3: record_id {record['record_id']} was already counted at {path}:1: "
                                              "a re-upload counts once")]
    assert intake.accepted == 2 and sum(t.inferences for t in intake.groups.values()) == 100


def test_garbage_of_every_shape_never_crashes_the_reader(tmp_path, catalog):
    rng = np.random.default_rng(1)
    values = [None, 0, -1, 1.5, "", "x", [], {}, [1, "a"], {"counts": None}, True, 10**30]
    lines = []
    for _ in range(300):
        record = good()
        key = rng.choice(sorted(record))
        record[str(key)] = values[rng.integers(len(values))]
        lines.append(record)
    _, intake = read(tmp_path, catalog, *lines)
    assert intake.lines == 300 and intake.accepted + sum(intake.rejected.values()) == 300


def test_many_bad_lines_are_all_counted_and_a_few_kept_as_examples(tmp_path, catalog):
    lines = ["{oops"] * 5000 + [good(version="7.0.0")] * 5000
    started = time.perf_counter()
    _, intake = read(tmp_path, catalog, *lines)
    assert intake.rejected["malformed"] == 5000 and intake.rejected["unknown"] == 5000
    assert len(intake.messages["malformed"]) == 20  # every one is counted, twenty are kept as examples
    assert time.perf_counter() - started < 5


def test_feature_inputs_and_value_outputs_are_tallied_and_a_shifted_mean_alerts(tmp_path):
    from types import MappingProxyType

    from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder
    from modelmake.monitor.analysis import analyse
    from modelmake.monitor.baselines import Catalog, KnownFile
    from modelmake.monitor.settings import MonitorSettings

    baseline = {
        "format": 1, "artifact": "speech.fp32.tflite@pixel-8", "model": "speech", "file": "files/pixel-8/speech.fp32.tflite",
        "outputs": {"score": {"kind": "regression", "values": {"statistic": "mean", "edges": [0, 1, 2, 3, 4], "counts": [25] * 4}}},
        "inputs": {"mfcc": {"kind": "features", "mean": [0.0, 5.0], "std": [1.0, 2.0]}},
        "budgets": {},
    }
    known = KnownFile("speech", "1.0.0", baseline["file"], baseline["artifact"], "pixel-8", baseline)
    catalog = Catalog(MappingProxyType({("speech", "1.0.0", baseline["file"]): known}), ())
    rng = np.random.default_rng(2)
    path = tmp_path / "speech.jsonl"
    with open(path, "w") as out:
        for device in range(60):
            recorder = TelemetryRecorder(baseline, TelemetryContext(device=f"d{device}", version="1.0.0", chipset="Tensor G3",
                                                                    app_version="1.0", channel="stable"),
                                         start=datetime.fromtimestamp(NOW - 3600, UTC))
            shift = 1.5 if device % 2 else 0.0  # half the devices hear something new: the first feature moves
            features = np.stack([rng.normal(shift, 1.0, 40), rng.normal(5.0, 2.0, 40)], axis=1)
            recorder.observe({"mfcc": features}, {"score": rng.uniform(0, 4, (40, 1))}, latency_ms=3.0)
            recorder.export(out, end=datetime.fromtimestamp(NOW - 60, UTC))
    intake = read_telemetry([path], catalog, now=NOW)
    assert intake.accepted == 60 and not any(intake.rejected.values())
    [tally] = intake.groups.values()
    assert tally.feature_counts == {"inputs.mfcc": 2400} and tally.histograms["outputs.score.values"].sum() == 2400
    report = analyse(intake, catalog, MonitorSettings(min_devices=10, min_inferences=100))
    [group] = report["groups"]
    shift = next(d for d in group["drift"] if d["distribution"] == "inputs.mfcc")
    assert shift["verdict"] == "alert" and 0.6 < shift["feature_shift"] < 0.9  # half the devices moved 1.5 sd: 0.75 on average
    assert next(d for d in group["drift"] if d["distribution"] == "outputs.score.values")["verdict"] == "ok"
