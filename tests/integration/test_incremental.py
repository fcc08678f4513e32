"""A build reruns exactly what a change affects, and nothing when nothing changed."""
import json
import os
import time

from tests.support.workspaces import ALL_TASKS, BUNDLE_TASKS, DIGITS_ARTIFACTS, model_tasks

PIXEL_8 = [a for a in DIGITS_ARTIFACTS if a.endswith("@pixel-8")]


def test_second_build_runs_nothing_and_imports_no_framework(built_workspace):
    run, imported = built_workspace.doit_in_process()
    assert run.executed == set(), run.describe()
    assert ALL_TASKS <= run.up_to_date, run.describe()
    assert imported == [], f"a no-op build imported {imported}"


def test_listing_tasks_imports_no_framework(built_workspace):
    run, imported = built_workspace.doit_in_process("list", "--all")
    assert "convert:digits.int8.tflite@pixel-8" in run.stdout
    assert imported == [], f"`doit list` imported {imported}"


def test_changing_a_variant_reruns_that_variant_on_each_of_its_targets(built_workspace):
    built_workspace.edit_spec("int8: {quantize: int8}", "int8: {quantize: dynamic_int8}")
    run = built_workspace.doit()
    int8 = ["digits.int8.tflite@pixel-8", "digits.int8.tflite@android-arm64-cpu"]
    expected = {f"{kind}:{a}" for kind in ("convert", "evaluate") for a in int8} | BUNDLE_TASKS
    assert run.executed == expected, run.describe()
    assert built_workspace.doit().executed == set()


def _manifest_entries(value, target):
    """Every mapping in the manifest that describes an artifact for ``target``."""
    if isinstance(value, dict):
        if value.get("target") == target and "delegates" in value:
            yield value
        for item in value.values():
            yield from _manifest_entries(item, target)
    elif isinstance(value, list):
        for item in value:
            yield from _manifest_entries(item, target)


def test_changing_a_target_profile_reruns_only_that_target(built_workspace):
    profile = built_workspace.root / "targets" / "pixel-8.yaml"
    text = profile.read_text(encoding="utf-8")
    assert "delegates: [xnnpack, gpu, nnapi]" in text
    profile.write_text(text.replace("delegates: [xnnpack, gpu, nnapi]", "delegates: [xnnpack, gpu]"), encoding="utf-8")
    run = built_workspace.doit()
    converts = {f"convert:{a}" for a in PIXEL_8}
    evaluates = {f"evaluate:{a}" for a in PIXEL_8}
    assert converts | BUNDLE_TASKS <= run.executed, run.describe()
    assert run.executed <= converts | evaluates | BUNDLE_TASKS, run.describe()

    manifest = json.loads((built_workspace.build / "bundles" / "test-bundle" / "0.3.0" / "manifest.json").read_text())
    entries = list(_manifest_entries(manifest, "pixel-8"))
    assert len(entries) == len(PIXEL_8)
    assert all(entry["delegates"] == ["xnnpack", "gpu"] for entry in entries)
    assert all(entry["delegates"] == ["xnnpack"] for entry in _manifest_entries(manifest, "android-arm64-cpu"))


def test_touching_a_recipe_without_changing_it_reruns_nothing(built_workspace):
    later = time.time() + 60
    for recipe in ("digits.py", "glyphs.py"):
        os.utime(built_workspace.root / "recipes" / recipe, (later, later))
    run = built_workspace.doit()
    assert run.executed == set(), run.describe()


def test_editing_a_recipe_reruns_its_models_chain_and_nothing_else(built_workspace):
    recipe = built_workspace.root / "recipes" / "digits.py"
    text = recipe.read_text(encoding="utf-8")
    assert "EPOCHS = 8\n" in text
    recipe.write_text(text.replace("EPOCHS = 8\n", "EPOCHS = 6\n"), encoding="utf-8")
    run = built_workspace.doit()
    assert run.executed == model_tasks("digits") | BUNDLE_TASKS, run.describe()
    assert built_workspace.doit().executed == set()


ONNX_CPU = "name: onnx-cpu\nsoc: a board\nplatform: linux\nformats:\n  onnx: {precisions: [fp32, int8], opset: 17, quantization: cpu}\n"


def test_changing_one_onnx_int8_variants_settings_reruns_only_its_conversion_not_the_export(built_workspace):
    workspace = built_workspace
    workspace.write("targets/onnx-cpu.yaml", ONNX_CPU)
    int8, targets = "      int8: {quantize: int8}\n", "      android-arm64-cpu: [fp32, int8]\n"
    workspace.edit_spec(int8, int8 + "      int8pt: {quantize: int8, per_channel: false}\n")
    workspace.edit_spec(targets, targets + "      onnx-cpu: [fp32, int8, int8pt]\n")
    onnx = [f"digits.{variant}.onnx@onnx-cpu" for variant in ("fp32", "int8", "int8pt")]
    run = workspace.doit()
    # One export of the source for the three ONNX variants; the source and the TFLite artifacts stay as they were.
    assert run.executed == {"export:digits.onnx-opset17"} | {f"{k}:{a}" for k in ("convert", "evaluate") for a in onnx} | BUNDLE_TASKS, (
        run.describe()
    )

    workspace.edit_spec("int8pt: {quantize: int8, per_channel: false}", "int8pt: {quantize: int8, per_channel: true}")
    # Every import the step worker makes goes to the log of the step that made it.
    run = workspace.doit(env={"PYTHONPROFILEIMPORTTIME": "1"})
    changed = "digits.int8pt.onnx@onnx-cpu"
    assert run.executed == {f"convert:{changed}", f"evaluate:{changed}"} | BUNDLE_TASKS, run.describe()
    for kind in ("convert", "evaluate"):
        log = (workspace.build / "logs" / kind / f"{changed}.log").read_text(encoding="utf-8")
        assert "import time:" in log, log[:2000]
        imported = {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}
        heavy = imported & {"tensorflow", "keras", "tf2onnx"}
        assert not heavy, f"{kind} of {changed} imported {heavy}"
    assert workspace.doit().executed == set()
