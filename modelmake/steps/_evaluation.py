"""The evaluation data as the reference and evaluate steps read it: the model's inputs by name, each output's
labels and scoring, and how the outputs are computed (batched, one sample at a time, or as streams)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..plan import InputSpec, OutputSpec, input_arrays
from ..tensors import INPUTS, OUTPUTS, Tensors, entry, resolve
from . import _batching, _conditions, _outputs, _streams
from ._arrays import model_inputs, read_arrays
from ._batching import Batching, Predict


@dataclass(frozen=True)
class EvaluationData:
    arrays: dict[str, np.ndarray]  # as materialized: raw inputs, labels and whatever else the file holds
    inputs: Tensors  # preprocessed, by the model's input names
    scored: list[_outputs.OutputScoring]
    labels: dict[str, np.ndarray | None]  # by the model's output names; a stream's flattened to one row per step
    states: dict[str, str]  # state output -> the input it feeds, by the model's names
    specs: tuple[InputSpec, ...]
    signature: dict
    origin: str  # for messages

    @property
    def samples(self) -> int:
        """Rows of outputs: samples, or every step of every sequence."""
        first = next(name for name in self.inputs if name not in self.states.values())
        shape = self.inputs[first].shape
        return int(shape[0] * shape[1]) if self.states else int(shape[0])

    def run(self, predict: Predict, batching: Batching | None, inputs: Tensors | None = None) -> Tensors:
        """Every output on ``inputs`` (the evaluation inputs when None), as ``batching`` decided."""
        inputs = self.inputs if inputs is None else inputs
        if self.states:
            return _streams.run(predict, inputs, self.states, self.signature, what=self.origin)
        assert batching is not None, "a model without state has its batching decided first"
        return batching.run(predict, inputs)

    def decide(self, predict: Predict, batch_dimensions: list, tolerance: float) -> Batching:
        if self.states:
            return Batching(False, _streams.NOTE)
        return _batching.decide(predict, self.inputs, batch_dimensions=batch_dimensions, tolerance=tolerance)

    def conditioned(self, condition: str, strength: float) -> Tensors:
        """The inputs with a condition applied to the raw values of every float input (blur: of every image), then
        preprocessed; an integer input (a sample rate, token ids) is left as it is."""
        arrays = dict(self.arrays)
        for spec, array in zip(self.specs, input_arrays(self.specs), strict=True):
            if array not in arrays:
                continue  # a stream's state input the data leaves out: it starts at zero, unconditioned
            dtype = entry(self.signature, INPUTS, spec.name)["dtype"]
            if np.issubdtype(np.dtype(dtype), np.floating) and (condition != "blur" or _conditions.SPATIAL_AXES.get(spec.layout)):
                arrays[array] = _conditions.apply(arrays[array], condition, strength, spec.layout)
        return model_inputs(arrays, self.specs, self.signature, what=self.origin, sequences=bool(self.states))


def load(path: str, inputs: tuple[InputSpec, ...], outputs: tuple[OutputSpec, ...], signature: dict, *, origin: str) -> EvaluationData:
    arrays = read_arrays(path, what=origin)
    states = {
        resolve(signature, OUTPUTS, spec.name): resolve(signature, INPUTS, spec.state) for spec in outputs if spec.state
    }
    tensors = model_inputs(arrays, inputs, signature, what=origin, sequences=bool(states))
    scored = _outputs.scorings(outputs, inputs, signature)
    labels = _outputs.labels(scored, arrays)
    if states:
        labels = {name: None if value is None else _streams.flatten(value) for name, value in labels.items()}
    return EvaluationData(arrays, tensors, scored, labels, states, inputs, signature, origin)


def batch_dimensions(io: dict) -> list:
    """The first dimension of each input of a file's io (an ArtifactRecord's or a signature)."""
    return [entry["shape"][0] if entry.get("shape") else None for entry in io.get(INPUTS, [])]
