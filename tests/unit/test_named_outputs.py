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
    specs = (
        OutputSpec(name="classes"), OutputSpec(name="map", kind=OutputKind.MASK), OutputSpec(name="features", kind=OutputKind.EMBEDDING),
    )
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


# ---------------------------------------------------------------- the manifest: how an app feeds and reads each tensor


def _manifest_model(tmp_path, model_signature: dict, inputs: tuple, outputs: tuple, io: dict, outputs_figures=None) -> dict:
    from modelmake.bundle.manifest import _model
    from modelmake.contracts import ArtifactInputs, ArtifactRecord, MetricsRecord, ModelInputs, SourceRecord
    from modelmake.kinds import Precision

    record = tmp_path / "source.json"
    SourceRecord(kind="onnx", path="models/vad.onnx", model="build/model.onnx", model_sha256="0", source_files={},
                 signature=model_signature, metadata={}, tools={}).write(str(record))
    ArtifactRecord(precision="fp16", integer_io=False, per_channel=True, delegates=[], io=io, sha256="1", size=10,
                   tools={}).write(str(tmp_path / "artifact.json"))
    MetricsRecord(artifact="vad.fp16.onnx@pc", size_bytes=10, metrics={"size_kb": 0.01}, not_measured={}, coverage=None,
                  structure=None, source=None, budgets=[], tools={}, latency_host=None, outputs=outputs_figures).write(
        str(tmp_path / "metrics.json"))
    artifact = ArtifactInputs(
        id="vad.fp16.onnx@pc", variant="fp16", target="pc", platform="linux", format="onnx", precision=Precision.FP16,
        file="", record=str(tmp_path / "artifact.json"), metrics=str(tmp_path / "metrics.json"), bundle_path="pc/vad.fp16.onnx",
        selection=None, preference=0, budgets=(),
    )
    model = ModelInputs(name="vad", description="", source_record=str(record), reference=None, inputs=inputs, outputs=outputs,
                        datasets=(), conditions=(), artifacts=(artifact,))
    return _model(model, {"pc/vad.fp16.onnx": {"sha256": "1", "size": 10}})


def test_the_manifest_lists_every_named_input_and_output_of_a_stateful_model(tmp_path):
    vad = signature(
        [{"name": "audio", "shape": [None, 512], "dtype": "float32"}, {"name": "sr", "shape": [], "dtype": "int64"},
         {"name": "state", "shape": [2, None, 64], "dtype": "float32"}],
        [{"name": "probability", "shape": [None, 1], "dtype": "float32"},
         {"name": "state_out", "shape": [2, None, 64], "dtype": "float32"}],
    )
    inputs = (InputSpec(name="audio", layout="NC", scale="1/32768"), InputSpec(name="sr", layout="NC"),
              InputSpec(name="state", layout="NC", shape=(2, 1, 64)))
    outputs = (OutputSpec(name="probability", kind=OutputKind.TENSOR), OutputSpec(name="state_out", kind=OutputKind.TENSOR, state="state"))
    # The file's io, as the converter fixed it: the state's batch dimension is 1.
    file_io = signature(
        [{"name": "audio", "shape": [1, 512], "dtype": "float32"}, {"name": "sr", "shape": [], "dtype": "int64"},
         {"name": "state", "shape": [2, 1, 64], "dtype": "float32"}],
        [{"name": "probability", "shape": [1, 1], "dtype": "float32"}, {"name": "state_out", "shape": [2, 1, 64], "dtype": "float32"}],
    )
    figures = {"probability": {"cosine_similarity": 0.99}, "state_out": {"cosine_similarity": 0.98}}
    entry = _manifest_model(tmp_path, vad, inputs, outputs, file_io, figures)

    assert "input" not in entry and "output" not in entry
    assert entry["inputs"] == [
        {"layout": "NC", "scale": "1/32768", "offset": "0", "name": "audio", "shape": [None, 512], "dtype": "float32"},
        {"layout": "NC", "scale": "1", "offset": "0", "name": "sr", "shape": [], "dtype": "int64"},
        {"layout": "NC", "scale": "1", "offset": "0", "name": "state", "shape": [2, 1, 64], "dtype": "float32"},
    ]
    assert entry["outputs"] == [
        {"name": "probability", "kind": "tensor"},
        {"name": "state_out", "kind": "tensor", "state": "state"},
    ]
    (variant,) = entry["variants"].values()
    # Every tensor of the file, in its order, with the dtype and shape an app binds; each output's own figures.
    assert variant["io"] == file_io
    assert variant["output_metrics"] == {"probability": {"cosine_similarity": "0.990000"}, "state_out": {"cosine_similarity": "0.980000"}}


def test_the_manifest_keeps_the_entries_of_a_model_with_one_unnamed_input_and_output(tmp_path):
    digits = signature([{"name": "image", "shape": [None, 8, 8], "dtype": "float32"}],
                       [{"name": "probabilities", "shape": [None, 10], "dtype": "float32"}])
    file_io = signature(
        [{"name": "image", "shape": [1, 8, 8], "dtype": "int8"}], [{"name": "probabilities", "shape": [1, 10], "dtype": "int8"}]
    )
    entry = _manifest_model(tmp_path, digits, (InputSpec(layout="NHWC", scale="1/16"),), (OutputSpec(top_k=3),), file_io)
    assert "inputs" not in entry and "outputs" not in entry
    assert entry["input"] == {"layout": "NHWC", "scale": "1/16", "offset": "0", "name": "image", "shape": [None, 8, 8]}
    assert entry["output"] == {"top_k": 3}
    (variant,) = entry["variants"].values()
    assert variant["io"] == {"input": file_io["inputs"][0], "output": file_io["outputs"][0]}
    assert "output_metrics" not in variant
