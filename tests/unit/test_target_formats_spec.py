"""A target entry that builds only some of its profile's formats: `{variants: [...], formats: [...]}` and `prefer` with formats.

VALID_SPEC (in spec_workspace.py) is the starting point; its line numbers are the ones quoted below.
"""
from __future__ import annotations

import pytest

from modelmake.spec import load_plan

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace, spec_problems

SNAPDRAGON = "snapdragon-8-gen-3: [int8]"


def plan_with(tmp_path, *replacements, files=None, profiles=None):
    return load_plan(make_workspace(tmp_path, edit(VALID_SPEC, *replacements), files=files, profiles=profiles), environ={})


def problems_for(tmp_path, *replacements, files=None, profiles=None):
    return spec_problems(make_workspace(tmp_path, edit(VALID_SPEC, *replacements), files=files, profiles=profiles))


def test_a_precision_one_format_lacks_suggests_building_only_the_others(tmp_path):
    # raspberry-pi-5 runs fp16 in TFLite, and its ONNX side has no fp16.
    assert problems_for(tmp_path, (SNAPDRAGON, f"{SNAPDRAGON}\n      raspberry-pi-5: [fp16]")) == [
        "models.yaml:21:24: models -> digits -> targets -> raspberry-pi-5 -> 0: raspberry-pi-5 cannot run fp16 in onnx "
        "(its profile builtin:raspberry-pi-5.yaml lists fp32, dynamic_int8, int8): remove 'fp16' from this target or pick "
        "another precision, or build only tflite here: raspberry-pi-5: {variants: [fp16], formats: [tflite]}",
    ]


def test_formats_builds_only_the_formats_named(tmp_path):
    plan = plan_with(tmp_path, (SNAPDRAGON, f"{SNAPDRAGON}\n      raspberry-pi-5: {{variants: [fp16, int8], formats: [tflite]}}"))
    artifacts = [a for a in plan.artifacts() if a.target == "raspberry-pi-5"]

    assert [(a.id, a.selection, a.preference) for a in artifacts] == [
        ("digits.fp16.tflite@raspberry-pi-5", None, 0),
        ("digits.int8.tflite@raspberry-pi-5", None, 1),
    ]


def test_a_mapping_with_variants_and_no_formats_builds_every_format(tmp_path):
    plan = plan_with(tmp_path, (SNAPDRAGON, "snapdragon-8-gen-3: {variants: [int8]}"))

    assert [a.id for a in plan.artifacts() if a.target == "snapdragon-8-gen-3"] == [
        "digits.int8.tflite@snapdragon-8-gen-3",
        "digits.int8.onnx@snapdragon-8-gen-3",
    ]


def test_formats_with_prefer_selects_among_the_formats_named(tmp_path):
    plan = plan_with(tmp_path, (SNAPDRAGON, "snapdragon-8-gen-3: {prefer: [int8, fp16], formats: [onnx]}"))

    assert [(a.id, a.selection, a.preference) for a in plan.artifacts() if a.target == "snapdragon-8-gen-3"] == [
        ("digits.int8.onnx@snapdragon-8-gen-3", "first_passing", 0),
        ("digits.fp16.onnx@snapdragon-8-gen-3", "first_passing", 1),
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            "{variants: [int8], formats: [coreml]}",
            "models.yaml:20:56: models -> digits -> targets -> snapdragon-8-gen-3 -> formats -> 0: snapdragon-8-gen-3 does not "
            "run coreml: its profile builtin:snapdragon-8-gen-3.yaml lists tflite, onnx; name one of those",
            id="not-in-the-profile",
        ),
        pytest.param(
            "{variants: [int8], formats: [tflit]}",
            "models.yaml:20:56: models -> digits -> targets -> snapdragon-8-gen-3 -> formats -> 0: "
            "'tflit' is not one of: tflite, onnx, coreml; did you mean 'tflite'?",
            id="unknown-format",
        ),
        pytest.param(
            "{variants: [int8], formats: []}",
            "models.yaml:20:55: models -> digits -> targets -> snapdragon-8-gen-3 -> formats: must not be empty: expected which "
            "of the formats the target's profile lists to build, such as [tflite] (default: every one of them)",
            id="empty",
        ),
        pytest.param(
            "{variants: [int8], prefer: [int8]}",
            "models.yaml:20:46: models -> digits -> targets -> snapdragon-8-gen-3 -> prefer: variants and prefer cannot both "
            "be given: list the variants to build under variants, or the variants to choose one from, best first, under prefer",
            id="variants-and-prefer",
        ),
        pytest.param(
            "{variants: [int8], select: first_passing}",
            "models.yaml:20:46: models -> digits -> targets -> snapdragon-8-gen-3 -> select: select chooses among the variants "
            "of prefer: rename variants to prefer, or remove select",
            id="select-without-prefer",
        ),
        pytest.param(
            "{formats: [tflite]}",
            "models.yaml:20:27: models -> digits -> targets -> snapdragon-8-gen-3: a target needs its variants: "
            "add variants: [...] (build each) or prefer: [...] (ship the first that passes)",
            id="no-variants",
        ),
    ],
)
def test_a_bad_formats_entry_is_reported_inside_it(tmp_path, entry, expected):
    assert problems_for(tmp_path, (SNAPDRAGON, f"snapdragon-8-gen-3: {entry}")) == [expected]


def test_a_format_the_source_cannot_be_built_into(tmp_path):
    # Core ML is converted from TensorFlow models, not from a .tflite file.
    phone = """\
        name: phone
        soc: a phone SoC
        platform: ios
        formats:
          tflite: {precisions: [fp32]}
          coreml: {precisions: [fp32], compute_units: ALL, minimum_deployment_target: iOS17}
    """
    files = {**DEFAULT_FILES, "models/digits.tflite": ""}
    problems = problems_for(
        tmp_path,
        ("source: {recipe: recipes/digits.py}", "source: {tflite: models/digits.tflite}"),
        (SNAPDRAGON, f"{SNAPDRAGON}\n      phone: {{variants: [fp32], formats: [coreml]}}"),
        files=files,
        profiles={"phone": phone},
    )

    assert problems == [
        "models.yaml:21:43: models -> digits -> targets -> phone -> formats -> 0: modelmake cannot build coreml from this "
        "model's tflite source; it builds tflite from keras/saved_model/recipe/tflite sources; onnx from "
        "keras/saved_model/recipe/tflite/onnx sources; coreml from keras/saved_model/recipe sources: remove coreml from formats",
    ]
