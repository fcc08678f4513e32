"""The spec's output kinds: what `io -> output` accepts per kind, and the plan-time errors for keys a kind has no use for."""
from __future__ import annotations

import pytest

from modelmake import metrics
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import Budget
from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

CLASSES_OUTPUT = "output: {labels: recipes/digits_labels.txt, top_k: 3}"
MASK_MEASURED = (
    "size_kb, quantized_share, latency_ms, mean_iou, pixel_accuracy, iou_drop, max_abs_error, cosine_similarity, snr_db, "
    "mask_agreement, accelerator_coverage"
)
EMBEDDING_MEASURED = (
    "size_kb, quantized_share, latency_ms, max_abs_error, cosine_similarity, snr_db, worst_cosine_similarity, accelerator_coverage"
)

WITH_CONDITIONS = (
    "evaluation: {recipe: recipes/digits.py, split: test}",
    "evaluation: {recipe: recipes/digits.py, split: test, conditions: {dim: 0.5}}",
)


def _spec(output: str, *more: tuple[str, str]) -> str:
    return edit(VALID_SPEC, (CLASSES_OUTPUT, output), ("max_size_kb: 200, max_accuracy_drop: 0.005", "max_size_kb: 200"), *more)


def _plan(tmp_path, spec: str):
    files = DEFAULT_FILES | {"recipes/segment_classes.txt": "background\nleft\nright\n"}
    return load_plan(make_workspace(tmp_path, spec, files=files), environ={})


def _problems(tmp_path, spec: str) -> list[str]:
    files = DEFAULT_FILES | {"recipes/segment_classes.txt": "background\nleft\nright\n"}
    return spec_problems(make_workspace(tmp_path, spec, files=files))


def _defaults(artifact) -> dict[str, float]:
    return {b.key: b.limit for b in artifact.budgets if b.key not in ("max_size_kb", "max_latency_ms")}


def test_the_default_kind_is_classes_with_todays_tolerances(tmp_path):
    output = load_plan(make_workspace(tmp_path), environ={}).models[0].outputs[0]
    assert (output.kind, output.top_k, output.threshold) == (OutputKind.CLASSES, 3, 0.5)


def test_a_mask_output_with_labels_and_threshold(tmp_path):
    plan = _plan(tmp_path, _spec("output: {kind: mask, labels: recipes/segment_classes.txt, threshold: 0.3}"))
    (model,) = plan.models
    assert (model.outputs[0].kind, model.outputs[0].labels, model.outputs[0].threshold) == (
        OutputKind.MASK, "recipes/segment_classes.txt", 0.3
    )
    by_precision = {a.precision: _defaults(a) for a in model.artifacts}
    # Only metrics a mask has: never top1_agreement.
    assert by_precision[Precision.INT8] == {"min_cosine_similarity": 0.98, "min_mask_agreement": 0.95}
    assert by_precision[Precision.FP32] == {"min_cosine_similarity": 0.9999, "min_mask_agreement": 0.99}


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("embedding", {"min_cosine_similarity": 0.98, "min_worst_cosine_similarity": 0.95}),
        ("tensor", {"min_cosine_similarity": 0.98}),
    ],
)
def test_embedding_and_tensor_tolerances_name_only_their_metrics(tmp_path, kind, expected):
    (model,) = _plan(tmp_path, _spec(f"output: {{kind: {kind}}}")).models
    assert {a.precision: _defaults(a) for a in model.artifacts}[Precision.INT8] == expected


def test_every_default_tolerance_is_a_metric_of_its_kind():
    for kind, per_precision in metrics.DEFAULT_TOLERANCES.items():
        measured = metrics.available_metrics(has_evaluation_data=True, top_k=1, kind=kind)
        for precision in Precision:
            assert {Budget.parse(key, 0).metric for key in per_precision[precision]} <= set(measured), (kind, precision)


def test_top_k_on_a_mask(tmp_path):
    assert _problems(tmp_path, _spec("output: {kind: mask, top_k: 3}")) == [
        "models.yaml:13:28: models -> digits -> io -> output -> top_k: top_k applies to classes outputs only "
        "and this output's kind is mask: remove it",
    ]


def test_threshold_on_a_classifier(tmp_path):
    assert _problems(tmp_path, edit(VALID_SPEC, (CLASSES_OUTPUT, "output: {labels: recipes/digits_labels.txt, threshold: 0.5}"))) == [
        "models.yaml:13:51: models -> digits -> io -> output -> threshold: threshold applies to mask outputs only "
        "(it cuts a probability map into a mask) and this output's kind is classes: remove it",
    ]


def test_labels_on_an_embedding(tmp_path):
    assert _problems(tmp_path, _spec("output: {kind: embedding, labels: recipes/digits_labels.txt}")) == [
        "models.yaml:13:33: models -> digits -> io -> output -> labels: this output's kind is embedding, which has no classes "
        "to name: remove labels, or set kind to classes or mask",
    ]


@pytest.mark.parametrize("kind", ["embedding", "tensor"])
def test_conditions_on_an_output_without_labels(tmp_path, kind):
    spec = _spec(
        f"output: {{kind: {kind}}}",
        WITH_CONDITIONS,
    )
    assert _problems(tmp_path, spec) == [
        f"models.yaml:10:60: models -> digits -> data -> evaluation -> conditions: conditions measure accuracy against labels, "
        f"and this model's output kind {kind} has none: remove conditions (parity with the source model is measured without them)",
    ]


def test_a_mask_measures_mean_iou_under_conditions(tmp_path):
    spec = _spec(
        "output: {kind: mask}",
        WITH_CONDITIONS,
        ("max_size_kb: 200", "max_size_kb: 200, min_mean_iou_dim: 0.5, max_iou_drop: 0.02"),
    )
    (model,) = _plan(tmp_path, spec).models
    assert {"min_mean_iou_dim", "max_iou_drop"} <= {b.key for b in model.artifacts[0].budgets}


def test_a_classifier_metric_on_a_mask(tmp_path):
    assert _problems(tmp_path, _spec("output: {kind: mask}", ("max_size_kb: 200", "max_size_kb: 200, min_top1: 0.9"))) == [
        "models.yaml:21:33: models -> digits -> budgets -> min_top1: no metric 'top1' to budget; "
        f"this model measures: {MASK_MEASURED}; top1 is measured for classes outputs and this model's output is mask "
        "(models -> digits -> io -> output -> kind): bound one of the metrics it measures",
    ]


def test_a_mask_metric_on_an_embedding(tmp_path):
    assert _problems(tmp_path, _spec("output: {kind: embedding}", ("max_size_kb: 200", "max_size_kb: 200, min_mean_iou: 0.9"))) == [
        "models.yaml:21:33: models -> digits -> budgets -> min_mean_iou: no metric 'mean_iou' to budget; "
        f"this model measures: {EMBEDDING_MEASURED}; mean_iou is measured for mask outputs and this model's output is embedding "
        "(models -> digits -> io -> output -> kind): bound one of the metrics it measures",
    ]


def test_an_unknown_kind(tmp_path):
    assert _problems(tmp_path, _spec("output: {kind: box}")) == [
        "models.yaml:13:22: models -> digits -> io -> output -> kind: 'box' is not one of: classes, mask, embedding, boxes, scores, "
        "tensor; did you mean 'boxes'?",
    ]
