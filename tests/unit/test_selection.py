"""What ships, what is dropped and what refuses the bundle, from the records convert and evaluate leave."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from modelmake import errors
from modelmake.contracts import ArtifactInputs, ConvertJob, EvaluateJob, MetricsRecord, ModelInputs
from modelmake.graph import _succeeded
from modelmake.kinds import Precision
from modelmake.plan import Budget, FormatSupport
from modelmake.steps import worker
from modelmake.steps._selection import DROPPED, FAILED, SHIPPED, choose, record_failure, select
from modelmake.steps.runner import RECORDED_FAILURE, run_step

SIZE = Budget.parse("max_size_kb", 50)


def measured(tmp_path: Path, name: str, size_kb: float | None, **failure) -> str:
    """A metrics record: measured at ``size_kb`` against SIZE, or not measured at all (``failure`` says why)."""
    figures = {} if size_kb is None else {"size_kb": size_kb}
    verdict = {**asdict(SIZE), "value": size_kb, "passed": None if size_kb is None else SIZE.holds_for(size_kb)}
    record = MetricsRecord(
        artifact=name, size_bytes=0, metrics=figures, not_measured={}, coverage=None, structure=None, source=None,
        budgets=[verdict], tools={}, latency_host=None, **failure,
    )
    path = tmp_path / f"{name}.json"
    record.write(str(path))
    return str(path)


def artifact(tmp_path: Path, variant: str, target: str, size_kb: float | None, *, selecting: bool = False, preference: int = 0,
             **failure) -> ArtifactInputs:
    name = f"m.{variant}.tflite@{target}"
    return ArtifactInputs(
        id=name, variant=variant, target=target, platform="android", format="tflite", precision=Precision.FP32,
        file=str(tmp_path / name), record=str(tmp_path / f"{name}.record.json"), metrics=measured(tmp_path, name, size_kb, **failure),
        bundle_path=f"files/{target}/{name}", selection="first_passing" if selecting else None, preference=preference, budgets=(SIZE,),
    )


def model(*artifacts: ArtifactInputs) -> ModelInputs:
    return ModelInputs(
        name="m", description="", source_record="", reference=None, inputs=(), outputs=(), datasets=(), conditions=(),
        artifacts=artifacts,
    )


def test_a_target_without_selection_ships_what_passes_and_fails_the_bundle_on_each_problem(tmp_path):
    passing = artifact(tmp_path, "int8", "phone", 20)
    over = artifact(tmp_path, "fp32", "phone", 80)
    unbuilt = artifact(tmp_path, "fp16", "phone", None, not_built="constant beyond float16's range", exit_code=21)
    selection = select(model(passing, over, unbuilt))
    assert [(o.artifact.id, o.status) for o in selection.outcomes] == [
        (passing.id, SHIPPED), (over.id, FAILED), (unbuilt.id, FAILED),
    ]
    assert selection.failures == (
        "m.fp32.tflite@phone: over budget: size_kb is 80, over its max_size_kb of 50 (+60%)",
        "m.fp16.tflite@phone: not built: constant beyond float16's range",
    )
    # A broken budget (22) outranks a failed step (21), as `modelmake build` ranks failed tasks.
    assert selection.exit_code == errors.BudgetExceeded.exit_code


def test_a_selecting_target_ships_the_first_that_passes_and_says_why_each_other_was_dropped(tmp_path):
    fp32 = artifact(tmp_path, "fp32", "npu", 80, selecting=True, preference=0)
    int8 = artifact(tmp_path, "int8", "npu", 20, selecting=True, preference=1)
    dynamic = artifact(tmp_path, "dynamic", "npu", 30, selecting=True, preference=2)
    selection = select(model(fp32, int8, dynamic))
    assert selection.failures == () and selection.shipped() == {int8.id}
    assert selection.reasons() == {
        fp32.id: "over budget: size_kb is 80, over its max_size_kb of 50 (+60%)",
        dynamic.id: "not needed: int8 is preferred and passes",
    }
    assert {o.status for o in selection.outcomes if o.artifact is not int8} == {DROPPED}


def test_no_passing_candidate_fails_with_every_reason_and_the_failed_steps_code(tmp_path):
    failed = artifact(tmp_path, "fp16", "npu", None, selecting=True, not_evaluated="the runtime crashed (signal 11)", exit_code=21)
    unbuilt = artifact(tmp_path, "int8", "npu", None, selecting=True, preference=1, not_built="no calibration data", exit_code=20)
    selection = select(model(failed, unbuilt))
    assert selection.failures == (
        "no variant of m for npu passes: fp16: not evaluated: the runtime crashed (signal 11) | int8: not built: no calibration data",
    )
    assert selection.exit_code == 21


def test_choose_refuses_the_bundle_listing_every_problem_of_every_model(tmp_path):
    over = artifact(tmp_path, "fp32", "phone", 80)
    with pytest.raises(errors.BudgetExceeded) as refused:
        choose((model(over, artifact(tmp_path, "int8", "phone", 20)),))
    assert str(refused.value) == (
        "the bundle is not packaged: 1 problem (the report says more):\n"
        "  - m.fp32.tflite@phone: over budget: size_kb is 80, over its max_size_kb of 50 (+60%)"
    )
    unbuilt = artifact(tmp_path, "fp16", "phone", None, not_built="converter crashed", exit_code=21)
    with pytest.raises(errors.StepError, match=r"^the bundle is not packaged: 1 problem"):
        choose((model(unbuilt),))
    assert choose((model(artifact(tmp_path, "int8", "phone", 20)),))["m"].shipped() == {"m.int8.tflite@phone"}


def test_a_failed_conversion_and_evaluation_are_recorded_and_the_evaluation_runs_again(tmp_path, monkeypatch):
    support = FormatSupport(format="tflite", precisions=(Precision.FP32,), settings=None)
    convert = ConvertJob(
        artifact_id="m.fp32.tflite@phone", source_record="", precision=Precision.FP32, per_channel=True, palettize=None,
        calibration=None, calibration_origin=None, inputs=(), support=support, out=str(tmp_path / "m.tflite"),
        out_record=str(tmp_path / "m.record.json"),
    )
    Path(convert.out).write_bytes(b"an earlier conversion")
    line = record_failure(convert, errors.StepError("TFLite conversion failed\nconverter log follows"), "build/logs/m.log")
    assert line == "m.fp32.tflite@phone: NOT BUILT: TFLite conversion failed"
    # No file is left from an earlier conversion: its missing target makes doit convert again.
    assert not Path(convert.out).exists()

    evaluate = EvaluateJob(
        artifact_id="m.fp32.tflite@phone", format="tflite", artifact=convert.out, record=convert.out_record, source_record="",
        evaluation=None, reference=None, reference_outputs=None, inputs=(), outputs=(), conditions=(), budgets=(SIZE,),
        support=support, out=str(tmp_path / "m.metrics.json"),
    )
    record_failure(evaluate, errors.StepError("the runtime crashed"), "build/logs/e.log")
    written = MetricsRecord.read(evaluate.out)
    assert written.not_evaluated == "the runtime crashed (details in build/logs/e.log)" and written.exit_code == 21
    assert written.budgets[0]["passed"] is None and written.budgets[0]["note"].startswith("not checked: not evaluated")

    # Run as doit runs it, the recorded failure leaves a value that makes the next build run the task again.
    def crash(step, job, log, timeout):
        raise errors.StepError("the tflite runtime crashed (signal 11, SIGSEGV)")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(worker, "run", crash)
    values = run_step("evaluate.evaluate", "evaluate:m", evaluate, record_failures=True)
    assert values == {RECORDED_FAILURE: True} and MetricsRecord.read(evaluate.out).not_evaluated
    assert _succeeded(None, values) is False and _succeeded(None, {}) is True
