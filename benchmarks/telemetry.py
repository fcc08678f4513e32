"""The reference client's telemetry recorder: what one observed inference costs, alone and in batches.

A model with a 28x28x1 image in and ten logits and a 28x28 mask out (three
histograms of outputs, two of the input): ``observe`` one inference at a time, as
an app calls it after each frame, and in batches of 1000, as a fleet simulation
calls it; then ``export`` of a period.  Figures to quote, with one loose verdict:
a single observation must stay under 100 us on this machine (an app's frame takes
tens of milliseconds), so that telemetry is never what makes a frame late.

    python -m benchmarks.telemetry
"""
from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import numpy as np

from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder

NAME = "telemetry"
TARGET_SINGLE_US = 100.0
SINGLE = 20_000
BATCH, BATCHES = 1000, 200

EDGES = [i / 20 for i in range(21)]
BASELINE = {
    "format": 1, "artifact": "m.int8.tflite@t", "model": "m", "file": "files/t/m.int8.tflite",
    "outputs": {
        "logits": {"kind": "classes", "scores": "logits", "confidence": {"edges": EDGES, "counts": [0] * 20},
                   "classes": {"labels": [str(i) for i in range(10)], "counts": [0] * 10}},
        "mask": {"kind": "mask", "values": {"statistic": "mean", "edges": EDGES, "counts": [0] * 20}},
    },
    "inputs": {"image": {"kind": "image", "range": [0.0, 1.0], "brightness": {"edges": EDGES, "counts": [0] * 20},
                         "contrast": {"edges": [e / 2 for e in EDGES], "counts": [0] * 20}}},
}


def _recorder() -> TelemetryRecorder:
    context = TelemetryContext(device="d", version="1.0.0", chipset="c", app_version="1", channel="stable")
    return TelemetryRecorder(BASELINE, context, start=datetime(2027, 1, 1, tzinfo=UTC))


def figures() -> list[str]:
    rng = np.random.default_rng(0)
    image, logits, mask = rng.random((1, 28, 28, 1), np.float32), rng.normal(size=(1, 10)), rng.random((1, 28, 28), np.float32)
    recorder = _recorder()
    start = time.perf_counter()
    for _ in range(SINGLE):
        recorder.observe({"image": image}, {"logits": logits, "mask": mask}, 8.0)
    single_us = (time.perf_counter() - start) / SINGLE * 1e6

    images, all_logits = rng.random((BATCH, 28, 28, 1), np.float32), rng.normal(size=(BATCH, 10))
    masks, latencies = rng.random((BATCH, 28, 28), np.float32), rng.uniform(2, 40, BATCH)
    recorder = _recorder()
    start = time.perf_counter()
    for _ in range(BATCHES):
        recorder.observe({"image": images}, {"logits": all_logits, "mask": masks}, latencies)
    batched = BATCH * BATCHES / (time.perf_counter() - start)

    stream = io.StringIO()
    start = time.perf_counter()
    recorder.export(stream, end=datetime(2027, 1, 2, tzinfo=UTC))
    export_ms = (time.perf_counter() - start) * 1000
    verdict = "PASS" if single_us <= TARGET_SINGLE_US else "FAIL"
    return [
        f"telemetry: batches of {BATCH}: {batched:,.0f} inferences/s observed; export of one period {export_ms:.2f} ms, "
        f"{len(stream.getvalue())} bytes",
        f"telemetry: one inference observed: {single_us:.1f} us (target <= {TARGET_SINGLE_US:.0f} us) {verdict}",
    ]


def main(names=(NAME,)) -> list[str]:
    return figures() if NAME in names else []


if __name__ == "__main__":
    for line in main():
        print(line)
