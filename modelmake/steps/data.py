"""Step `data`: materialize a calibration or evaluation data set as build/data/<model>/<role>.npz."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contracts import DataJob
from ..errors import StepError
from ..kinds import OutputKind
from ..recipes import call_recipe, load_recipe
from ._arrays import read_dataset, write_npz


def _labels_required(job: DataJob) -> bool:
    """A classifier's evaluation needs its labels; a mask's are optional, and other kinds have none."""
    return job.kind is OutputKind.CLASSES and job.dataset.role == "evaluation"


def _from_recipe(job: DataJob, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    dataset = job.dataset
    path = Path(dataset.path)
    result = call_recipe(load_recipe(path), path, dataset.function, dataset.split)
    call = f"{dataset.function}({dataset.split!r})"
    if isinstance(result, tuple) and len(result) == 2:
        x, y = result
        return np.asarray(x), None if y is None else np.asarray(y)
    if isinstance(result, np.ndarray) and not _labels_required(job):
        return result, None
    expected = "a tuple (x, y) of numpy arrays" if _labels_required(job) else "a tuple (x, y) of numpy arrays, or x alone"
    raise StepError(f"{what}: {call} must return {expected} (it returned {type(result).__name__})")


def _check_labels(job: DataJob, what: str, x: np.ndarray, y: np.ndarray) -> None:
    if not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        shape = "one integer class id per pixel, shape (samples, height, width)" if job.kind is OutputKind.MASK else (
            "one integer label per sample"
        )
        raise StepError(
            f"{what}: y must be {shape} (x has {len(x)} samples, y has shape {y.shape} and dtype {y.dtype})"
        )
    if job.kind is OutputKind.MASK and y.ndim != 3:
        raise StepError(
            f"{what}: a mask output's labels y must be one integer class id per pixel, shape (samples, height, width); "
            f"y has shape {y.shape}: give each sample a (height, width) array of class ids"
        )
    if job.kind is OutputKind.CLASSES and y.ndim != 1:
        raise StepError(
            f"{what}: y must be one integer label per sample (x has {len(x)} samples, y has shape {y.shape} and dtype {y.dtype})"
        )


def _other_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file besides x and y."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files if name not in ("x", "y")}


def materialize(job: DataJob) -> str:
    dataset = job.dataset
    path = Path(dataset.path)
    what = f"{dataset.role} data from {path}"
    if dataset.from_recipe:
        x, y = _from_recipe(job, what)
    else:
        x, y = read_dataset(path, what=what, labels=_labels_required(job))
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise StepError(f"{what}: x must be a numeric array of samples (got dtype {x.dtype}, shape {x.shape})")
    if y is None and _labels_required(job):
        raise StepError(f"{what}: a classifier's evaluation data needs labels y, one integer per sample")
    if y is not None and not job.kind.has_labels and not job.keep_arrays:
        y = None  # an embedding or tensor output has nothing to compare labels with; parity needs none
    if y is not None and job.kind.has_labels:
        _check_labels(job, what, x, y)
        y = y.astype(np.int64)
    # A custom metric reads what it likes of the file (targets of a regression, boxes...): it gets every array.
    others = _other_arrays(path) if job.keep_arrays and not dataset.from_recipe else {}
    if dataset.samples is not None:
        if dataset.samples > len(x):
            raise StepError(f"{what}: 'samples: {dataset.samples}' asks for more than the {len(x)} samples available: lower it")
        # Arrays with one entry per sample are cut with x; others (anchors, a vocabulary) are kept whole.
        others = {k: v[: dataset.samples] if v.ndim and len(v) == len(x) else v for k, v in others.items()}
        y = None if y is None else y[: dataset.samples] if y.ndim and len(y) == len(x) else y
        x = x[: dataset.samples]
    write_npz(job.out, **others, x=x, **({} if y is None else {"y": y}))
    labelled = "" if y is not None or job.kind is OutputKind.CLASSES else ", no labels"
    return f"{what}: {len(x)} samples of shape {tuple(x.shape[1:])}{labelled}"
