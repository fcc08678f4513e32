"""Stateful models run over sequences one step at a time, each state output fed back into its input (steps/_streams.py).

The models are fake predict functions over named tensors: a recurrent cell
whose state accumulates its input (``state_out = state + x``) and whose output
is the state it was given, doubled (``y = state * 2``).
"""
from __future__ import annotations

import numpy as np
import pytest

from modelmake.errors import StepError
from modelmake.steps import _streams
from modelmake.tensors import signature

SEQUENCES, STEPS, WIDTH = 3, 4, 8
X = np.random.default_rng(0).normal(size=(SEQUENCES, STEPS, WIDTH)).astype(np.float32)
STATES = {"state_out": "state"}  # the output state_out feeds the input state at the next step


def _signature(state_shape: list) -> dict:
    return signature(
        [{"name": "x", "shape": [None, WIDTH], "dtype": "float32"}, {"name": "state", "shape": state_shape, "dtype": "float32"}],
        [{"name": "y", "shape": [None, WIDTH], "dtype": "float32"}, {"name": "state_out", "shape": state_shape, "dtype": "float32"}],
    )


class Recurrent:
    """The cell, recording what each call was fed; ``state_shape`` is the state input's shape as the model declares it."""

    def __init__(self, state_shape: tuple[int, ...]):
        self.state_shape = state_shape
        self.fed: list[dict] = []

    def __call__(self, inputs: dict, batch: int | None) -> dict:
        assert batch == 1, "a stream runs one step of one sequence at a time"
        assert inputs["x"].shape == (1, WIDTH) and inputs["state"].shape == self.state_shape
        self.fed.append({name: value.copy() for name, value in inputs.items()})
        state = inputs["state"]
        y = (state[0] if state.ndim == 3 else state) * 2  # an ONNX-style state [2, 1, 8]: its first layer
        return {"y": y, "state_out": state + inputs["x"]}


def _by_hand(initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y and state_out of every step of every sequence, in order, by a plain loop; ``initial`` per sequence."""
    ys, states = [], []
    for sequence in range(SEQUENCES):
        state = initial[sequence]
        for step in range(STEPS):
            ys.append((state[0] if state.ndim == 3 else state) * 2)
            state = state + X[sequence, step]
            states.append(state)
    return np.concatenate(ys), np.stack(states)


def test_a_stream_starts_at_zero_and_carries_the_state_from_step_to_step():
    model = Recurrent((1, WIDTH))
    outputs = _streams.run(model, {"x": X}, STATES, _signature([None, WIDTH]), what="evaluation data")
    y, state = _by_hand(np.zeros((SEQUENCES, 1, WIDTH), np.float32))
    assert set(outputs) == {"y", "state_out"}
    assert outputs["y"].shape == (SEQUENCES * STEPS, WIDTH)
    np.testing.assert_allclose(outputs["y"], y, rtol=1e-6)
    np.testing.assert_allclose(outputs["state_out"], state.reshape(-1, WIDTH), rtol=1e-6)
    # Each sequence starts afresh: the first step of every sequence is fed a zero state.
    assert len(model.fed) == SEQUENCES * STEPS
    for sequence in range(SEQUENCES):
        np.testing.assert_array_equal(model.fed[sequence * STEPS]["state"], np.zeros((1, WIDTH)))
        np.testing.assert_array_equal(model.fed[sequence * STEPS + 1]["x"], X[sequence, 1][np.newaxis])


def test_a_stream_starts_at_the_datas_initial_state():
    initial = np.random.default_rng(1).normal(size=(SEQUENCES, 1, WIDTH)).astype(np.float32)
    outputs = _streams.run(Recurrent((1, WIDTH)), {"x": X, "state": initial}, STATES, _signature([None, WIDTH]), what="data")
    y, state = _by_hand(initial)
    np.testing.assert_allclose(outputs["y"], y, rtol=1e-6)
    np.testing.assert_allclose(outputs["state_out"], state.reshape(-1, WIDTH), rtol=1e-6)
    assert not np.allclose(outputs["y"][0], 0.0)


def test_an_initial_state_given_without_its_batch_dimension_is_fed_with_it():
    model = Recurrent((1, WIDTH))
    initial = np.random.default_rng(3).normal(size=(SEQUENCES, WIDTH)).astype(np.float32)
    outputs = _streams.run(model, {"x": X, "state": initial}, STATES, _signature([None, WIDTH]), what="data")
    y, _ = _by_hand(initial[:, np.newaxis])
    np.testing.assert_allclose(outputs["y"], y, rtol=1e-6)
    assert all(fed["state"].shape == (1, WIDTH) for fed in model.fed)


@pytest.mark.parametrize("initial", [None, "data"])
def test_an_onnx_style_state_whose_batch_is_not_first_round_trips(initial):
    shape = (2, 1, WIDTH)
    model = Recurrent(shape)
    start = np.random.default_rng(2).normal(size=(SEQUENCES, *shape)).astype(np.float32)
    inputs = {"x": X} | ({"state": start} if initial else {})
    outputs = _streams.run(model, inputs, STATES, _signature(list(shape)), what="data")
    y, state = _by_hand(start if initial else np.zeros((SEQUENCES, *shape), np.float32))
    np.testing.assert_allclose(outputs["y"], y, rtol=1e-6)
    # Fed back whole at its static shape, never resized, and stacked one per step.
    assert outputs["state_out"].shape == (SEQUENCES * STEPS, *shape)
    np.testing.assert_allclose(outputs["state_out"], state, rtol=1e-6)
    assert all(fed["state"].shape == shape for fed in model.fed)


def test_a_scalar_input_is_fed_as_it_is_at_every_step():
    fed = []

    def predict(inputs, batch):
        fed.append(inputs["rate"])
        return {"y": inputs["x"] * inputs["rate"], "state_out": inputs["state"] + inputs["x"]}

    sig = signature(
        [
            {"name": "x", "shape": [None, WIDTH], "dtype": "float32"},
            {"name": "rate", "shape": [], "dtype": "int64"},
            {"name": "state", "shape": [None, WIDTH], "dtype": "float32"},
        ],
        [{"name": "y", "shape": [None, WIDTH], "dtype": "float32"}, {"name": "state_out", "shape": [None, WIDTH], "dtype": "float32"}],
    )
    rate = np.full((SEQUENCES, STEPS), 16000, np.int64)
    outputs = _streams.run(predict, {"x": X, "rate": rate}, STATES, sig, what="data")
    assert all(value.shape == () and value == 16000 for value in fed)
    np.testing.assert_allclose(outputs["y"], X.reshape(-1, WIDTH) * 16000, rtol=1e-6)


def test_inputs_with_different_sequence_or_step_counts_are_refused():
    sig = signature(
        [{"name": "x", "shape": [None, WIDTH], "dtype": "float32"}, {"name": "z", "shape": [None, WIDTH], "dtype": "float32"},
         {"name": "state", "shape": [None, WIDTH], "dtype": "float32"}],
        [{"name": "state_out", "shape": [None, WIDTH], "dtype": "float32"}],
    )
    with pytest.raises(StepError) as caught:
        _streams.run(Recurrent((1, WIDTH)), {"x": X, "z": X[:, :3]}, STATES, sig, what="evaluation data from speech.npz")
    assert str(caught.value) == (
        "evaluation data from speech.npz: every input must have the same number of sequences and steps; got x (3, 4), z (3, 3)"
    )


def test_data_that_is_not_sequences_is_refused():
    with pytest.raises(StepError) as caught:
        _streams.run(Recurrent((1, WIDTH)), {"x": X[:, 0, 0]}, STATES, _signature([None, WIDTH]), what="evaluation data")
    assert str(caught.value) == (
        "evaluation data: a stateful model's data holds, for each input that is not a state, (sequences, steps, *sample); "
        "the arrays have shapes x (3,)"
    )


def test_a_state_output_that_does_not_fit_its_input_is_refused():
    def predict(inputs, batch):
        return {"y": inputs["x"], "state_out": np.zeros((1, WIDTH + 1), np.float32)}

    with pytest.raises(StepError, match=r"^data: a state output does not fit the input it feeds \(ValueError: .*\): check the state"):
        _streams.run(predict, {"x": X}, STATES, _signature([None, WIDTH]), what="data")


def test_labels_of_every_step_are_flattened_in_the_order_of_the_outputs():
    labels = np.arange(SEQUENCES * STEPS).reshape(SEQUENCES, STEPS)
    assert _streams.flatten(labels).tolist() == list(range(SEQUENCES * STEPS))
    assert _streams.flatten(np.zeros((SEQUENCES, STEPS, 5, 5))).shape == (SEQUENCES * STEPS, 5, 5)


def test_evaluation_data_of_a_stream_runs_as_sequences_with_labels_per_step(tmp_path):
    from modelmake.kinds import OutputKind
    from modelmake.plan import InputSpec, OutputSpec
    from modelmake.steps import _evaluation
    from modelmake.steps._arrays import write_npz

    sig = signature(
        [
            {"name": "x", "shape": [None, WIDTH], "dtype": "float32"},
            {"name": "rate", "shape": [], "dtype": "int64"},
            {"name": "state", "shape": [None, WIDTH], "dtype": "float32"},
        ],
        [{"name": "y", "shape": [None, WIDTH], "dtype": "float32"}, {"name": "state_out", "shape": [None, WIDTH], "dtype": "float32"}],
    )
    labels = np.arange(SEQUENCES * STEPS).reshape(SEQUENCES, STEPS) % 2
    path = tmp_path / "evaluation.npz"
    write_npz(path, x=X * 2, rate=np.full((SEQUENCES, STEPS), 8000, np.int64), y_y=labels)
    inputs = (InputSpec(name="x", layout="NC", scale="1/2"), InputSpec(name="rate", layout="NC"), InputSpec(name="state", layout="NC"))
    outputs = (OutputSpec(name="y", kind=OutputKind.CLASSES), OutputSpec(name="state_out", kind=OutputKind.TENSOR, state="state"))
    data = _evaluation.load(str(path), inputs, outputs, sig, origin="evaluation data")

    assert data.states == {"state_out": "state"} and data.samples == SEQUENCES * STEPS
    assert data.inputs["rate"].dtype == np.int64 and "state" not in data.inputs
    batching = data.decide(Recurrent((1, WIDTH)), [None, None, None], 1e-4)
    assert not batching.batched and batching.note == _streams.NOTE

    def predict(tensors, batch):
        assert tensors["rate"].shape == () and tensors["rate"] == 8000
        return Recurrent((1, WIDTH))({"x": tensors["x"], "state": tensors["state"]}, batch)

    result = data.run(predict, batching)
    y, _ = _by_hand(np.zeros((SEQUENCES, 1, WIDTH), np.float32))  # x * 2 preprocessed by 1/2: the same steps
    np.testing.assert_allclose(result["y"], y, rtol=1e-6)
    assert data.labels["y"].tolist() == labels.reshape(-1).tolist() and data.labels["state_out"] is None
    # A condition changes the raw float input, never an integer one (a sample rate dimmed is no longer a rate).
    dimmed = data.conditioned("dim", 0.5)
    np.testing.assert_allclose(dimmed["x"], X / 2, rtol=1e-6)
    assert (dimmed["rate"] == 8000).all()
