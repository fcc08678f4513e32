"""Which artifacts ship, which are dropped and which fail the bundle, with the reasons.

Convert and evaluate never fail a build on their own: a conversion or
evaluation that fails is recorded (``record_failure``) and a broken budget is
a verdict in the metrics record, so that the report is written for every
build.  The package step is where the verdicts are enforced (``choose``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .. import fsutil, metrics
from ..contracts import ArtifactInputs, ConvertJob, EvaluateJob, MetricsRecord, ModelInputs
from ..errors import BudgetExceeded, ModelmakeError, StepError, error_class_for
from ._scoring import fallback_ops

# The key of an artifact record that says the artifact was not built, and why.
NOT_BUILT = "not_built"

SHIPPED, DROPPED, FAILED = "shipped", "dropped", "failed"


def record_failure(job: ConvertJob | EvaluateJob, error: ModelmakeError, log: str) -> str:
    """A conversion or evaluation failed: record why where the next steps look (the artifact record, or the
    metrics record), and return the console line.  The task succeeds, so the report is still written; the
    package step fails on it (or a selecting target drops the candidate)."""
    reason = str(error).splitlines()[0]
    if isinstance(job, ConvertJob):
        # No file is left from an earlier conversion: its missing target makes doit convert again next build.
        Path(job.out).unlink(missing_ok=True)
        fsutil.write_json(job.out_record, {NOT_BUILT: reason, "log": log, "exit_code": error.exit_code})
        return f"{job.artifact_id}: NOT BUILT: {reason}"
    record_not_evaluated(job, f"{reason} (details in {log})", error.exit_code)
    return f"{job.artifact_id}: NOT EVALUATED: {reason}"


def not_built(record: str) -> str | None:
    """Why the artifact of this record was not built, or None when it was."""
    return fsutil.read_json(record).get(NOT_BUILT)


def record_not_evaluated(job: EvaluateJob, reason: str, exit_code: int, *, conversion_failed: bool = False) -> None:
    """The figures of an artifact that has none: its budgets are not checked, and the record says why."""
    note = f"not checked: {'not built' if conversion_failed else 'not evaluated'} ({reason})"
    MetricsRecord(
        artifact=job.artifact_id,
        size_bytes=0,
        metrics={},
        not_measured={},
        coverage=None,
        structure=None,
        source=None,
        budgets=[{**asdict(budget), "value": None, "passed": None, "note": note} for budget in job.budgets],
        tools={},
        latency_host=None,
        not_built=reason if conversion_failed else None,
        not_evaluated=None if conversion_failed else reason,
        exit_code=exit_code,
    ).write(job.out)


def figure(value: float) -> str:
    """A figure as people write it: 12527, 51.79, 0.005, never 1.253e+04."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def broken_budget(verdict: dict, coverage: dict | None) -> str:
    """One broken budget in words: the figure, the limit, by how much, and what to do where that is known."""
    limit, value = verdict["limit"], verdict["value"]
    side = "over" if verdict["bound"] == "max" else "under"
    text = f"{verdict['metric']} is {figure(value)}, {side} its {verdict['key']} of {limit:g}"
    if limit:
        text += f" ({(value - limit) / abs(limit):+.0%})"
    if verdict["metric"] == metrics.ACCELERATOR_COVERAGE and coverage and coverage["fallback"]:
        text += (
            f" (ops the {coverage['accelerator']} accelerator does not take: {fallback_ops(coverage)}; "
            "replace them or drop the coverage requirement)"
        )
    if verdict["metric"] == metrics.FPS:
        text += " (the build host's frame rate, 1000 / its median single-sample latency on one thread; a phone's comes from telemetry)"
    if verdict["metric"] == metrics.QUANTIZED_SHARE:
        text += " (the converter left the rest of the weights float: tensors too small to quantize, or ops it has no quantized form for)"
    return text


def broken_budgets(measured: MetricsRecord) -> list[str]:
    return [broken_budget(v, measured.coverage) for v in measured.budgets if v["passed"] is False]


def _problem(measured: MetricsRecord) -> str | None:
    """Why an artifact cannot ship, or None when it can."""
    if measured.not_built is not None:
        return f"not built: {measured.not_built}"
    if measured.not_evaluated is not None:
        return f"not evaluated: {measured.not_evaluated}"
    problems = broken_budgets(measured)
    return "over budget: " + "; ".join(problems) if problems else None


@dataclass(frozen=True)
class Outcome:
    artifact: ArtifactInputs
    status: str  # SHIPPED, DROPPED or FAILED
    reason: str | None  # why it was dropped or failed; None when shipped


@dataclass(frozen=True)
class Selection:
    outcomes: tuple[Outcome, ...]
    # One line per artifact that fails the bundle, and per selecting target with no variant that passes.
    failures: tuple[str, ...]
    # The exit code of the worst failure: a broken budget, or the code of the step that failed.
    exit_code: int = 0

    def shipped(self) -> set[str]:
        return {o.artifact.id for o in self.outcomes if o.status == SHIPPED}

    def reasons(self) -> dict[str, str]:
        return {o.artifact.id: o.reason for o in self.outcomes if o.reason is not None}


def select(model: ModelInputs) -> Selection:
    """What ships of one model's artifacts, and why each of the others does not.  Never raises.

    An artifact of a target without a selection rule ships when it was built,
    evaluated and passes its budgets; otherwise it fails the bundle.  For a
    target with a rule, the first variant in preference order that passes
    ships and the others are dropped with the reason; none passing fails.
    """
    outcomes: dict[str, Outcome] = {}
    failures: list[str] = []
    codes: list[int] = []
    groups: dict[str, list[ArtifactInputs]] = {}
    for artifact in model.artifacts:
        if artifact.selection is not None:
            groups.setdefault(f"{artifact.target}/{artifact.format}", []).append(artifact)
            continue
        measured = MetricsRecord.read(artifact.metrics)
        problem = _problem(measured)
        outcomes[artifact.id] = Outcome(artifact, FAILED if problem else SHIPPED, problem)
        if problem:
            failures.append(f"{artifact.id}: {problem}")
            codes.append(_exit_code(measured))
    for candidates in groups.values():
        winner = None
        measured_codes = []
        for artifact in sorted(candidates, key=lambda a: a.preference):
            measured = MetricsRecord.read(artifact.metrics)
            problem = _problem(measured)
            measured_codes.append(_exit_code(measured))
            if problem is None and winner is None:
                winner = artifact
                outcomes[artifact.id] = Outcome(artifact, SHIPPED, None)
            elif problem is None and winner is not None:
                outcomes[artifact.id] = Outcome(artifact, DROPPED, f"not needed: {winner.variant} is preferred and passes")
            else:
                outcomes[artifact.id] = Outcome(artifact, DROPPED, problem)
        if winner is None:
            failures.append(
                f"no variant of {model.name} for {candidates[0].target} passes: "
                + " | ".join(f"{a.variant}: {outcomes[a.id].reason}" for a in candidates)
            )
            codes.append(max(measured_codes))
    ordered = tuple(outcomes[a.id] for a in model.artifacts)
    return Selection(ordered, tuple(failures), max(codes, default=0))


def _exit_code(measured: MetricsRecord) -> int:
    if measured.not_built is not None or measured.not_evaluated is not None:
        return measured.exit_code or StepError.exit_code
    return BudgetExceeded.exit_code


def choose(models: tuple[ModelInputs, ...]) -> dict[str, Selection]:
    """Each model's selection; raises, listing every failure of every model, when the bundle cannot be made."""
    selections = {model.name: select(model) for model in models}
    failures = [line for s in selections.values() for line in s.failures]
    if failures:
        worst = max(s.exit_code for s in selections.values())
        raise error_class_for(worst)(
            f"the bundle is not packaged: {len(failures)} problem{'s' if len(failures) > 1 else ''} "
            "(the report says more):\n" + "\n".join(f"  - {line}" for line in failures)
        )
    return selections
