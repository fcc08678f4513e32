"""Step `report`: a Markdown table of every artifact's figures, budgets and selection, with two plots."""
from __future__ import annotations

from pathlib import Path

from .. import formats, fsutil, metrics
from ..contracts import MetricsRecord, ReportJob
from ..kinds import OutputKind
from ._scoring import fallback_ops
from ._selection import broken_budgets, select

PLOT = "size_vs_accuracy.png"
TARGET_PLOT = "per_target.png"
# Plot markers, one per format in the registry's order (more than these cycle).
_MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def _fmt(value, spec=".4f", missing="n/a"):
    return missing if value is None else format(value, spec)


def _budget_cell(measured: MetricsRecord) -> str:
    if measured.not_built:
        return "not checked: not built"
    if not measured.budgets:
        return "none set"
    problems = broken_budgets(measured)
    unchecked = [v["key"] for v in measured.budgets if v["passed"] is None]
    cell = "FAILED: " + "; ".join(problems) if problems else f"ok ({len(measured.budgets) - len(unchecked)})"
    return cell + (f", not checked: {', '.join(unchecked)}" if unchecked else "")


def _coverage_cell(measured: MetricsRecord) -> str:
    coverage = measured.coverage
    if not coverage:
        return "—"
    cell = f"{coverage['on_accelerator']}/{coverage['ops']} on {coverage['accelerator']}"
    if coverage["fallback"]:
        cell += f" (CPU: {fallback_ops(coverage)})"
    return cell


def _precision_cell(precision: str, measured: MetricsRecord) -> str:
    """The precision, flagged where the label is mostly untrue: most weight bytes are not stored at it."""
    share = measured.metrics.get(metrics.QUANTIZED_SHARE)
    if share is None or share >= metrics.MOSTLY_FLOAT_SHARE:
        return precision
    stored = "fp16" if precision == "fp16" else "int8"
    return f"{precision} **(mostly float: {precision} label, {share:.0%} of weights {stored})**"


def _rows(inputs):
    for model in inputs.models:
        selection = select(model)
        shipped, dropped = selection.shipped(), selection.reasons()
        for artifact in model.artifacts:
            measured = MetricsRecord.read(artifact.metrics)
            status = "shipped" if artifact.id in shipped else f"dropped: {dropped[artifact.id]}"
            yield model, artifact, measured, status


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


def _custom_columns(models) -> list[tuple[str, str, str]]:
    """The figures the models' own metric recipes return, each a column headed by its name."""
    names = dict.fromkeys(name for model in models if model.metrics for name in model.metrics.names)
    return [(name, name, ".4g") for name in names]


def _is_classifier(model) -> bool:
    """A model with one output of class scores: the classifiers' shared table."""
    return len(model.outputs) == 1 and model.outputs[0].kind is OutputKind.CLASSES


def _kind_columns(kind: OutputKind, conditions) -> list[tuple[str, str, str]]:
    if kind is OutputKind.CLASSES:
        return [
            ("top1", "top-1", ".4f"),
            (metrics.ACCURACY_DROP, "drop (points)", "+.2f"),
            (metrics.TOP1_AGREEMENT, "top-1 agreement", ".4f"),
        ]
    mask_conditions = [(metrics.condition_metric(c, kind), f"mean IoU {c}", ".4f") for c in conditions]
    return _KIND_COLUMNS.get(kind, []) + (mask_conditions if kind is OutputKind.MASK else [])


def _kind_table(model, rows) -> list[str]:
    """One model's table with the columns its outputs' kinds have: absent figures get no column, not a 0 or an n/a.
    A model with several outputs shows the worst of its outputs' figures here, and each output's below."""
    kinds = dict.fromkeys(output.kind for output in model.outputs)
    candidates = [c for kind in kinds for c in _kind_columns(kind, model.conditions)] + _PARITY_COLUMNS + _custom_columns([model])
    present = {name for _, measured, _ in rows for name in (*measured.metrics, *measured.not_measured)}
    columns = list(dict.fromkeys(column for column in candidates if column[0] in present))
    described = ", ".join(f"{o.name}: {o.kind}{' (state)' if o.state else ''}" for o in model.outputs)
    title = f"{model.outputs[0].kind} output" if len(model.outputs) == 1 else f"outputs {described}; worst of the outputs"
    lines = [
        "",
        f"## {model.name} ({title})",
        "",
        "| target | format | variant | precision | size (KiB) | " + "".join(f"{heading} | " for _, heading, _ in columns)
        + "latency (ms) | accelerator coverage | budgets | bundle |",
        "|---|---|---|---|---:|" + "---:|" * len(columns) + "---:|---|---|---|",
    ]
    for artifact, measured, status in rows:
        m = measured.metrics
        missing = "not built" if measured.not_built else "not measured" if measured.not_measured else "n/a"

        def cell(name, spec, m=m, measured=measured, missing=missing):
            value = m.get(name)
            if value is not None and name in (metrics.IOU_DROP, metrics.ACCURACY_DROP):
                value *= 100  # percentage points, as a classifier's accuracy drop
            return _fmt(value, spec, missing="not measured" if name in measured.not_measured else "—" if m else missing)

        cells = [
            artifact.target, artifact.format, artifact.variant, _precision_cell(artifact.precision, measured),
            _fmt(m.get(metrics.SIZE_KB), ".1f", missing=missing),
            *[cell(name, spec) for name, _, spec in columns],
            _fmt(m.get(metrics.LATENCY_MS), ".3f", missing=missing),
            _coverage_cell(measured),
            _budget_cell(measured),
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(model.outputs) > 1:
        lines += _output_table(model, rows)
    return lines


def _output_table(model, rows) -> list[str]:
    """Each output's own figures, one row per artifact and output."""
    lines = ["", f"Each output of {model.name}:", "", "| target | format | variant | output | figures |", "|---|---|---|---|---|"]
    for artifact, measured, _ in rows:
        for output in model.outputs:
            figures = (measured.outputs or {}).get(output.name)
            shown = ", ".join(f"{name} {value:.4g}" for name, value in figures.items()) if figures else (
                "not built" if measured.not_built else "not measured"
            )
            lines.append(f"| {artifact.target} | {artifact.format} | {artifact.variant} | {output.name} ({output.kind}) | {shown} |")
    return lines


def _source_line(model, figures: dict) -> str:
    shown = ", ".join(f"{name} {value:.4f}" for name, value in figures.items() if name != "samples" and isinstance(value, int | float))
    kinds = ", ".join(f"{o.name}: {o.kind}" if o.name else str(o.kind) for o in model.outputs)
    return f"| {model.name} | {kinds} | {shown or 'parity only (no labels)'} | {figures['samples']} |"


def report(job: ReportJob) -> str:
    inputs = job.inputs
    out = Path(job.out_dir)
    bundle = inputs.bundle
    classifiers = {m.name for m in inputs.models if _is_classifier(m)}
    conditions = sorted({c for m in inputs.models if m.name in classifiers for c in m.conditions})
    custom = [name for name, _, _ in _custom_columns([m for m in inputs.models if m.name in classifiers])]
    lines = [
        f"# {bundle.name} {bundle.version}",
        "",
        "Accuracy is measured on each model's evaluation data; the drop is the source model's top-1 minus the artifact's, "
        "in percentage points; parity compares each artifact's outputs with the source model's on the same inputs. "
        "Latency is the median of 50 single-sample runs on the build host's CPU with one thread: compare variants with it, "
        "not devices. Core ML runs on macOS and iOS only: on other hosts its packages are checked structurally "
        "(they load in coremltools, inputs and outputs match the source, weights carry the requested precision) "
        "and their accuracy and latency are marked not measured.",
        "",
    ]
    table = [
        "| model | target | format | variant | precision | size (KiB) | top-1 | top-k | drop (points) | cosine | top-1 agreement | "
        + "".join(f"top-1 {c} | " for c in conditions)
        + "".join(f"{name} | " for name in custom)
        + "latency (ms) | accelerator coverage | budgets | bundle |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(conditions) + len(custom)) + "---:|---|---|---|",
    ]
    points, notes = [], set()
    if classifiers:
        lines += table
    others: dict[str, tuple] = {}  # model name -> (model, rows): the models whose output is not class scores
    for model, artifact, measured, status in _rows(inputs):
        notes.update(measured.not_measured.values())
        if model.name not in classifiers:
            others.setdefault(model.name, (model, []))[1].append((artifact, measured, status))
            if not measured.not_built:
                points.append((model.name, artifact, measured.metrics))
            continue
        m = measured.metrics
        not_measured = "not built" if measured.not_built else "not measured" if measured.not_measured else "n/a"
        top_k = model.outputs[0].top_k
        drop = m.get(metrics.ACCURACY_DROP)
        cells = [
            model.name, artifact.target, artifact.format, artifact.variant, _precision_cell(artifact.precision, measured),
            _fmt(m.get(metrics.SIZE_KB), ".1f", missing=not_measured),
            _fmt(m.get("top1"), missing=not_measured),
            _fmt(m.get(metrics.top_k_metric(top_k)) if top_k > 1 else None, missing=not_measured),
            _fmt(None if drop is None else drop * 100, "+.2f", missing=not_measured),
            _fmt(m.get(metrics.COSINE_SIMILARITY), ".5f", missing=not_measured),
            _fmt(m.get(metrics.TOP1_AGREEMENT), missing=not_measured),
            *[_fmt(m.get(metrics.condition_metric(c)), missing=not_measured) for c in conditions],
            *[_fmt(m.get(name), ".4g", missing=not_measured if name in measured.not_measured or not m else "—") for name in custom],
            _fmt(m.get(metrics.LATENCY_MS), ".3f", missing=not_measured),
            _coverage_cell(measured),
            _budget_cell(measured),
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if not measured.not_built:
            points.append((model.name, artifact, m))
    if others:
        lines += [
            "",
            "Models whose output is not class scores, and models with several outputs, have a table each, with the figures "
            "their outputs' kinds have: a mask's mean IoU "
            "and pixel accuracy against its per-pixel labels, the IoU drop in points and the share of pixels agreeing with the "
            "source model's mask; an embedding's worst per-sample cosine; for all, parity with the source model's outputs "
            f"(cosine, SNR in dB up to {metrics.SNR_CAP_DB:g} for an exact match, max abs error). '—': no such figure. "
            "A stateful model is run over its evaluation sequences one step at a time, its state carried from step to step.",
        ]
    for model, rows in others.values():
        lines += _kind_table(model, rows)
    if notes:
        lines += ["", "Not measured on this host: " + "; ".join(sorted(notes)) + "."]
    sources = [(m.name, fsutil.read_json(m.reference)) for m in inputs.models if m.reference and m.name in classifiers]
    if sources:
        lines += ["", "## Source models", "", "| model | top-1 on evaluation data | samples |", "|---|---:|---:|"]
        lines += [f"| {name} | {ref['top1']:.4f} | {ref['samples']} |" for name, ref in sources]
    other_sources = [(m, fsutil.read_json(m.reference)) for m in inputs.models if m.reference and m.name not in classifiers]
    if other_sources:
        lines += ["", "## Source models (other outputs)", "", "| model | output | figures on evaluation data | samples |"]
        lines += ["|---|---|---|---:|"] + [_source_line(model, figures) for model, figures in other_sources]
    lines += ["", f"![size against accuracy]({PLOT})", "", f"![per target]({TARGET_PLOT})", ""]
    out.mkdir(parents=True, exist_ok=True)
    _plot_size_accuracy(points, out / PLOT)
    _plot_per_target(points, out / TARGET_PLOT)
    fsutil.write_bytes(out / "report.md", "\n".join(lines).encode("utf-8"))
    return f"report {out / 'report.md'}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    with fsutil.atomic_output(path) as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})


def _plot_size_accuracy(points, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    measured = [(name, a, m) for name, a, m in points if "top1" in m]
    keys = sorted({(name, a.variant) for name, a, _ in measured})
    for index, (name, variant) in enumerate(keys):
        for position, fmt in enumerate(formats.FORMATS):
            marker = _MARKERS[position % len(_MARKERS)]
            chosen = [m for n, a, m in measured if (n, a.variant) == (name, variant) and a.format == fmt]
            if chosen:
                axes.scatter([m[metrics.SIZE_KB] for m in chosen], [m["top1"] * 100 for m in chosen], marker=marker,
                             color=f"C{index % 10}", label=f"{name} {variant} ({fmt})", s=50, alpha=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("artifact size (KiB, log scale)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title("Size against accuracy per variant")
    axes.grid(True, which="both", alpha=0.3)
    if measured:
        axes.legend(fontsize=7, loc="lower right")
    _save(figure, path)
    plt.close(figure)


def _plot_per_target(points, path: Path) -> None:
    """One panel per target: every artifact's size, labelled with its top-1 where measured."""
    plt = _pyplot()
    targets = sorted({a.target for _, a, _ in points})
    figure, axes = plt.subplots(len(targets) or 1, 1, figsize=(9, 2.2 * max(len(targets), 1)), dpi=100, squeeze=False)
    for row, target in enumerate(targets):
        ax = axes[row][0]
        chosen = [(name, a, m) for name, a, m in points if a.target == target]
        labels = [f"{name} {a.variant} {a.format}" for name, a, _ in chosen]
        sizes = [m[metrics.SIZE_KB] for _, _, m in chosen]
        bars = ax.barh(labels, sizes, color=[f"C{formats.FORMATS.index(a.format)}" for _, a, _ in chosen])
        for bar, (_, _, m) in zip(bars, chosen, strict=True):
            if "top1" in m:
                text = f"top-1 {m['top1'] * 100:.1f}%"
            elif metrics.MEAN_IOU in m:
                text = f"mean IoU {m[metrics.MEAN_IOU]:.3f}"
            elif metrics.COSINE_SIMILARITY in m:
                text = f"cosine {m[metrics.COSINE_SIMILARITY]:.4f}"
            else:
                text = "accuracy not measured"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {text}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_title(target, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[-1][0].set_xlabel("artifact size (KiB, log scale)")
    _save(figure, path)
    plt.close(figure)
