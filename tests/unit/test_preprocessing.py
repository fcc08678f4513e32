"""Input preprocessing as the steps apply it: exact fractions, per-channel mean/std, and the model's channel count.

The models are ONNX graphs written in code from fixed seeds (NCHW, as ONNX
models mostly are); the raw data are integer pixel values, as a camera gives.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelmake.contracts import ConvertJob, DeclaredInput, DeclaredIo, EvaluateJob, MetricsRecord, ReferenceJob, SourceJob
from modelmake.errors import StepError
from modelmake.graph import model_tasks
from modelmake.kinds import Precision
from modelmake.plan import InputSpec, OutputSpec, Source
from modelmake.spec import load_plan
from modelmake.steps._arrays import preprocess, write_npz

from tests.support.onnx_workspaces import ONNX_CPU as CPU
from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelmake.steps import convert, evaluate, reference, source  # noqa: E402

IMAGENET = InputSpec(layout="NCHW", mean=("123.675", "116.28", "103.53"), std=("58.395", "57.12", "57.375"))
TO_SIGNED_UNIT = InputSpec(layout="NCHW", scale="1/127.5", offset="-1")  # [0, 255] -> [-1, 1]
CLASSES = 6


# ---------------------------------------------------------------- the arithmetic


def test_mean_and_std_apply_on_the_last_axis_of_nhwc():
    x = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    spec = InputSpec(layout="NHWC", mean=("1", "2", "3"), std=("2", "1/2", "4"))
    expected = (x.astype(np.float64) - [1, 2, 3]) / [2, 0.5, 4]
    out = preprocess(x, spec)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out[1, 1, 1].tolist() == [(21 - 1) / 2, (22 - 2) / 0.5, (23 - 3) / 4]


def test_mean_and_std_apply_on_axis_1_of_nchw():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    out = preprocess(x, IMAGENET)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(out, (x - mean[:, None, None]) / std[:, None, None], rtol=1e-6)
    # The same pixels in NHWC give the same values, moved with their channel.
    nhwc = preprocess(x.transpose(0, 2, 3, 1), InputSpec(layout="NHWC", mean=IMAGENET.mean, std=IMAGENET.std))
    np.testing.assert_array_equal(nhwc, out.transpose(0, 2, 3, 1))


def test_a_decimal_denominator_is_applied_exactly():
    x = np.array([[0, 127.5, 255]], np.float32)
    np.testing.assert_allclose(preprocess(x, TO_SIGNED_UNIT), [[-1.0, 0.0, 1.0]], atol=1e-7)


def test_data_whose_channels_differ_from_mean_and_std_fail_with_the_shape():
    with pytest.raises(StepError) as caught:
        preprocess(np.zeros((4, 1, 8, 8), np.float32), IMAGENET)
    assert str(caught.value) == (
        "the data has samples of shape (1, 8, 8), whose NCHW channel axis does not hold the 3 channels that "
        "io gives mean and std values for: fix the data, or give mean and std one value per channel"
    )


# ---------------------------------------------------------------- the source step


def _classifier(path: Path, channels: int) -> Path:
    """x (N, channels, 8, 8) -> Conv 3x3 -> Relu -> Flatten -> Gemm -> Softmax -> y (N, 6)."""
    rng = np.random.default_rng(17)
    weights = {
        "conv_w": rng.normal(0.0, 0.5, (8, channels, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0.0, 0.1, 8).astype(np.float32),
        "dense_w": rng.normal(0.0, 0.15, (CLASSES, 8 * 64)).astype(np.float32),
        "dense_b": rng.normal(0.0, 0.1, CLASSES).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "dense_w", "dense_b"], ["logits"], name="dense", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", CLASSES])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _declared(key: str, channels: int) -> DeclaredIo:
    """io as the graph hands it to the source step: the one input, whose mean and std give ``channels`` values."""
    return DeclaredIo(key="models.yaml: models -> m -> io", inputs=(DeclaredInput("", key, "NCHW", channels=channels),), outputs=("",))


def _source(tmp_path: Path, model_file: Path, io: DeclaredIo | None = None) -> Path:
    record = tmp_path / "source" / "source.json"
    source.materialize(SourceJob(Source(kind="onnx", path=str(model_file)), str(tmp_path / "source"), str(record), io=io))
    return record


def test_mean_and_std_for_three_channels_on_a_one_channel_model_fail_at_the_source(tmp_path):
    model = _classifier(tmp_path / "gray.onnx", channels=1)
    key = "models.yaml: models -> gray -> io -> input"
    with pytest.raises(StepError) as caught:
        _source(tmp_path, model, _declared(key, 3))
    assert str(caught.value) == (
        "models.yaml: models -> gray -> io -> input gives 3 mean/std values, but the model input x (?, 1, 8, 8) has "
        "1 channel (NCHW): give mean and std 1 value each, or correct the layout"
    )
    # Nothing downstream starts: the record conversion waits for is not written.
    assert not (tmp_path / "source" / "source.json").exists()
    # With as many values as channels, the source is taken.
    _source(tmp_path, model, _declared(key, 1))
    assert (tmp_path / "source" / "source.json").exists()


def test_the_graph_hands_the_source_step_the_mean_and_std_count(tmp_path):
    spec = edit(VALID_SPEC, ("scale: 1/16", "mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    (model,) = plan.models
    task = next(t for t in model_tasks(plan, model, tmp_path) if t["basename"] == "source")
    job = task["actions"][0][1][2]
    (declared,) = job.io.inputs
    assert declared == DeclaredInput(name="", key="models.yaml: models -> digits -> io -> input", layout="NHWC", channels=3)

    (plain,) = load_plan(make_workspace(tmp_path / "plain"), environ={}).models
    task = next(t for t in model_tasks(plan, plain, tmp_path) if t["basename"] == "source")
    assert task["actions"][0][1][2].io.inputs[0].channels is None


# ---------------------------------------------------------------- a build: reference, convert, evaluate


def _raw(seed: int, count: int, channels: int) -> np.ndarray:
    """Pixel values 0..255 with a per-channel cast, as a camera gives them."""
    rng = np.random.default_rng(seed)
    cast = rng.uniform(60, 200, (count, channels, 1, 1))
    return np.clip(rng.normal(cast, 40, (count, channels, 8, 8)), 0, 255).round().astype(np.float32)


def _build(tmp_path: Path, spec: InputSpec, by_hand: np.ndarray, precision: str) -> MetricsRecord:
    """Source, reference, convert and evaluate as the tasks run them; labels are the classes of the model on ``by_hand``."""
    channels = by_hand.shape[1]
    model = _classifier(tmp_path / "given" / "classifier.onnx", channels=channels)
    record = _source(tmp_path, model, _declared("models.yaml: models -> m -> io -> input", channels) if spec.mean else None)
    raw = _raw(5, 64, channels)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    labels = session.run(None, {"x": by_hand})[0].argmax(axis=1)
    assert len(set(labels.tolist())) >= 3  # the data exercise several classes
    data, calibration = tmp_path / "evaluation.npz", tmp_path / "calibration.npz"
    write_npz(data, x=raw, y=labels)
    write_npz(calibration, x=_raw(6, 64, channels), y=np.zeros(64, np.int64))
    ref = ReferenceJob(
        source_record=str(record),
        evaluation=str(data),
        evaluation_origin="evaluation.npz",
        inputs=(spec,),
        outputs=(OutputSpec(),),
        out_metrics=str(tmp_path / "reference.json"),
        out_outputs=str(tmp_path / "reference.npz"),
    )
    reference.evaluate_source(ref)
    out = tmp_path / f"classifier.{precision}.onnx"
    convert.convert(
        ConvertJob(
            artifact_id=out.name,
            source_record=str(record),
            precision=Precision(precision),
            per_channel=True,
            palettize=None,
            calibration=str(calibration),
            calibration_origin="calibration.npz",
            inputs=(spec,),
            support=CPU,
            out=str(out),
            out_record=str(out) + ".json",
        )
    )
    job = EvaluateJob(
        artifact_id=out.name,
        format="onnx",
        artifact=str(out),
        record=str(out) + ".json",
        source_record=str(record),
        evaluation=str(data),
        reference=ref.out_metrics,
        reference_outputs=ref.out_outputs,
        inputs=(spec,),
        outputs=(OutputSpec(),),
        conditions=(("dim", 0.3),),
        budgets=(),
        support=CPU,

        out=str(out) + ".metrics.json",
    )
    evaluate.evaluate(job)
    return MetricsRecord.read(job.out)


# (precision, lowest cosine similarity to the source, lowest top-1 on labels from the hand-preprocessed data)
BUILDS = [("fp32", 0.99999, 1.0), ("int8", 0.99, 0.9)]


@pytest.mark.parametrize(("precision", "cosine", "top1"), BUILDS)
def test_a_scale_of_1_over_127_5_builds_and_feeds_the_model_what_it_says(tmp_path, precision, cosine, top1):
    raw = _raw(5, 64, 3)
    figures = _build(tmp_path, TO_SIGNED_UNIT, raw / 127.5 - 1.0, precision)
    # The source itself scores 1.0 only if the steps preprocessed exactly as written by hand.
    assert figures.source == {"samples": 64, "top1": 1.0}
    assert figures.metrics["cosine_similarity"] >= cosine and figures.metrics["top1"] >= top1, figures.metrics


@pytest.mark.parametrize(("precision", "cosine", "top1"), BUILDS)
def test_imagenet_mean_and_std_build_and_feed_the_model_what_they_say(tmp_path, precision, cosine, top1):
    raw = _raw(5, 64, 3)
    mean = np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]
    std = np.array([58.395, 57.12, 57.375], np.float32)[:, None, None]
    figures = _build(tmp_path, IMAGENET, (raw - mean) / std, precision)
    assert figures.source == {"samples": 64, "top1": 1.0}
    assert figures.metrics["cosine_similarity"] >= cosine and figures.metrics["top1"] >= top1, figures.metrics


# ---------------------------------------------------------------- the manifest


def test_the_manifest_names_mean_and_std_only_for_a_model_that_has_them():
    from modelmake.bundle.manifest import _input
    from modelmake.tensors import signature

    model = signature(
        [{"name": "x", "shape": [None, 3, 8, 8], "dtype": "float32"}], [{"name": "y", "shape": [None, 6], "dtype": "float32"}]
    )
    fed = {"name": "x", "shape": [None, 3, 8, 8]}
    assert _input(InputSpec(layout="NCHW", scale="1/127.5", offset="-1"), model) == {
        "layout": "NCHW", "scale": "1/127.5", "offset": "-1", **fed,
    }
    assert _input(IMAGENET, model) == {
        "layout": "NCHW",
        "scale": "1",
        "offset": "0",
        "mean": ["123.675", "116.28", "103.53"],
        "std": ["58.395", "57.12", "57.375"],
        **fed,
    }
