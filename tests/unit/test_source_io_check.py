"""The source step: io checked against the model file before any conversion; a source file that is not what its kind says."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from modelmake.contracts import DeclaredInput, DeclaredIo, SourceJob
from modelmake.errors import StepError
from modelmake.plan import Source
from modelmake.steps import source
from modelmake.steps.source import _check_io
from modelmake.tensors import signature

PATH = Path("models/vad.onnx")
KEY = "models.yaml: models -> vad -> io"
# A voice-activity model: an audio chunk, its sample rate and an ONNX-style recurrent state (batch not first).
VAD = signature(
    [
        {"name": "audio", "shape": [None, 512], "dtype": "float32"},
        {"name": "sr", "shape": [], "dtype": "int64"},
        {"name": "state", "shape": [2, None, 64], "dtype": "float32"},
    ],
    [
        {"name": "probability", "shape": [None, 1], "dtype": "float32"},
        {"name": "state_out", "shape": [2, None, 64], "dtype": "float32"},
    ],
)


def _input(name: str, shape: tuple[int, ...] | None = None, **declared) -> DeclaredInput:
    shapes = ((None, shape),) if shape is not None else ()
    return DeclaredInput(name=name, key=f"{KEY} -> inputs -> {name}", layout="NC", shapes=shapes, **declared)


IO = DeclaredIo(
    key=KEY,
    inputs=(_input("audio"), _input("sr", dtype="int64"), _input("state", shape=(2, 1, 64))),
    outputs=("probability", "state_out"),
    states=(("state_out", "state"),),
)


def _refused(io: DeclaredIo, model: dict = VAD) -> str:
    with pytest.raises(StepError) as caught:
        _check_io(io, model, PATH)
    return str(caught.value)


def test_io_that_matches_the_model_is_taken():
    _check_io(IO, VAD, PATH)
    _check_io(None, VAD, PATH)


def test_a_model_with_several_inputs_needs_them_named():
    io = DeclaredIo(key=KEY, inputs=(_input(""),), outputs=("",))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io: models/vad.onnx has 3 inputs (audio, sr, state): declare each by its name under "
        "io -> inputs, e.g. io: {inputs: {audio: {...}, ...}}"
    )


def test_a_single_input_and_output_need_no_names():
    model = signature([{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}],
                      [{"name": "scores", "shape": [None, 10], "dtype": "float32"}])
    _check_io(DeclaredIo(key=KEY, inputs=(DeclaredInput("", f"{KEY} -> input", "NHWC"),), outputs=("",)), model, PATH)


def test_an_unknown_and_an_undeclared_input_are_named():
    io = replace(IO, inputs=(_input("audio"), _input("rate")))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> inputs: models/vad.onnx has no input rate; sr, state not declared; "
        "the model's inputs are audio, sr, state: declare each of them by that name"
    )


def test_an_unknown_output_is_named():
    io = replace(IO, outputs=("probability", "state_out", "speech"))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> outputs: models/vad.onnx has no output speech; "
        "the model's outputs are probability, state_out: declare each of them by that name"
    )


def test_an_undeclared_output_is_named():
    io = replace(IO, outputs=("probability",), states=())
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> outputs: state_out not declared; "
        "the model's outputs are probability, state_out: declare each of them by that name"
    )


def test_a_dtype_the_model_does_not_take():
    io = replace(IO, inputs=(_input("audio"), _input("sr", dtype="float32"), _input("state")))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> inputs -> sr -> dtype is float32, but the model input sr takes int64: "
        "set dtype to int64, or remove it"
    )


@pytest.mark.parametrize(
    "shape, shown",
    [((1, 256), "[1, 256]"), ((4, 1, 64), "[4, 1, 64]"), ((1, 1, 512), "[1, 1, 512]")],
    ids=["static-dim", "state-static-dim", "rank"],
)
def test_a_shape_that_changes_a_static_dimension(shape, shown):
    name = "state" if len(shape) == 3 and shape[-1] == 64 else "audio"
    others = [spec for spec in IO.inputs if spec.name != name]
    io = replace(IO, inputs=(*others, _input(name, shape=shape)))
    model_shape = "(2, ?, 64)" if name == "state" else "(?, 512)"
    assert _refused(io) == (
        f"models.yaml: models -> vad -> io -> inputs -> {name} -> shape {shown} does not fit the model input {name} "
        f"{model_shape}: fix only its dynamic dimensions (shown ?) and keep the others"
    )


def test_a_shape_for_one_target_is_checked_with_the_targets_name():
    audio = DeclaredInput(
        name="audio", key=f"{KEY} -> inputs -> audio", layout="NC", shapes=(("pixel-8", (1, 512)), ("qnn-phone", (1, 256)))
    )
    io = replace(IO, inputs=(audio, *[spec for spec in IO.inputs if spec.name != "audio"]))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> inputs -> audio -> shape -> qnn-phone [1, 256] does not fit the model input "
        "audio (?, 512): fix only its dynamic dimensions (shown ?) and keep the others"
    )


def test_a_shape_that_fixes_only_dynamic_dimensions_is_taken():
    io = replace(IO, inputs=(_input("audio", shape=(1, 512)), _input("sr", shape=()), _input("state", shape=(2, 1, 64))))
    _check_io(io, VAD, PATH)


def test_a_state_pair_of_another_rank():
    model = signature(VAD["inputs"][:2] + [{"name": "state", "shape": [None, 128], "dtype": "float32"}], VAD["outputs"])
    io = replace(IO, inputs=(_input("audio"), _input("sr"), _input("state")))
    assert _refused(io, model) == (
        "models.yaml: models -> vad -> io -> outputs -> state_out -> state: the output state_out (2, ?, 64) cannot feed the "
        "input state (?, 128): name the input this output's value goes back into"
    )


def test_a_state_pair_of_other_fixed_dimensions():
    io = replace(IO, states=(("probability", "state"),))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> outputs -> probability -> state: the output probability (?, 1) cannot feed the "
        "input state (2, ?, 64): name the input this output's value goes back into"
    )


def test_mean_and_std_for_another_number_of_channels():
    model = signature([{"name": "image", "shape": [None, 3, None, None], "dtype": "float32"},
                       {"name": "scale", "shape": [None, 1], "dtype": "float32"}],
                      [{"name": "map", "shape": [None, 1, None, None], "dtype": "float32"}])
    image = DeclaredInput("image", f"{KEY} -> inputs -> image", "NCHW", channels=1)
    io = DeclaredIo(key=KEY, inputs=(image, _input("scale")), outputs=("map",))
    assert _refused(io, model) == (
        "models.yaml: models -> vad -> io -> inputs -> image gives 1 mean/std values, but the model input image "
        "(?, 3, ?, ?) has 3 channels (NCHW): give mean and std 3 values each, or correct the layout"
    )
    _check_io(replace(io, inputs=(replace(image, channels=3), _input("scale"))), model, PATH)


def test_a_state_pair_naming_an_input_the_model_does_not_have():
    io = replace(IO, states=(("state_out", "hidden"),))
    assert _refused(io) == (
        "models.yaml: models -> vad -> io -> outputs -> state_out -> state: models/vad.onnx has no input hidden; its inputs "
        "are audio, sr, state: name the input this output's value goes back into"
    )


def test_a_keras_source_that_is_not_a_keras_archive(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"HDF\x89 not a zip")  # an old .h5 file renamed
    job = SourceJob(Source(kind="keras", path=str(path)), str(tmp_path / "out"), str(tmp_path / "out" / "source.json"))
    with pytest.raises(StepError) as error:
        source.materialize(job)
    assert str(error.value) == (
        f"keras source {path} is not a .keras archive (the zip model.save('model.keras') writes): "
        "save the model again with model.save, or use a saved_model or recipe source"
    )
