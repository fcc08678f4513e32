"""Whether a model file may be fed many samples at once, decided once per file before anything is measured.

Many files cannot run a batch correctly although their input shape says they
can: a Reshape that hard-codes batch 1 (common in detectors converted to
TFLite) folds a batch into one sample, and the outputs are garbage of a
plausible shape, or a numpy error.  A few evaluation samples are run batched
and one at a time; where the two disagree, or the batch fails to run, the
whole evaluation runs one sample at a time, as an app on the device runs it.
Erring towards one sample at a time costs only build time, never a figure.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..formats.base import NotMeasurable
from ..kinds import Precision
from ..tensors import Tensors, rows, samples

# (inputs by name, samples per run or None for as many as the runtime takes at once) -> outputs by name
Predict = Callable[[Tensors, "int | None"], Tensors]

PROBE_SAMPLES = 4
ONE_AT_A_TIME = "one sample at a time"

# Float32 files: batched and single-sample kernels differ only in the order they
# sum in, a few ulps of float32 (~1e-6 relative), so 1e-4 of the output scale is
# noise and anything beyond it is a real difference.  Files computing in float16
# or integers: a kernel chosen by batch size may round differently, and
# dynamic-range int8 quantizes activations over the rows it sees; one step of
# an int8 output is 1/255 of its range, so 1e-2 of the output scale allows
# about two steps.  A mishandled batch differs by the size of the outputs
# themselves, far beyond either.
FLOAT_TOLERANCE = 1e-4
REDUCED_TOLERANCE = 1e-2


def tolerance(precision: Precision | None) -> float:
    """The tolerance for a file built at ``precision`` (None: a source model, computing in float32)."""
    return FLOAT_TOLERANCE if precision in (None, Precision.FP32) else REDUCED_TOLERANCE


@dataclass(frozen=True)
class Batching:
    """How a file's outputs are computed: ``batched`` or one sample at a time, and why.

    ``mishandled``: the check caught the file running a batch wrongly, which
    the step's summary and records say; a declared batch of 1 is no defect.
    """

    batched: bool
    note: str
    mishandled: bool = False

    def run(self, predict: Predict, x: Tensors) -> Tensors:
        return predict(x, None if self.batched else 1)


def decide(predict: Predict, x: Tensors, *, batch_dimensions: list[int | None], tolerance: float) -> Batching:
    """Check the first samples of ``x`` batched against one at a time.

    ``batch_dimensions`` are the inputs' first dimensions as the file declares
    them (None or -1 when dynamic).  A file that declares a batch of 1 runs one
    sample at a time unchecked: a batch is not what it was made for.
    """
    if any(dimension == 1 for dimension in batch_dimensions):
        return Batching(False, f"{ONE_AT_A_TIME}: the input's batch dimension is fixed at 1")
    probe = rows(x, 0, PROBE_SAMPLES)
    if samples(probe) < 2:
        return Batching(True, "batched: too few samples to compare, one sample is a batch of one")
    single = predict(probe, 1)  # a file that cannot run one sample fails here, with the runtime's own message
    try:
        batched = predict(probe, None)
    except NotMeasurable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a batch means the file cannot take one
        return Batching(
            False, f"{ONE_AT_A_TIME}: a batch of {samples(probe)} samples fails to run ({type(exc).__name__}: {exc})", mishandled=True
        )
    for name, expected in single.items():
        got = batched.get(name)
        label = f"output {name}" if len(single) > 1 else "outputs"
        difference = None if got is None else _difference(got, expected)
        if difference is None:
            return Batching(
                False,
                f"{ONE_AT_A_TIME}: batched {label} have shape {None if got is None else tuple(got.shape)}, "
                f"single-sample {label} {tuple(np.shape(expected))}",
                mishandled=True,
            )
        scale = max(1.0, _finite_max(expected))
        if difference > tolerance * scale:
            return Batching(
                False,
                f"{ONE_AT_A_TIME}: batched {label} differ from single-sample {label} "
                f"(max abs diff {difference:.3g} on {samples(probe)} samples)",
                mishandled=True,
            )
    return Batching(True, f"batched: {samples(probe)} samples batched give their single-sample outputs")


def _difference(batched: np.ndarray, single: np.ndarray) -> float | None:
    """Largest absolute difference (infinite where NaN or infinity is on one side only); None when the shapes differ."""
    a, b = np.asarray(batched, np.float64), np.asarray(single, np.float64)
    if a.shape != b.shape:
        return None
    special = ~np.isfinite(a) | ~np.isfinite(b)
    if not np.array_equal(a[special], b[special], equal_nan=True):
        return float("inf")
    return float(np.max(np.abs(a[~special] - b[~special]), initial=0.0))


def _finite_max(values: np.ndarray) -> float:
    magnitude = np.abs(np.asarray(values, np.float64))
    return float(np.max(magnitude[np.isfinite(magnitude)], initial=0.0))
