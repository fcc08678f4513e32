"""models.yaml -> BuildPlan: what a valid spec compiles to, and the exact error a user sees for each mistake.

Each bad spec is paired with the full text of every problem reported, so that a change to a
message, a line or a column is a visible change here.  VALID_SPEC (in spec_workspace.py) is
the starting point; its line numbers are the ones quoted below.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from modelmake.errors import SpecError, exit_code_for
from modelmake.plan import Budget
from modelmake.spec import DEFAULT_CREATED, load_plan

from spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

REPOSITORY = Path(__file__).resolve().parents[2]

NAME_RULE = (
    "expected a name of lower-case letters, digits, '-' and '_' that starts with a letter or digit; "
    "it appears in task names and file names"
)
KNOWN_TARGETS = "android-arm64-cpu, apple-a17, pixel-8, raspberry-pi-5, snapdragon-8-gen-3"
MEASURED = "size_kb, latency_ms, top1, top3, accuracy_drop"


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
    ]
    int8 = next(a for a in plan.artifacts() if a.id == "digits.int8.tflite@pixel-8")
    assert (int8.model, int8.variant, int8.format, int8.target, int8.precision) == ("digits", "int8", "tflite", "pixel-8", "int8")
    assert int8.name == "digits.int8.tflite"
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
    assert (model.input.layout, model.input.scale, model.input.offset) == ("NHWC", "1/16", "0")
    assert (model.output.labels, model.output.top_k) == ("recipes/digits_labels.txt", 3)


def test_budgets_are_merged_with_the_per_target_overrides(tmp_path):
    plan = load_plan(make_workspace(tmp_path), environ={})
    budgets = {a.id: a.budgets for a in plan.artifacts()}

    assert budgets["digits.int8.tflite@pixel-8"] == (
        Budget(key="max_size_kb", metric="size_kb", bound="max", limit=200.0),
        Budget(key="max_accuracy_drop", metric="accuracy_drop", bound="max", limit=0.005),
        Budget(key="max_latency_ms", metric="latency_ms", bound="max", limit=33.0),
    )
    # The override replaces the model's latency budget for this target only, and keeps the others.
    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"] == (
        Budget(key="max_size_kb", metric="size_kb", bound="max", limit=200.0),
        Budget(key="max_accuracy_drop", metric="accuracy_drop", bound="max", limit=0.005),
        Budget(key="max_latency_ms", metric="latency_ms", bound="max", limit=10.0),
    )


def test_an_override_may_add_a_budget_the_model_does_not_set(tmp_path):
    spec = edit(VALID_SPEC, ("{max_latency_ms: 10}", "{max_latency_ms: 10, min_top1: 0.95}"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})
    budgets = {a.id: {b.key: b.limit for b in a.budgets} for a in plan.artifacts()}

    assert budgets["digits.int8.tflite@snapdragon-8-gen-3"]["min_top1"] == 0.95
    assert "min_top1" not in budgets["digits.int8.tflite@pixel-8"]


def test_whole_floats_where_integers_are_expected_become_integers(tmp_path):
    # JSON Schema counts 3.0 as an integer; the plan must not name a metric "top3.0".
    spec = edit(VALID_SPEC, ("top_k: 3", "top_k: 3.0"), ("samples: 200", "samples: 200.0"), ("max_size_kb: 200", "max_size_kb: 200, min_top3: 0.99"))
    (model,) = load_plan(make_workspace(tmp_path, spec), environ={}).models

    assert (model.output.top_k, model.calibration.samples) == (3, 200)
    assert type(model.output.top_k) is int and type(model.calibration.samples) is int
    assert "min_top3" in {b.key for b in model.artifacts[0].budgets}


def test_integer_io_is_set_for_int8_only_on_a_profile_that_asks_for_it(tmp_path):
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]", "snapdragon-8-gen-3: [fp16, int8]"))
    plan = load_plan(make_workspace(tmp_path, spec), environ={})

    assert {a.id: a.integer_io for a in plan.artifacts()} == {
        "digits.fp32.tflite@pixel-8": False,
        "digits.fp16.tflite@pixel-8": False,
        "digits.int8.tflite@pixel-8": False,  # pixel-8's profile has no integer_io
        "digits.fp16.tflite@snapdragon-8-gen-3": False,  # integer_io applies to full int8 only
        "digits.int8.tflite@snapdragon-8-gen-3": True,
    }


@pytest.mark.parametrize(
    ("spec_created", "environ", "expected"),
    [
        (None, {}, DEFAULT_CREATED),
        (None, {"SOURCE_DATE_EPOCH": "1700000000"}, 1700000000),
        (1600000000, {}, 1600000000),
        (1600000000, {"SOURCE_DATE_EPOCH": "1700000000"}, 1700000000),
        # A zip archive cannot record a time before 1980: earlier epochs are raised to it.
        (None, {"SOURCE_DATE_EPOCH": "0"}, DEFAULT_CREATED),
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

    assert [m.name for m in plan.models] == ["digits", "mobilenet"]
    assert artifacts["digits.int8.tflite@snapdragon-8-gen-3"].integer_io
    assert {b.key: b.limit for b in artifacts["digits.fp32.tflite@raspberry-pi-5"].budgets}["max_latency_ms"] == 10.0
    assert {b.key: b.limit for b in artifacts["digits.fp32.tflite@pixel-8"].budgets}["max_latency_ms"] == 5.0
    assert all(a.format == "tflite" for a in artifacts.values())


def test_a_spec_error_exits_with_code_2(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_plan(make_workspace(tmp_path, edit(VALID_SPEC, ("format: 1", "format: 2"))), environ={})

    assert exit_code_for(caught.value) == 2
    assert str(caught.value) == "1 problem in the spec:\n  models.yaml:1:9: format: must be 1, got 2"


# ------------------------------------------------------------------ unknown keys


def test_an_unknown_key_names_its_line_and_column_and_suggests_the_right_one(tmp_path):
    assert problems_for(tmp_path, ("int8: {quantize: int8}", "int8: {quantise: int8}")) == [
        "models.yaml:17:14: models -> digits -> variants -> int8 -> quantise: "
        "unknown key 'quantise'; did you mean 'quantize'? allowed keys: per_channel, quantize",
    ]


def test_a_misspelt_top_level_key_is_unknown_and_leaves_the_real_one_missing(tmp_path):
    assert problems_for(tmp_path, ("bundle:", "bundel:")) == [
        "models.yaml:1:1: (top level): missing required key 'bundle'",
        "models.yaml:2:1: bundel: unknown key 'bundel'; did you mean 'bundle'? allowed keys: bundle, format, models",
    ]


def test_an_unknown_key_with_no_close_match_lists_the_allowed_keys(tmp_path):
    assert problems_for(tmp_path, ("format: 1\n", "format: 1\nversion: 2\n")) == [
        "models.yaml:2:1: version: unknown key 'version'; allowed keys: bundle, format, models",
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
        "unknown key 'quantise'; did you mean 'quantize'? allowed keys: per_channel, quantize",
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
            "must not be empty: expected the variants to build for this target",
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
        "models.yaml:21:34: models -> digits -> targets -> snapdragon-8-gen-3 -> 1: snapdragon-8-gen-3 cannot run "
        "dynamic_int8 in tflite (its profile builtin:snapdragon-8-gen-3.yaml lists fp32, fp16, int8): "
        "remove 'dynamic' from this target or pick another precision",
        "models.yaml:22:27: models -> digits -> targets -> android-arm64-cpu -> 0: android-arm64-cpu cannot run "
        "fp16 in tflite (its profile builtin:android-arm64-cpu.yaml lists fp32, dynamic_int8, int8): "
        "remove 'fp16' from this target or pick another precision",
    ]


def test_a_budget_on_a_top_k_the_model_does_not_report(tmp_path):
    assert problems_for(tmp_path, ("max_size_kb: 200", "max_size_kb: 200, min_top5: 0.99")) == [
        "models.yaml:21:33: models -> digits -> budgets -> min_top5: no metric 'top5' to budget; "
        f"this model measures: {MEASURED}; to measure top5 set models -> digits -> io -> output -> top_k: 5",
    ]


def test_an_accuracy_budget_without_evaluation_data(tmp_path):
    assert problems_for(tmp_path, ("      evaluation: {recipe: recipes/digits.py, split: test}\n", "")) == [
        "models.yaml:20:33: models -> digits -> budgets -> max_accuracy_drop: no metric 'accuracy_drop' to budget; "
        "this model measures: size_kb, latency_ms; "
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


def test_a_tflite_source_cannot_be_quantized(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.tflite": ""}
    problems = problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"), files=files)

    assert problems == [
        "models.yaml:16:24: models -> digits -> variants -> fp16 -> quantize: a tflite source is already converted and "
        "cannot be re-quantized: use a keras, saved_model or recipe source, or drop 'quantize'",
        "models.yaml:17:24: models -> digits -> variants -> int8 -> quantize: a tflite source is already converted and "
        "cannot be re-quantized: use a keras, saved_model or recipe source, or drop 'quantize'",
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

    assert [a.id for a in plan.artifacts()] == ["digits.fp32.tflite@pixel-8", "digits.fp32.tflite@snapdragon-8-gen-3"]
    assert plan.models[0].source.function == ""


def test_a_recipe_only_key_on_another_source(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.keras": ""}
    keras = "source: {keras: models/digits.keras, function: build_model}"
    assert problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", keras), files=files) == [
        "models.yaml:7:42: models -> digits -> source -> function: 'function' applies only to recipe sources: remove it",
    ]


def test_a_target_whose_formats_this_engine_cannot_build(tmp_path):
    added = "snapdragon-8-gen-3: [int8]\n      apple-a17: [fp16, int8]"
    assert problems_for(tmp_path, ("snapdragon-8-gen-3: [int8]", added)) == [
        "models.yaml:21:7: models -> digits -> targets -> apple-a17: modelmake cannot build any format apple-a17 runs "
        "(coreml) from this model's recipe source; it builds tflite from keras/saved_model/recipe/tflite sources: "
        "remove apple-a17 from this model's targets",
    ]


def test_a_source_kind_that_no_format_is_built_from(tmp_path):
    files = {**DEFAULT_FILES, "models/digits.onnx": ""}
    problems = problems_for(tmp_path, ("source: {recipe: recipes/digits.py}", "source: {onnx: models/digits.onnx}"), files=files)

    assert problems == [
        f"models.yaml:{line}:7: models -> digits -> targets -> {target}: modelmake cannot build any format {target} runs "
        "(tflite) from this model's onnx source; it builds tflite from keras/saved_model/recipe/tflite sources: "
        f"remove {target} from this model's targets"
        for line, target in [(19, "pixel-8"), (20, "snapdragon-8-gen-3")]
    ]


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
