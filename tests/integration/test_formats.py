"""ONNX artifacts through the whole build: accelerator coverage, budgets, variant selection and conditions.

Each workspace's model is an ONNX file written with onnx.helper (onnx_workspaces.py),
so nothing here trains or imports TensorFlow and each build takes seconds.
"""
from __future__ import annotations

import re
import zipfile

import pytest

from tests.support.onnx_workspaces import bundle_files, manifest, metrics, onnx_workspace, profile, report, report_rows

MODEL = "mlp"


def _model(
    targets: str, *, budgets: str = "", overrides: str = "", conditions: str = "", variants: str = "{fp32: {}, int8: {quantize: int8}}"
) -> str:
    """The model's block as written under `models:` (the model's name at column 0)."""
    evaluation = "{file: data/evaluation.npz" + (f", conditions: {conditions}" if conditions else "") + "}"
    lines = [
        f"{MODEL}:",
        "  description: A two-layer perceptron written with onnx.helper",
        "  source: {onnx: models/mlp.onnx}",
        "  data:",
        "    calibration: {file: data/calibration.npz}",
        f"    evaluation: {evaluation}",
        "  io:",
        "    input: {layout: NC, scale: 1/16}",
        f"  variants: {variants}",
        f"  targets: {targets}",
    ]
    if budgets:
        lines.append(f"  budgets: {budgets}")
    if overrides:
        lines.append(f"  budget_overrides: {overrides}")
    return "\n".join(lines) + "\n"


def _failure(run) -> str:
    """doit's output of a failed build with line breaks folded, so a message wrapped by doit still matches."""
    return re.sub(r"\s+", " ", run.output)


# --- (a) an op the QNN execution provider lacks -----------------------------------------------

def test_an_op_qnn_lacks_fails_a_target_that_requires_full_coverage_and_names_it(fresh_workspace):
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model("{npu-phone: [fp32]}", variants="{fp32: {}}"),
        profiles={"npu-phone": profile("npu-phone", accelerator="qnn", require_full_coverage=True, precisions=("fp32",))},
        extra_op="Erf",
    )
    run = workspace.doit(ok=False)
    output = _failure(run)
    assert "TaskFailed - taskid:package:formats" in output and "the bundle is not packaged" in output, run.describe()
    assert "Erf x1" in output, run.describe()
    assert "min_accelerator_coverage" in output and "qnn" in output, run.describe()
    measured = metrics(workspace, "npu-phone", f"{MODEL}.fp32.onnx")
    assert measured["coverage"]["fallback"] == {"Erf": 1}
    assert measured["metrics"]["accelerator_coverage"] < 1.0
    assert f"{measured['metrics']['accelerator_coverage']:.4g}" in output, run.describe()
    assert not (workspace.build / "bundles").exists()

    # The same profile without the requirement: the build passes and the report says Erf runs on the CPU.
    workspace.write("targets/npu-phone.yaml", profile("npu-phone", accelerator="qnn", precisions=("fp32",)))
    workspace.doit()
    measured = metrics(workspace, "npu-phone", f"{MODEL}.fp32.onnx")
    assert measured["coverage"]["fallback"] == {"Erf": 1}
    assert "min_accelerator_coverage" not in {b["key"] for b in measured["budgets"]}
    (row,) = report_rows(report(workspace), MODEL, "npu-phone").values()
    coverage = measured["coverage"]
    assert f"{coverage['on_accelerator']}/{coverage['ops']} on qnn (CPU: Erf x1)" in row, row
    assert "shipped" in row
    assert bundle_files(workspace) == [f"npu-phone/{MODEL}.fp32.onnx"]


def test_a_model_qnn_takes_whole_passes_full_coverage(fresh_workspace):
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model("{npu-phone: [fp32]}", variants="{fp32: {}}"),
        profiles={"npu-phone": profile("npu-phone", accelerator="qnn", require_full_coverage=True, precisions=("fp32",))},
    )
    workspace.doit()
    measured = metrics(workspace, "npu-phone", f"{MODEL}.fp32.onnx")
    assert measured["coverage"]["fallback"] == {}
    assert measured["metrics"]["accelerator_coverage"] == 1.0
    (verdict,) = [b for b in measured["budgets"] if b["key"] == "min_accelerator_coverage"]
    assert verdict["passed"] is True


# --- (b) a budget tighter than the measured figure -----------------------------------------------

@pytest.mark.parametrize(
    ("budget", "limit", "broken", "passing", "model_budgets", "variants"),
    [
        # fp32 is about 75 KiB, int8 about 25 KiB: a model budget of 40 KiB breaks fp32 only.
        ("max_size_kb", 40, "fp32", "int8", "{max_size_kb: 40}", "{fp32: {}, int8: {quantize: int8}}"),
        # int8's outputs differ from the float model's a little: a variant budget of 0.999999 breaks it.
        (
            "min_cosine_similarity", 0.999999, "int8", "fp32", "",
            "{fp32: {}, int8: {quantize: int8, budgets: {min_cosine_similarity: 0.999999}}}",
        ),
    ],
    ids=["max_size_kb", "min_cosine_similarity"],
)
def test_a_broken_budget_fails_the_package_task_with_the_figure_and_the_limit(
    fresh_workspace, budget, limit, broken, passing, model_budgets, variants
):
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model("{cpu-board: [fp32, int8]}", budgets=model_budgets, variants=variants),
        profiles={"cpu-board": profile("cpu-board")},
    )
    run = workspace.doit(ok=False)
    output = _failure(run)
    metric = budget.split("_", 1)[1]
    measured = metrics(workspace, "cpu-board", f"{MODEL}.{broken}.onnx")
    value = measured["metrics"][metric]
    (verdict,) = [b for b in measured["budgets"] if b["key"] == budget]
    assert verdict["passed"] is False and verdict["value"] == value and verdict["limit"] == limit
    side = "over" if budget.startswith("max") else "under"
    expected = f"- {MODEL}.{broken}.onnx@cpu-board: over budget: {metric} is {value:.4g}, {side} its {budget} of {limit:g} ("
    assert "TaskFailed - taskid:package:formats" in output and "the bundle is not packaged: 1 problem" in output, run.describe()
    assert expected in output, run.describe()
    print(f"\n{MODEL}.{broken}.onnx@cpu-board: {metric} {value:.6g} against {budget} {limit:g}")
    # The artifact within its budgets is measured and passes; no bundle comes of a failed build.
    assert f"evaluate:{MODEL}.{passing}.onnx@cpu-board" in run.executed
    assert all(v["passed"] for v in metrics(workspace, "cpu-board", f"{MODEL}.{passing}.onnx")["budgets"])
    assert not (workspace.build / "bundles" / "formats").exists()


# --- (c) a selection rule ships the next variant --------------------------------------------------

SELECTING = "{npu-phone: {prefer: [fp32, int8], select: first_passing}, cpu-board: [fp32]}"


def test_a_selecting_target_ships_the_first_variant_within_budget_and_says_why_the_other_was_dropped(fresh_workspace):
    # fp32 is about 77 KiB and int8 about 21 KiB: a 50 KiB limit on npu-phone lets int8 through only.
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model(SELECTING, overrides="{npu-phone: {max_size_kb: 50}}"),
        profiles={"npu-phone": profile("npu-phone"), "cpu-board": profile("cpu-board")},
    )
    run = workspace.doit()
    fp32 = metrics(workspace, "npu-phone", f"{MODEL}.fp32.onnx")
    int8 = metrics(workspace, "npu-phone", f"{MODEL}.int8.onnx")
    print(f"\nnpu-phone sizes: fp32 {fp32['metrics']['size_kb']:.1f} KiB, int8 {int8['metrics']['size_kb']:.1f} KiB, limit 50 KiB")
    assert int8["metrics"]["size_kb"] < 50 < fp32["metrics"]["size_kb"]
    assert f"evaluate:{MODEL}.fp32.onnx@npu-phone" in run.executed
    assert f"{MODEL}.fp32.onnx@npu-phone: " in run.output and "OVER BUDGET: size_kb is" in run.output

    assert bundle_files(workspace) == [f"cpu-board/{MODEL}.fp32.onnx", f"npu-phone/{MODEL}.int8.onnx"]
    with zipfile.ZipFile(workspace.build / "bundles" / "formats" / "formats-1.0.0-android.zip") as archive:
        shipped = sorted(n for n in archive.namelist() if n.startswith("files/"))
        assert shipped == [f"files/cpu-board/{MODEL}.fp32.onnx", f"files/npu-phone/{MODEL}.int8.onnx"]
    variants = manifest(workspace)["models"][MODEL]["variants"]
    assert sorted(variants) == [f"{MODEL}.fp32.onnx@cpu-board", f"{MODEL}.int8.onnx@npu-phone"]
    assert variants[f"{MODEL}.int8.onnx@npu-phone"]["file"] == f"files/npu-phone/{MODEL}.int8.onnx"

    rows = report_rows(report(workspace), MODEL, "npu-phone")
    size = fp32["metrics"]["size_kb"]
    assert f"dropped: over budget: size_kb is {size:.4g}, over its max_size_kb of 50 (+" in rows["fp32"], rows["fp32"]
    assert rows["int8"].rstrip(" |").endswith("shipped"), rows["int8"]
    (cpu_row,) = report_rows(report(workspace), MODEL, "cpu-board").values()
    assert cpu_row.rstrip(" |").endswith("shipped")


def test_a_selecting_target_with_no_passing_variant_fails_the_package_task_naming_each_reason(fresh_workspace):
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model(SELECTING, overrides="{npu-phone: {max_size_kb: 5}}"),
        profiles={"npu-phone": profile("npu-phone"), "cpu-board": profile("cpu-board")},
    )
    run = workspace.doit(ok=False)
    output = _failure(run)
    assert "package:formats" in output, run.describe()
    assert f"no variant of {MODEL} for npu-phone passes: " in output, run.describe()
    for variant in ("fp32", "int8"):
        size = metrics(workspace, "npu-phone", f"{MODEL}.{variant}.onnx")["metrics"]["size_kb"]
        assert f"{variant}: over budget: size_kb is {size:.4g}, over its max_size_kb of 5 (+" in output, run.describe()
    assert not (workspace.build / "bundles" / "formats" / "1.0.0").exists()


# --- (d) accuracy under conditions ----------------------------------------------------------------

def test_conditions_are_measured_reported_and_budgeted(fresh_workspace):
    workspace = onnx_workspace(
        fresh_workspace,
        model_block=_model("{cpu-board: [fp32]}", variants="{fp32: {}}", conditions="{dim: 0.5, noise: 0.1}"),
        profiles={"cpu-board": profile("cpu-board", precisions=("fp32",))},
    )
    workspace.doit()
    measured = metrics(workspace, "cpu-board", f"{MODEL}.fp32.onnx")["metrics"]
    clean, dim, noise = measured["top1"], measured["top1_dim"], measured["top1_noise"]
    print(f"\ntop-1 clean {clean:.4f}, dim 0.5 {dim:.4f}, noise 0.1 {noise:.4f}")
    assert clean == 1.0  # the labels are the float model's own predictions
    assert 0.0 < dim < 1.0 and 0.0 < noise < 1.0
    assert "top1_blur" not in measured
    text = report(workspace)
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert "top-1 dim" in header and "top-1 noise" in header and "top-1 blur" not in header
    (row,) = report_rows(text, MODEL, "cpu-board").values()
    assert f"{dim:.4f}" in row and f"{noise:.4f}" in row
    shipped = manifest(workspace)["models"][MODEL]["variants"][f"{MODEL}.fp32.onnx@cpu-board"]["metrics"]
    assert float(shipped["top1_dim"]) == pytest.approx(dim, abs=1e-6) and float(shipped["top1_noise"]) == pytest.approx(noise, abs=1e-6)

    # A budget above the measured figure under dim light fails the artifact and names it.
    limit = round(min(1.0, dim + 0.05), 2)
    workspace.edit_spec("variants: {fp32: {}}", f"variants: {{fp32: {{}}}}\n    budgets: {{min_top1_dim: {limit}}}")
    run = workspace.doit(ok=False)
    output = _failure(run)
    expected = f"{MODEL}.fp32.onnx@cpu-board: over budget: top1_dim is {dim:.4g}, under its min_top1_dim of {limit:g} (-"
    assert expected in output, run.describe()
    assert run.executed == {f"evaluate:{MODEL}.fp32.onnx@cpu-board", "report:formats", "package:formats"}, run.describe()


def test_selection_among_tflite_variants_of_a_trained_model(built_workspace):
    """The same rule on a recipe-trained model's TFLite artifacts: a limit between fp32 and int8 ships int8."""
    workspace = built_workspace
    sizes = {v: metrics(workspace, "pixel-8", f"digits.{v}.tflite")["metrics"]["size_kb"] for v in ("fp32", "int8")}
    limit = round((sizes["fp32"] + sizes["int8"]) / 2, 1)
    print(f"\npixel-8 digits: fp32 {sizes['fp32']:.1f} KiB, int8 {sizes['int8']:.1f} KiB, limit {limit} KiB")
    workspace.edit_spec("pixel-8: [fp32, fp16, int8]", "pixel-8: {prefer: [fp32, int8], select: first_passing}")
    workspace.edit_spec(
        "budgets: {max_size_kb: 64, max_accuracy_drop: 0.05}",
        f"budgets: {{max_size_kb: 64, max_accuracy_drop: 0.05}}\n    budget_overrides: {{pixel-8: {{max_size_kb: {limit}}}}}",
    )
    run = workspace.doit()
    # Only measuring and packaging run again: the artifacts themselves did not change.
    assert not {t for t in run.executed if t.startswith(("convert:", "source:", "data:"))}, run.describe()
    assert {"evaluate:digits.fp32.tflite@pixel-8", "evaluate:digits.int8.tflite@pixel-8"} <= run.executed, run.describe()

    bundle, version = "test-bundle", "0.3.0"
    files = bundle_files(workspace, bundle, version)
    assert [f for f in files if f.startswith("pixel-8/digits.")] == ["pixel-8/digits.int8.tflite"]
    variants = manifest(workspace, bundle, version)["models"]["digits"]["variants"]
    assert sorted(v for v in variants if v.endswith("@pixel-8")) == ["digits.int8.tflite@pixel-8"]
    assert "digits.fp32.tflite@android-arm64-cpu" in variants
    rows = report_rows(report(workspace, bundle, version), "digits", "pixel-8")
    assert sorted(rows) == ["fp32", "int8"]
    assert f"dropped: over budget: size_kb is {sizes['fp32']:.4g}, over its max_size_kb of {limit:g} (+" in rows["fp32"], rows["fp32"]
    assert rows["int8"].rstrip(" |").endswith("shipped"), rows["int8"]
