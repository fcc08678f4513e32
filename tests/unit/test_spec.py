"""models.yaml -> BuildPlan: what a valid spec compiles to, and the exact error a user sees for each mistake.

Each bad spec is paired with the full text of every problem reported, so that a change to a
message, a line or a column is a visible change here.  VALID_SPEC (in spec_workspace.py) is
the starting point; its line numbers are the ones quoted below.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelmake.bundle.archive import ZIP_EPOCH_MIN
from modelmake.errors import SpecError, exit_code_for
from modelmake.graph import plan_tasks
from modelmake.kinds import OutputKind, Precision
from modelmake.plan import Budget
from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

REPOSITORY = Path(__file__).resolve().parents[2]

NAME_RULE = (
    "expected a name of lower-case letters, digits, '-' and '_' that starts with a letter or digit; "
    "it appears in task names and file names"
)
KNOWN_TARGETS = "android-arm64-cpu, apple-a17, pixel-8, raspberry-pi-5, snapdragon-8-gen-3"
MEASURED = (
    "size_kb, quantized_share, latency_ms, top1, top3, accuracy_drop, max_abs_error, cosine_similarity, top1_agreement, "
    "accelerator_coverage"
)
BUILDS = (
    "tflite from keras/saved_model/recipe/tflite sources; onnx from keras/saved_model/recipe/tflite/onnx sources; "
    "coreml from keras/saved_model/recipe sources"
)
# The parity tolerances each precision gets by default when the model has evaluation data.
FP32_PARITY = (
    Budget(key="min_cosine_similarity", metric="cosine_similarity", bound="min", limit=0.9999),
    Budget(key="min_top1_agreement", metric="top1_agreement", bound="min", limit=0.99),
)
INT8_PARITY = (
    Budget(key="min_cosine_similarity", metric="cosine_similarity", bound="min", limit=0.98),
    Budget(key="min_top1_agreement", metric="top1_agreement", bound="min", limit=0.95),
)


def problems_for(tmp_path, *replacements, files=None, environ=None):
    return spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, *replacements), files=files), environ)


# ------------------------------------------------------------------ a valid spec


def test_valid_spec_compiles_to_one_artifact_per_variant_and_target(tmp_path):
    plan = load_plan(make_workspace(tmp_path), environ={})

    assert [a.id for a in plan.artifacts()] == [
        "digits.fp32.tflite@pixel-8",
        "digits.fp16.tflite@pixel-8",
        "digits.int8.tflite@pixel-8",
        "digits.int8.tflite@snapdragon-8-gen-3",
        # snapdragon-8-gen-3's profile lists tflite and onnx: one artifact per format.
        "digits.int8.onnx@snapdragon-8-gen-3",
    ]
    int8 = next(a for a in plan.artifacts() if a.id == "digits.int8.tflite@pixel-8")
    assert (int8.model, int8.variant, int8.format, int8.target, int8.precision) == ("digits", "int8", "tflite", "pixel-8", "int8")
    assert int8.name == "digits.int8.tflite"
    onnx = next(a for a in plan.artifacts() if a.format == "onnx")
    assert (onnx.name, onnx.target, onnx.precision) == ("digits.int8.onnx", "snapdragon-8-gen-3", Precision.INT8)
    assert all(type(a.precision) is Precision for a in plan.artifacts())
    assert (int8.per_channel, int8.palettize, int8.selection, int8.preference) == (True, None, None, 2)
    assert list(plan.targets) == ["pixel-8", "snapdragon-8-gen-3"]
    assert plan.targets["pixel-8"].profile_file == "builtin:pixel-8.yaml"
    assert plan.spec_file == "models.yaml"
    assert (plan.bundle.name, plan.bundle.version) == ("acme-vision", "1.4.0")
    assert (plan.bundle.signing_key, plan.bundle.release, plan.bundle.encryption_key) == (None, False, None)


def test_valid_spec_keeps_paths_relative_and_fills_defaults(tmp_path):
    (model,) = load_plan(make_workspace(tmp_path), environ={}).models

    assert (model.source.kind, model.source.path, model.source.function) == ("recipe", "recipes/digits.py", "build_model")
    assert (model.calibration.path, model.calibration.split, model.calibration.samples) == ("recipes/digits.py", "calibration", 200)
    assert (model.calibration.function, model.calibration.from_recipe) == ("load_data", True)
    assert (model.evaluation.split, model.evaluation.samples) == ("test", None)
    assert (model.inputs[0].layout, model.inputs[0].scale, model.inputs[0].offset) == ("NHWC", "1/16", "0")
    assert (model.outputs[0].labels, model.outputs[0].top_k) == ("recipes/digits_labels.txt", 3)


def test_budgets_are_merged_with_the_per_target_overrides(tmp_path):
    plan = load_plan(make_workspace(tmp_path), environ={})
    budgets = {a.id: a.budgets for a in plan.artifacts()}

    # The precision's parity tolerances come first, then the model's budgets.
    assert budgets["digits.int8.tflite@pixel-8"] == INT8_PARITY + (
        Budget(key="max_size_kb", metric="size_kb", bound="max", limit=200.0),
        Budget(key="max_accuracy_drop", metric="accuracy_drop", bound="max", limit=0.005),
        Budget(key="max_latency_ms", metric="latency_ms", bound="max", limit=33.0),
    )
    assert budgets["digits.fp32.tflite@pixel-8"][:2] == FP32_PARITY
    # The override replaces the model's latency budget for this target only, and keeps the others.
    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"] == INT8_PARITY + (
        Budget(key="max_size_kb", metric="size_kb", bound="max", limit=200.0),
        Budget(key="max_accuracy_drop", metric="accuracy_drop", bound="max", limit=0.005),
        Budget(key="max_latency_ms", metric="latency_ms", bound="max", limit=10.0),
    )
    assert budgets["digits.int8.onnx@snapdragon-8-gen-3"] == budgets["digits.int8.tflite@snapdragon-8-gen-3"]


def test_an_override_may_add_a_budget_the_model_does_not_set(tmp_path):
    spec = edit(VALID_SPEC, ("{max_latency_ms: 10}", "{max_latency_ms: 10, min_top1: 0.95}"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    budgets = {a.id: {b.key: b.limit for b in a.budgets} for a in plan.artifacts()}

    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"]["min_top1"] == 0.95
    assert "min_top1" not in budgets["digits.int8.tflite@pixel-8"]


def test_whole_floats_where_integers_are_expected_become_integers(tmp_path):
    # JSON Schema counts 3.0 as an integer; the plan must not name a metric "top3.0".
    spec = edit(
        VALID_SPEC, ("top_k: 3", "top_k: 3.0"), ("samples: 200", "samples: 200.0"), ("max_size_kb: 200", "max_size_kb: 200, min_top3: 0.99")
    )
    (model,) = load_plan(make_workspace(tmp_path, spec), environ={}).models

    assert (model.outputs[0].top_k, model.calibration.samples) == (3, 200)
    assert type(model.outputs[0].top_k) is int and type(model.calibration.samples) is int
    assert "min_top3" in {b.key for b in model.artifacts[0].budgets}


@pytest.mark.parametrize(
    ("spec_created", "environ", "expected"),
    [
        (None, {}, ZIP_EPOCH_MIN),
        (None, {"SOURCE_DATE_EPOCH": "1700000000"}, 1700000000),
        (1600000000, {}, 1600000000),
        (1600000000, {"SOURCE_DATE_EPOCH": "1700000000"}, 1700000000),
        # A zip archive cannot record a time before 1980: earlier epochs are raised to it.
        (None, {"SOURCE_DATE_EPOCH": "0"}, ZIP_EPOCH_MIN),
    ],
    ids=["default", "environment", "spec", "environment-wins", "before-1980"],
)
def test_created_honours_source_date_epoch(tmp_path, spec_created, environ, expected):
    spec = VALID_SPEC
    if spec_created is not None:
        spec = edit(spec, ('  version: "1.4.0"\n', f'  version: "1.4.0"\n  created: {spec_created}\n'))
    plan = load_plan(make_workspace(tmp_path, spec), environ=environ)

    assert plan.bundle.created == expected


def test_a_malformed_source_date_epoch_is_reported(tmp_path):
    assert spec_problems(make_workspace(tmp_path), {"SOURCE_DATE_EPOCH": "2024-01-01"}) == [
        "SOURCE_DATE_EPOCH='2024-01-01' is not a whole number of seconds: unset it or fix it",
    ]


def test_load_plan_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    monkeypatch.delenv("MODELMAKE_RELEASE", raising=False)

    assert load_plan(make_workspace(tmp_path)).bundle.created == 1700000001


def test_the_plan_is_frozen(tmp_path):
    plan = load_plan(make_workspace(tmp_path), environ={})
    artifact = next(plan.artifacts())

    with pytest.raises(dataclasses.FrozenInstanceError):
        artifact.precision = "fp16"
    with pytest.raises(TypeError):
        plan.targets["pixel-8"] = None
    with pytest.raises(TypeError):
        plan.targets["pixel-8"].formats["tflite"] = None


def test_the_plan_does_not_depend_on_where_the_workspace_is(tmp_path):
    first = load_plan(make_workspace(tmp_path / "one"), environ={})
    second = load_plan(make_workspace(tmp_path / "elsewhere" / "two"), environ={})

    assert first == second


def test_the_repository_models_yaml_compiles():
    plan = load_plan(REPOSITORY, environ={})
    artifacts = {a.id: a for a in plan.artifacts()}

    assert [m.name for m in plan.models] == ["digits", "mobilenet", "segmenter"]
    assert [m.outputs[0].kind for m in plan.models] == [OutputKind.CLASSES, OutputKind.CLASSES, OutputKind.MASK]
    assert plan.targets["snapdragon-8-gen-3"].formats["tflite"].settings.integer_io
    assert {b.key: b.limit for b in artifacts["digits.fp32.tflite@raspberry-pi-5"].budgets}["max_latency_ms"] == 10.0
    assert {b.key: b.limit for b in artifacts["digits.fp32.tflite@pixel-8"].budgets}["max_latency_ms"] == 5.0
    assert {a.format for a in artifacts.values()} == {"tflite", "onnx", "coreml"}
    assert {a.format for a in artifacts.values() if a.target == "apple-a17"} == {"coreml"}
    assert artifacts["digits.palette4.coreml@apple-a17"].palettize == 4
    assert not artifacts["mobilenet.int8.tflite@snapdragon-8-gen-3"].per_channel
    mobilenet_on_pixel_8 = [a for a in artifacts.values() if a.model == "mobilenet" and a.target == "pixel-8"]
    assert [(a.variant, a.selection, a.preference) for a in mobilenet_on_pixel_8] == [
        ("fp32", "first_passing", 0), ("fp16", "first_passing", 1), ("int8", "first_passing", 2),
    ]
    assert [c for c, _ in plan.models[0].evaluation.conditions] == ["dim", "blur", "noise"]


def test_a_spec_error_exits_with_the_spec_code(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_plan(make_workspace(tmp_path, edit(VALID_SPEC, ("format: 1", "format: 2"))), environ={})

    assert exit_code_for(caught.value) == SpecError.exit_code == 20
    assert str(caught.value) == "1 problem in the spec:\n  models.yaml:1:9: format: must be 1, got 2"


# ------------------------------------------------------------------ unknown keys


def test_an_unknown_key_names_its_line_and_column_and_suggests_the_right_one(tmp_path):
    assert problems_for(tmp_path, ("int8: {quantize: int8}", "int8: {quantise: int8}")) == [
        "models.yaml:17:14: models -> digits -> variants -> int8 -> quantise: "
        "unknown key 'quantise'; did you mean 'quantize'? allowed keys: budgets, palettize, per_channel, quantize",
    ]


def test_a_misspelt_top_level_key_is_unknown_and_leaves_the_real_one_missing(tmp_path):
    assert problems_for(tmp_path, ("bundle:", "bundel:")) == [
        "models.yaml:1:1: (top level): missing required key 'bundle'",
        "models.yaml:2:1: bundel: unknown key 'bundel'; did you mean 'bundle'? allowed keys: bundle, cache, format, models, publish",
    ]


def test_an_unknown_key_with_no_close_match_lists_the_allowed_keys(tmp_path):
    assert problems_for(tmp_path, ("format: 1\n", "format: 1\nversion: 2\n")) == [
        "models.yaml:2:1: version: unknown key 'version'; allowed keys: bundle, cache, format, models, publish",
    ]


def test_all_schema_errors_are_reported_at_once_in_file_order(tmp_path):
    problems = problems_for(
        tmp_path,
        ("max_size_kb: 200", "max_size_kb: big"),
        ("int8: {quantize: int8}", "int8: {quantise: int8}"),
        ('  version: "1.4.0"\n', '  version: "1.4.0"\n  signing: {key: MODELMAKE_KEY}\n'),
    )

    assert problems == [
        "models.yaml:5:18: bundle -> signing -> key: 'MODELMAKE_KEY' is not valid: "
        "expected env:VARIABLE or file:path/relative/to/workspace",
        "models.yaml:18:14: models -> digits -> variants -> int8 -> quantise: "
        "unknown key 'quantise'; did you mean 'quantize'? allowed keys: budgets, palettize, per_channel, quantize",
        "models.yaml:22:28: models -> digits -> budgets -> max_size_kb: expected a number, got a string 'big'",
    ]


# ------------------------------------------------------------------ YAML syntax


def test_bad_indentation_is_invalid_yaml_at_its_line(tmp_path):
    assert problems_for(tmp_path, ("    variants:\n", "   variants:\n")) == [
        "models.yaml:14:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block mapping); check the indentation of this line and the one before",
    ]


def test_an_unclosed_bracket_names_where_it_was_opened(tmp_path):
    assert problems_for(tmp_path, ("[fp32, fp16, int8]", "[fp32, fp16, int8")) == [
        "models.yaml:20:25: invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that starts on line 19, column 16); close the '[' opened there",
    ]


def test_a_tab_in_the_indentation_is_named(tmp_path):
    assert problems_for(tmp_path, ("    variants:\n      fp32: {}", "    variants:\n\tfp32: {}")) == [
        "models.yaml:15:1: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token); indent with spaces; YAML does not allow tabs",
    ]


def test_a_duplicate_key_is_reported_with_its_line(tmp_path):
    assert problems_for(tmp_path, ("      fp16: {quantize: fp16}\n", "      fp16: {quantize: fp16}\n      fp32: {}\n")) == [
        'models.yaml:17:7: invalid YAML: found duplicate key "fp32" with value "{}" (original value: "{}") '
        "in the mapping that starts on line 15; keep only one of them",
    ]


def test_a_missing_models_yaml_says_how_to_start_one(tmp_path):
    assert spec_problems(make_workspace(tmp_path, None)) == [
        "models.yaml: file not found: create it, or run `modelmake init` for a starting point",
    ]


def test_an_empty_models_yaml_lists_what_it_needs(tmp_path):
    assert spec_problems(make_workspace(tmp_path, "")) == [
        "models.yaml:1:1: (top level): the file is empty: it needs format, bundle, models",
    ]


# ------------------------------------------------------------------ types and values


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        pytest.param(
            ("samples: 200", "samples: many"),
            "models.yaml:9:77: models -> digits -> data -> calibration -> samples: expected an integer, got a string 'many'",
            id="samples-word",
        ),
        pytest.param(
            ("top_k: 3", 'top_k: "3"'),
            "models.yaml:13:58: models -> digits -> io -> output -> top_k: "
            "expected an integer, got a string '3': remove the quotes",
            id="top_k-quoted",
        ),
        pytest.param(
            ("source: {recipe: recipes/digits.py}", "source: recipes/digits.py"),
            "models.yaml:7:13: models -> digits -> source: expected a mapping, got a string 'recipes/digits.py' "
            "(exactly one of keras, saved_model, tflite, onnx or recipe)",
            id="source-not-a-mapping",
        ),
        pytest.param(
            ("int8: {quantize: int8}", "int8: {quantize: int4}"),
            "models.yaml:17:24: models -> digits -> variants -> int8 -> quantize: "
            "'int4' is not one of: fp32, fp16, dynamic_int8, int8; did you mean 'int8'?",
            id="precision",
        ),
        pytest.param(
            ("quantize: fp16", "quantize: float16"),
            "models.yaml:16:24: models -> digits -> variants -> fp16 -> quantize: "
            "'float16' is not one of: fp32, fp16, dynamic_int8, int8; did you mean 'fp16'?",
            id="precision-long-name",
        ),
        pytest.param(
            ("layout: NHWC", "layout: nhwc"),
            "models.yaml:12:23: models -> digits -> io -> input -> layout: "
            "'nhwc' is not one of: NHWC, NCHW, NC; did you mean 'NHWC'?",
            id="layout-case",
        ),
        pytest.param(
            ("scale: 1/16", "scale: one sixteenth"),
            "models.yaml:12:36: models -> digits -> io -> input -> scale: "
            "'one sixteenth' is not valid: expected a number or a fraction such as 1/255",
            id="scale",
        ),
        pytest.param(
            ("format: 1", "format: 2"),
            "models.yaml:1:9: format: must be 1, got 2",
            id="format-version",
        ),
        pytest.param(
            ('"1.4.0"', '"1.4"'),
            "models.yaml:4:12: bundle -> version: '1.4' is not valid: "
            "expected the bundle's semantic version, e.g. \"1.4.0\"; quote it in YAML so that it stays a string",
            id="version-not-semver",
        ),
        pytest.param(
            ('"1.4.0"', "1.4"),
            "models.yaml:4:12: bundle -> version: expected a string, got a number 1.4 "
            "(the bundle's semantic version, e.g. \"1.4.0\"; quote it in YAML so that it stays a string)",
            id="version-unquoted-number",
        ),
        pytest.param(
            ("source: {recipe: recipes/digits.py}", "source: {recipe: recipes/digits.py, function: build-model}"),
            "models.yaml:7:51: models -> digits -> source -> function: 'build-model' is not valid: "
            "expected the name of the recipe's Python function that returns the model (default: build_model)",
            id="function-name",
        ),
        pytest.param(
            ('  version: "1.4.0"\n', '  version: "1.4.0"\n  encryption: {key: keys/model.key}\n'),
            "models.yaml:5:21: bundle -> encryption -> key: 'keys/model.key' is not valid: "
            "expected env:VARIABLE or file:path/relative/to/workspace",
            id="key-reference",
        ),
        pytest.param(
            ("source: {recipe: recipes/digits.py}", "source: {}"),
            "models.yaml:7:13: models -> digits -> source: "
            "must not be empty: expected exactly one of keras, saved_model, tflite, onnx or recipe",
            id="empty-source",
        ),
        pytest.param(
            ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: []"),
            "models.yaml:20:27: models -> digits -> targets -> snapdragon-8-gen-3: "
            "must not be empty: expected the variants to build for this target; each must pass its budgets",
            id="empty-target",
        ),
        pytest.param(
            ("[fp32, fp16, int8]", "[fp32, fp16, fp32]"),
            "models.yaml:19:16: models -> digits -> targets -> pixel-8: lists 'fp32' more than once: remove the repeats",
            id="repeated-variant",
        ),
        pytest.param(
            ("max_size_kb: 200", "size_kb: 200"),
            "models.yaml:21:15: models -> digits -> budgets -> size_kb: "
            "invalid name 'size_kb': expected max_<metric> or min_<metric>, e.g. max_size_kb or min_top1",
            id="budget-name",
        ),
    ],
)
def test_a_wrong_value_is_reported_at_the_value(tmp_path, replacement, expected):
    assert problems_for(tmp_path, replacement) == [expected]


def test_a_bad_model_name_is_reported_at_the_name(tmp_path):
    assert problems_for(tmp_path, ("  digits:", "  Digits:")) == [
        f"models.yaml:6:3: models -> Digits: invalid name 'Digits': {NAME_RULE}",
    ]


def test_a_bad_name_that_is_not_the_first_key_is_reported_at_its_own_line(tmp_path):
    assert problems_for(tmp_path, ("int8: {quantize: int8}", "Int8: {quantize: int8}")) == [
        f"models.yaml:17:7: models -> digits -> variants -> Int8: invalid name 'Int8': {NAME_RULE}",
    ]


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ("    source: {recipe: recipes/digits.py}\n", "models.yaml:6:3: models -> digits: missing required key 'source'"),
        (
            "    targets:\n      pixel-8: [fp32, fp16, int8]\n      snapdragon-8-gen-3: [int8]\n",
            "models.yaml:6:3: models -> digits: missing required key 'targets'",
        ),
        ('  version: "1.4.0"\n', "models.yaml:2:1: bundle: missing required key 'version'"),
    ],
    ids=["source", "targets", "version"],
)
def test_a_missing_required_key_is_reported_at_the_mapping_that_needs_it(tmp_path, removed, expected):
    assert problems_for(tmp_path, (removed, "")) == [expected]


# ------------------------------------------------------------------ cross-field rules


def test_an_unknown_target_lists_the_known_ones_and_suggests_the_closest(tmp_path):
    assert problems_for(tmp_path, ("      pixel-8: [fp32, fp16, int8]\n", "      pixel8: [fp32, fp16, int8]\n")) == [
        "models.yaml:19:7: models -> digits -> targets -> pixel8: unknown target 'pixel8'; did you mean 'pixel-8'? "
        f"known targets: {KNOWN_TARGETS} (add targets/pixel8.yaml to define it)",
    ]


def test_an_unknown_target_with_no_close_match(tmp_path):
    assert problems_for(tmp_path, ("      pixel-8: [fp32, fp16, int8]\n", "      jetson-orin: [fp32, fp16, int8]\n")) == [
        "models.yaml:19:7: models -> digits -> targets -> jetson-orin: unknown target 'jetson-orin'; "
        f"known targets: {KNOWN_TARGETS} (add targets/jetson-orin.yaml to define it)",
    ]


def test_an_unknown_variant_in_targets(tmp_path):
    assert problems_for(tmp_path, ("[fp32, fp16, int8]", "[fp32, fp16, int4]")) == [
        "models.yaml:19:29: models -> digits -> targets -> pixel-8 -> 2: unknown variant 'int4'; did you mean 'int8'? "
        "variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
    ]


def test_int8_without_calibration_data_is_reported_once_at_the_variant(tmp_path):
    # int8 is built for two targets, and still reported once.
    removed = "      calibration: {recipe: recipes/digits.py, split: calibration, samples: 200}\n"
    assert problems_for(tmp_path, (removed, "")) == [
        "models.yaml:16:24: models -> digits -> variants -> int8 -> quantize: "
        "full int8 quantization needs calibration data: add models -> digits -> data -> calibration",
    ]


def test_a_precision_the_target_profile_does_not_list(tmp_path):
    problems = problems_for(
        tmp_path,
        ("      int8: {quantize: int8}\n", "      int8: {quantize: int8}\n      dynamic: {quantize: dynamic_int8}\n"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [int8, dynamic]\n      android-arm64-cpu: [fp16, dynamic]"),
    )

    assert problems == [
        # Each format the target builds is judged on its own list.
        f"models.yaml:21:34: models -> digits -> targets -> snapdragon-8-gen-3 -> 1: snapdragon-8-gen-3 cannot run "
        f"dynamic_int8 in {fmt} (its profile builtin:snapdragon-8-gen-3.yaml lists fp32, fp16, int8): "
        "remove 'dynamic' from this target or pick another precision"
        for fmt in ("tflite", "onnx")
    ] + [
        f"models.yaml:22:27: models -> digits -> targets -> android-arm64-cpu -> 0: android-arm64-cpu cannot run "
        f"fp16 in {fmt} (its profile builtin:android-arm64-cpu.yaml lists fp32, dynamic_int8, int8): "
        "remove 'fp16' from this target or pick another precision"
        for fmt in ("tflite", "onnx")
    ]


def test_a_budget_on_a_top_k_the_model_does_not_report(tmp_path):
    assert problems_for(tmp_path, ("max_size_kb: 200", "max_size_kb: 200, min_top5: 0.99")) == [
        "models.yaml:21:33: models -> digits -> budgets -> min_top5: no metric 'top5' to budget; "
        f"this model measures: {MEASURED}; to measure top5 set models -> digits -> io -> output -> top_k: 5",
    ]


def test_an_accuracy_budget_without_evaluation_data(tmp_path):
    assert problems_for(tmp_path, ("      evaluation: {recipe: recipes/digits.py, split: test}\n", "")) == [
        "models.yaml:20:33: models -> digits -> budgets -> max_accuracy_drop: no metric 'accuracy_drop' to budget; "
        "this model measures: size_kb, quantized_share, latency_ms, accelerator_coverage; "
        "accuracy_drop is measured on evaluation data: add models -> digits -> data -> evaluation",
    ]


def test_a_misspelt_metric_in_a_budget_override(tmp_path):
    assert problems_for(tmp_path, ("max_latency_ms: 10", "max_latency: 10")) == [
        "models.yaml:23:28: models -> digits -> budget_overrides -> snapdragon-8-gen-3 -> max_latency: "
        f"no metric 'latency' to budget; this model measures: {MEASURED}; did you mean 'latency_ms'?",
    ]


def test_budget_overrides_for_a_target_the_model_does_not_list(tmp_path):
    added = "      snapdragon-8-gen-3: {max_latency_ms: 10}\n      raspberry-pi-5: {max_latency_ms: 20}\n"
    assert problems_for(tmp_path, ("      snapdragon-8-gen-3: {max_latency_ms: 10}\n", added)) == [
        "models.yaml:24:7: models -> digits -> budget_overrides -> raspberry-pi-5: 'raspberry-pi-5' is not one of "
        "this model's targets (pixel-8, snapdragon-8-gen-3): add it to models -> digits -> targets or remove this override",
    ]


def test_a_missing_recipe_is_reported_everywhere_it_is_named(tmp_path):
    problems = spec_problems(make_workspace(tmp_path, files={"recipes/digits_labels.txt": "0\n"}))

    assert problems == [
        "models.yaml:7:22: models -> digits -> source -> recipe: recipe source file 'recipes/digits.py' does not exist: "
        "fix the path (it is relative to models.yaml)",
        "models.yaml:9:29: models -> digits -> data -> calibration -> recipe: calibration data file 'recipes/digits.py' "
        "does not exist: fix the path (it is relative to models.yaml)",
        "models.yaml:10:28: models -> digits -> data -> evaluation -> recipe: evaluation data file 'recipes/digits.py' "
        "does not exist: fix the path (it is relative to models.yaml)",
    ]


def test_a_missing_labels_file(tmp_path):
    assert spec_problems(make_workspace(tmp_path, files={"recipes/digits.py": ""})) == [
        "models.yaml:13:24: models -> digits -> io -> output -> labels: labels file 'recipes/digits_labels.txt' "
        "does not exist: fix the path (it is relative to models.yaml)",
    ]


def test_a_missing_dependency_of_a_recipe(tmp_path):
    with_depends = "source: {recipe: recipes/digits.py, depends: [recipes/digits_data.py]}"
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", with_depends)) == [
        "models.yaml:7:51: models -> digits -> source -> depends -> 0: dependency file 'recipes/digits_data.py' "
        "does not exist: fix the path (it is relative to models.yaml)",
    ]


def test_a_saved_model_source_must_be_a_directory(tmp_path):
    files = {**DEFAULT_FILES, "models/digits": "a file, not a SavedModel directory"}
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", "source: {saved_model: models/digits}"), files=files) == [
        "models.yaml:7:27: models -> digits -> source -> saved_model: saved_model source directory 'models/digits' "
        "does not exist: fix the path (it is relative to models.yaml)",
    ]


def test_a_source_with_two_kinds_is_one_problem(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.keras": ""}
    two_kinds = "source: {recipe: recipes/digits.py, keras: models/digits.keras}"
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", two_kinds), files=files) == [
        "models.yaml:7:13: models -> digits -> source: "
        "a source needs exactly one of keras, saved_model, tflite, onnx, recipe (found: keras, recipe): keep only one",
    ]


def test_a_source_with_no_kind(tmp_path):
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", "source: {function: build}")) == [
        "models.yaml:7:13: models -> digits -> source: "
        "a source needs exactly one of keras, saved_model, tflite, onnx, recipe (found: none): add one",
    ]


def test_a_tflite_source_can_be_quantized(tmp_path):
    # LiteRT Quantizer quantizes the .tflite file itself; ONNX is converted from it and quantized by ORT as before.
    files = {**DEFAULT_FILES, "models/digits.tflite": ""}
    spec = edit(VALID_SPEC, ("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"))
    plan = load_plan(make_workspace(tmp_path, spec, files=files), environ={})

    assert [a.id for a in plan.artifacts()] == [
        "digits.fp32.tflite@pixel-8",
        "digits.fp16.tflite@pixel-8",
        "digits.int8.tflite@pixel-8",
        "digits.int8.tflite@snapdragon-8-gen-3",
        "digits.int8.onnx@snapdragon-8-gen-3",
    ]


def test_a_tflite_source_with_fp32_variants_compiles(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.tflite": ""}
    spec = edit(
        VALID_SPEC,
        ("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"),
        ("      fp16: {quantize: fp16}\n      int8: {quantize: int8}\n", ""),
        ("[fp32, fp16, int8]", "[fp32]"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [fp32]"),
    )
    plan = load_plan(make_workspace(tmp_path, spec, files=files), environ={})

    # ONNX is converted from a tflite source too; Core ML is not.
    assert [a.id for a in plan.artifacts()] == [
        "digits.fp32.tflite@pixel-8",
        "digits.fp32.tflite@snapdragon-8-gen-3",
        "digits.fp32.onnx@snapdragon-8-gen-3",
    ]
    assert plan.models[0].source.function == ""


def test_a_recipe_only_key_on_another_source(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.keras": ""}
    keras = "source: {keras: models/digits.keras, function: build_model}"
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", keras), files=files) == [
        "models.yaml:7:42: models -> digits -> source -> function: 'function' applies only to recipe sources: remove it",
    ]


def test_a_target_whose_formats_this_engine_cannot_build_from_the_source(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.tflite": ""}
    spec = edit(
        VALID_SPEC,
        ("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"),
        ("      fp16: {quantize: fp16}\n      int8: {quantize: int8}\n", ""),
        ("      pixel-8: [fp32, fp16, int8]\n      snapdragon-8-gen-3: [int8]\n", "      apple-a17: [fp32]\n"),
        ("    budget_overrides:\n      snapdragon-8-gen-3: {max_latency_ms: 10}\n", ""),
    )

    assert spec_problems(make_workspace(tmp_path, spec, files=files)) == [
        "models.yaml:17:7: models -> digits -> targets -> apple-a17: modelmake cannot build any format apple-a17 runs "
        f"(coreml) from this model's tflite source; it builds {BUILDS}: remove apple-a17 from this model's targets",
    ]


def test_an_onnx_source_builds_onnx_only(tmp_path):
    # pixel-8 runs tflite only and apple-a17 coreml only: neither is made from ONNX; snapdragon-8-gen-3 also runs onnx.
    files = {**DEFAULT_FILES, "models/digits.onnx": ""}
    spec = edit(
        VALID_SPEC,
        ("source: {recipe: recipes/digits.py}", "source: {onnx: models/digits.onnx}"),
        ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      apple-a17: [fp32]\n"),
    )
    workspace = make_workspace(tmp_path, spec, files=files)

    assert spec_problems(workspace) == [
        f"models.yaml:{line}:7: models -> digits -> targets -> {target}: modelmake cannot build any format {target} runs "
        f"({fmt}) from this model's onnx source; it builds {BUILDS}: remove {target} from this model's targets"
        for line, target, fmt in [(19, "pixel-8", "tflite"), (21, "apple-a17", "coreml")]
    ]
    spec = edit(spec, ("      pixel-8: [fp32, fp16, int8]\n", ""), ("      apple-a17: [fp32]\n", ""))
    plan = load_plan(make_workspace(tmp_path, spec, files=files), environ={})
    assert [a.id for a in plan.artifacts()] == ["digits.int8.onnx@snapdragon-8-gen-3"]


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        pytest.param(
            "{recipe: recipes/digits.py, split: test, file: data/test.npz}",
            "models.yaml:10:19: models -> digits -> data -> evaluation: a data set needs exactly one of 'recipe' "
            "(with 'split') or 'file' (an .npz with arrays x and y): keep only one",
            id="recipe-and-file",
        ),
        pytest.param(
            "{samples: 100}",
            "models.yaml:10:19: models -> digits -> data -> evaluation: a data set needs exactly one of 'recipe' "
            "(with 'split') or 'file' (an .npz with arrays x and y): add one",
            id="neither",
        ),
        pytest.param(
            "{recipe: recipes/digits.py}",
            "models.yaml:10:19: models -> digits -> data -> evaluation: "
            "a recipe data set needs 'split', the name passed to the recipe's data function",
            id="recipe-without-split",
        ),
        pytest.param(
            "{file: data/test.npz, split: test}",
            "models.yaml:10:41: models -> digits -> data -> evaluation -> split: 'split' applies only to recipe data sets: remove it",
            id="file-with-split",
        ),
    ],
)
def test_a_bad_data_set_is_one_problem(tmp_path, evaluation, expected):
    # A declared but invalid evaluation set does not also make max_accuracy_drop unknown.
    files = {**DEFAULT_FILES, "data/test.npz": ""}
    replacement = ("evaluation: {recipe: recipes/digits.py, split: test}", f"evaluation: {evaluation}")
    assert problems_for(tmp_path, replacement, files=files) == [expected]


def test_a_data_set_from_a_file(tmp_path):
    files = {**DEFAULT_FILES, "data/test.npz": ""}
    spec = edit(VALID_SPEC, ("evaluation: {recipe: recipes/digits.py, split: test}", "evaluation: {file: data/test.npz}"))
    (model,) = load_plan(make_workspace(tmp_path, spec, files=files), environ={}).models

    assert (model.evaluation.path, model.evaluation.from_recipe, model.evaluation.function, model.evaluation.split) == (
        "data/test.npz", False, "", ""
    )


def test_a_scale_that_divides_by_zero(tmp_path):
    assert problems_for(tmp_path, ("scale: 1/16", "scale: 1/0")) == [
        "models.yaml:12:36: models -> digits -> io -> input -> scale: '1/0' divides by zero: use a non-zero denominator",
    ]


def test_all_cross_field_problems_are_reported_at_once_in_file_order(tmp_path):
    # Checked in a different order (budgets before targets, files first): reported in the order of the lines.
    problems = problems_for(
        tmp_path,
        ("[fp32, fp16, int8]", "[fp32, fp16, int4]"),
        ("max_size_kb: 200", "max_size_kb: 200, min_top5: 0.99"),
        ("recipes/digits_labels.txt", "recipes/labels.txt"),
        ("      calibration: {recipe: recipes/digits.py, split: calibration, samples: 200}\n", ""),
    )

    assert problems == [
        "models.yaml:12:24: models -> digits -> io -> output -> labels: labels file 'recipes/labels.txt' does not exist: "
        "fix the path (it is relative to models.yaml)",
        "models.yaml:16:24: models -> digits -> variants -> int8 -> quantize: "
        "full int8 quantization needs calibration data: add models -> digits -> data -> calibration",
        "models.yaml:18:29: models -> digits -> targets -> pixel-8 -> 2: unknown variant 'int4'; did you mean 'int8'? "
        "variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
        "models.yaml:20:33: models -> digits -> budgets -> min_top5: no metric 'top5' to budget; "
        f"this model measures: {MEASURED}; to measure top5 set models -> digits -> io -> output -> top_k: 5",
    ]


def test_problems_in_two_models_are_reported_together(tmp_path):
    second = (
        "  letters:\n"
        "    source: {recipe: recipes/letters.py}\n"
        "    variants: {fp32: {}}\n"
        "    targets: {pixel-9: [fp32]}\n"
    )
    spec = edit(VALID_SPEC, ("[fp32, fp16, int8]", "[fp32, fp16, int4]")) + second
    problems = spec_problems(make_workspace(tmp_path, spec))

    assert problems == [
        "models.yaml:19:29: models -> digits -> targets -> pixel-8 -> 2: unknown variant 'int4'; did you mean 'int8'? "
        "variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
        "models.yaml:25:22: models -> letters -> source -> recipe: recipe source file 'recipes/letters.py' does not exist: "
        "fix the path (it is relative to models.yaml)",
        "models.yaml:27:15: models -> letters -> targets -> pixel-9: unknown target 'pixel-9'; did you mean 'pixel-8'? "
        f"known targets: {KNOWN_TARGETS} (add targets/pixel-9.yaml to define it)",
    ]


# ------------------------------------------------------------------ formats


def test_apple_a17_builds_core_ml_from_a_recipe(tmp_path):
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      apple-a17: [fp16, int8]\n"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    apple = [a for a in plan.artifacts() if a.target == "apple-a17"]

    assert [(a.id, a.precision) for a in apple] == [
        ("digits.fp16.coreml@apple-a17", "fp16"),
        ("digits.int8.coreml@apple-a17", "int8"),
    ]
    assert plan.targets["apple-a17"].formats["coreml"].settings.compute_units == "ALL"


def test_a_target_that_runs_tflite_and_onnx_gets_each_variant_in_both(tmp_path):
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      raspberry-pi-5: [fp32, int8]\n"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert [(a.id, a.preference) for a in plan.artifacts() if a.target == "raspberry-pi-5"] == [
        ("digits.fp32.tflite@raspberry-pi-5", 0),
        ("digits.fp32.onnx@raspberry-pi-5", 0),
        ("digits.int8.tflite@raspberry-pi-5", 1),
        ("digits.int8.onnx@raspberry-pi-5", 1),
    ]
    assert len({a.id for a in plan.artifacts()}) == len(list(plan.artifacts()))


# ------------------------------------------------------------------ budgets and parity tolerances


def test_budgets_merge_defaults_then_model_then_variant_then_target(tmp_path):
    spec = edit(
        VALID_SPEC,
        ("int8: {quantize: int8}", "int8: {quantize: int8, budgets: {min_top1_agreement: 0.9, max_size_kb: 100, max_max_abs_error: 0.5}}"),
        ("max_size_kb: 200,", "max_size_kb: 200, min_cosine_similarity: 0.97,"),
        ("{max_latency_ms: 10}", "{max_latency_ms: 10, max_size_kb: 50}"),
    )
    budgets = {a.id: a.budgets for a in load_plan(make_workspace(tmp_path, spec), environ={}).artifacts()}

    def budget(key, limit):
        return Budget.parse(key, limit)

    # A replaced budget keeps the place of the first one of its name.
    assert budgets["digits.int8.tflite@pixel-8"] == (
        budget("min_cosine_similarity", 0.97),  # int8 default 0.98, replaced by the model's
        budget("min_top1_agreement", 0.9),  # int8 default 0.95, replaced by the variant's
        budget("max_size_kb", 100),  # the model's 200, replaced by the variant's
        budget("max_accuracy_drop", 0.005),
        budget("max_latency_ms", 33),
        budget("max_max_abs_error", 0.5),  # the variant's own
    )
    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"] == (
        budget("min_cosine_similarity", 0.97),
        budget("min_top1_agreement", 0.9),
        budget("max_size_kb", 50),  # the target's override wins over the variant's
        budget("max_accuracy_drop", 0.005),
        budget("max_latency_ms", 10),
        budget("max_max_abs_error", 0.5),
    )
    # Another variant has neither the variant's budgets nor int8's tolerances.
    assert budgets["digits.fp16.tflite@pixel-8"] == (
        budget("min_cosine_similarity", 0.97),
        budget("min_top1_agreement", 0.98),
        budget("max_size_kb", 200),
        budget("max_accuracy_drop", 0.005),
        budget("max_latency_ms", 33),
    )


def test_without_evaluation_data_no_parity_tolerances_are_added(tmp_path):
    spec = edit(VALID_SPEC, ("      evaluation: {recipe: recipes/digits.py, split: test}\n", ""), ("max_accuracy_drop: 0.005, ", ""))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert {a.id: [b.key for b in a.budgets] for a in plan.artifacts()} == {
        "digits.fp32.tflite@pixel-8": ["max_size_kb", "max_latency_ms"],
        "digits.fp16.tflite@pixel-8": ["max_size_kb", "max_latency_ms"],
        "digits.int8.tflite@pixel-8": ["max_size_kb", "max_latency_ms"],
        "digits.int8.tflite@snapdragon-8-gen-3": ["max_size_kb", "max_latency_ms"],
        "digits.int8.onnx@snapdragon-8-gen-3": ["max_size_kb", "max_latency_ms"],
    }


def test_require_full_coverage_adds_a_full_coverage_budget_for_that_format(tmp_path):
    npu_phone = """\
        name: npu-phone
        soc: Some SoC with an NPU
        platform: android
        formats:
          tflite: {precisions: [fp32, int8], accelerator: npu, require_full_coverage: true}
          onnx: {precisions: [int8], accelerator: qnn}
    """
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      npu-phone: [int8]\n"))
    plan = load_plan(make_workspace(tmp_path, spec, profiles={"npu-phone": npu_phone}), environ={})
    budgets = {a.id: a.budgets for a in plan.artifacts() if a.target == "npu-phone"}

    assert budgets["digits.int8.tflite@npu-phone"] == INT8_PARITY + (
        Budget(key="min_accelerator_coverage", metric="accelerator_coverage", bound="min", limit=1.0),
        Budget(key="max_size_kb", metric="size_kb", bound="max", limit=200.0),
        Budget(key="max_accuracy_drop", metric="accuracy_drop", bound="max", limit=0.005),
        Budget(key="max_latency_ms", metric="latency_ms", bound="max", limit=33.0),
    )
    # The onnx section names an accelerator but does not require full coverage.
    assert "min_accelerator_coverage" not in {b.key for b in budgets["digits.int8.onnx@npu-phone"]}


def test_parity_and_coverage_metrics_may_be_budgeted(tmp_path):
    spec = edit(
        VALID_SPEC,
        ("max_size_kb: 200,", "max_size_kb: 200, max_max_abs_error: 0.1, min_top1_agreement: 0.97, min_accelerator_coverage: 0.5,"),
    )
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    budget = {b.key: b for b in next(plan.artifacts()).budgets}

    assert (budget["max_max_abs_error"].metric, budget["max_max_abs_error"].bound) == ("max_abs_error", "max")
    assert budget["min_top1_agreement"].limit == 0.97
    assert budget["min_accelerator_coverage"].metric == "accelerator_coverage"


def test_a_parity_budget_without_evaluation_data(tmp_path):
    problems = problems_for(
        tmp_path,
        ("      evaluation: {recipe: recipes/digits.py, split: test}\n", ""),
        ("max_accuracy_drop: 0.005, ", "min_cosine_similarity: 0.99, "),
    )

    assert problems == [
        "models.yaml:20:33: models -> digits -> budgets -> min_cosine_similarity: no metric 'cosine_similarity' to budget; "
        "this model measures: size_kb, quantized_share, latency_ms, accelerator_coverage; "
        "cosine_similarity is measured on evaluation data: add models -> digits -> data -> evaluation",
    ]


def test_an_unknown_metric_in_a_variant_budget(tmp_path):
    assert problems_for(tmp_path, ("int8: {quantize: int8}", "int8: {quantize: int8, budgets: {min_cosine_similarty: 0.99}}")) == [
        "models.yaml:17:40: models -> digits -> variants -> int8 -> budgets -> min_cosine_similarty: "
        f"no metric 'cosine_similarty' to budget; this model measures: {MEASURED}; did you mean 'cosine_similarity'?",
    ]


def test_a_budget_named_like_a_metric_says_to_add_the_bound(tmp_path):
    # The metric max_abs_error is bounded as max_max_abs_error; max_abs_error alone reads as max_ of abs_error.
    assert problems_for(tmp_path, ("max_size_kb: 200,", "max_size_kb: 200, max_abs_error: 0.1,")) == [
        "models.yaml:21:33: models -> digits -> budgets -> max_abs_error: no metric 'abs_error' to budget; "
        f"this model measures: {MEASURED}; 'max_abs_error' is itself a metric: write max_max_abs_error or min_max_abs_error",
    ]


def test_a_variant_budget_name_must_start_with_max_or_min(tmp_path):
    assert problems_for(tmp_path, ("int8: {quantize: int8}", "int8: {quantize: int8, budgets: {cosine_similarity: 0.99}}")) == [
        "models.yaml:17:40: models -> digits -> variants -> int8 -> budgets -> cosine_similarity: "
        "invalid name 'cosine_similarity': expected max_<metric> or min_<metric>, e.g. max_size_kb or min_top1",
    ]


# ------------------------------------------------------------------ variants: per_channel and palettize


def test_per_channel_false_is_carried_on_the_int8_artifacts(tmp_path):
    spec = edit(VALID_SPEC, ("int8: {quantize: int8}", "int8: {quantize: int8, per_channel: false}"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert {a.id: a.per_channel for a in plan.artifacts()} == {
        "digits.fp32.tflite@pixel-8": True,
        "digits.fp16.tflite@pixel-8": True,
        "digits.int8.tflite@pixel-8": False,
        "digits.int8.tflite@snapdragon-8-gen-3": False,
        "digits.int8.onnx@snapdragon-8-gen-3": False,
    }


def test_per_channel_on_a_variant_that_is_not_int8(tmp_path):
    # Reported once, at the variant, though fp16 is built for one target and fp32 for one.
    problems = problems_for(
        tmp_path,
        ("fp16: {quantize: fp16}", "fp16: {quantize: fp16, per_channel: false}"),
        ("fp32: {}", "fp32: {per_channel: false}"),
    )

    assert problems == [
        "models.yaml:15:27: models -> digits -> variants -> fp32 -> per_channel: "
        "per_channel applies to int8 variants only ('fp32' is fp32): remove it",
        "models.yaml:16:43: models -> digits -> variants -> fp16 -> per_channel: "
        "per_channel applies to int8 variants only ('fp16' is fp16): remove it",
    ]


def test_per_channel_true_is_the_default_and_allowed_anywhere(tmp_path):
    spec = edit(VALID_SPEC, ("fp16: {quantize: fp16}", "fp16: {quantize: fp16, per_channel: true}"))

    assert all(a.per_channel for a in load_plan(make_workspace(tmp_path, spec), environ={}).artifacts())


def test_a_palettized_variant_for_a_core_ml_target(tmp_path):
    spec = edit(
        VALID_SPEC,
        ("      int8: {quantize: int8}\n", "      int8: {quantize: int8}\n      palette4: {quantize: fp16, palettize: 4}\n"),
        ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      apple-a17: [fp16, palette4]\n"),
    )
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert [(a.id, a.precision, a.palettize) for a in plan.artifacts() if a.target == "apple-a17"] == [
        ("digits.fp16.coreml@apple-a17", "fp16", None),
        ("digits.palette4.coreml@apple-a17", "fp16", 4),
    ]


def test_a_palettized_variant_for_a_target_that_builds_tflite_or_onnx(tmp_path):
    problems = problems_for(
        tmp_path,
        ("      int8: {quantize: int8}\n", "      int8: {quantize: int8}\n      palette4: {quantize: fp16, palettize: 4}\n"),
        ("[fp32, fp16, int8]", "[fp32, palette4]"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [palette4]"),
    )

    assert problems == [
        "models.yaml:20:23: models -> digits -> targets -> pixel-8 -> 1: 'palette4' cannot be built for pixel-8 in tflite: "
        "tflite files cannot store palettized weights (only coreml can); list this variant only for targets that build coreml",
    ] + [
        "models.yaml:21:28: models -> digits -> targets -> snapdragon-8-gen-3 -> 0: 'palette4' cannot be built for "
        f"snapdragon-8-gen-3 in {fmt}: {fmt} files cannot store palettized weights (only coreml can); "
        "list this variant only for targets that build coreml"
        for fmt in ("tflite", "onnx")
    ]


def test_palettize_takes_2_4_6_or_8_bits(tmp_path):
    assert problems_for(tmp_path, ("fp16: {quantize: fp16}", "fp16: {quantize: fp16, palettize: 3}")) == [
        "models.yaml:16:41: models -> digits -> variants -> fp16 -> palettize: 3 is not one of: 2, 4, 6, 8",
    ]


# ------------------------------------------------------------------ Core ML: what the deployment target can run


def core_ml_workspace(tmp_path, deployment_target: str, precisions: str, *, variant: str, listed: str):
    """A workspace whose own profile 'mac' runs Core ML on deployment_target; models.yaml lists ``listed`` for it."""
    profile = f"""\
        name: mac
        soc: Apple M1
        platform: ios
        formats:
          coreml: {{precisions: {precisions}, minimum_deployment_target: {deployment_target}}}
    """
    spec = edit(
        VALID_SPEC,
        ("      int8: {quantize: int8}\n", f"      int8: {{quantize: int8}}\n{variant}"),
        ("snapdragon-8-gen-3: [int8]\n", f"snapdragon-8-gen-3: [int8]\n      mac: {listed}\n"),
    )
    return make_workspace(tmp_path, spec, profiles={"mac": profile})


def test_core_ml_compressed_weights_on_a_macos_target_that_predates_them(tmp_path):
    workspace = core_ml_workspace(tmp_path, "macOS12", "[int8]", variant="", listed="[int8]")

    assert spec_problems(workspace) == [
        "models.yaml:21:13: models -> digits -> targets -> mac -> 0: 'int8' cannot be built for mac in coreml: "
        "Core ML compressed weights need iOS16 or macOS13, but the profile targets macOS12: "
        "raise minimum_deployment_target or drop the compression",
    ]
    good = core_ml_workspace(tmp_path / "macos13", "macOS13", "[int8]", variant="", listed="[int8]")
    assert [a.id for a in load_plan(good, environ={}).artifacts() if a.target == "mac"] == ["digits.int8.coreml@mac"]


def test_core_ml_palettized_weights_on_an_ios_target_that_predates_them(tmp_path):
    palette = "      palette4: {quantize: fp16, palettize: 4}\n"
    workspace = core_ml_workspace(tmp_path, "iOS15", "[fp16]", variant=palette, listed="[palette4]")

    assert spec_problems(workspace) == [
        "models.yaml:22:13: models -> digits -> targets -> mac -> 0: 'palette4' cannot be built for mac in coreml: "
        "Core ML compressed weights need iOS16 or macOS13, but the profile targets iOS15: "
        "raise minimum_deployment_target or drop the compression",
    ]


def test_core_ml_int8_palettes_need_ios18(tmp_path):
    palette = "      int8_palette4: {quantize: int8, palettize: 4}\n"
    workspace = core_ml_workspace(tmp_path, "iOS17", "[int8]", variant=palette, listed="[int8, int8_palette4]")

    assert spec_problems(workspace) == [
        "models.yaml:22:19: models -> digits -> targets -> mac -> 1: 'int8_palette4' cannot be built for mac in coreml: "
        "Core ML int8 palettes need iOS18 or macOS15, but the profile targets iOS17: "
        "raise minimum_deployment_target or drop the compression",
    ]


# ------------------------------------------------------------------ targets that ship one of several variants


def test_a_prefer_entry_marks_its_artifacts_for_selection_in_order(tmp_path):
    spec = edit(VALID_SPEC, ("pixel-8: [fp32, fp16, int8]", "pixel-8: {prefer: [int8, fp16, fp32], select: first_passing}"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert [(a.id, a.selection, a.preference) for a in plan.artifacts()] == [
        ("digits.int8.tflite@pixel-8", "first_passing", 0),
        ("digits.fp16.tflite@pixel-8", "first_passing", 1),
        ("digits.fp32.tflite@pixel-8", "first_passing", 2),
        # A plain list builds and ships every variant.
        ("digits.int8.tflite@snapdragon-8-gen-3", None, 0),
        ("digits.int8.onnx@snapdragon-8-gen-3", None, 0),
    ]


def test_select_defaults_to_first_passing(tmp_path):
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: {prefer: [int8, fp16]}"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert [(a.id, a.selection, a.preference) for a in plan.artifacts() if a.target == "snapdragon-8-gen-3"] == [
        ("digits.int8.tflite@snapdragon-8-gen-3", "first_passing", 0),
        ("digits.int8.onnx@snapdragon-8-gen-3", "first_passing", 0),
        ("digits.fp16.tflite@snapdragon-8-gen-3", "first_passing", 1),
        ("digits.fp16.onnx@snapdragon-8-gen-3", "first_passing", 1),
    ]


def test_an_unknown_variant_in_prefer_is_reported_in_the_prefer_list(tmp_path):
    assert problems_for(tmp_path, ("pixel-8: [fp32, fp16, int8]", "pixel-8: {prefer: [fp32, fp16, int4]}")) == [
        "models.yaml:19:38: models -> digits -> targets -> pixel-8 -> prefer -> 2: unknown variant 'int4'; "
        "did you mean 'int8'? variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
    ]


def test_a_precision_the_target_cannot_run_in_a_prefer_list(tmp_path):
    problems = problems_for(
        tmp_path,
        ("      int8: {quantize: int8}\n", "      int8: {quantize: int8}\n      dynamic: {quantize: dynamic_int8}\n"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: {prefer: [dynamic, int8]}"),
    )

    assert problems == [
        "models.yaml:21:37: models -> digits -> targets -> snapdragon-8-gen-3 -> prefer -> 0: snapdragon-8-gen-3 cannot run "
        f"dynamic_int8 in {fmt} (its profile builtin:snapdragon-8-gen-3.yaml lists fp32, fp16, int8): "
        "remove 'dynamic' from this target or pick another precision"
        for fmt in ("tflite", "onnx")
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            "{prefer: []}",
            ["models.yaml:20:36: models -> digits -> targets -> snapdragon-8-gen-3 -> prefer: "
             "must not be empty: expected variants in order of preference"],
            id="empty-prefer",
        ),
        pytest.param(
            "{prefer: [int8, fp16, int8]}",
            ["models.yaml:20:36: models -> digits -> targets -> snapdragon-8-gen-3 -> prefer: "
             "lists 'int8' more than once: remove the repeats"],
            id="repeated-prefer",
        ),
        pytest.param(
            "{prefer: [int8], select: best}",
            ["models.yaml:20:52: models -> digits -> targets -> snapdragon-8-gen-3 -> select: 'best' is not one of: first_passing"],
            id="select",
        ),
        pytest.param(
            "{prefers: [int8]}",
            [
                "models.yaml:20:28: models -> digits -> targets -> snapdragon-8-gen-3 -> prefers: "
                "unknown key 'prefers'; did you mean 'prefer'? allowed keys: formats, prefer, select, variants",
            ],
            id="misspelt-prefer",
        ),
        pytest.param(
            "int8",
            ["models.yaml:20:27: models -> digits -> targets -> snapdragon-8-gen-3: 'int8' is not valid: "
             "expected a list of variants to build, or a mapping: {variants: [...]} to build each or "
             "{prefer: [...], select: first_passing} to ship one, with formats: [...] to build only some of the target's formats"],
            id="not-a-list",
        ),
        pytest.param(
            "[Int8]",
            [f"models.yaml:20:28: models -> digits -> targets -> snapdragon-8-gen-3 -> 0: 'Int8' is not valid: {NAME_RULE}"],
            id="variant-name",
        ),
    ],
)
def test_a_bad_target_entry_is_reported_inside_it(tmp_path, entry, expected):
    assert problems_for(tmp_path, ("snapdragon-8-gen-3: [int8]", f"snapdragon-8-gen-3: {entry}")) == expected


# ------------------------------------------------------------------ evaluation conditions

CONDITIONS = "split: test, conditions: {dim: 0.6, blur: 0.8, noise: 0.08}}"


def test_evaluation_conditions_add_metrics_that_budgets_may_use(tmp_path):
    spec = edit(
        VALID_SPEC,
        ("split: test}", CONDITIONS.replace("dim: 0.6, blur: 0.8, noise: 0.08", "noise: 0.08, dim: 0.6")),
        ("max_size_kb: 200,", "max_size_kb: 200, min_top1_dim: 0.9,"),
        ("{max_latency_ms: 10}", "{max_latency_ms: 10, min_top1_noise: 0.85}"),
    )
    (model,) = load_plan(make_workspace(tmp_path, spec), environ={}).models
    budgets = {a.id: {b.key: (b.metric, b.limit) for b in a.budgets} for a in model.artifacts}

    # Kept in a fixed order whatever the order in the spec.
    assert model.evaluation.conditions == (("dim", 0.6), ("noise", 0.08))
    assert model.calibration.conditions == ()
    assert budgets["digits.int8.tflite@pixel-8"]["min_top1_dim"] == ("top1_dim", 0.9)
    assert "min_top1_noise" not in budgets["digits.int8.tflite@pixel-8"]
    assert budgets["digits.int8.onnx@snapdragon-8-gen-3"]["min_top1_noise"] == ("top1_noise", 0.85)


def test_a_budget_on_a_condition_the_evaluation_data_does_not_declare(tmp_path):
    problems = problems_for(
        tmp_path,
        ("split: test}", "split: test, conditions: {dim: 0.6}}"),
        ("max_size_kb: 200,", "max_size_kb: 200, min_top1_blur: 0.9,"),
    )

    assert problems == [
        "models.yaml:21:33: models -> digits -> budgets -> min_top1_blur: no metric 'top1_blur' to budget; "
        "this model measures: size_kb, quantized_share, latency_ms, top1, top3, accuracy_drop, max_abs_error, cosine_similarity, "
        "top1_agreement, "
        "top1_dim, accelerator_coverage; to measure top1_blur add blur to models -> digits -> data -> evaluation -> conditions",
    ]


def test_a_condition_budget_without_evaluation_data(tmp_path):
    problems = problems_for(
        tmp_path,
        ("      evaluation: {recipe: recipes/digits.py, split: test}\n", ""),
        ("max_accuracy_drop: 0.005, ", "min_top1_noise: 0.9, "),
    )

    assert problems == [
        "models.yaml:20:33: models -> digits -> budgets -> min_top1_noise: no metric 'top1_noise' to budget; "
        "this model measures: size_kb, quantized_share, latency_ms, accelerator_coverage; "
        "top1_noise is measured on evaluation data: add models -> digits -> data -> evaluation",
    ]


def test_conditions_on_calibration_data(tmp_path):
    assert problems_for(tmp_path, ("samples: 200}", "samples: 200, conditions: {dim: 0.5}}")) == [
        "models.yaml:9:82: models -> digits -> data -> calibration -> conditions: "
        "conditions apply to evaluation data only: move them to data -> evaluation",
    ]


def test_blur_needs_inputs_with_spatial_axes(tmp_path):
    assert problems_for(tmp_path, ("split: test}", CONDITIONS), ("layout: NHWC", "layout: NC")) == [
        "models.yaml:10:83: models -> digits -> data -> evaluation -> conditions -> blur: "
        "blur needs images: io -> input -> layout is NC (no spatial axes); remove blur or set the layout",
    ]


def test_dim_and_noise_apply_to_any_layout(tmp_path):
    spec = edit(VALID_SPEC, ("split: test}", "split: test, conditions: {dim: 0.6, noise: 0.08}}"), ("layout: NHWC", "layout: NC"))

    assert load_plan(make_workspace(tmp_path, spec), environ={}).models[0].evaluation.conditions == (("dim", 0.6), ("noise", 0.08))


def test_a_condition_budget_is_judged_even_when_the_evaluation_set_is_invalid(tmp_path):
    # The data set is reported on its own; the budget on its condition is not reported as unknown too.
    problems = problems_for(
        tmp_path,
        ("evaluation: {recipe: recipes/digits.py, split: test}", "evaluation: {split: test, conditions: {dim: 0.6}}"),
        ("max_size_kb: 200,", "max_size_kb: 200, min_top1_dim: 0.9,"),
    )

    assert problems == [
        "models.yaml:10:19: models -> digits -> data -> evaluation: a data set needs exactly one of 'recipe' "
        "(with 'split') or 'file' (an .npz with arrays x and y): add one",
    ]


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        pytest.param(
            "{fog: 0.5}",
            "models.yaml:10:73: models -> digits -> data -> evaluation -> conditions -> fog: "
            "unknown key 'fog'; allowed keys: blur, dim, noise",
            id="unknown-condition",
        ),
        pytest.param(
            "{dim: 1.5}",
            "models.yaml:10:78: models -> digits -> data -> evaluation -> conditions -> dim: "
            "1.5 is greater than or equal to the maximum of 1",
            id="dim-out-of-range",
        ),
        pytest.param(
            "{noise: high}",
            "models.yaml:10:80: models -> digits -> data -> evaluation -> conditions -> noise: expected a number, got a string 'high'",
            id="noise-not-a-number",
        ),
    ],
)
def test_a_bad_condition_is_reported_at_it(tmp_path, conditions, expected):
    assert problems_for(tmp_path, ("split: test}", f"split: test, conditions: {conditions}}}")) == [expected]


# ------------------------------------------------------------------ signing, encryption and release builds

SIGNING_KEY = '  version: "1.4.0"\n  signing: {key: env:MODELMAKE_SIGNING_KEY}\n'
RELEASE_NEEDS_SIGNING_KEY = (
    "a release build needs bundle.signing.key (env:VAR or file:path): development keys are refused; "
    "run `modelmake keygen` to make a key pair"
)
RELEASE_NEEDS_DATA_KEY = (
    "a release build needs bundle.encryption.key (env:VAR or file:path): the development data key is refused"
)


# The variables the env: keys below name; the keys are read only when a bundle is signed or encrypted.
KEY_VARIABLES = {"K": "key", "MODELMAKE_SIGNING_KEY": "signing key", "MODELMAKE_DATA_KEY": "data key"}


def bundle_with(tmp_path, lines: str, environ=None):
    spec = edit(VALID_SPEC, ('  version: "1.4.0"\n', '  version: "1.4.0"\n' + lines))
    return load_plan(make_workspace(tmp_path, spec), environ=KEY_VARIABLES | (environ or {})).bundle


def test_keys_and_encryption_are_carried_into_the_plan(tmp_path):
    keys = "  signing: {key: env:MODELMAKE_SIGNING_KEY}\n  encryption: {key: file:keys/data.key}\n"

    bundle = bundle_with(tmp_path / "keys", keys)
    assert (bundle.signing_key, bundle.encrypt, bundle.encryption_key, bundle.release) == (
        "env:MODELMAKE_SIGNING_KEY", True, "file:keys/data.key", False
    )
    # encryption: {} encrypts with the workspace's development data key.
    dev = bundle_with(tmp_path / "dev", "  encryption: {}\n")
    assert (dev.encrypt, dev.encryption_key, dev.signing_key, dev.release) == (True, None, None, False)
    assert not bundle_with(tmp_path / "clear", "").encrypt


@pytest.mark.parametrize(
    ("lines", "environ", "release"),
    [
        ("  signing: {key: env:K}\n", {}, False),
        ("  signing: {key: env:K}\n", {"MODELMAKE_RELEASE": "1"}, True),
        ("  signing: {key: env:K}\n", {"MODELMAKE_RELEASE": "0"}, False),
        ("  signing: {key: env:K}\n", {"MODELMAKE_RELEASE": ""}, False),
        ("  signing: {key: env:K, release: true}\n", {}, True),
        ("  signing: {key: env:K, release: false}\n", {"MODELMAKE_RELEASE": "1"}, True),
    ],
    ids=["default", "environment", "environment-0", "environment-empty", "spec", "environment-wins"],
)
def test_a_release_build_is_asked_for_in_the_spec_or_the_environment(tmp_path, lines, environ, release):
    assert bundle_with(tmp_path, lines, environ).release is release


def test_an_env_key_whose_variable_is_unset_or_empty_is_reported_at_it(tmp_path):
    keys = "  signing: {key: env:ACME_SIGNING_KEY}\n  encryption: {key: env:ACME_DATA_KEY}\n"
    problems = problems_for(tmp_path, ('  version: "1.4.0"\n', '  version: "1.4.0"\n' + keys), environ={"ACME_DATA_KEY": " \n"})

    assert problems == [
        "models.yaml:5:18: bundle -> signing -> key: the environment variable ACME_SIGNING_KEY is not set: export the key in it "
        "(in CI, from a secret), or use a key file: key: file:keys/signing.pem (`modelmake keygen` makes one)",
        "models.yaml:6:21: bundle -> encryption -> key: the environment variable ACME_DATA_KEY is set but empty: export the key "
        "in it (in CI, from a secret), or use a key file: key: file:keys/data.key (`modelmake keygen` makes one)",
    ]


def test_a_release_build_with_both_keys_compiles(tmp_path):
    keys = "  signing: {key: file:keys/release.pem}\n  encryption: {key: env:MODELMAKE_DATA_KEY}\n"
    bundle = bundle_with(tmp_path, keys, {"MODELMAKE_RELEASE": "1"})

    assert (bundle.release, bundle.signing_key, bundle.encrypt, bundle.encryption_key) == (
        True, "file:keys/release.pem", True, "env:MODELMAKE_DATA_KEY"
    )


def test_a_release_build_from_the_environment_without_a_signing_key(tmp_path):
    # With no signing section, the problem is placed on the bundle.
    assert spec_problems(make_workspace(tmp_path), {"MODELMAKE_RELEASE": "1"}) == [
        f"models.yaml:3:3: bundle -> signing: {RELEASE_NEEDS_SIGNING_KEY}",
    ]


def test_a_release_build_from_the_spec_without_a_signing_key(tmp_path):
    assert problems_for(tmp_path, ('  version: "1.4.0"\n', '  version: "1.4.0"\n  signing: {release: true}\n')) == [
        f"models.yaml:5:12: bundle -> signing: {RELEASE_NEEDS_SIGNING_KEY}",
    ]


def test_a_release_build_with_the_development_data_key(tmp_path):
    problems = problems_for(
        tmp_path, ('  version: "1.4.0"\n', SIGNING_KEY + "  encryption: {}\n"), environ=KEY_VARIABLES | {"MODELMAKE_RELEASE": "1"}
    )

    assert problems == [f"models.yaml:6:15: bundle -> encryption: {RELEASE_NEEDS_DATA_KEY}"]


def test_a_release_build_without_any_key_reports_both_with_the_other_problems(tmp_path):
    problems = problems_for(
        tmp_path,
        ('  version: "1.4.0"\n', '  version: "1.4.0"\n  encryption: {}\n'),
        ("[fp32, fp16, int8]", "[fp32, fp16, int4]"),
        environ={"MODELMAKE_RELEASE": "1"},
    )

    assert problems == [
        f"models.yaml:3:3: bundle -> signing: {RELEASE_NEEDS_SIGNING_KEY}",
        f"models.yaml:5:15: bundle -> encryption: {RELEASE_NEEDS_DATA_KEY}",
        "models.yaml:20:29: models -> digits -> targets -> pixel-8 -> 2: unknown variant 'int4'; did you mean 'int8'? "
        "variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
    ]


def test_load_plan_reads_modelmake_release_from_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMAKE_RELEASE", "1")
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)

    with pytest.raises(SpecError) as caught:
        load_plan(make_workspace(tmp_path))
    assert caught.value.problems == [f"models.yaml:3:3: bundle -> signing: {RELEASE_NEEDS_SIGNING_KEY}"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            "  signing: {key: env:K, release: yes}\n",
            "models.yaml:5:34: bundle -> signing -> release: expected a boolean, got a string 'yes' "
            "(a release build: refuse development keys (MODELMAKE_RELEASE=1 does the same))",
            id="release-not-a-boolean",
        ),
        pytest.param(
            "  signing: {keys: env:K}\n",
            "models.yaml:5:13: bundle -> signing -> keys: unknown key 'keys'; did you mean 'key'? allowed keys: key, release",
            id="signing-key-misspelt",
        ),
        pytest.param(
            "  encryption: {key: env:K, cipher: aes}\n",
            "models.yaml:5:28: bundle -> encryption -> cipher: unknown key 'cipher'; allowed keys: key",
            id="encryption-unknown-key",
        ),
        pytest.param(
            "  encryption: true\n",
            "models.yaml:5:15: bundle -> encryption: expected a mapping, got a boolean True "
            "(encrypt every model file; without a key, the workspace's development data key is used)",
            id="encryption-not-a-mapping",
        ),
    ],
)
def test_a_bad_signing_or_encryption_section(tmp_path, lines, expected):
    assert problems_for(tmp_path, ('  version: "1.4.0"\n', '  version: "1.4.0"\n' + lines), environ=KEY_VARIABLES) == [expected]


# ------------------------------------------------------------------ quantized share


def test_a_quantized_share_budget_bounds_the_quantized_variants_only(tmp_path):
    workspace = make_workspace(
        tmp_path,
        edit(
            VALID_SPEC,
            ("max_latency_ms: 33}", "max_latency_ms: 33, min_quantized_share: 0.9}"),
            ("int8: {quantize: int8}", "int8: {quantize: int8, budgets: {min_quantized_share: 0.95}}"),
        ),
    )
    budgets = {a.id: {b.key: b.limit for b in a.budgets} for a in load_plan(workspace, environ={}).artifacts()}
    assert "min_quantized_share" not in budgets["digits.fp32.tflite@pixel-8"]
    assert budgets["digits.fp16.tflite@pixel-8"]["min_quantized_share"] == 0.9
    assert budgets["digits.int8.onnx@snapdragon-8-gen-3"]["min_quantized_share"] == 0.95


def test_a_quantized_share_budget_on_an_fp32_variant(tmp_path):
    assert problems_for(tmp_path, ("fp32: {}", "fp32: {budgets: {min_quantized_share: 0.9}}")) == [
        "models.yaml:15:24: models -> digits -> variants -> fp32 -> budgets -> min_quantized_share: "
        "no metric 'quantized_share' to budget; this model measures: "
        + MEASURED.replace("quantized_share, ", "")
        + "; quantized_share applies to quantized variants only and variant 'fp32' is fp32: remove min_quantized_share or set quantize",
    ]


def test_a_quantized_share_budget_where_no_variant_is_quantized(tmp_path):
    assert problems_for(
        tmp_path,
        ("      fp16: {quantize: fp16}\n", ""),
        ("      int8: {quantize: int8}\n", ""),
        ("[fp32, fp16, int8]", "[fp32]"),
        ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [fp32]"),
        ("max_latency_ms: 33}", "max_latency_ms: 33, min_quantized_share: 0.9}"),
    ) == [
        "models.yaml:19:79: models -> digits -> budgets -> min_quantized_share: no metric 'quantized_share' to budget; "
        f"this model measures: {MEASURED.replace('quantized_share, ', '')}; quantized_share applies to quantized variants "
        "only and no variant of digits is quantized: remove min_quantized_share or set quantize",
    ]


def test_a_model_step_timeout_can_be_set_and_is_otherwise_the_builds_default(tmp_path):
    [default] = load_plan(make_workspace(tmp_path / "default"), environ={}).models
    assert default.timeout_minutes is None

    spec = edit(VALID_SPEC, ("    budget_overrides:", "    timeout_minutes: 30\n    budget_overrides:"))
    workspace = make_workspace(tmp_path / "set", spec)
    plan = load_plan(workspace, environ={})
    [model] = plan.models
    assert model.timeout_minutes == 30
    # Every step of the model that runs in the worker gets the limit; the bundle's steps run no model code.
    limits = {task["basename"]: task["actions"][0][2]["timeout_minutes"] for task in plan_tasks(plan, workspace) if "actions" in task}
    model_steps = dict.fromkeys(("source", "data", "reference", "convert", "evaluate"), 30)
    assert limits == model_steps | dict.fromkeys(("package", "report", "publish"))
