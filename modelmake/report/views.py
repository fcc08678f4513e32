"""What the report says of each artifact: its records, what became of it, and the words for its figures and verdicts."""
from __future__ import annotations

from dataclasses import dataclass

from .. import metrics
from ..contracts import ArtifactInputs, BundleInputs, MetricsRecord, ModelInputs
from ..kinds import OutputKind
from ..steps._scoring import fallback_ops
from ..steps._selection import Outcome, broken_budgets, select


@dataclass(frozen=True)
class ArtifactView:
    model: ModelInputs
    artifact: ArtifactInputs
    measured: MetricsRecord
    outcome: Outcome

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def bundle_cell(self) -> str:
        """Shipped, or dropped or failed and why: each broken budget's figure, limit and margin."""
        return self.status if self.outcome.reason is None else f"{self.status}: {self.outcome.reason}"


@dataclass(frozen=True)
class ModelView:
    model: ModelInputs
    artifacts: tuple[ArtifactView, ...]


@dataclass(frozen=True)
class BundleView:
    inputs: BundleInputs
    models: tuple[ModelView, ...]
    failures: tuple[str, ...]  # non-empty: the package step refuses this build

    @property
    def artifacts(self) -> list[ArtifactView]:
        return [view for model in self.models for view in model.artifacts]

    @property
    def targets(self) -> list[str]:
        """Every target with an artifact, in the order the spec first names them: one colour each in the plots."""
        return list(dict.fromkeys(view.artifact.target for view in self.artifacts))


def bundle_view(inputs: BundleInputs) -> BundleView:
    models: list[ModelView] = []
    failures: list[str] = []
    for model in inputs.models:
        selection = select(model)
        failures += selection.failures
        views = tuple(ArtifactView(model, o.artifact, MetricsRecord.read(o.artifact.metrics), o) for o in selection.outcomes)
        models.append(ModelView(model, views))
    return BundleView(inputs, tuple(models), tuple(failures))


def is_classifier(model: ModelInputs) -> bool:
    """A model with one output of class scores: the classifiers' shared table."""
    return len(model.outputs) == 1 and model.outputs[0].kind is OutputKind.CLASSES


def latency_text(milliseconds: float) -> str:
    """Below a millisecond in microseconds: '15.2 µs', '372 µs', '2.09 ms'."""
    microseconds = milliseconds * 1000
    return f"{microseconds:.3g} µs" if microseconds < 999.5 else f"{milliseconds:.2f} ms"


def budget_cell(measured: MetricsRecord) -> str:
    if measured.not_built or measured.not_evaluated:
        return f"not checked: not {'built' if measured.not_built else 'evaluated'}"
    if not measured.budgets:
        return "none set"
    problems = broken_budgets(measured)
    unchecked = [v["key"] for v in measured.budgets if v["passed"] is None]
    cell = "FAILED: " + "; ".join(problems) if problems else f"ok ({len(measured.budgets) - len(unchecked)})"
    return cell + (f", not checked: {', '.join(unchecked)}" if unchecked else "")


def coverage_cell(measured: MetricsRecord) -> str:
    coverage = measured.coverage
    if not coverage:
        return "—"
    cell = f"{coverage['on_accelerator']}/{coverage['ops']} on {coverage['accelerator']}"
    if coverage["fallback"]:
        cell += f" (CPU: {fallback_ops(coverage)})"
    return cell


def precision_cell(precision: str, measured: MetricsRecord) -> str:
    """The precision, flagged where the label is mostly untrue: most weight bytes are not stored at it."""
    share = measured.metrics.get(metrics.QUANTIZED_SHARE)
    if share is None or share >= metrics.MOSTLY_FLOAT_SHARE:
        return precision
    stored = "fp16" if precision == "fp16" else "int8"
    return f"{precision} **(mostly float: {precision} label, {share:.0%} of weights {stored})**"
