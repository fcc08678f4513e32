"""Chipset profiles: the built-ins are valid, a workspace's targets/ adds or overrides one, and a bad one is named."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from referencing import Registry, Resource

from modelmake import formats
from modelmake.formats.coreml import CoremlSettings
from modelmake.formats.onnx import OnnxSettings
from modelmake.formats.tflite import TfliteSettings
from modelmake.kinds import Precision
from modelmake.plan import FormatSupport
from modelmake.spec import BUILTIN_PROFILES, SCHEMA_DIR, load_plan, load_profile, profile_files
from modelmake.spec.schema import composed_schemas, stale_files
from modelmake.yamlfile import load_yaml

from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace, spec_problems

BUILTINS = sorted(BUILTIN_PROFILES.glob("*.yaml"))
TFLITE_KEYS = "accelerator, delegates, integer_io, precisions, require_full_coverage"
ONNX_KEYS = "accelerator, activation_type, execution_providers, opset, precisions, quantization, require_full_coverage"

PIXEL_8_OVERRIDE = """\
# This workspace's own idea of a Pixel 8
name: pixel-8
soc: Google Tensor G3
platform: android
formats:
  tflite:
    delegates: [xnnpack, gpu]
    precisions: [fp32, int8]
"""


def target_schema_validator():
    schemas = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in SCHEMA_DIR.glob("*.schema.json")}
    registry = Registry().with_resources((name, Resource.from_contents(s)) for name, s in schemas.items())
    schema = schemas["target.schema.json"]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def test_there_are_built_in_profiles():
    assert [p.stem for p in BUILTINS] == ["android-arm64-cpu", "apple-a17", "pixel-8", "raspberry-pi-5", "snapdragon-8-gen-3"]


@pytest.mark.parametrize("path", BUILTINS, ids=[p.stem for p in BUILTINS])
def test_every_built_in_profile_validates_and_is_named_after_its_file(path):
    data = load_yaml(path, f"builtin:{path.name}").data

    assert list(target_schema_validator().iter_errors(data)) == []
    assert data["name"] == path.stem
    profile = load_profile(path, f"builtin:{path.name}")
    assert (profile.name, profile.profile_file) == (path.stem, f"builtin:{path.name}")
    assert profile.formats and all(support.precisions for support in profile.formats.values())


def test_the_built_in_profiles_say_what_the_spec_rules_rely_on():
    profiles = {p.stem: load_profile(p, f"builtin:{p.name}") for p in BUILTINS}

    assert list(profiles["apple-a17"].formats) == ["coreml"]
    assert profiles["snapdragon-8-gen-3"].formats["tflite"].settings.integer_io
    assert "dynamic_int8" not in profiles["snapdragon-8-gen-3"].formats["tflite"].precisions
    assert "fp16" not in profiles["android-arm64-cpu"].formats["tflite"].precisions
    assert profiles["pixel-8"].formats["tflite"].settings.delegates == ("xnnpack", "gpu", "nnapi")
    assert {p.platform for p in profiles.values()} == {"android", "ios", "linux"}
    # These build one artifact per format for each variant.
    assert {name for name, p in profiles.items() if list(p.formats) == ["tflite", "onnx"]} == {
        "android-arm64-cpu", "raspberry-pi-5", "snapdragon-8-gen-3"
    }
    assert list(profiles["pixel-8"].formats) == ["tflite"]
    assert "fp16" not in profiles["android-arm64-cpu"].formats["onnx"].precisions
    assert "dynamic_int8" not in profiles["snapdragon-8-gen-3"].formats["onnx"].precisions


def test_the_built_in_profiles_carry_their_onnx_coreml_and_accelerator_settings():
    profiles = {p.stem: load_profile(p, f"builtin:{p.name}") for p in BUILTINS}
    snapdragon = profiles["snapdragon-8-gen-3"].formats

    assert snapdragon["onnx"] == FormatSupport(
        format="onnx",
        precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
        settings=OnnxSettings(
            execution_providers=("QNNExecutionProvider", "CPUExecutionProvider"), opset=17, quantization="qnn", activation_type="uint16"
        ),
        accelerator="qnn",
    )
    assert (snapdragon["tflite"].accelerator, snapdragon["tflite"].require_full_coverage) == ("npu", False)
    assert profiles["pixel-8"].formats["tflite"].accelerator == "gpu"
    assert profiles["android-arm64-cpu"].formats["onnx"].settings.execution_providers == (
        "XnnpackExecutionProvider",
        "CPUExecutionProvider",
    )
    assert profiles["raspberry-pi-5"].formats["onnx"].accelerator is None
    assert profiles["apple-a17"].formats["coreml"] == FormatSupport(
        format="coreml",
        precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
        settings=CoremlSettings(compute_units="ALL", minimum_deployment_target="iOS17"),
    )


def test_format_settings_a_profile_leaves_out_take_their_defaults(tmp_path):
    minimal = """\
        name: phone
        soc: Some SoC
        platform: android
        formats:
          tflite: {precisions: [fp32]}
          onnx: {precisions: [fp32]}
          coreml: {precisions: [fp16]}
    """
    workspace = make_workspace(tmp_path, profiles={"phone": minimal})
    formats = load_profile(workspace / "targets" / "phone.yaml", "targets/phone.yaml").formats

    assert formats["tflite"] == FormatSupport(format="tflite", precisions=(Precision.FP32,), settings=TfliteSettings())
    assert (formats["tflite"].settings.delegates, formats["tflite"].settings.integer_io, formats["tflite"].accelerator) == ((), False, None)
    assert formats["onnx"].settings == OnnxSettings(execution_providers=(), opset=17, quantization="cpu", activation_type="uint8")
    assert formats["onnx"].require_full_coverage is False
    assert formats["coreml"].settings == CoremlSettings(compute_units="ALL", minimum_deployment_target="iOS17")


def test_a_profile_may_set_every_format_setting(tmp_path):
    full = """\
        name: phone
        soc: Some SoC
        platform: android
        formats:
          tflite: {precisions: [int8], delegates: [nnapi], integer_io: true, accelerator: npu, require_full_coverage: true}
          onnx:
            precisions: [fp32, int8]
            execution_providers: [NnapiExecutionProvider]
            opset: 21
            quantization: qnn
            activation_type: uint16
            accelerator: qnn
            require_full_coverage: false
          coreml: {precisions: [fp16], compute_units: CPU_AND_NE, minimum_deployment_target: macOS14}
    """
    workspace = make_workspace(tmp_path, profiles={"phone": full})
    formats = load_profile(workspace / "targets" / "phone.yaml", "targets/phone.yaml").formats

    assert dict(formats) == {
        "tflite": FormatSupport(
            format="tflite",
            precisions=(Precision.INT8,),
            settings=TfliteSettings(delegates=("nnapi",), integer_io=True),
            accelerator="npu",
            require_full_coverage=True,
        ),
        "onnx": FormatSupport(
            format="onnx",
            precisions=(Precision.FP32, Precision.INT8),
            settings=OnnxSettings(execution_providers=("NnapiExecutionProvider",), opset=21, quantization="qnn", activation_type="uint16"),
            accelerator="qnn",
            require_full_coverage=False,
        ),
        "coreml": FormatSupport(
            format="coreml",
            precisions=(Precision.FP16,),
            settings=CoremlSettings(compute_units="CPU_AND_NE", minimum_deployment_target="macOS14"),
        ),
    }


def test_the_schemas_themselves_are_valid():
    for path in SCHEMA_DIR.glob("*.schema.json"):
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.validators.validator_for(schema).check_schema(schema)


def test_the_schema_files_say_what_validation_uses():
    # A new precision or format changes the composed schemas: `python -m modelmake.spec.schema --write` updates the files.
    assert stale_files() == []
    schemas = composed_schemas()
    precision = schemas["models.schema.json"]["$defs"]["precision"]
    assert precision["enum"] == [p.value for p in Precision]
    assert all(re.search(rf"\b{p.value}:", precision["description"]) for p in Precision), "describe every precision"
    assert list(schemas["target.schema.json"]["properties"]["formats"]["properties"]) == list(formats.FORMATS)
    assert set(schemas["models.schema.json"]["$defs"]["source"]["properties"]) >= {
        kind for backend in formats.backends() for kind in backend.source_kinds
    }


def test_a_workspace_profile_overrides_the_built_in(tmp_path):
    workspace = make_workspace(tmp_path, profiles={"pixel-8": PIXEL_8_OVERRIDE})

    assert profile_files(workspace)["pixel-8"] == (workspace / "targets" / "pixel-8.yaml", "targets/pixel-8.yaml")
    assert profile_files(workspace)["apple-a17"] == (BUILTIN_PROFILES / "apple-a17.yaml", "builtin:apple-a17.yaml")
    # The override drops fp16, which the model builds for pixel-8.
    assert spec_problems(workspace) == [
        "models.yaml:19:23: models -> digits -> targets -> pixel-8 -> 1: pixel-8 cannot run fp16 in tflite "
        "(its profile targets/pixel-8.yaml lists fp32, int8): remove 'fp16' from this target or pick another precision",
    ]


def test_the_plan_carries_the_overriding_profile(tmp_path):
    workspace = make_workspace(tmp_path, edit(VALID_SPEC, ("[fp32, fp16, int8]", "[fp32, int8]")), profiles={"pixel-8": PIXEL_8_OVERRIDE})
    profile = load_plan(workspace, environ={}).targets["pixel-8"]

    assert profile.profile_file == "targets/pixel-8.yaml"
    assert profile.formats["tflite"].settings.delegates == ("xnnpack", "gpu")
    assert (profile.min_os, profile.description) == ("", "")


def test_a_workspace_profile_adds_a_target(tmp_path):
    coral = """\
        name: coral-dev-board
        soc: NXP i.MX 8M with Edge TPU
        platform: linux
        formats:
          tflite: {delegates: [edgetpu], precisions: [int8], integer_io: true}
    """
    spec = edit(VALID_SPEC, ("snapdragon-8-gen-3: [int8]\n", "snapdragon-8-gen-3: [int8]\n      coral-dev-board: [int8]\n"))
    plan = load_plan(make_workspace(tmp_path, spec, profiles={"coral-dev-board": coral}), environ={})

    coral_artifacts = [a for a in plan.artifacts() if a.target == "coral-dev-board"]
    assert [a.id for a in coral_artifacts] == ["digits.int8.tflite@coral-dev-board"]
    assert plan.targets["coral-dev-board"].formats["tflite"].settings.integer_io
    assert plan.targets["coral-dev-board"].profile_file == "targets/coral-dev-board.yaml"


def test_an_unknown_target_lists_the_workspace_profiles_too(tmp_path):
    coral = "name: coral-dev-board\nsoc: Edge TPU\nplatform: linux\nformats: {tflite: {precisions: [int8]}}\n"
    spec = edit(VALID_SPEC, ("      pixel-8: [fp32, fp16, int8]\n", "      coral: [int8]\n"))

    assert spec_problems(make_workspace(tmp_path, spec, profiles={"coral-dev-board": coral})) == [
        "models.yaml:19:7: models -> digits -> targets -> coral: unknown target 'coral'; "
        "known targets: android-arm64-cpu, apple-a17, coral-dev-board, pixel-8, raspberry-pi-5, snapdragon-8-gen-3 "
        "(add targets/coral.yaml to define it)",
    ]


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        pytest.param(
            ("    delegates", "    delegate"),
            "targets/pixel-8.yaml:7:5: formats -> tflite -> delegate: unknown key 'delegate'; "
            f"did you mean 'delegates'? allowed keys: {TFLITE_KEYS}",
            id="unknown-key",
        ),
        pytest.param(
            ("name: pixel-8", "name: pixel8"),
            "targets/pixel-8.yaml:2:7: name: name 'pixel8' does not match the file name 'pixel-8.yaml': "
            "set name: pixel-8, or rename the file to pixel8.yaml",
            id="name-mismatch",
        ),
        pytest.param(
            ("name: pixel-8", "name: Pixel-8"),
            "targets/pixel-8.yaml:2:7: name: 'Pixel-8' is not valid: expected the profile's name, "
            "equal to its file name without .yaml: lower-case letters, digits, '-' and '_'",
            id="name-pattern",
        ),
        pytest.param(
            ("[xnnpack, gpu]", "[xnnpack, gpu"),
            "targets/pixel-8.yaml:8:15: invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence that starts on line 7, column 16); close the '[' opened there",
            id="invalid-yaml",
        ),
        pytest.param(
            ("soc: Google Tensor G3\n", ""),
            "targets/pixel-8.yaml:2:1: (top level): missing required key 'soc'",
            id="missing-key",
        ),
        pytest.param(
            ("[fp32, int8]", "[fp32, float16]"),
            "targets/pixel-8.yaml:8:24: formats -> tflite -> precisions -> 1: "
            "'float16' is not one of: fp32, fp16, dynamic_int8, int8; did you mean 'fp16'?",
            id="precision",
        ),
        pytest.param(
            ("gpu]", "npu]"),
            "targets/pixel-8.yaml:7:26: formats -> tflite -> delegates -> 1: "
            "'npu' is not one of: xnnpack, gpu, nnapi, qnn, hexagon, edgetpu; did you mean 'gpu'?",
            id="delegate",
        ),
        pytest.param(
            ("platform: android", "platform: Android"),
            "targets/pixel-8.yaml:4:11: platform: 'Android' is not one of: android, ios, linux; did you mean 'android'?",
            id="platform",
        ),
        pytest.param(
            ("    precisions: [fp32, int8]\n", "    precisions: [fp32, int8]\n    execution_providers: [CPUExecutionProvider]\n"),
            "targets/pixel-8.yaml:9:5: formats -> tflite -> execution_providers: unknown key 'execution_providers'; "
            f"allowed keys: {TFLITE_KEYS}",
            id="onnx-key-in-tflite",
        ),
        pytest.param(
            ("    precisions: [fp32, int8]\n", "    precisions: [fp32, int8]\n    accelerator: tpu\n"),
            "targets/pixel-8.yaml:9:18: formats -> tflite -> accelerator: 'tpu' is not one of: gpu, npu; did you mean 'npu'?",
            id="accelerator",
        ),
        pytest.param(
            ("    precisions: [fp32, int8]\n", "    precisions: [fp32, int8]\n    require_full_coverage: 1\n"),
            "targets/pixel-8.yaml:9:28: formats -> tflite -> require_full_coverage: expected a boolean, got an integer 1 "
            "(fail an artifact when any of its ops would fall back to the CPU)",
            id="require-full-coverage",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  onnx: {precisions: [fp32], delegates: [qnn]}\n"),
            f"targets/pixel-8.yaml:6:30: formats -> onnx -> delegates: unknown key 'delegates'; allowed keys: {ONNX_KEYS}",
            id="tflite-key-in-onnx",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  onnx: {precisions: [fp32], quantization: qnnn}\n"),
            "targets/pixel-8.yaml:6:44: formats -> onnx -> quantization: 'qnnn' is not one of: cpu, qnn; did you mean 'qnn'?",
            id="onnx-quantization",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  onnx: {precisions: [int8], activation_type: int16}\n"),
            "targets/pixel-8.yaml:6:47: formats -> onnx -> activation_type: "
            "'int16' is not one of: uint8, uint16; did you mean 'uint16'?",
            id="onnx-activation-type",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  onnx: {precisions: [fp32], opset: 12}\n"),
            "targets/pixel-8.yaml:6:37: formats -> onnx -> opset: expected at least 13, got 12",
            id="onnx-opset",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  coreml: {precisions: [fp16], delegates: [gpu]}\n"),
            "targets/pixel-8.yaml:6:32: formats -> coreml -> delegates: unknown key 'delegates'; "
            "allowed keys: compute_units, minimum_deployment_target, precisions",
            id="tflite-key-in-coreml",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  coreml: {precisions: [fp16], accelerator: npu}\n"),
            "targets/pixel-8.yaml:6:32: formats -> coreml -> accelerator: unknown key 'accelerator'; "
            "allowed keys: compute_units, minimum_deployment_target, precisions",
            id="accelerator-in-coreml",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  coreml: {precisions: [fp16], compute_units: NE}\n"),
            "targets/pixel-8.yaml:6:47: formats -> coreml -> compute_units: "
            "'NE' is not one of: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE",
            id="coreml-compute-units",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  coreml: {precisions: [fp16], minimum_deployment_target: ios17}\n"),
            "targets/pixel-8.yaml:6:59: formats -> coreml -> minimum_deployment_target: "
            "'ios17' is not one of: iOS15, iOS16, iOS17, iOS18, macOS12, macOS13, macOS14, macOS15; did you mean 'iOS17'?",
            id="coreml-deployment-target",
        ),
        pytest.param(
            ("formats:\n", "formats:\n  openvino: {precisions: [fp32]}\n"),
            "targets/pixel-8.yaml:6:3: formats -> openvino: unknown key 'openvino'; allowed keys: coreml, onnx, tflite",
            id="unknown-format",
        ),
    ],
)
def test_a_bad_workspace_profile_is_named_with_its_file_and_line(tmp_path, replacement, expected):
    workspace = make_workspace(tmp_path, profiles={"pixel-8": edit(PIXEL_8_OVERRIDE, replacement)})

    assert spec_problems(workspace) == [expected]


def test_a_bad_profile_is_reported_once_where_models_yaml_first_uses_it(tmp_path):
    broken = edit(PIXEL_8_OVERRIDE, ("    delegates", "    delegate"))
    second_model = "  letters:\n    source: {recipe: recipes/digits.py}\n    variants: {fp32: {}}\n    targets: {pixel-8: [fp32]}\n"
    spec = (
        edit(
            VALID_SPEC, ("[fp32, fp16, int8]", "[fp32, fp16, int4]"), ("      pixel-8: [", "      raspberry-pi-5: [fp32]\n      pixel-8: [")
        )
        + second_model
    )

    assert spec_problems(make_workspace(tmp_path, spec, profiles={"pixel-8": broken})) == [
        "targets/pixel-8.yaml:7:5: formats -> tflite -> delegate: unknown key 'delegate'; "
        f"did you mean 'delegates'? allowed keys: {TFLITE_KEYS}",
        "models.yaml:20:29: models -> digits -> targets -> pixel-8 -> 2: unknown variant 'int4'; did you mean 'int8'? "
        "variants of digits: fp32, fp16, int8 (declare it under models -> digits -> variants)",
    ]


def test_a_bad_profile_no_model_uses_is_not_an_error(tmp_path):
    workspace = make_workspace(tmp_path, profiles={"unused": "name: something-else\n"})

    assert [a.id for a in load_plan(workspace, environ={}).artifacts()][0] == "digits.fp32.tflite@pixel-8"


def test_profiles_outside_targets_or_with_another_suffix_are_ignored(tmp_path):
    workspace = make_workspace(tmp_path, files={"targets/pixel-8.yml": "not: a profile\n", "pixel-8.yaml": "not: a profile\n"})

    assert profile_files(workspace)["pixel-8"][1] == "builtin:pixel-8.yaml"
    assert set(profile_files(workspace)) == {p.stem for p in BUILTINS}


def test_a_workspace_without_targets_uses_the_built_ins(tmp_path):
    workspace = make_workspace(tmp_path)

    assert not (workspace / "targets").exists()
    assert {name: display for name, (_, display) in profile_files(workspace).items()} == {
        p.stem: f"builtin:{p.name}" for p in BUILTINS
    }

