"""report.md: the tables in Markdown, for CI job summaries, with the PNG plots."""
from __future__ import annotations

from .. import metrics
from .optimizations import NOTE as OPTIMIZATIONS_NOTE
from .optimizations import TITLE as OPTIMIZATIONS_TITLE
from .optimizations import optimizations_table
from .tables import Table, classifier_table, kind_table, kind_title, output_table, selection_lines, source_tables
from .views import BundleView, is_classifier

INTRO = (
    "Accuracy is measured on each model's evaluation data; the drop is the source model's top-1 minus the artifact's, "
    "in percentage points; parity compares each artifact's outputs with the source model's on the same inputs. "
    "Latency is the median of 50 single-sample runs on the build host's CPU with one thread: compare variants with it, "
    "not devices. Core ML runs on macOS and iOS only: on other hosts its packages are checked structurally "
    "(they load in coremltools, inputs and outputs match the source, weights carry the requested precision) "
    "and their accuracy and latency are marked not measured."
)
OTHER_KINDS = (
    "Models whose output is not class scores, and models with several outputs, have a table each, with the figures "
    "their outputs' kinds have: a mask's mean IoU "
    "and pixel accuracy against its per-pixel labels, the IoU drop in points and the share of pixels agreeing with the "
    "source model's mask; an embedding's worst per-sample cosine; for all, parity with the source model's outputs "
    f"(cosine, SNR in dB up to {metrics.SNR_CAP_DB:g} for an exact match, max abs error). '—': no such figure. "
    "A stateful model is run over its evaluation sequences one step at a time, its state carried from step to step."
)
NOT_PACKAGED = "Not packaged: the package step refuses this build until these are fixed."


def _table(table: Table) -> list[str]:
    return [
        "| " + " | ".join(c.heading for c in table.columns) + " |",
        "|" + "".join("---:|" if c.numeric else "---|" for c in table.columns),
        *("| " + " | ".join(cell.text for cell in row) + " |" for row in table.rows),
    ]


def markdown(view: BundleView, plots: list[tuple[str, str]]) -> str:
    """The whole report.md; plots are (alt text, file name) pairs beside it."""
    bundle = view.inputs.bundle
    lines = [f"# {bundle.name} {bundle.version}", ""]
    if view.failures:
        lines += [f"**{NOT_PACKAGED}**", "", *(f"- {failure}" for failure in view.failures), ""]
    lines += [INTRO, ""]
    classifiers = [m for m in view.models if is_classifier(m.model)]
    others = [m for m in view.models if not is_classifier(m.model)]
    if classifiers:
        lines += _table(classifier_table(classifiers))
    if others:
        lines += ["", OTHER_KINDS]
    for model in others:
        lines += ["", f"## {model.model.name} ({kind_title(model.model)})", "", *_table(kind_table(model))]
        if len(model.model.outputs) > 1:
            lines += ["", f"Each output of {model.model.name}:", "", *_table(output_table(model))]
    notes = sorted({note for a in view.artifacts for note in a.measured.not_measured.values()})
    if notes:
        lines += ["", "Not measured on this host: " + "; ".join(notes) + "."]
    selections = [(m.model.name, group) for m in view.models for group in selection_lines(m)]
    if selections:
        lines += ["", "## Selection", "", "Each selecting target's candidates in preference order:", ""]
        for name, (title, candidates) in selections:
            lines.append(f"- {name} on {title}: " + "; ".join(f"{v.artifact.variant} {text}" for v, text in candidates))
    optimizations = optimizations_table(list(view.models))
    if optimizations is not None:
        lines += ["", f"## {OPTIMIZATIONS_TITLE}", "", OPTIMIZATIONS_NOTE, "", *_table(optimizations)]
    for title, table in source_tables(list(view.models)):
        lines += ["", f"## {title}", "", *_table(table)]
    for alt, file in plots:
        lines += ["", f"![{alt}]({file})"]
    return "\n".join(lines) + "\n"
