"""Step `reference`: the source model's own figures on the evaluation data, which every artifact is compared with."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .. import formats, fsutil
from ..contracts import ReferenceJob, SourceRecord
from ..errors import StepError
from ..tensors import INPUTS, OUTPUTS, Tensors, concatenate, rows, samples
from . import _batching, _custom_metrics, _evaluation, _outputs
from ._arrays import write_npz
from ._batching import Predict


def evaluate_source(job: ReferenceJob) -> str:
    record = SourceRecord.read(job.source_record)
    origin = f"evaluation data from {job.evaluation_origin or job.evaluation}"
    data = _evaluation.load(job.evaluation, job.inputs, job.outputs, record.signature, origin=origin)
    _outputs.check_shapes(data.scored, record.signature, what=f"source {record.path}")
    # A source that is already a converted file runs in its own format's runtime.
    foreign = formats.for_source_kind(record.kind)
    predict: Predict
    if foreign is not None:
        runtime, what = foreign.runtime(), f"source {record.path}"

        def predict(inputs: Tensors, batch: int | None) -> Tensors:
            return runtime.predict(record.model, inputs, what=what, batch=batch)
    else:
        predict = _saved_model_predictor(Path(record.model), record.signature)
    batching = data.decide(predict, _evaluation.batch_dimensions(record.signature), _batching.tolerance(None))
    outputs = data.run(predict, batching)
    _outputs.check_labels(data.scored, outputs, data.labels, what=origin)
    figures = _outputs.new_figures(data.scored)
    figures.add({o.name: o.scoring.labelled(outputs[o.name], data.labels[o.name]) for o in data.scored})
    figures.model |= _custom_metrics.measure(job.custom_metrics, outputs, job.evaluation)
    write_npz(job.out_outputs, **{f"outputs.{name}": value for name, value in outputs.items()})
    # Only a mishandled batch is recorded: readers take this file's other entries as figures.
    noted = {"batching": batching.note} if batching.mishandled else {}
    per_output = {"outputs": figures.outputs} if figures.outputs else {}
    fsutil.write_json(job.out_metrics, {"samples": data.samples, **figures.model, **per_output, **noted})
    shapes = ", ".join(f"{name} {tuple(value.shape[1:])}" for name, value in outputs.items())
    shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.model.items()) or f"{data.samples} samples, outputs {shapes}"
    summary = f"source {record.path}: {shown}"
    return f"{summary}; {batching.note}" if batching.mishandled else summary


def reference_outputs(path: str) -> Tensors:
    """The source model's outputs the reference step saved, by output name."""
    with np.load(path, allow_pickle=False) as saved:
        return {name.removeprefix("outputs."): saved[name] for name in saved.files}


def _saved_model_predictor(directory: Path, signature: dict) -> Predict:
    """The SavedModel's serving function, loaded once, as a ``predict(inputs, batch)`` by the signature's names."""
    import tensorflow as tf

    function = tf.saved_model.load(str(directory)).signatures["serving_default"]
    specs = function.structured_input_signature[1]
    output_names = [entry["name"] for entry in signature[OUTPUTS]]
    input_names = [entry["name"] for entry in signature[INPUTS]]

    def run(inputs: Mapping[str, np.ndarray]) -> Tensors:
        missing = [name for name in input_names if name not in inputs]
        if missing:
            raise StepError(f"the source model needs inputs {', '.join(missing)}, which the evaluation data does not give")
        result = function(**{name: tf.constant(inputs[name], dtype=specs[name].dtype) for name in input_names})
        return {name: result[name].numpy().astype(np.float32) for name in output_names}

    def predict(inputs: Tensors, batch: int | None) -> Tensors:
        count = samples(inputs)
        step = batch or max(count, 1)
        try:
            return concatenate([run(rows(inputs, start, start + step)) for start in range(0, count, step)])
        except StepError:
            raise
        except Exception as exc:
            raise StepError(f"the source model fails on the evaluation data ({type(exc).__name__}: {exc})") from exc

    return predict
