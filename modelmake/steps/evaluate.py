"""Step `evaluate`: prove an artifact loads and runs, measure it against its source, hold it to its budgets.

The measuring is the same for every format; what differs (how to load and
run a file, which ops an accelerator takes) comes from the format's runtime.
A figure this host cannot measure (Core ML off macOS) is recorded as not
measured, with the reason, never as a number.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .. import formats, fsutil, metrics
from ..contracts import ArtifactRecord, EvaluateJob, MetricsRecord, SourceRecord
from ..errors import StepError
from ..formats.base import FormatRuntime, NotMeasurable
from ..kinds import OutputKind, Precision
from ..plan import Budget, label_array
from ..tensors import Tensors, first
from ..versions import tool_versions
from . import _baselines, _batching, _custom_metrics, _evaluation, _outputs
from ._selection import NOT_BUILT, broken_budget, record_not_evaluated
from .reference import reference_outputs


def _measure(
    runtime: FormatRuntime, job: EvaluateJob, what: str, built: ArtifactRecord
) -> tuple[_outputs.Figures | None, dict, _batching.Batching | None, dict | None]:
    """The figures (model-wide and per output), how the file's outputs were computed (None when it never ran on
    the evaluation data), and the distributions of its outputs and inputs there (None without evaluation data)."""
    figures: dict[str, float] = {}
    sample, batching, scored, distributions = None, None, None, None
    if job.evaluation:
        assert job.reference and job.reference_outputs, "evaluation data comes with the reference step's figures"
        signature = SourceRecord.read(job.source_record).signature
        data = _evaluation.load(job.evaluation, job.inputs, job.outputs, signature, origin="evaluation data")
        sample = first(data.inputs) if not data.states else None

        def predict(inputs: Tensors, batch: int | None) -> Tensors:
            return runtime.predict(job.artifact, inputs, what=what, batch=batch)

        batching = data.decide(predict, _evaluation.batch_dimensions(built.io), _batching.tolerance(Precision(built.precision)))
        outputs = data.run(predict, batching)
        distributions = _baselines.measure(data, outputs, measured_on=_baselines.ARTIFACT)
        reference = reference_outputs(job.reference_outputs)
        source = _outputs.per_output_source(data.scored, fsutil.read_json(job.reference))
        scored = _outputs.new_figures(data.scored)
        per_output = {}
        for o in data.scored:
            labelled = o.scoring.labelled(outputs[o.name], data.labels[o.name])
            per_output[o.name] = labelled | o.scoring.drop(source[o.name], labelled) | o.scoring.parity(outputs[o.name], reference[o.name])
        scored.add(per_output)
        scored.model |= _custom_metrics.measure(job.custom_metrics, outputs, job.evaluation)
        for condition, strength in job.conditions:
            changed = data.run(predict, batching, data.conditioned(condition, strength))
            scored.add({o.name: o.scoring.condition(changed[o.name], data.labels[o.name], condition) for o in data.scored})
        figures = scored.model
    figures[metrics.LATENCY_MS] = runtime.median_latency_ms(job.artifact, what=what, sample=sample)
    if any(budget.metric == metrics.FPS for budget in job.budgets):
        figures[metrics.FPS] = metrics.fps(figures[metrics.LATENCY_MS])
    return scored, figures, batching, distributions


def _source_distributions(job: EvaluateJob) -> dict | None:
    """Where the artifact cannot run here: the distributions of the source model's outputs on the evaluation data,
    which the artifact was converted to reproduce, labelled as the source model's."""
    if not job.evaluation or not job.reference_outputs:
        return None
    signature = SourceRecord.read(job.source_record).signature
    data = _evaluation.load(job.evaluation, job.inputs, job.outputs, signature, origin="evaluation data")
    return _baselines.measure(data, reference_outputs(job.reference_outputs), measured_on=_baselines.SOURCE_MODEL)


def _unlabelled(job: EvaluateJob, figures: dict) -> dict[str, str]:
    """The labelled figures an output could not have, with why: the evaluation data has no labels for it."""
    if metrics.COSINE_SIMILARITY not in figures:
        return {}
    missing: dict[str, str] = {}
    for output in job.outputs:
        if output.kind is OutputKind.CLASSES and len(job.outputs) == 1:
            continue  # a classifier's evaluation data always has its labels
        expected = metrics.labelled_metrics(output.kind, top_k=output.top_k, conditions=[c for c, _ in job.conditions])
        array = label_array(output)
        reason = f"the evaluation data has no labels for {'the output' if not output.name else output.name} (array {array})"
        missing |= {name: reason for name in expected if name not in figures}
    return missing


def _verdict(budget: Budget, figures: dict, not_measured: dict) -> dict:
    value = figures.get(budget.metric)
    if value is None:
        reason = not_measured.get(budget.metric, "not measured for this target")
        return {**asdict(budget), "value": None, "passed": None, "note": f"not checked: {reason}"}
    return {**asdict(budget), "value": value, "passed": budget.holds_for(value)}


def evaluate(job: EvaluateJob) -> str:
    conversion = fsutil.read_json(job.record)
    if (reason := conversion.get(NOT_BUILT)) is not None:
        record_not_evaluated(job, reason, conversion.get("exit_code", StepError.exit_code), conversion_failed=True)
        return f"{job.artifact_id}: not evaluated: its conversion failed"
    backend = formats.backend(job.format)
    runtime = backend.runtime()
    what = f"artifact {job.artifact_id}"
    size = Path(job.artifact).stat().st_size
    figures: dict[str, float] = {metrics.SIZE_KB: size / 1024.0}
    not_measured: dict[str, str] = {}
    built = ArtifactRecord.from_document(conversion)
    # Read from the file, so it is known even where the format cannot run.
    share = runtime.weight_share(job.artifact, Precision(built.precision), built.extra.get("palettize"))
    if share is not None:
        figures[metrics.QUANTIZED_SHARE] = share
    structure = runtime.structural_check(
        job.artifact,
        what=what,
        source_signature=SourceRecord.read(job.source_record).signature,
        precision=Precision(built.precision),
        palettize=built.extra.get("palettize"),
    )
    batching, scored, distributions = None, None, None
    try:
        scored, measured, batching, distributions = _measure(runtime, job, what, built)
        figures |= measured
        not_measured = _unlabelled(job, figures)
    except NotMeasurable as reason:
        distributions = _source_distributions(job)
        names = metrics.available_metrics(
            has_evaluation_data=bool(job.evaluation),
            top_k=[output.top_k for output in job.outputs],
            conditions=[c for c, _ in job.conditions],
            quantized=share is not None,
            kind=[output.kind for output in job.outputs],
            custom=job.custom_metrics.names if job.custom_metrics else (),
        )
        not_measured = {name: str(reason) for name in names if name not in figures and name != metrics.ACCELERATOR_COVERAGE}
        if any(budget.metric == metrics.FPS for budget in job.budgets):
            not_measured[metrics.FPS] = str(reason)
    coverage = runtime.accelerator_coverage(job.artifact, job.support)
    if coverage is not None:
        figures[metrics.ACCELERATOR_COVERAGE] = coverage["on_accelerator"] / coverage["ops"] if coverage["ops"] else 1.0

    verdicts = [_verdict(budget, figures, not_measured) for budget in job.budgets]
    MetricsRecord(
        artifact=job.artifact_id,
        size_bytes=size,
        metrics=figures,
        not_measured=not_measured,
        coverage=coverage,
        structure=structure,
        source=fsutil.read_json(job.reference) if job.reference else None,
        budgets=verdicts,
        tools=tool_versions(*backend.runtime_tools),
        latency_host="build host CPU, 1 thread, median of 50 runs" if metrics.LATENCY_MS in figures else None,
        batching=batching.note if batching else None,
        outputs=scored.outputs if scored else None,
        baseline=distributions,
    ).write(job.out)
    broken = [v for v in verdicts if v["passed"] is False]
    summary = ", ".join(f"{name} {value:.4g}" for name, value in figures.items())
    if batching and batching.mishandled:
        summary += f"; {batching.note}"
    if not_measured:
        summary += f"; not measured ({next(iter(not_measured.values()))}): {', '.join(not_measured)}"
    status = "budgets ok" if not broken else "OVER BUDGET: " + "; ".join(broken_budget(v, coverage) for v in broken)
    return f"{job.artifact_id}: {summary}; {status if verdicts else 'no budgets'}"
