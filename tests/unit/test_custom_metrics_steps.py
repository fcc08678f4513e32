"""Custom metrics through the data, reference, convert and evaluate steps: a recipe function scores a regression.

The model is a small Keras regression trained in code on a linear target; the
metric recipe reports the share of estimates within a tolerance that the
evaluation file carries, and the mean absolute error.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelmake import fsutil
from modelmake.contracts import ConvertJob, DataJob, DataLabels, EvaluateJob, MetricsRecord, ReferenceJob, SourceJob
from modelmake.errors import StepError
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import Budget, CustomMetrics, Dataset, FormatSupport, InputSpec, OutputSpec, Source
from modelmake.steps import _custom_metrics, convert, data, evaluate, reference, source
from modelmake.steps._arrays import write_npz
from modelmake.steps._selection import broken_budgets

pytest.importorskip("ai_edge_litert")

SUPPORT = FormatSupport(format="tflite", precisions=tuple(Precision), settings=TfliteSettings())
IO = InputSpec(layout="NC")
ESTIMATE = OutputSpec(kind=OutputKind.TENSOR)
WEIGHTS = np.linspace(-0.5, 0.5, 8).astype(np.float32)

REGRESSION_RECIPE = textwrap.dedent(
    '''
    import numpy as np

    METADATA = {"seed": 5}


    def build_model():
        import keras

        keras.utils.set_random_seed(5)
        x = np.random.default_rng(1).normal(size=(1024, 8)).astype(np.float32)
        y = x @ np.linspace(-0.5, 0.5, 8).astype(np.float32)
        inputs = keras.Input((8,), name="readings")
        h = keras.layers.Dense(32, activation="tanh")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1, name="estimate")(h), name="regression")
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.fit(x, y, epochs=40, batch_size=32, verbose=0)
        return model
    '''
)

METRICS_RECIPE = textwrap.dedent(
    '''
    import numpy as np


    def score(outputs, data):
        error = np.abs(outputs[:, 0] - data["y"])
        return {"hit_rate": float(np.mean(error <= data["tolerance"])), "mean_error": float(np.mean(error))}


    def wrong_names(outputs, data):
        return {"hit_rate": 1.0, "recall": 0.5}


    def not_finite(outputs, data):
        return {"hit_rate": float("nan"), "mean_error": 0.0}


    def text(outputs, data):
        return {"hit_rate": "high", "mean_error": 0.0}


    def broken(outputs, data):
        return data["boxes"]
    '''
)
NAMES = ("hit_rate", "mean_error")


class Regression:
    """The source model, its evaluation data as the data step writes it, and the reference step's records."""

    def __init__(self, root: Path):
        self.root = root
        (root / "recipe.py").write_text(REGRESSION_RECIPE, encoding="utf-8")
        (root / "metrics.py").write_text(METRICS_RECIPE, encoding="utf-8")
        self.record = root / "source.json"
        given = Source(kind="recipe", path=str(root / "recipe.py"), function="build_model")
        source.materialize(SourceJob(given, str(root / "out"), str(self.record)))
        x = np.random.default_rng(8).normal(size=(160, 8)).astype(np.float32)
        write_npz(root / "given.npz", x=x, y=x @ WEIGHTS, tolerance=np.array(0.05, np.float32))
        write_npz(root / "calibration.npz", x=x)
        self.evaluation = root / "evaluation.npz"
        self.data_summary = data.materialize(
            DataJob(
                Dataset(role="evaluation", path=str(root / "given.npz"), from_recipe=False, samples=128),
                str(self.evaluation),
                labels=(DataLabels("y", "", OutputKind.TENSOR),),
                keep_arrays=True,
            )
        )
        self.reference = self.reference_job(self.custom("score"))
        self.reference_summary = reference.evaluate_source(self.reference)
        self.source_figures = fsutil.read_json(self.reference.out_metrics)

    def custom(self, function: str) -> CustomMetrics:
        return CustomMetrics(recipe=str(self.root / "metrics.py"), function=function, names=NAMES)

    def reference_job(self, custom: CustomMetrics, name: str = "reference") -> ReferenceJob:
        return ReferenceJob(
            str(self.record), str(self.evaluation), "given.npz", (IO,), (ESTIMATE,), str(self.root / name / "metrics.json"),
            str(self.root / name / "outputs.npz"), custom_metrics=custom,
        )

    def evaluate(self, precision: str, *budgets: Budget) -> MetricsRecord:
        artifact = self.root / f"regression.{precision}.tflite"
        if not artifact.exists():
            convert.convert(
                ConvertJob(
                    artifact_id=artifact.name, source_record=str(self.record), precision=Precision(precision), per_channel=True,
                    palettize=None, calibration=str(self.root / "calibration.npz") if precision == "int8" else None,
                    calibration_origin=None, inputs=(IO,), support=SUPPORT, out=str(artifact), out_record=str(artifact) + ".json",
                )
            )
        job = EvaluateJob(
            artifact_id=f"{artifact.name}@pixel-8", format="tflite", artifact=str(artifact), record=str(artifact) + ".json",
            source_record=str(self.record), evaluation=str(self.evaluation), reference=self.reference.out_metrics,
            reference_outputs=self.reference.out_outputs, inputs=(IO,), outputs=(ESTIMATE,), conditions=(), budgets=budgets,
            support=SUPPORT, out=str(artifact) + f".{len(budgets)}.metrics.json",
            custom_metrics=self.custom("score"),
        )
        evaluate.evaluate(job)
        return MetricsRecord.read(job.out)


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> Regression:
    return Regression(tmp_path_factory.mktemp("custom"))


def test_the_evaluation_data_keeps_every_array_for_the_metric(regression):
    arrays = _custom_metrics.evaluation_arrays(str(regression.evaluation))
    assert set(arrays) == {"x", "y", "tolerance"}
    # Per-sample arrays are cut to 'samples' with x; the scalar tolerance is kept whole.
    assert arrays["x"].shape == (128, 8) and arrays["y"].shape == (128,) and arrays["tolerance"] == pytest.approx(0.05)
    assert arrays["y"].dtype == np.float32, "a regression's targets stay floats"


def test_the_source_models_custom_figures(regression):
    figures = regression.source_figures
    assert figures["hit_rate"] >= 0.6 and figures["mean_error"] <= 0.05
    assert set(figures) == {"samples", *NAMES}
    assert "hit_rate" in regression.reference_summary


@pytest.mark.parametrize("precision, hit_rate_drop, error_rise", [("fp32", 0.0, 1e-4), ("int8", 0.1, 0.01)])
def test_each_artifact_is_scored_by_the_recipe(regression, precision, hit_rate_drop, error_rise):
    measured = regression.evaluate(precision)
    figures, source_figures = measured.metrics, regression.source_figures
    assert figures["hit_rate"] >= source_figures["hit_rate"] - hit_rate_drop - 1 / 128
    assert figures["mean_error"] <= source_figures["mean_error"] + error_rise
    assert measured.source == source_figures, "the metrics record carries the source model's figures beside the artifact's"
    assert {"cosine_similarity", "snr_db", *NAMES} <= set(figures)


def test_a_budget_on_a_custom_figure(regression):
    broken = regression.evaluate("int8", Budget.parse("min_hit_rate", 1.0), Budget.parse("max_mean_error", 1.0))
    assert re.fullmatch(r"hit_rate is 0\.\d+, under its min_hit_rate of 1 \(-\d+%\)", *broken_budgets(broken))
    measured = regression.evaluate("fp32", Budget.parse("max_mean_error", 1.0))
    assert measured.budgets[0]["metric"] == "mean_error" and measured.budgets[0]["passed"] is True


@pytest.mark.parametrize(
    "function, message",
    [
        (
            "wrong_names",
            r"wrong_names\(outputs, data\) in .*metrics\.py must return exactly the figures io -> output -> metrics -> names "
            r"declares \(hit_rate, mean_error\): missing mean_error; undeclared recall; return those names, or declare the others",
        ),
        (
            "not_finite",
            r"not_finite\(outputs, data\) in .*metrics\.py returned hit_rate = nan: a figure must be finite \(a budget cannot "
            r"bound it\); fix how hit_rate is computed",
        ),
        ("text", r"text\(outputs, data\) in .*metrics\.py returned hit_rate = 'high', which is not a number: return a float for hit_rate"),
        ("broken", r"broken\(outputs, data\) in .*metrics\.py raised KeyError: 'boxes'; fix the function"),
        (
            "absent",
            r"metrics recipe .*metrics\.py has no function 'absent': define it, or name another with io -> output -> metrics -> function",
        ),
    ],
)
def test_a_hook_that_breaks_its_contract(regression, function, message):
    with pytest.raises(StepError, match=message):
        reference.evaluate_source(regression.reference_job(regression.custom(function), name=function))


DETECTOR_METRICS = textwrap.dedent(
    '''
    import numpy as np


    def detections(outputs, data):
        kept = outputs["scores"] >= data["threshold"]
        return {"detections": float(kept.sum()), "box_error": float(np.abs(outputs["boxes"] - data["y_boxes"]).mean())}


    def partial(outputs, data):
        return {"detections": 1.0}
    '''
)


def test_a_model_level_metric_receives_every_output_by_name(tmp_path):
    (tmp_path / "detections.py").write_text(DETECTOR_METRICS, encoding="utf-8")
    evaluation = tmp_path / "evaluation.npz"
    boxes = np.zeros((4, 3, 4), np.float32)
    write_npz(evaluation, image=np.zeros((4, 8, 8, 1), np.float32), y_boxes=boxes + 0.25, threshold=np.array(0.5, np.float32))
    outputs = {"boxes": boxes, "scores": np.array([[0.9, 0.1, 0.6]] * 4, np.float32)}

    def spec(function: str) -> CustomMetrics:
        return CustomMetrics(str(tmp_path / "detections.py"), function, ("detections", "box_error"), by_name=True)

    assert _custom_metrics.measure(spec("detections"), outputs, str(evaluation)) == {"detections": 8.0, "box_error": 0.25}
    with pytest.raises(StepError) as caught:
        _custom_metrics.measure(spec("partial"), outputs, str(evaluation))
    assert str(caught.value) == (
        f"partial(outputs, data) in {tmp_path / 'detections.py'} must return exactly the figures io -> metrics -> names declares "
        "(detections, box_error): missing box_error; return those names, or declare the others"
    )
    with pytest.raises(StepError, match=r"has no function 'absent': define it, or name another with io -> metrics -> function$"):
        _custom_metrics.measure(spec("absent"), outputs, str(evaluation))
