"""Figures of a model with several named outputs (steps/_outputs.py): each output's own, and the worst of them for budgets."""
from __future__ import annotations

import numpy as np
import pytest

from modelmake import metrics
from modelmake.errors import StepError
from modelmake.kinds import OutputKind
from modelmake.plan import InputSpec, OutputSpec
from modelmake.steps import _outputs
from modelmake.tensors import signature

DETECTOR = signature(
    [{"name": "image", "shape": [None, 16, 16, 3], "dtype": "float32"}],
    [{"name": "boxes", "shape": [None, 10, 4], "dtype": "float32"}, {"name": "scores", "shape": [None, 10], "dtype": "float32"}],
)
HEADS = (OutputSpec(name="boxes", kind=OutputKind.BOXES), OutputSpec(name="scores", kind=OutputKind.SCORES))
IMAGE = (InputSpec(name="image"),)


def _parity(scored, outputs, reference) -> dict:
    return {o.name: o.scoring.parity(outputs[o.name], reference[o.name]) for o in scored}


def test_each_outputs_parity_is_recorded_and_the_model_has_the_worst():
    rng = np.random.default_rng(0)
    reference = {"boxes": rng.normal(size=(20, 10, 4)), "scores": rng.uniform(size=(20, 10))}
    # The boxes are a little off everywhere; one score is far off.
    outputs = {"boxes": reference["boxes"] + 0.01, "scores": reference["scores"].copy()}
    outputs["scores"][3, 2] += 0.5
    scored = _outputs.scorings(HEADS, IMAGE, DETECTOR)
    assert [(o.name, o.labels, o.scoring.kind) for o in scored] == [
        ("boxes", "y_boxes", OutputKind.BOXES), ("scores", "y_scores", OutputKind.SCORES),
    ]
    figures = _outputs.new_figures(scored)
    per_output = _parity(scored, outputs, reference)
    figures.add(per_output)

    assert figures.outputs == per_output
    boxes, scores = per_output["boxes"], per_output["scores"]
    assert boxes[metrics.MAX_ABS_ERROR] == pytest.approx(0.01) and scores[metrics.MAX_ABS_ERROR] == pytest.approx(0.5)
    assert scores[metrics.COSINE_SIMILARITY] < boxes[metrics.COSINE_SIMILARITY]
    # The worst of each figure, whichever output it comes from: a detector is as good as its worse head.
    assert figures.model[metrics.MAX_ABS_ERROR] == scores[metrics.MAX_ABS_ERROR]
    assert figures.model[metrics.COSINE_SIMILARITY] == scores[metrics.COSINE_SIMILARITY]
    assert figures.model[metrics.SNR_DB] == min(boxes[metrics.SNR_DB], scores[metrics.SNR_DB])


def test_figures_added_later_join_each_output_and_the_worst():
    figures = _outputs.Figures({}, {})
    figures.add({"boxes": {metrics.COSINE_SIMILARITY: 0.99, metrics.MAX_ABS_ERROR: 0.2},
                 "scores": {metrics.COSINE_SIMILARITY: 0.95, metrics.MAX_ABS_ERROR: 0.1}})
    figures.add({"boxes": {"cosine_similarity_dim": 0.9}, "scores": {"cosine_similarity_dim": 0.97}})
    assert figures.model == {metrics.COSINE_SIMILARITY: 0.95, metrics.MAX_ABS_ERROR: 0.2, "cosine_similarity_dim": 0.9}
    assert figures.outputs == {
        "boxes": {metrics.COSINE_SIMILARITY: 0.99, metrics.MAX_ABS_ERROR: 0.2, "cosine_similarity_dim": 0.9},
        "scores": {metrics.COSINE_SIMILARITY: 0.95, metrics.MAX_ABS_ERROR: 0.1, "cosine_similarity_dim": 0.97},
    }


def test_a_single_output_keeps_plain_figures():
    sig = signature([{"name": "x", "shape": [None, 4], "dtype": "float32"}], [{"name": "logits", "shape": [None, 3], "dtype": "float32"}])
    scored = _outputs.scorings((OutputSpec(),), (InputSpec(),), sig)
    assert [(o.name, o.labels) for o in scored] == [("logits", "y")]
    figures = _outputs.new_figures(scored)
    reference = np.eye(3)[[0, 1, 2, 0]]
    figures.add(_parity(scored, {"logits": reference}, {"logits": reference}))
    assert figures.outputs is None
    assert figures.model == {metrics.MAX_ABS_ERROR: 0.0, metrics.COSINE_SIMILARITY: 1.0, metrics.TOP1_AGREEMENT: 1.0}
    # The reference step's figures are the model's own for one output, each output's for several.
    assert _outputs.per_output_source(scored, {"samples": 4, "top1": 0.5}) == {"logits": {"samples": 4, "top1": 0.5}}
    two = _outputs.scorings(HEADS, IMAGE, DETECTOR)
    assert _outputs.per_output_source(two, {"samples": 4, "outputs": {"boxes": {"x": 1.0}}}) == {"boxes": {"x": 1.0}, "scores": {}}


def test_labels_are_read_per_output_and_only_for_kinds_that_have_them():
    sig = signature(
        [{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}],
        [{"name": "classes", "shape": [None, 3], "dtype": "float32"}, {"name": "map", "shape": [None, 8, 8, 2], "dtype": "float32"},
         {"name": "features", "shape": [None, 16], "dtype": "float32"}],
    )
    specs = (OutputSpec(name="classes"), OutputSpec(name="map", kind=OutputKind.MASK), OutputSpec(name="features", kind=OutputKind.EMBEDDING))
    scored = _outputs.scorings(specs, (InputSpec(name="image"),), sig)
    arrays = {"image": np.zeros((2, 8, 8, 1)), "y_classes": np.array([0, 1]), "y_features": np.zeros((2, 16))}
    labels = _outputs.labels(scored, arrays)
    assert set(labels) == {"classes", "map", "features"}
    assert labels["classes"].tolist() == [0, 1] and labels["map"] is None and labels["features"] is None


def test_a_declared_kind_that_cannot_fit_an_outputs_shape_names_the_output():
    specs = (OutputSpec(name="boxes", kind=OutputKind.EMBEDDING), OutputSpec(name="scores", kind=OutputKind.SCORES))
    scored = _outputs.scorings(specs, IMAGE, DETECTOR)
    with pytest.raises(StepError, match=r"^source detector.tflite, output boxes: an embedding output has shape \(samples, dimensions\), "
                                        r"but the model's output is \(\?, 10, 4\)"):
        _outputs.check_shapes(scored, DETECTOR, what="source detector.tflite")


def test_an_output_the_model_does_not_give_is_named():
    scored = _outputs.scorings(HEADS, IMAGE, DETECTOR)
    with pytest.raises(StepError) as caught:
        _outputs.check_labels(scored, {"boxes": np.zeros((2, 10, 4))}, {}, what="artifact detector.fp16.tflite")
    assert str(caught.value) == "artifact detector.fp16.tflite: the model gives no output scores; it gives boxes"


def test_a_mask_follows_the_layout_of_the_image_input():
    sig = signature(
        [{"name": "rate", "shape": [], "dtype": "int64"}, {"name": "image", "shape": [None, 1, 8, 8], "dtype": "float32"}],
        [{"name": "map", "shape": [None, 1, 8, 8], "dtype": "float32"}],
    )
    inputs = (InputSpec(name="rate", layout="NC"), InputSpec(name="image", layout="NCHW"))
    (scored,) = _outputs.scorings((OutputSpec(name="map", kind=OutputKind.MASK),), inputs, sig)
    assert scored.scoring.layout == "NCHW"
