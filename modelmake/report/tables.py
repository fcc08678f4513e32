"""The report's tables as data, rendered by both the Markdown and the HTML report: same columns, same cells."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import fsutil, metrics
from ..kinds import OutputKind
from .views import ArtifactView, ModelView, budget_cell, coverage_cell, is_classifier, latency_text, precision_cell


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # what a numeric column sorts by


@dataclass(frozen=True)
class Column:
    heading: str
    numeric: bool = False


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)


def _fmt(value, spec=".4f", missing="n/a") -> Cell:
    return Cell(missing) if value is None else Cell(format(value, spec), float(value))


# The columns of a model whose output is not class scores: (metric, heading, format), in this order; a column
# shows only when some artifact of the model has the figure (or could not have it measured on this host).
_KIND_COLUMNS = {
    OutputKind.MASK: [
        (metrics.MEAN_IOU, "mean IoU", ".4f"),
        (metrics.PIXEL_ACCURACY, "pixel accuracy", ".4f"),
        (metrics.IOU_DROP, "IoU drop (points)", "+.2f"),
        (metrics.MASK_AGREEMENT, "mask agreement", ".4f"),
    ],
    OutputKind.EMBEDDING: [(metrics.WORST_COSINE_SIMILARITY, "worst cosine", ".5f")],
    OutputKind.TENSOR: [],
}
_PARITY_COLUMNS = [
    (metrics.COSINE_SIMILARITY, "cosine", ".5f"),
    (metrics.SNR_DB, "SNR (dB)", ".1f"),
    (metrics.MAX_ABS_ERROR, "max abs error", ".3g"),
]
_PERCENTAGE_POINTS = (metrics.IOU_DROP, metrics.ACCURACY_DROP)


def custom_columns(models) -> list[tuple[str, str, str]]:
    """The figures the models' own metric recipes return, each a column headed by its name."""
    names = dict.fromkeys(name for model in models if model.metrics for name in model.metrics.names)
    return [(name, name, ".4g") for name in names]


def _kind_columns(kind: OutputKind, conditions) -> list[tuple[str, str, str]]:
    if kind is OutputKind.CLASSES:
        return [
            ("top1", "top-1", ".4f"),
            (metrics.ACCURACY_DROP, "drop (points)", "+.2f"),
            (metrics.TOP1_AGREEMENT, "top-1 agreement", ".4f"),
        ]
    mask_conditions = [(metrics.condition_metric(c, kind), f"mean IoU {c}", ".4f") for c in conditions]
    return _KIND_COLUMNS.get(kind, []) + (mask_conditions if kind is OutputKind.MASK else [])


def _missing(view: ArtifactView) -> str:
    measured = view.measured
    if measured.not_built or measured.not_evaluated:
        return f"not {'built' if measured.not_built else 'evaluated'}"
    return "not measured" if measured.not_measured else "n/a"


def _leading(view: ArtifactView) -> list[Cell]:
    artifact, measured = view.artifact, view.measured
    return [
        Cell(artifact.target), Cell(artifact.format), Cell(artifact.variant),
        Cell(precision_cell(artifact.precision, measured)),
        _fmt(measured.metrics.get(metrics.SIZE_KB), ".1f", missing=_missing(view)),
    ]


def _trailing(view: ArtifactView) -> list[Cell]:
    latency = view.measured.metrics.get(metrics.LATENCY_MS)
    return [
        _missing_cell(view) if latency is None else Cell(latency_text(latency), latency),
        Cell(coverage_cell(view.measured)),
        Cell(budget_cell(view.measured)),
        Cell(view.bundle_cell),
    ]


def _missing_cell(view: ArtifactView) -> Cell:
    return Cell(_missing(view))


_LEADING = [Column("target"), Column("format"), Column("variant"), Column("precision"), Column("size (KiB)", numeric=True)]
_TRAILING = [Column("latency", numeric=True), Column("accelerator coverage"), Column("budgets"), Column("bundle")]


def classifier_table(models: list[ModelView]) -> Table:
    """One table for every classifier, a row per artifact."""
    conditions = sorted({c for m in models for c in m.model.conditions})
    custom = [name for name, _, _ in custom_columns([m.model for m in models])]
    headings = ["top-1", "top-k", "drop (points)", "cosine", "top-1 agreement", *(f"top-1 {c}" for c in conditions), *custom]
    table = Table([Column("model"), *_LEADING, *(Column(h, numeric=True) for h in headings), *_TRAILING])
    for model in models:
        top_k = model.model.outputs[0].top_k
        for view in model.artifacts:
            m, missing = view.measured.metrics, _missing(view)
            drop = m.get(metrics.ACCURACY_DROP)
            table.rows.append([
                Cell(model.model.name), *_leading(view),
                _fmt(m.get("top1"), missing=missing),
                _fmt(m.get(metrics.top_k_metric(top_k)) if top_k > 1 else None, missing=missing),
                _fmt(None if drop is None else drop * 100, "+.2f", missing=missing),
                _fmt(m.get(metrics.COSINE_SIMILARITY), ".5f", missing=missing),
                _fmt(m.get(metrics.TOP1_AGREEMENT), missing=missing),
                *[_fmt(m.get(metrics.condition_metric(c)), missing=missing) for c in conditions],
                *[_fmt(m.get(name), ".4g", missing=missing if name in view.measured.not_measured or not m else "—")
                  for name in custom],
                *_trailing(view),
            ])
    return table


def kind_title(model) -> str:
    described = ", ".join(f"{o.name}: {o.kind}{' (state)' if o.state else ''}" for o in model.outputs)
    return f"{model.outputs[0].kind} output" if len(model.outputs) == 1 else f"outputs {described}; worst of the outputs"


def kind_table(model: ModelView) -> Table:
    """One model's table with the columns its outputs' kinds have: absent figures get no column, not a 0 or an n/a.
    A model with several outputs shows the worst of its outputs' figures here, and each output's in output_table."""
    kinds = dict.fromkeys(output.kind for output in model.model.outputs)
    candidates = (
        [c for kind in kinds for c in _kind_columns(kind, model.model.conditions)] + _PARITY_COLUMNS + custom_columns([model.model])
    )
    present = {name for view in model.artifacts for name in (*view.measured.metrics, *view.measured.not_measured)}
    columns = list(dict.fromkeys(column for column in candidates if column[0] in present))
    table = Table([*_LEADING, *(Column(heading, numeric=True) for _, heading, _ in columns), *_TRAILING])
    for view in model.artifacts:
        m, measured, missing = view.measured.metrics, view.measured, _missing(view)

        def cell(name, spec, m=m, measured=measured, missing=missing):
            value = m.get(name)
            if value is not None and name in _PERCENTAGE_POINTS:
                value *= 100  # percentage points, as a classifier's accuracy drop
            return _fmt(value, spec, missing="not measured" if name in measured.not_measured else "—" if m else missing)

        table.rows.append([*_leading(view), *[cell(name, spec) for name, _, spec in columns], *_trailing(view)])
    return table


def output_table(model: ModelView) -> Table:
    """Each output's own figures, one row per artifact and output."""
    table = Table([Column("target"), Column("format"), Column("variant"), Column("output"), Column("figures")])
    for view in model.artifacts:
        for output in model.model.outputs:
            figures = (view.measured.outputs or {}).get(output.name)
            shown = ", ".join(f"{name} {value:.4g}" for name, value in figures.items()) if figures else (
                "not built" if view.measured.not_built else "not measured"
            )
            a = view.artifact
            table.rows.append([Cell(a.target), Cell(a.format), Cell(a.variant), Cell(f"{output.name} ({output.kind})"), Cell(shown)])
    return table


def source_tables(models: list[ModelView]) -> list[tuple[str, Table]]:
    """The source models' own figures: the classifiers' top-1, and the other models' figures."""
    tables = []
    references = [(m.model, fsutil.read_json(m.model.reference)) for m in models if m.model.reference]
    classifiers = [(model, ref) for model, ref in references if is_classifier(model)]
    if classifiers:
        table = Table([Column("model"), Column("top-1 on evaluation data", numeric=True), Column("samples", numeric=True)])
        for model, ref in classifiers:
            table.rows.append([Cell(model.name), _fmt(ref["top1"]), Cell(str(ref["samples"]), ref["samples"])])
        tables.append(("Source models", table))
    others = [(model, ref) for model, ref in references if not is_classifier(model)]
    if others:
        table = Table([Column("model"), Column("output"), Column("figures on evaluation data"), Column("samples", numeric=True)])
        for model, figures in others:
            shown = ", ".join(
                f"{name} {value:.4f}" for name, value in figures.items() if name != "samples" and isinstance(value, int | float)
            )
            kinds = ", ".join(f"{o.name}: {o.kind}" if o.name else str(o.kind) for o in model.outputs)
            table.rows.append([Cell(model.name), Cell(kinds), Cell(shown or "parity only (no labels)"),
                               Cell(str(figures["samples"]), figures["samples"])])
        tables.append(("Source models (other outputs)", table))
    return tables


def selection_lines(model: ModelView) -> list[tuple[str, list[tuple[ArtifactView, str]]]]:
    """Each selecting target's candidates in preference order, with what became of each and why:
    [('pixel-8 (tflite), first_passing', [(view, 'dropped: over budget: size_kb ...'), ...]), ...]."""
    groups: dict[tuple[str, str], list[ArtifactView]] = {}
    for view in model.artifacts:
        if view.artifact.selection is not None:
            groups.setdefault((view.artifact.target, view.artifact.format), []).append(view)
    return [
        (f"{target} ({fmt}), {views[0].artifact.selection}",
         [(view, view.bundle_cell) for view in sorted(views, key=lambda v: v.artifact.preference)])
        for (target, fmt), views in groups.items()
    ]

