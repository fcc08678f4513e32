"""Step `data`: materialize a calibration or evaluation data set as build/data/<model>/<role>.npz."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contracts import DataJob
from ..errors import StepError
from ..recipes import call_recipe, load_recipe
from ._arrays import read_dataset, write_npz


def materialize(job: DataJob) -> str:
    dataset = job.dataset
    path = Path(dataset.path)
    what = f"{dataset.role} data from {path}"
    if dataset.from_recipe:
        result = call_recipe(load_recipe(path), path, dataset.function, dataset.split)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise StepError(f"{what}: {dataset.function}({dataset.split!r}) must return a tuple (x, y) of numpy arrays")
        x, y = (np.asarray(a) for a in result)
    else:
        x, y = read_dataset(path, what=what)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise StepError(f"{what}: x must be a numeric array of samples (got dtype {x.dtype}, shape {x.shape})")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise StepError(
            f"{what}: y must be one integer label per sample (x has {len(x)} samples, y has shape {y.shape} and dtype {y.dtype})"
        )
    if dataset.samples is not None:
        if dataset.samples > len(x):
            raise StepError(f"{what}: 'samples: {dataset.samples}' asks for more than the {len(x)} samples available: lower it")
        x, y = x[: dataset.samples], y[: dataset.samples]
    write_npz(job.out, x=x, y=y.astype(np.int64))
    return f"{what}: {len(x)} samples of shape {tuple(x.shape[1:])}"
