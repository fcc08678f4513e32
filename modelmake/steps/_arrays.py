"""Data sets on disk (named arrays in an .npz: plan.input_arrays, plan.label_array) and the input preprocessing a model declares."""
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
from ..plan import InputSpec, input_arrays
from ..preprocessing import CHANNEL_AXIS, ratio
from ..tensors import INPUTS, Tensors, shown
from ..tensors import entry as tensor_entry

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


def read_arrays(path: Path | str, *, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file by name."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # numpy would try the file as a pickle and say only that pickles are not allowed.
        raise StepError(
            f"{what} ({path}) is not an .npz archive: save the arrays with numpy.savez(path, x=..., y=...), "
            "one array per model input"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as exc:
        raise StepError(f"{what} ({path}) is not a readable .npz file ({type(exc).__name__}: {exc})") from exc


def model_inputs(
    arrays: dict[str, np.ndarray], inputs: tuple[InputSpec, ...], signature: dict, *, what: str, sequences: bool = False
) -> Tensors:
    """The model's inputs by its names, read from a data set's arrays (plan.input_arrays) and preprocessed.

    Float inputs get their preprocessing; integer inputs (a sample rate, token
    ids) are cast to the model's dtype as they are.  ``sequences``: the arrays
    hold (sequences, steps, *sample) and only the sample shape is checked; a
    state input without an array is left out (it starts at zero).
    """
    tensors: Tensors = {}
    for spec, array in zip(inputs, input_arrays(inputs), strict=True):
        model_input = tensor_entry(signature, INPUTS, spec.name)
        if array not in arrays:
            if sequences:
                continue  # a state input: the stream starts it at zero
            has = ", ".join(sorted(arrays)) or "no arrays"
            raise StepError(f"{what} has no array {array} for the model input {model_input['name']}; it has {has}")
        values = arrays[array]
        shape = model_input["shape"]
        if sequences:
            _check_step_shape(values, shape, what=f"{what}, array {array},")
        else:
            check_sample_shape(values, shape, what=f"{what}, array {array},")
        if np.issubdtype(np.dtype(model_input["dtype"]), np.floating):
            tensors[model_input["name"]] = preprocess(values, spec)
        else:
            tensors[model_input["name"]] = values.astype(model_input["dtype"])
    return tensors


def preprocess(x: np.ndarray, input: InputSpec) -> np.ndarray:
    """What every platform does to raw input before the model sees it: x * scale + offset, or (x - mean[c]) / std[c]."""
    if not input.mean:
        return (x.astype(np.float32) * ratio(input.scale) + ratio(input.offset)).astype(np.float32)
    axis = CHANNEL_AXIS[input.layout]
    channels = x.shape[axis] if x.ndim >= 2 else None
    if channels != len(input.mean):
        raise StepError(
            f"the data has samples of shape {tuple(x.shape[1:])}, whose {input.layout} channel axis does not hold the "
            f"{len(input.mean)} channels that io gives mean and std values for{f' (input {input.name})' if input.name else ''}: "
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
        raise StepError(
            f"{what} has samples of shape {tuple(actual)} but the model input takes {shown(expected)}: "
            "fix the data so each sample matches the model input"
        )


def _check_step_shape(values: np.ndarray, shape: list, *, what: str) -> None:
    """A stream's array: (sequences, steps, *fed) for an input, (sequences, *fed) for a state's first value, where
    what is fed each step is the model input's shape, with or without its batch dimension."""
    for step in (values.shape[2:], values.shape[1:]):
        for expected in (shape, shape[1:]):
            if len(step) == len(expected) and all(e is None or e == a for e, a in zip(expected, step, strict=True)):
                return
    raise StepError(
        f"{what} has shape {tuple(values.shape)}, which is not (sequences, steps, *sample) for the model input "
        f"{shown(shape)}: give each sequence its steps, each step shaped as the input"
    )


def calibration_samples(job: ConvertJob, signature: dict) -> Tensors:
    """The preprocessed calibration samples a full-int8 conversion runs, by input name, checked against the model."""
    if job.calibration is None:
        raise StepError(
            f"{job.artifact_id} is full int8, which needs calibration data: give the model a calibration data set in models.yaml"
        )
    what = f"calibration data from {job.calibration_origin or job.calibration}"
    return model_inputs(read_arrays(job.calibration, what=what), job.inputs, signature, what=what)
