"""Data sets on disk (x, y in an .npz) and the input preprocessing a model declares."""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import fsutil
from ..bundle.archive import ZIP_EPOCH_MIN
from ..errors import StepError
from ..plan import InputSpec
from ..preprocessing import CHANNEL_AXIS, ratio

if TYPE_CHECKING:
    from ..contracts import ConvertJob


def write_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Like numpy.savez, but with fixed entry timestamps so the same arrays give the same bytes."""
    with fsutil.atomic_output(path) as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=time.gmtime(ZIP_EPOCH_MIN)[:6]), buffer.getvalue())


def read_dataset(path: Path | str, *, what: str, labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The samples x and their labels y; with ``labels=False`` y is optional (None when the file has none)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            needed = ["x", "y"] if labels else ["x"]
            missing = [name for name in needed if name not in names]
            if missing:
                has = ", ".join(names) or "no arrays"
                raise StepError(
                    f"{what} ({path}) needs arrays named {' and '.join(needed)}; it has {has}: "
                    f"save the samples as x{' and their labels as y' if labels else ''} (numpy.savez(path, x=..., y=...))"
                )
            x = data["x"]
            y = data["y"] if "y" in names else None
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"{what} ({path}) is not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    return x, y


def preprocess(x: np.ndarray, input: InputSpec) -> np.ndarray:
    """What every platform does to raw input before the model sees it: x * scale + offset, or (x - mean[c]) / std[c]."""
    if not input.mean:
        return (x.astype(np.float32) * ratio(input.scale) + ratio(input.offset)).astype(np.float32)
    axis = CHANNEL_AXIS[input.layout]
    channels = x.shape[axis] if x.ndim >= 2 else None
    if channels != len(input.mean):
        raise StepError(
            f"the data has samples of shape {tuple(x.shape[1:])}, whose {input.layout} channel axis does not hold the "
            f"{len(input.mean)} channels that io -> input -> mean and std give values for: "
            "fix the data, or give mean and std one value per channel"
        )
    shape = [1] * x.ndim
    shape[axis] = len(input.mean)
    mean = np.array([ratio(m) for m in input.mean], np.float32).reshape(shape)
    std = np.array([ratio(s) for s in input.std], np.float32).reshape(shape)
    return ((x.astype(np.float32) - mean) / std).astype(np.float32)


def check_sample_shape(x: np.ndarray, input_shape: list, *, what: str) -> None:
    """Samples must match the model input, batch dimension aside (None matches any size)."""
    expected = input_shape[1:]
    actual = list(x.shape[1:])
    if len(expected) != len(actual) or any(e is not None and e != a for e, a in zip(expected, actual, strict=True)):
        shown = tuple("?" if e is None else e for e in expected)
        raise StepError(
            f"{what} has samples of shape {tuple(actual)} but the model input takes {shown}: "
            "fix the data so each sample matches the model input"
        )


def calibration_samples(job: ConvertJob, input_shape: list) -> np.ndarray:
    """The preprocessed calibration samples a full-int8 conversion runs, checked against the model input."""
    if job.calibration is None:
        raise StepError(
            f"{job.artifact_id} is full int8, which needs calibration data: give the model a calibration data set in models.yaml"
        )
    x, _ = read_dataset(job.calibration, what="calibration data", labels=False)
    check_sample_shape(x, input_shape, what=f"calibration data from {job.calibration_origin or job.calibration}")
    return preprocess(x, job.input)
