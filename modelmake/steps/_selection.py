"""Which variant a target ships when the spec lets it choose (select: first_passing)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import fsutil, metrics
from ..contracts import ArtifactInputs, ConvertJob, MetricsRecord, ModelInputs
from ..errors import BudgetExceeded, ModelmakeError, StepError
from ._scoring import fallback_ops

# The key of an artifact record that says the candidate was not built, and why.
NOT_BUILT = "not_built"


def record_not_built(job: ConvertJob, error: ModelmakeError, log: str) -> str:
    """A candidate's conversion failed: its record says why (the evaluation and the selection read it), and no
    file is left from an earlier conversion.  Returns the console line."""
    reason = str(error).splitlines()[0]
    Path(job.out).unlink(missing_ok=True)
    fsutil.write_json(job.out_record, {NOT_BUILT: reason, "log": log})
    return f"{job.artifact_id}: not built, dropped from its target's selection: {reason}"


def not_built(record: str) -> str | None:
    """Why the artifact of this record was not built, or None when it was."""
    return fsutil.read_json(record).get(NOT_BUILT)


def broken_budgets(measured: MetricsRecord) -> list[str]:
    problems = []
    for verdict in (v for v in measured.budgets if v["passed"] is False):
        text = f"{verdict['metric']} {verdict['value']:.4g} breaks {verdict['key']} {verdict['limit']:g}"
        coverage = measured.coverage
        if verdict["metric"] == metrics.ACCELERATOR_COVERAGE and coverage and coverage["fallback"]:
            text += f" (on the CPU: {fallback_ops(coverage)})"
        problems.append(text)
    return problems


@dataclass(frozen=True)
class Outcome:
    artifact: ArtifactInputs
    status: str  # shipped | dropped | failed
    reason: str | None


@dataclass(frozen=True)
class Selection:
    outcomes: tuple[Outcome, ...]
    failures: tuple[str, ...]  # one line per failing artifact and per selecting target with no passing variant

    def shipped(self) -> set[str]:
        return {o.artifact.id for o in self.outcomes if o.status == "shipped"}


def select(model: ModelInputs) -> Selection:
    """What becomes of each of one model's artifacts, and every failure; never raises.

    An artifact of a target without a selection rule ships unless it was not
    built or breaks a budget (then it failed).  For a target with a rule, the
    first variant in preference order that was built and passes every budget
    ships; the others are dropped with the reason, and no passing variant is a
    failure of the target.
    """
    outcomes: dict[str, Outcome] = {}
    failures: list[str] = []
    groups: dict[str, list[ArtifactInputs]] = {}
    for artifact in model.artifacts:
        if artifact.selection is not None:
            groups.setdefault(f"{artifact.target}/{artifact.format}", []).append(artifact)
            continue
        measured = MetricsRecord.read(artifact.metrics)
        problems = broken_budgets(measured)
        if measured.not_built is not None:
            outcomes[artifact.id] = Outcome(artifact, "failed", f"not built: {measured.not_built}")
        elif problems:
            outcomes[artifact.id] = Outcome(artifact, "failed", "over budget: " + "; ".join(problems))
        else:
            outcomes[artifact.id] = Outcome(artifact, "shipped", None)
        if outcomes[artifact.id].status == "failed":
            failures.append(f"{artifact.id}: {outcomes[artifact.id].reason}")
    for candidates in groups.values():
        winner = None
        for artifact in sorted(candidates, key=lambda a: a.preference):
            measured = MetricsRecord.read(artifact.metrics)
            problems = broken_budgets(measured)
            if measured.not_built is not None:
                outcomes[artifact.id] = Outcome(artifact, "dropped", f"not built: {measured.not_built}")
            elif winner is None and not problems:
                winner = artifact
                outcomes[artifact.id] = Outcome(artifact, "shipped", None)
            elif winner is None:
                outcomes[artifact.id] = Outcome(artifact, "dropped", "over budget: " + "; ".join(problems))
            else:
                outcomes[artifact.id] = Outcome(artifact, "dropped", f"not needed: {winner.variant} is preferred and passes")
        if winner is None:
            none_built = all(str(outcomes[a.id].reason).startswith("not built: ") for a in candidates)
            failures.append(
                f"no variant of {model.name} for {candidates[0].target} "
                + ("could be built: " if none_built else "passes its budgets: ")
                + " | ".join(f"{a.variant}: {outcomes[a.id].reason}" for a in candidates)
            )
    return Selection(tuple(outcomes[a.id] for a in model.artifacts), tuple(failures))


def choose(model: ModelInputs) -> tuple[set[str], dict[str, str]]:
    """(ids of the artifacts to ship, {dropped id: why}) for one model's artifacts.

    Artifacts of targets without a selection rule always ship (their budgets
    were enforced when they were evaluated).  For a target with a rule, the
    first variant in preference order that was built and passes every budget
    ships; the others are dropped with the reason.  No passing variant is a
    failure: a broken budget if any was built, a failed step if none was.
    """
    shipped: set[str] = set()
    dropped: dict[str, str] = {}
    groups: dict[str, list[ArtifactInputs]] = {}
    for artifact in model.artifacts:
        if artifact.selection is None:
            shipped.add(artifact.id)
        else:
            groups.setdefault(f"{artifact.target}/{artifact.format}", []).append(artifact)
    for candidates in groups.values():
        winner = None
        for artifact in sorted(candidates, key=lambda a: a.preference):
            measured = MetricsRecord.read(artifact.metrics)
            problems = broken_budgets(measured)
            if measured.not_built is not None:
                dropped[artifact.id] = f"not built: {measured.not_built}"
            elif winner is None and not problems:
                winner = artifact
                shipped.add(artifact.id)
            elif winner is None:
                dropped[artifact.id] = "over budget: " + "; ".join(problems)
            else:
                dropped[artifact.id] = f"not needed: {winner.variant} is preferred and passes"
        if winner is None:
            none_built = all(dropped[a.id].startswith("not built: ") for a in candidates)
            failure = StepError if none_built else BudgetExceeded
            raise failure(
                f"no variant of {model.name} for {candidates[0].target} "
                + ("could be built: " if none_built else "passes its budgets: ")
                + " | ".join(f"{a.variant}: {dropped[a.id]}" for a in candidates)
            )
    return shipped, dropped
