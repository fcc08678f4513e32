"""Step `reference`: the source model's own figures on the evaluation data, which every artifact is compared with."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import formats, fsutil
from ..contracts import ReferenceJob, SourceRecord
from ..errors import StepError
from ..kinds import OutputKind
from . import _batching, _custom_metrics
from ._arrays import check_sample_shape, preprocess, read_dataset, write_npz
from ._batching import Predict
from ._kinds import Scoring


def evaluate_source(job: ReferenceJob) -> str:
    record = SourceRecord.read(job.source_record)
    scoring = Scoring(job.kind, job.input.layout, job.top_k, job.threshold)
    scoring.check_shape(record.signature.get("output", {}).get("shape"), what=f"source {record.path}")
    origin = f"evaluation data from {job.evaluation_origin or job.evaluation}"
    x, y = read_dataset(job.evaluation, what="evaluation data", labels=job.kind is OutputKind.CLASSES)
    check_sample_shape(x, record.signature["input"]["shape"], what=origin)
    x = preprocess(x, job.input)
    # A source that is already a converted file runs in its own format's runtime.
    foreign = formats.for_source_kind(record.kind)
    predict: Predict
    if foreign is not None:
        runtime, what = foreign.runtime(), f"source {record.path}"

        def predict(samples: np.ndarray, batch: int | None) -> np.ndarray:
            return runtime.predict(record.model, samples, what=what, batch=batch)
    else:
        predict = _saved_model_predictor(Path(record.model))
    batching = _batching.decide(
        predict, x, batch_dimension=record.signature["input"]["shape"][0], tolerance=_batching.tolerance(None)
    )
    outputs = batching.run(predict, x)
    scoring.check_labels(outputs, y, what=origin)
    figures = scoring.labelled(outputs, y) | _custom_metrics.measure(job.custom_metrics, outputs, job.evaluation)
    write_npz(job.out_outputs, outputs=outputs)
    # Only a mishandled batch is recorded: readers take this file's other entries as figures.
    noted = {"batching": batching.note} if batching.mishandled else {}
    fsutil.write_json(job.out_metrics, {"samples": len(x), **figures, **noted})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items()) or f"{len(x)} samples, outputs of shape {tuple(outputs.shape[1:])}"
    summary = f"source {record.path}: {shown}"
    return f"{summary}; {batching.note}" if batching.mishandled else summary


def _saved_model_predictor(directory: Path) -> Predict:
    """The SavedModel's serving function, loaded once, as a ``predict(samples, batch)``."""
    import tensorflow as tf

    function = tf.saved_model.load(str(directory)).signatures["serving_default"]
    (name, spec), = function.structured_input_signature[1].items()

    def predict(x: np.ndarray, batch: int | None) -> np.ndarray:
        step = batch or max(len(x), 1)
        outputs = []
        try:
            for start in range(0, len(x), step):
                (output,) = function(**{name: tf.constant(x[start : start + step], dtype=spec.dtype)}).values()
                outputs.append(output.numpy().astype(np.float32))
        except Exception as exc:
            raise StepError(f"the source model fails on the evaluation data ({type(exc).__name__}: {exc})") from exc
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)

    return predict
