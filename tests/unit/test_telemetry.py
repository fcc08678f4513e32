"""The reference client's telemetry recorder (client/telemetry.py): what a device reports against its baseline."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from modelmake.client.telemetry import (
    LATENCY_EDGES_MS,
    BaselineFormatError,
    TelemetryContext,
    TelemetryRecorder,
    bin_indices,
    histogram_counts,
    histogram_percentile,
)

EDGES = [round(i * 0.1, 1) for i in range(11)]
START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)
END = START + timedelta(hours=24)
CONTEXT = TelemetryContext(device="install-7f3a", version="1.4.0", chipset="sm8650", app_version="5.2.0", channel="stable", arm="b")


def baseline() -> dict:
    return {
        "format": 1, "artifact": "digits.int8.tflite@pixel-8", "model": "digits", "variant": "int8", "target": "pixel-8",
        "file": "files/pixel-8/digits.int8.tflite", "samples": 100, "measured_on": "artifact",
        "outputs": {
            "logits": {"kind": "classes", "scores": "logits", "confidence": {"edges": EDGES, "counts": [0] * 10},
                       "classes": {"labels": ["a", "b", "c"], "counts": [0, 0, 0]}},
            "mask": {"kind": "mask", "values": {"statistic": "mean", "edges": EDGES, "counts": [0] * 10}},
        },
        "inputs": {
            "image": {"kind": "image", "range": [-1.0, 1.0], "brightness": {"edges": EDGES, "counts": [0] * 10},
                      "contrast": {"edges": [e / 2 for e in EDGES], "counts": [0] * 10}},
            "meta": {"kind": "features", "mean": [0.0, 0.0], "std": [1.0, 1.0]},
        },
        "budgets": {"max_latency_ms": 20.0, "min_fps": 30.0},
    }


def batch(n: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    inputs = {"image": rng.uniform(-1, 1, (n, 4, 4, 3)).astype(np.float32), "meta": rng.normal(size=(n, 2))}
    outputs = {"logits": rng.normal(size=(n, 3)), "mask": rng.uniform(0, 1, (n, 4, 4))}
    return inputs, outputs


def recorder() -> TelemetryRecorder:
    return TelemetryRecorder(baseline(), CONTEXT, start=START)


def test_bins_are_left_closed_the_last_closed_and_outside_values_go_to_the_end_bins():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    values = np.array([-5.0, 0.0, 0.999, 1.0, 2.5, 3.0, 7.0, np.nan])
    assert bin_indices(edges, values).tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert histogram_counts(edges, values) == [3, 1, 4]


def test_one_value_at_a_time_is_binned_like_a_batch():
    values = np.array([-1.0, 0.0, 0.05, 0.1, 0.55, 0.999, 1.0, 3.0])
    one = recorder()
    for value in values:
        one.observe({"image": np.zeros((1, 2, 2, 3)), "meta": np.zeros((1, 2))},
                    {"logits": np.zeros((1, 3)), "mask": np.full((1, 2, 2), value)}, 1.0)
    many = recorder()
    many.observe({"image": np.zeros((8, 2, 2, 3)), "meta": np.zeros((8, 2))},
                 {"logits": np.zeros((8, 3)), "mask": values[:, None, None] * np.ones((8, 2, 2))}, 1.0)
    assert one.record(END)["outputs"] == many.record(END)["outputs"]
    assert one.record(END)["outputs"]["mask"]["values"]["counts"] == histogram_counts(EDGES, values)


def test_histograms_use_the_baselines_edges_and_add_up_to_the_inferences():
    rec = recorder()
    inputs, outputs = batch(500)
    rec.observe(inputs, outputs, np.full(500, 7.5))
    rec.observe(*batch(1, seed=1), 3.0)
    rec.failure(latency_ms=40.0)
    record = rec.record(END)
    assert record["inferences"] == 502 and record["failures"] == 1
    assert sum(record["latency_ms"]["counts"]) == record["inferences"]
    assert record["latency_ms"]["edges"] == list(LATENCY_EDGES_MS)
    succeeded = record["inferences"] - record["failures"]
    histograms = [
        record["outputs"]["logits"]["confidence"]["counts"], record["outputs"]["logits"]["classes"]["counts"],
        record["outputs"]["mask"]["values"]["counts"], record["inputs"]["image"]["brightness"]["counts"],
        record["inputs"]["image"]["contrast"]["counts"],
    ]
    for counts in histograms:
        assert sum(counts) == succeeded
    assert [len(c) for c in histograms] == [len(EDGES) - 1, 3, len(EDGES) - 1, len(EDGES) - 1, len(EDGES) - 1]
    assert record["inputs"]["meta"]["count"] == succeeded


def test_summaries_are_the_ones_the_baseline_defines():
    rec = recorder()
    logits = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, np.log(2.0)]])
    image = np.stack([np.full((2, 2, 3), -1.0), np.full((2, 2, 3), 1.0), np.full((2, 2, 3), 0.0)])
    meta = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    rec.observe({"image": image, "meta": meta}, {"logits": logits, "mask": np.zeros((3, 2, 2))}, 1.0)
    record = rec.record(END)
    # Softmax top-1 of equal logits is 1/3, of a dominant one ~1, of [0, 0, log 2] 1/2.
    assert record["outputs"]["logits"]["confidence"]["counts"] == histogram_counts(EDGES, [1 / 3, 0.99995, 0.5])
    assert record["outputs"]["logits"]["classes"]["counts"] == [2, 0, 1]
    # Brightness is the mean after scaling the baseline's range [-1, 1] to [0, 1]: 0, 1 and 0.5; contrast 0.
    assert record["inputs"]["image"]["brightness"]["counts"] == histogram_counts(EDGES, [0.0, 1.0, 0.5])
    assert record["inputs"]["image"]["contrast"]["counts"][0] == 3
    assert record["inputs"]["meta"] == {"count": 3, "sum": [9.0, 12.0], "sum_sq": [35.0, 56.0]}


def test_probabilities_are_not_passed_through_a_softmax():
    document = baseline()
    document["outputs"]["logits"]["scores"] = "probabilities"
    rec = TelemetryRecorder(document, CONTEXT, start=START)
    rec.observe({"image": np.zeros((1, 2, 2, 3)), "meta": np.zeros((1, 2))},
                {"logits": np.array([[0.25, 0.7, 0.05]]), "mask": np.zeros((1, 2, 2))}, 1.0)
    assert rec.record(END)["outputs"]["logits"]["confidence"]["counts"] == histogram_counts(EDGES, [0.7])


def test_an_export_line_round_trips_and_starts_the_next_period(tmp_path):
    rec = recorder()
    rec.observe(*batch(20), 5.0)
    rec.fallback()
    rec.frames(300, 10.0)
    rec.frames(290, 10.0)
    rec.peak_memory(41.5)
    rec.peak_memory(38.0)
    rec.outcome(True)
    rec.outcome(np.array([True, False, False]))
    stream = io.StringIO()
    written = rec.export(stream, end=END)
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    line = json.loads(stream.getvalue())
    assert line == written
    assert line["frames"] == {"count": 590, "seconds": 20.0} and line["peak_memory_mb"] == 41.5
    assert line["outcomes"] == {"labelled": 4, "correct": 2} and line["fallbacks"] == 1
    assert line["period"] == {"start": "2027-01-04T08:00:00.000Z", "end": "2027-01-05T08:00:00.000Z"}
    assert (line["model"], line["file"], line["artifact"]) == ("digits", "files/pixel-8/digits.int8.tflite", "digits.int8.tflite@pixel-8")
    assert (line["device"], line["version"], line["chipset"], line["app_version"], line["channel"], line["arm"]) == (
        "install-7f3a", "1.4.0", "sm8650", "5.2.0", "stable", "b")
    # The next period starts where this one ended, with nothing counted.
    path = tmp_path / "queue.jsonl"
    following = rec.export(path, end=END + timedelta(hours=24))
    assert following["period"]["start"] == line["period"]["end"] and following["inferences"] == 0
    assert following["frames"] is None and following["peak_memory_mb"] is None
    assert sum(following["latency_ms"]["counts"]) == 0
    assert json.loads(path.read_text().splitlines()[0]) == following


def test_record_id_repeats_for_the_same_period_and_differs_for_another():
    a = recorder().record(END)
    again = recorder()
    again.observe(*batch(3), 1.0)  # what was counted does not change which record it is
    other_device = TelemetryRecorder(baseline(), TelemetryContext(**{**CONTEXT.__dict__, "device": "install-0000"}), start=START)
    assert again.record(END)["record_id"] == a["record_id"]
    assert recorder().record(END + timedelta(seconds=1))["record_id"] != a["record_id"]
    assert other_device.record(END)["record_id"] != a["record_id"]
    assert len(a["record_id"]) == 32 and int(a["record_id"], 16) >= 0


def test_no_raw_input_or_output_reaches_the_record():
    rec = recorder()
    inputs, outputs = batch(4, seed=3)
    marker = 0.123456789
    inputs["meta"][0, 0] = marker
    outputs["logits"][0, 0] = marker
    rec.observe(inputs, outputs, 2.0)
    text = json.dumps(rec.record(END))
    assert "0.123456789" not in text
    # Only counts, sums and the context: every list is of histogram length or of feature length.
    record = rec.record(END)
    assert set(record["outputs"]["logits"]) == {"confidence", "classes"}
    assert set(record["inputs"]["image"]) == {"brightness", "contrast"}
    assert set(record["inputs"]["meta"]) == {"count", "sum", "sum_sq"}


def test_percentiles_are_read_from_the_latency_histogram():
    rec = recorder()
    rec.observe(*batch(100), np.r_[np.full(90, 4.5), np.full(10, 45.0)])
    latency = rec.record(END)["latency_ms"]
    assert 4.0 <= histogram_percentile(latency["edges"], latency["counts"], 50) <= 5.0
    assert 40.0 <= histogram_percentile(latency["edges"], latency["counts"], 95) <= 50.0
    assert histogram_percentile(latency["edges"], [0] * len(latency["counts"]), 50) is None


def test_mistakes_are_named():
    rec = recorder()
    inputs, outputs = batch(2)
    with pytest.raises(KeyError, match="no output 'mask'"):
        rec.observe(inputs, {"logits": outputs["logits"]}, 1.0)
    with pytest.raises(ValueError, match="same leading batch axis"):
        rec.observe({**inputs, "meta": np.zeros((3, 2))}, outputs, 1.0)
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        rec.observe(inputs, outputs, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="4 scores per sample"):
        rec.observe(inputs, {**outputs, "logits": np.zeros((2, 4))}, 1.0)
    with pytest.raises(BaselineFormatError, match="format"):
        TelemetryRecorder({**baseline(), "format": 2}, CONTEXT)
    broken = baseline()
    broken["outputs"]["mask"]["values"]["edges"] = [0.0, 0.0]
    with pytest.raises(BaselineFormatError, match=r"outputs.mask.values.edges"):
        TelemetryRecorder(broken, CONTEXT)
    with pytest.raises(ValueError, match="timezone-aware"):
        TelemetryRecorder(baseline(), CONTEXT, start=datetime(2027, 1, 1))


def test_a_baseline_read_from_a_file(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline()))
    rec = TelemetryRecorder(path, CONTEXT, start=START)
    assert rec.record(END)["artifact"] == "digits.int8.tflite@pixel-8"


def test_a_baseline_without_evaluation_data_still_counts_latency_and_failures():
    document = {**baseline(), "measured_on": None, "samples": 0, "outputs": {}, "inputs": {}}
    rec = TelemetryRecorder(document, CONTEXT, start=START)
    rec.observe({}, {}, 4.0)
    rec.observe({"image": np.zeros((3, 2, 2, 3))}, {}, [1.0, 2.0, 3.0])  # what it does not describe is ignored
    rec.failure(latency_ms=9.0, count=2)
    record = rec.record(END)
    assert (record["inferences"], record["failures"]) == (6, 2) and sum(record["latency_ms"]["counts"]) == 6
    assert record["outputs"] == {} and record["inputs"] == {}
