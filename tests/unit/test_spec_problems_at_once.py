"""Every problem of models.yaml in one run: the schema's and the cross-field rules' together, none reported only because of
another, and a key indented one level off said once, with where it belongs.

VALID_SPEC (in spec_workspace.py) is the starting point; its line numbers are the ones quoted below.
"""
from __future__ import annotations

import pytest

from modelmake.spec import load_plan

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems

KNOWN_TARGETS = "android-arm64-cpu, apple-a17, pixel-8, raspberry-pi-5, snapdragon-8-gen-3"
MODEL_KEYS = "budget_overrides, budgets, data, description, io, source, targets, timeout_minutes, variants"
TARGETS = "    targets:\n      pixel-8: [fp32, fp16, int8]\n      snapdragon-8-gen-3: [int8]\n"
BUDGETS = (
    "    budgets: {max_size_kb: 200, max_accuracy_drop: 0.005, max_latency_ms: 33}\n"
    "    budget_overrides:\n      snapdragon-8-gen-3: {max_latency_ms: 10}\n"
)


def problems_for(tmp_path, *replacements):
    return spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, *replacements)))


def test_four_independent_mistakes_are_reported_in_one_run(tmp_path):
    problems = problems_for(
        tmp_path,
        ("samples: 200", "samples: 0"),
        ("int8: {quantize: int8}", "int8: {quantise: int8}"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [int8]\n      pixel8: [fp32]"),
        ("max_latency_ms: 33", "max_latncy_ms: 33"),
    )

    assert problems == [
        "models.yaml:9:77: models -> digits -> data -> calibration -> samples: expected at least 1, got 0",
        "models.yaml:17:14: models -> digits -> variants -> int8 -> quantise: unknown key 'quantise'; did you mean 'quantize'? "
        "allowed keys: budgets, palettize, per_channel, quantize",
        "models.yaml:21:7: models -> digits -> targets -> pixel8: unknown target 'pixel8'; did you mean 'pixel-8'? "
        f"known targets: {KNOWN_TARGETS} (add targets/pixel8.yaml to define it)",
        "models.yaml:22:59: models -> digits -> budgets -> max_latncy_ms: no metric 'latncy_ms' to budget; this model measures: "
        "size_kb, quantized_share, latency_ms, top1, top3, accuracy_drop, max_abs_error, cosine_similarity, top1_agreement, "
        "accelerator_coverage; did you mean 'latency_ms'?",
    ]


def test_a_misspelt_part_hides_only_the_rules_that_read_it(tmp_path):
    # Without `data`, int8 would lack calibration data and accuracy_drop would not be measured: neither is said, as
    # the data may be what `dta` declares; the unknown target is another mistake and is reported.
    problems = problems_for(tmp_path, ("    data:\n", "    dta:\n"), ("      pixel-8: [fp32", "      pixel8: [fp32"))

    assert problems == [
        f"models.yaml:8:5: models -> digits -> dta: unknown key 'dta'; did you mean 'data'? allowed keys: {MODEL_KEYS}",
        "models.yaml:19:7: models -> digits -> targets -> pixel8: unknown target 'pixel8'; did you mean 'pixel-8'? "
        f"known targets: {KNOWN_TARGETS} (add targets/pixel8.yaml to define it)",
    ]


@pytest.mark.parametrize(
    ("replacements", "expected"),
    [
        pytest.param(
            # A budget on a mask's metric is not judged against the metrics of the classes the output would default to.
            [("output: {labels: recipes/digits_labels.txt, top_k: 3}", "output: {kind: maks}"),
             ("max_size_kb: 200", "max_size_kb: 200, max_iou_drop: 0.02")],
            ["models.yaml:13:22: models -> digits -> io -> output -> kind: "
             "'maks' is not one of: classes, mask, embedding, boxes, scores, tensor; did you mean 'mask'?"],
            id="output-kind",
        ),
        pytest.param(
            # The targets' lists name variants that are declared, under a misspelt key.
            [("    variants:\n", "    variant:\n")],
            ["models.yaml:6:3: models -> digits: missing required key 'variants'",
             "models.yaml:14:5: models -> digits -> variant: unknown key 'variant'; did you mean 'variants'? "
             f"allowed keys: {MODEL_KEYS}"],
            id="variants-key",
        ),
        pytest.param(
            # The override names a target the empty targets would not have.
            [(TARGETS, "    targets: {}\n")],
            ["models.yaml:18:14: models -> digits -> targets: must not be empty"],
            id="empty-targets",
        ),
        pytest.param(
            # The model below it, which has digits' keys, is judged on its own.
            [("  digits:\n", "  digits: recipes/digits.py\n  other:\n")],
            ["models.yaml:6:11: models -> digits: expected a mapping, got a string 'recipes/digits.py'"],
            id="model-not-a-mapping",
        ),
    ],
)
def test_no_problem_is_reported_only_because_of_another(tmp_path, replacements, expected):
    assert problems_for(tmp_path, *replacements) == expected


# ------------------------------------------------------------------ keys indented one level off


def test_a_model_key_dedented_under_models_is_one_problem(tmp_path):
    dedented = BUDGETS + "  targets:\n    pixel-8: [fp32, fp16, int8]\n    snapdragon-8-gen-3: [int8]\n"

    # Not six problems of a model named targets, nor the targets that digits now misses.
    assert problems_for(tmp_path, (TARGETS + BUDGETS, dedented)) == [
        "models.yaml:21:3: models -> targets: 'targets' is not a model: it looks like a key of a model; "
        "indent it under the model it belongs to",
    ]


def test_a_model_key_at_the_top_level_says_where_it_belongs(tmp_path):
    dedented = BUDGETS + "targets:\n  pixel-8: [fp32, fp16, int8]\n  snapdragon-8-gen-3: [int8]\n"

    assert problems_for(tmp_path, (TARGETS + BUDGETS, dedented)) == [
        "models.yaml:21:1: targets: unknown key 'targets'; allowed keys: bundle, cache, format, models, publish; "
        "it looks like a key of a model; indent it under the model it belongs to",
    ]


def test_a_data_set_beside_the_model_keys_says_where_it_belongs(tmp_path):
    evaluation = "      evaluation: {recipe: recipes/digits.py, split: test}\n"

    assert problems_for(tmp_path, (evaluation, evaluation[2:])) == [
        f"models.yaml:10:5: models -> digits -> evaluation: unknown key 'evaluation'; allowed keys: {MODEL_KEYS}; "
        "it looks like a data set; indent it under models -> digits -> data",
    ]


def test_a_model_may_have_the_name_of_a_key(tmp_path):
    plan = load_plan(make_workspace(tmp_path, edit(VALID_SPEC, ("  digits:", "  source:"))), environ={})

    assert [model.name for model in plan.models] == ["source"]
