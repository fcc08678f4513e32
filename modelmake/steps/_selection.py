"""Which variant a target ships when the spec lets it choose (select: first_passing)."""
from __future__ import annotations

from .. import metrics
from ..contracts import ArtifactInputs, MetricsRecord, ModelInputs
from ..errors import BudgetExceeded
from ._scoring import fallback_ops


def broken_budgets(measured: MetricsRecord) -> list[str]:
    problems = []
    for verdict in (v for v in measured.budgets if v["passed"] is False):
        text = f"{verdict['metric']} {verdict['value']:.4g} breaks {verdict['key']} {verdict['limit']:g}"
        coverage = measured.coverage
        if verdict["metric"] == metrics.ACCELERATOR_COVERAGE and coverage and coverage["fallback"]:
            text += f" (on the CPU: {fallback_ops(coverage)})"
        problems.append(text)
    return problems


def choose(model: ModelInputs) -> tuple[set[str], dict[str, str]]:
    """(ids of the artifacts to ship, {dropped id: why}) for one model's artifacts.

    Artifacts of targets without a selection rule always ship (their budgets
    were enforced when they were evaluated).  For a target with a rule, the
    first variant in preference order that passes every budget ships; the
    others are dropped with the reason.  No passing variant is a failure.
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
            problems = broken_budgets(MetricsRecord.read(artifact.metrics))
            if winner is None and not problems:
                winner = artifact
                shipped.add(artifact.id)
            elif winner is None:
                dropped[artifact.id] = "over budget: " + "; ".join(problems)
            else:
                dropped[artifact.id] = f"not needed: {winner.variant} is preferred and passes"
        if winner is None:
            raise BudgetExceeded(
                f"no variant of {model.name} for {candidates[0].target} passes its budgets: "
                + " | ".join(f"{a.variant}: {dropped[a.id]}" for a in candidates)
            )
    return shipped, dropped
