"""The data step for models with several inputs and outputs: arrays by input name, labels y_<output> per kind, streams."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from modelmake.contracts import DataJob, DataLabels
from modelmake.errors import StepError
from modelmake.kinds import OutputKind
from modelmake.plan import Dataset
from modelmake.steps import data
from modelmake.steps._arrays import read_arrays, write_npz

# A detector fed an image and its sensor's gain, with a classifier head and a box head.
INPUTS = ("image", "gain")
LABELS = (DataLabels("y_classes", "classes", OutputKind.CLASSES), DataLabels("y_boxes", "boxes", OutputKind.BOXES))
RNG = np.random.default_rng(0)
IMAGE = RNG.uniform(size=(10, 8, 8, 1)).astype(np.float32)
GAIN = np.full(10, 4, np.int64)
CLASSES = RNG.integers(0, 3, size=10)
BOXES = RNG.uniform(size=(10, 5, 4)).astype(np.float32)


def _job(tmp_path, path, *, labels=LABELS, inputs=INPUTS, recipe=False, **options) -> DataJob:
    dataset = Dataset(
        role="evaluation", path=str(path), from_recipe=recipe, function="load" if recipe else "", split="test" if recipe else ""
    )
    return DataJob(dataset, str(tmp_path / "out.npz"), inputs=inputs, labels=labels, **options)


def _given(tmp_path, **arrays):
    path = tmp_path / "given.npz"
    write_npz(path, **arrays)
    return path


def test_named_arrays_from_an_npz_file(tmp_path):
    path = _given(tmp_path, image=IMAGE, gain=GAIN, y_classes=CLASSES, y_boxes=BOXES, notes=np.arange(3))
    summary = data.materialize(_job(tmp_path, path))
    assert summary == f"evaluation data from {path}: 10 samples: image (8, 8, 1), gain ()"
    written = read_arrays(tmp_path / "out.npz", what="out")
    # Class ids are kept as int64; a box head has no labels to check, and nothing a metric does not read is kept.
    assert set(written) == {"image", "gain", "y_classes"}
    np.testing.assert_array_equal(written["image"], IMAGE)
    assert written["y_classes"].dtype == np.int64 and written["gain"].dtype == np.int64


def test_a_custom_metric_keeps_every_array(tmp_path):
    path = _given(tmp_path, image=IMAGE, gain=GAIN, y_boxes=BOXES, anchors=np.zeros((5, 4), np.float32))
    summary = data.materialize(_job(tmp_path, path, keep_arrays=True))
    assert summary.endswith("10 samples: image (8, 8, 1), gain (), no labels")  # a box head has none modelmake reads
    written = read_arrays(tmp_path / "out.npz", what="out")
    assert set(written) == {"image", "gain", "y_boxes", "anchors"}
    np.testing.assert_array_equal(written["y_boxes"], BOXES)


def test_labels_are_optional_for_a_model_with_several_outputs(tmp_path):
    path = _given(tmp_path, image=IMAGE, gain=GAIN)
    assert data.materialize(_job(tmp_path, path)).endswith(": 10 samples: image (8, 8, 1), gain (), no labels")


def test_named_arrays_from_a_recipe_returning_a_dict(tmp_path):
    recipe = tmp_path / "data.py"
    recipe.write_text(
        textwrap.dedent(
            """\
            import numpy as np


            def load(split):
                rng = np.random.default_rng(1)
                return {"image": rng.uniform(size=(6, 8, 8, 1)), "gain": np.arange(6), "y_classes": np.arange(6) % 3}
            """
        ),
        encoding="utf-8",
    )
    summary = data.materialize(_job(tmp_path, recipe, recipe=True))
    assert summary == f"evaluation data from {recipe}: 6 samples: image (8, 8, 1), gain ()"
    written = read_arrays(tmp_path / "out.npz", what="out")
    assert set(written) == {"image", "gain", "y_classes"} and written["y_classes"].tolist() == [0, 1, 2, 0, 1, 2]


def test_a_recipe_for_several_inputs_must_return_a_dict(tmp_path):
    recipe = tmp_path / "data.py"
    recipe.write_text("import numpy as np\n\n\ndef load(split):\n    return np.zeros((4, 8, 8, 1)), np.zeros(4)\n", encoding="utf-8")
    with pytest.raises(StepError) as caught:
        data.materialize(_job(tmp_path, recipe, recipe=True))
    assert str(caught.value) == (
        f"evaluation data from {recipe}: load('test') must return a dict of numpy arrays named image, gain, y_classes, y_boxes; "
        "it returned tuple"
    )


def test_a_missing_input_array_names_the_arrays_the_file_has(tmp_path):
    path = _given(tmp_path, image=IMAGE, y_classes=CLASSES, sensor_gain=GAIN)
    with pytest.raises(StepError) as caught:
        data.materialize(_job(tmp_path, path))
    assert str(caught.value) == (
        f"evaluation data from {path} needs an array named gain; it has image, sensor_gain, y_classes: "
        "save one array per model input, named as the input"
    )


def test_input_arrays_must_hold_as_many_samples(tmp_path):
    path = _given(tmp_path, image=IMAGE, gain=GAIN[:7])
    with pytest.raises(StepError) as caught:
        data.materialize(_job(tmp_path, path))
    assert str(caught.value) == (
        f"evaluation data from {path}: the input arrays must hold the same number of samples; they hold image 10, gain 7"
    )


def test_class_labels_of_one_output_are_checked(tmp_path):
    path = _given(tmp_path, image=IMAGE, gain=GAIN, y_classes=CLASSES.astype(np.float32))
    with pytest.raises(StepError) as caught:
        data.materialize(_job(tmp_path, path))
    assert str(caught.value) == (
        f"evaluation data from {path}: y_classes must be one integer label per sample (10 samples; y_classes has shape (10,) "
        "and dtype float32): give the labels of output classes in that shape"
    )


def test_mask_labels_of_one_output_are_checked(tmp_path):
    labels = (DataLabels("y_map", "map", OutputKind.MASK), DataLabels("y_classes", "classes", OutputKind.CLASSES))
    path = _given(tmp_path, image=IMAGE, gain=GAIN, y_map=np.zeros((10, 8), np.int64))
    with pytest.raises(StepError) as caught:
        data.materialize(_job(tmp_path, path, labels=labels))
    assert str(caught.value) == (
        f"evaluation data from {path}: y_map must be one integer class id per pixel, shape (samples, height, width) "
        "(10 samples; y_map has shape (10, 8) and dtype int64): give the labels of output map in that shape"
    )
    write_npz(path, image=IMAGE, gain=GAIN, y_map=np.zeros((10, 8, 8), np.int32))
    data.materialize(_job(tmp_path, path, labels=labels))
    assert read_arrays(tmp_path / "out.npz", what="out")["y_map"].dtype == np.int64


# ---------------------------------------------------------------- streams: a voice-activity detector

STREAM_INPUTS = ("audio", "sr", "state")
STREAM_LABELS = (DataLabels("y_probability", "probability", OutputKind.CLASSES), DataLabels("y_state_out", "state_out", OutputKind.TENSOR))
AUDIO = RNG.normal(size=(3, 4, 512)).astype(np.float32)  # 3 sequences of 4 chunks
SR = np.full((3, 4), 16000, np.int64)  # a scalar input: one value per step


def _stream_job(tmp_path, path, **options) -> DataJob:
    return _job(
        tmp_path, path, inputs=STREAM_INPUTS, labels=STREAM_LABELS, sequences=True, optional_inputs=("state",), **options
    )


def test_stream_data_without_its_state_input(tmp_path):
    path = _given(tmp_path, audio=AUDIO, sr=SR, y_probability=np.zeros((3, 4), np.int64))
    assert data.materialize(_stream_job(tmp_path, path)) == f"evaluation data from {path}: 3 sequences: audio (4, 512), sr (4,)"
    assert set(read_arrays(tmp_path / "out.npz", what="out")) == {"audio", "sr", "y_probability"}


def test_stream_data_with_each_sequences_first_state(tmp_path):
    state = np.zeros((3, 2, 1, 64), np.float32)
    path = _given(tmp_path, audio=AUDIO, sr=SR, state=state)
    summary = data.materialize(_stream_job(tmp_path, path))
    assert summary == f"evaluation data from {path}: 3 sequences: audio (4, 512), sr (4,), state (2, 1, 64), no labels"


def test_stream_labels_are_given_for_every_step(tmp_path):
    path = _given(tmp_path, audio=AUDIO, sr=SR, y_probability=np.zeros(3, np.int64))
    with pytest.raises(StepError) as caught:
        data.materialize(_stream_job(tmp_path, path))
    assert str(caught.value) == (
        f"evaluation data from {path}: y_probability must be one integer label per sample, for every step of every sequence "
        "(sequences, steps, ...) (3 sequences; y_probability has shape (3,) and dtype int64): give the labels of output "
        "probability in that shape"
    )


def test_stream_inputs_hold_sequences_of_steps(tmp_path):
    path = _given(tmp_path, audio=AUDIO[:, 0, 0], sr=SR)
    with pytest.raises(StepError) as caught:
        data.materialize(_stream_job(tmp_path, path))
    assert str(caught.value) == (
        f"evaluation data from {path}: audio must be a numeric array of shape (sequences, steps, *sample) "
        "(got dtype float32, shape (3,))"
    )


def test_a_data_file_that_is_not_an_npz_archive_says_how_to_save_one(tmp_path):
    path = tmp_path / "eval.npz"
    path.write_text("x,y\n0.5,1\n", encoding="utf-8")  # a CSV under the expected name
    with pytest.raises(StepError) as error:
        data.materialize(_job(tmp_path, path))
    assert str(error.value) == (
        f"evaluation data from {path} ({path}) is not an .npz archive: save the arrays with numpy.savez(path, x=..., y=...), "
        "one array per model input"
    )


def test_arrays_in_other_letters_are_named_as_the_file_has_them(tmp_path):
    path = _given(tmp_path, X=IMAGE, Y=CLASSES)
    with pytest.raises(StepError) as error:
        data.materialize(_job(tmp_path, path, inputs=("x",), labels=(DataLabels("y", "", OutputKind.CLASSES),)))
    assert str(error.value) == (
        f"evaluation data from {path} needs an array named x; it has X, Y: save the samples as x "
        "(numpy.savez(path, x=..., y=...))"
    )
