"""Stateful models run over sequences as an app runs them: one step at a time, each state output fed back
into its input at the next step.

A stateful model's data holds, for each input that is not a state,
(sequences, steps, *sample); a state input's array, when the data has one,
holds each sequence's first state, else the state starts at zero.  Outputs
come back as (sequences * steps, *output), the steps of each sequence in
order, so parity and labels compare them row by row.
"""
from __future__ import annotations

import numpy as np

from ..errors import StepError
from ..tensors import INPUTS, Tensors
from ._batching import Predict

NOTE = "one sequence at a time, one step at a time, carrying state from step to step"


def sequence_shape(inputs: Tensors, states: dict[str, str], *, what: str) -> tuple[int, int]:
    """(sequences, steps) of a stream's data; every input that is not a state must agree."""
    shapes = {name: array.shape[:2] for name, array in inputs.items() if name not in states.values()}
    if not shapes or any(len(shape) < 2 for shape in shapes.values()):
        raise StepError(
            f"{what}: a stateful model's data holds, for each input that is not a state, (sequences, steps, *sample); "
            f"the arrays have shapes {', '.join(f'{n} {inputs[n].shape}' for n in inputs) or 'none'}"
        )
    if len(set(shapes.values())) > 1:
        raise StepError(
            f"{what}: every input must have the same number of sequences and steps; "
            f"got {', '.join(f'{name} {shape}' for name, shape in shapes.items())}"
        )
    return next(iter(shapes.values()))


def initial_state(signature_entry: dict) -> np.ndarray:
    """A state input's first value when the data gives none: zeros of its shape, a dynamic dimension taken as 1."""
    shape = [1 if d is None else d for d in signature_entry["shape"]]
    return np.zeros(shape, np.dtype(signature_entry["dtype"]))


def _as_fed(sample: np.ndarray, rank: int) -> np.ndarray:
    """One step's sample with the batch dimension the model input has (none for a scalar input)."""
    return sample if sample.ndim == rank else sample[np.newaxis]


def run(predict: Predict, inputs: Tensors, states: dict[str, str], signature: dict, *, what: str) -> Tensors:
    """Every output of every step of every sequence; ``states`` maps each state output to the input it feeds."""
    entries = {entry["name"]: entry for entry in signature[INPUTS]}
    sequences, steps = sequence_shape(inputs, states, what=what)
    state_inputs = set(states.values())
    collected: dict[str, list[np.ndarray]] = {}
    for sequence in range(sequences):
        # The data's first state may leave out the batch dimension, as a step's sample may.
        state = {
            name: _as_fed(inputs[name][sequence], len(entries[name]["shape"])) if name in inputs else initial_state(entries[name])
            for name in state_inputs
        }
        for step in range(steps):
            feed = {
                name: _as_fed(array[sequence, step], len(entries[name]["shape"]))
                for name, array in inputs.items()
                if name not in state_inputs
            }
            outputs = predict(feed | state, 1)
            for name, value in outputs.items():
                collected.setdefault(name, []).append(value)
            try:
                state = {name: outputs[output].astype(entries[name]["dtype"]).reshape(state[name].shape) for output, name in states.items()}
            except (KeyError, ValueError) as exc:
                raise StepError(
                    f"{what}: a state output does not fit the input it feeds ({type(exc).__name__}: {exc}): "
                    "check the state pairs under io -> outputs"
                ) from exc
    # A batch-first output comes back (1, ...) per step and joins along it; another (a state [2, 1, 64]) is stacked.
    return {
        name: np.concatenate(values) if values[0].ndim and values[0].shape[0] == 1 else np.stack(values)
        for name, values in collected.items()
    }


def flatten(array: np.ndarray) -> np.ndarray:
    """A stream's labels or other per-step arrays, (sequences, steps, ...) as (sequences * steps, ...)."""
    return array.reshape(-1, *array.shape[2:])
