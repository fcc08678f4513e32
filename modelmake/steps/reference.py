"""Step `reference`: the source model's own figures on the evaluation data, which every artifact is compared with."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import formats, fsutil
from ..contracts import ReferenceJob, SourceRecord
from ..errors import StepError
from ._arrays import check_sample_shape, preprocess, read_dataset, write_npz
from ._scoring import accuracy_figures


def evaluate_source(job: ReferenceJob) -> str:
    record = SourceRecord.read(job.source_record)
    x, y = read_dataset(job.evaluation, what="evaluation data")
    check_sample_shape(x, record.signature["input"]["shape"], what=f"evaluation data from {job.evaluation_origin or job.evaluation}")
    x = preprocess(x, job.input)
    # A source that is already a converted file runs in its own format's runtime.
    foreign = formats.for_source_kind(record.kind)
    if foreign is not None:
        outputs = foreign.runtime().predict(record.model, x, what=f"source {record.path}")
    else:
        outputs = _predict_saved_model(Path(record.model), x)
    figures = accuracy_figures(outputs, y, job.top_k)
    write_npz(job.out_outputs, outputs=outputs)
    fsutil.write_json(job.out_metrics, {"samples": len(y), **figures})
    return f"source {record.path}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())


def _predict_saved_model(directory: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    function = tf.saved_model.load(str(directory)).signatures["serving_default"]
    (name, spec), = function.structured_input_signature[1].items()
    try:
        result = function(**{name: tf.constant(x, dtype=spec.dtype)})
    except Exception as exc:
        raise StepError(f"the source model fails on the evaluation data ({type(exc).__name__}: {exc})") from exc
    (output,) = result.values()
    return output.numpy().astype(np.float32)
