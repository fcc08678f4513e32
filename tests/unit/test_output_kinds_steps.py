"""Evaluation per output kind, through the reference, convert and evaluate steps as a build runs them.

The models are built in code: a small Keras segmenter trained on synthetic
blobs, an NCHW ONNX model with dynamic height and width whose output is a
one-channel probability map, an L2-normalised embedding and a regression.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, DataJob, DataLabels, EvaluateJob, MetricsRecord, ReferenceJob, SourceJob
from modelmake.errors import StepError
from modelmake.formats.onnx import OnnxSettings
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import Dataset, FormatSupport, InputSpec, OutputSpec, Source
from modelmake.recipes import load_recipe
from modelmake.steps import _kinds, convert, data, evaluate, reference, source
from modelmake.steps._arrays import write_npz

pytest.importorskip("ai_edge_litert")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

SUPPORT = {
    "tflite": FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings()),
    "onnx": FormatSupport(
        format="onnx", precisions=tuple(Precision), settings=OnnxSettings(execution_providers=("CPUExecutionProvider",), quantization="cpu")
    ),
}
CLASSIFIER_ONLY = {"top1", "top1_agreement", "accuracy_drop"}

SEGMENTER_RECIPE = textwrap.dedent(
    '''
    import numpy as np

    METADATA = {"seed": 7}


    def blobs(count, seed):
        """8x8 images of pixel values 0..16 holding one 3x3 to 4x4 square: dim squares are class 1, bright ones class 2."""
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 3, size=(count, 8, 8, 1)).astype(np.float32)
        y = np.zeros((count, 8, 8), np.int64)
        for i in range(count):
            size = rng.integers(3, 5)
            top, left = rng.integers(0, 8 - size + 1, size=2)
            bright = rng.integers(0, 2)
            x[i, top : top + size, left : left + size, 0] = 15 if bright else 8
            y[i, top : top + size, left : left + size] = 2 if bright else 1
        return x, y


    def build_model():
        import keras

        inputs = keras.Input((8, 8, 1), name="image")
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
        outputs = keras.layers.Conv2D(3, 1, activation="softmax", name="classes")(h)
        model = keras.Model(inputs, outputs, name="segmenter")
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
        x, y = blobs(512, seed=1)
        model.fit(x / 16.0, y, epochs=12, batch_size=32, verbose=0)
        return model
    '''
)

EMBEDDING_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 3}


    def build_model():
        import keras

        inputs = keras.Input((12,), name="features")
        h = keras.layers.Dense(32, activation="relu")(inputs)
        h = keras.layers.Dense(16)(h)
        # L2 normalisation written out: keras' UnitNormalization carries an epsilon the TFLite converter folds into a
        # constant beyond float16's range, which the fp16 conversion rightly refuses.
        unit = keras.layers.Lambda(lambda v: v / keras.ops.sqrt(keras.ops.sum(v * v, axis=-1, keepdims=True)), name="embedding")
        return keras.Model(inputs, unit(h), name="embedder")
    '''
)

REGRESSION_RECIPE = textwrap.dedent(
    '''
    METADATA = {"seed": 5}


    def build_model():
        import keras

        inputs = keras.Input((8,), name="readings")
        h = keras.layers.Dense(16, activation="tanh")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, name="estimate")(h), name="regression")
    '''
)


def _materialize(directory: Path, recipe: str | None = None, *, file: Path | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if file is None:
        (directory / "recipe.py").write_text(recipe or "", encoding="utf-8")
        given = Source(kind="recipe", path=str(directory / "recipe.py"), function="build_model")
    else:
        given = Source(kind="onnx", path=str(file))
    record = directory / "source.json"
    source.materialize(SourceJob(given, str(directory / "out"), str(record)))
    return record


class Kind:
    """One model of one output kind: its source record, data and the reference step's records."""

    def __init__(self, root: Path, record: Path, x: np.ndarray, y: np.ndarray | None, io: InputSpec, kind: OutputKind, **output):
        self.root, self.record, self.io, self.kind, self.output = root, record, io, kind, output
        self.evaluation = root / "evaluation.npz"
        write_npz(self.evaluation, x=x, **({} if y is None else {"y": y}))
        self.calibration = root / "calibration.npz"
        write_npz(self.calibration, x=x)  # calibration needs no labels, for any kind
        self.reference = ReferenceJob(
            str(record), str(self.evaluation), "evaluation.npz", (io,), (OutputSpec(kind=kind, **output),),
            str(root / "reference" / "metrics.json"), str(root / "reference" / "outputs.npz"),
        )
        self.summary = reference.evaluate_source(self.reference)
        self.source_figures = fsutil.read_json(self.reference.out_metrics)

    def evaluate(self, fmt: str, precision: str, name: str = "model", **output) -> MetricsRecord:
        artifact = self.root / fmt / f"{name}.{precision}.{fmt}"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        if not artifact.exists():
            convert.convert(
                ConvertJob(
                    artifact_id=artifact.name, source_record=str(self.record), precision=Precision(precision), per_channel=True,
                    palettize=None, calibration=str(self.calibration) if precision == "int8" else None, calibration_origin=None,
                    inputs=(self.io,), support=SUPPORT[fmt], out=str(artifact), out_record=str(artifact) + ".json",
                )
            )
        job = EvaluateJob(
            artifact_id=artifact.name, format=fmt, artifact=str(artifact), record=str(artifact) + ".json",
            source_record=str(self.record), evaluation=str(self.evaluation), reference=self.reference.out_metrics,
            reference_outputs=self.reference.out_outputs, inputs=(self.io,),
            outputs=(OutputSpec(kind=self.kind, **(self.output | output)),), conditions=(), budgets=(),
            support=SUPPORT[fmt], out=str(artifact) + f".{len(output)}.metrics.json",
        )
        evaluate.evaluate(job)
        return MetricsRecord.read(job.out)


# ---------------------------------------------------------------- mask: a Keras segmenter, NHWC, 3 classes


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Kind:
    root = tmp_path_factory.mktemp("segmenter")
    record = _materialize(root / "source", SEGMENTER_RECIPE)
    x, y = load_recipe(root / "source" / "recipe.py").blobs(96, seed=2)
    return Kind(root, record, x, y, InputSpec(layout="NHWC", scale="1/16"), OutputKind.MASK)


def test_the_source_segmenter_scores_well_on_its_labels(segmenter):
    figures = segmenter.source_figures
    assert figures["mean_iou"] >= 0.8 and figures["pixel_accuracy"] >= 0.9
    assert set(figures) == {"samples", "mean_iou", "pixel_accuracy"}
    assert segmenter.summary.startswith("source ") and "mean_iou" in segmenter.summary


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("precision, agreement", [("fp32", 0.999), ("fp16", 0.99), ("int8", 0.95)])
def test_a_segmenter_is_measured_as_a_mask(segmenter, fmt, precision, agreement):
    figures = segmenter.evaluate(fmt, precision).metrics
    assert figures["mask_agreement"] >= agreement
    assert figures["iou_drop"] <= 0.05 and figures["mean_iou"] >= 0.75
    assert figures["iou_drop"] == pytest.approx(segmenter.source_figures["mean_iou"] - figures["mean_iou"])
    assert figures["snr_db"] >= {"fp32": 100, "fp16": 60, "int8": 30}[precision]
    assert not CLASSIFIER_ONLY & set(figures), "a mask has no top-1"


def test_mask_labels_must_be_at_the_outputs_resolution(segmenter, tmp_path):
    bad = tmp_path / "evaluation.npz"
    with np.load(segmenter.evaluation) as saved:
        write_npz(bad, x=saved["x"], y=saved["y"][:, :4, :4])
    job = ReferenceJob(
        segmenter.reference.source_record, str(bad), "evaluation.npz", (segmenter.io,), (OutputSpec(kind=OutputKind.MASK),),
        str(tmp_path / "m.json"), str(tmp_path / "o.npz"),
    )
    with pytest.raises(StepError, match=r"the labels y are \(4, 4\) class ids per sample but the model's mask is \(8, 8\)"):
        reference.evaluate_source(job)


# ---------------------------------------------------------------- mask: NCHW ONNX, dynamic H and W, one probability map


def _probability_map_model(path: Path) -> Path:
    """sigmoid(8x - 4) per pixel of an (N, 1, H, W) input: 0.5 where x is 0.5."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["probability"]),
        ],
        "text_map",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [8.0]),
            helper.make_tensor("b", TensorProto.FLOAT, [1], [-4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def probability_map(tmp_path_factory) -> Kind:
    root = tmp_path_factory.mktemp("probability-map")
    record = _materialize(root / "source", file=_probability_map_model(root / "given" / "text_map.onnx"))
    raw = np.random.default_rng(4).integers(0, 17, size=(24, 1, 12, 10)).astype(np.float32)
    # x = raw/16; the map is >= 0.3 exactly where x >= 0.394, i.e. raw >= 7 (at 0.5 it would take raw >= 8).
    labels = (raw[:, 0] >= 7).astype(np.int64)
    return Kind(root, record, raw, labels, InputSpec(layout="NCHW", scale="1/16"), OutputKind.MASK, threshold=0.3)


def test_a_probability_map_is_cut_at_the_threshold(probability_map):
    assert probability_map.source_figures["mean_iou"] == 1.0 and probability_map.source_figures["pixel_accuracy"] == 1.0
    # The default threshold misses the pixels of value 7/16, which the labels count in.
    measured = probability_map.evaluate("onnx", "fp32", threshold=0.5).metrics
    assert 0.8 < measured["pixel_accuracy"] < 0.98 and measured["mean_iou"] < 0.95


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_nchw_map_with_dynamic_height_and_width(probability_map, precision):
    figures = probability_map.evaluate("onnx", precision).metrics
    assert figures["mean_iou"] >= 0.99 and figures["mask_agreement"] >= 0.99 and figures["iou_drop"] <= 0.01
    assert figures["snr_db"] >= (100 if precision == "fp32" else 40)
    assert not CLASSIFIER_ONLY & set(figures)


def test_a_mask_without_labels_has_parity_only(probability_map, tmp_path):
    unlabelled = Kind(
        tmp_path, probability_map.record, np.full((4, 1, 6, 6), 9.0, np.float32), None,
        probability_map.io, OutputKind.MASK, threshold=0.3,
    )
    assert unlabelled.source_figures == {"samples": 4}
    measured = unlabelled.evaluate("onnx", "fp32")
    assert measured.metrics["mask_agreement"] == 1.0 and "mean_iou" not in measured.metrics
    assert set(measured.not_measured) == {"mean_iou", "pixel_accuracy", "iou_drop"}
    assert "no labels" in measured.not_measured["mean_iou"]


# ---------------------------------------------------------------- embedding and tensor


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Kind:
    root = tmp_path_factory.mktemp("embedder")
    x = np.random.default_rng(6).normal(size=(64, 12)).astype(np.float32)
    return Kind(root, _materialize(root / "source", EMBEDDING_RECIPE), x, None, InputSpec(layout="NC"), OutputKind.EMBEDDING)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_an_embedding_is_compared_per_sample(embedder, fmt):
    assert embedder.source_figures == {"samples": 64}
    figures = embedder.evaluate(fmt, "fp16").metrics
    assert figures["worst_cosine_similarity"] >= 0.99
    assert figures["worst_cosine_similarity"] <= figures["cosine_similarity"] <= 1.0
    assert "mean_iou" not in figures and not CLASSIFIER_ONLY & set(figures)


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> Kind:
    root = tmp_path_factory.mktemp("regression")
    x = np.random.default_rng(8).normal(size=(64, 8)).astype(np.float32)
    return Kind(root, _materialize(root / "source", REGRESSION_RECIPE), x, None, InputSpec(layout="NC"), OutputKind.TENSOR)


def test_a_tensor_has_parity_only(regression):
    fp32 = regression.evaluate("tflite", "fp32").metrics
    fp16 = regression.evaluate("tflite", "fp16").metrics
    assert fp32["snr_db"] >= 100
    assert 40 <= fp16["snr_db"] < fp32["snr_db"]
    parity = {"max_abs_error", "cosine_similarity", "snr_db"}
    assert parity <= set(fp16) and not (set(fp16) - parity - {"size_kb", "quantized_share", "latency_ms"})


# ---------------------------------------------------------------- figures and data


def test_snr_of_an_exact_match_is_the_cap():
    a = np.array([[1.0, -2.0], [3.0, 0.5]])
    assert _kinds.snr_db(a, a) == 160.0
    assert _kinds.snr_db(a * 1.01, a) == pytest.approx(40.0)


def test_mean_iou_averages_over_the_classes_present():
    labels = np.array([[[0, 0], [1, 1]]])
    assert _kinds.mean_iou(np.array([[[0, 0], [1, 0]]]), labels) == pytest.approx((2 / 3 + 1 / 2) / 2)


def _materialize_data(tmp_path, kind: OutputKind, **arrays) -> str:
    given = tmp_path / "given.npz"
    write_npz(given, **arrays)
    dataset = Dataset(role="evaluation", path=str(given), from_recipe=False)
    job = DataJob(dataset, str(tmp_path / "out.npz"), labels=(DataLabels("y", "", kind),))
    return data.materialize(job)


def test_data_for_outputs_without_labels(tmp_path):
    x = np.zeros((5, 4), np.float32)
    assert _materialize_data(tmp_path, OutputKind.EMBEDDING, x=x).endswith("5 samples of shape (4,), no labels")
    with np.load(tmp_path / "out.npz") as saved:
        assert saved.files == ["x"]


def test_a_classifier_still_needs_labels_and_the_message_names_the_arrays(tmp_path):
    message = r"needs an array named y, a classifier's labels \(one integer per sample\); it has labels, x: save the labels as y \(numpy"
    with pytest.raises(StepError, match=message):
        _materialize_data(tmp_path, OutputKind.CLASSES, x=np.zeros((5, 4), np.float32), labels=np.zeros(5, np.int64))


def test_mask_labels_are_class_ids_per_pixel(tmp_path):
    message = (
        r"y must be one integer class id per pixel, shape \(samples, height, width\) \(5 samples; y has shape \(5,\) and dtype "
        r"int64\): give the labels of the output in that shape$"
    )
    with pytest.raises(StepError, match=message):
        _materialize_data(tmp_path, OutputKind.MASK, x=np.zeros((5, 4, 4, 1), np.float32), y=np.zeros(5, np.int64))
