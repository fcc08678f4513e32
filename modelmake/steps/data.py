"""Step `data`: materialize a calibration or evaluation data set as build/data/<model>/<role>.npz.

The arrays are named as the model's inputs and outputs say (plan.input_arrays,
plan.label_array): x and y for a model with one input and one output, the
input names and y_<output> otherwise.  A recipe returns them as a dict, or
(x, y) or x alone for a model with one input.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contracts import DataJob, DataLabels
from ..errors import StepError
from ..kinds import OutputKind
from ..recipes import call_recipe, load_recipe
from ._arrays import read_arrays, write_npz


def _labels_required(job: DataJob) -> bool:
    """A classifier's evaluation needs its labels; other kinds' and several outputs' are optional."""
    return job.dataset.role == "evaluation" and len(job.labels) == 1 and job.labels[0].kind is OutputKind.CLASSES


def _from_recipe(job: DataJob, what: str) -> dict[str, np.ndarray]:
    dataset = job.dataset
    path = Path(dataset.path)
    result = call_recipe(load_recipe(path), path, dataset.function, dataset.split)
    call = f"{dataset.function}({dataset.split!r})"
    if isinstance(result, dict) and all(isinstance(k, str) for k in result):
        return {name: np.asarray(value) for name, value in result.items()}
    if len(job.inputs) == 1 and len(job.labels) == 1:
        if isinstance(result, tuple) and len(result) == 2:
            x, y = result
            return {job.inputs[0]: np.asarray(x)} | ({} if y is None else {job.labels[0].array: np.asarray(y)})
        if isinstance(result, np.ndarray) and not _labels_required(job):
            return {job.inputs[0]: result}
    arrays = ", ".join([*job.inputs, *(label.array for label in job.labels)])
    alternatives = ""
    if len(job.inputs) == len(job.labels) == 1:
        alternatives = "a tuple (x, y) or " if _labels_required(job) else "a tuple (x, y), x alone, or "
    raise StepError(f"{what}: {call} must return {alternatives}a dict of numpy arrays named {arrays}; it returned {type(result).__name__}")


def _check_labels(label: DataLabels, what: str, samples: int, y: np.ndarray, sequences: bool) -> None:
    rows = y.shape[:2] if sequences else y.shape[:1]
    per_sample = 2 if sequences else 1
    expected = "one integer class id per pixel, shape (samples, height, width)" if label.kind is OutputKind.MASK else (
        "one integer label per sample"
    )
    if sequences:
        expected += ", for every step of every sequence (sequences, steps, ...)"
    rank = per_sample + (2 if label.kind is OutputKind.MASK else 0)
    if not np.issubdtype(y.dtype, np.integer) or rows[0] != samples or y.ndim != rank:
        raise StepError(
            f"{what}: {label.array} must be {expected} ({samples} {'sequences' if sequences else 'samples'}; "
            f"{label.array} has shape {y.shape} and dtype {y.dtype}): give the labels of "
            f"{f'output {label.output}' if label.output else 'the output'} in that shape"
        )


def _inputs(job: DataJob, what: str, arrays: dict[str, np.ndarray]) -> int:
    """Check the input arrays; the number of samples (or sequences) they hold."""
    counts = {}
    for name in job.inputs:
        if name not in arrays:
            if name in job.optional_inputs:
                continue
            has = ", ".join(sorted(arrays)) or "no arrays"
            hint = "save the samples as x (numpy.savez(path, x=..., y=...))" if name == "x" else (
                "save one array per model input, named as the input"
            )
            raise StepError(f"{what} needs an array named {name}; it has {has}: {hint}")
        array = arrays[name]
        # A stream's input holds (sequences, steps, *sample), the sample a scalar for a scalar input (a sample rate).
        stream = job.sequences and name not in job.optional_inputs
        minimum = 2 if stream else 1
        if not np.issubdtype(array.dtype, np.number) or array.ndim < max(minimum, 2 if name == "x" else 1):
            shape = "(sequences, steps, *sample)" if stream else "(samples, *sample)"
            raise StepError(f"{what}: {name} must be a numeric array of shape {shape} (got dtype {array.dtype}, shape {array.shape})")
        counts[name] = len(array)
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise StepError(f"{what}: the input arrays must hold the same number of samples; they hold {shown}")
    return next(iter(counts.values()))


def materialize(job: DataJob) -> str:
    dataset = job.dataset
    path = Path(dataset.path)
    what = f"{dataset.role} data from {path}"
    arrays = _from_recipe(job, what) if dataset.from_recipe else read_arrays(path, what=what)
    count = _inputs(job, what, arrays)
    kept = {name: arrays[name] for name in job.inputs if name in arrays}
    for label in job.labels:
        y = arrays.get(label.array)
        if y is None:
            if _labels_required(job):
                has = ", ".join(sorted(arrays))
                hint = " (numpy.savez(path, x=..., y=...))" if label.array == "y" else ""
                raise StepError(
                    f"{what} needs an array named {label.array}, a classifier's labels (one integer per sample); it has {has}: "
                    f"save the labels as {label.array}{hint}"
                )
            continue
        if label.kind.has_labels:
            _check_labels(label, what, count, y, job.sequences)
            kept[label.array] = y.astype(np.int64)
        elif job.keep_arrays:
            kept[label.array] = y  # an embedding or tensor output has nothing to compare labels with; a custom metric may
    # A custom metric reads what it likes of the file (targets of a regression, boxes...): it gets every array.
    if job.keep_arrays:
        kept = {name: value for name, value in arrays.items() if name not in kept} | kept
    if dataset.samples is not None:
        if dataset.samples > count:
            raise StepError(f"{what}: 'samples: {dataset.samples}' asks for more than the {count} samples available: lower it")
        # Arrays with one entry per sample are cut with the inputs; others (anchors, a vocabulary) are kept whole.
        kept = {k: v[: dataset.samples] if v.ndim and len(v) == count else v for k, v in kept.items()}
        count = dataset.samples
    write_npz(job.out, **kept)
    labelled = any(label.array in kept and label.kind.has_labels for label in job.labels)
    note = "" if labelled or _labels_required(job) else ", no labels"
    unit = "sequences" if job.sequences else "samples"
    shapes = ", ".join(f"{name} {tuple(kept[name].shape[1:])}" for name in job.inputs if name in kept)
    if len(job.inputs) == 1:
        return f"{what}: {count} {unit} of shape {tuple(kept[job.inputs[0]].shape[1:])}{note}"
    return f"{what}: {count} {unit}: {shapes}{note}"
