"""The report's plots, drawn once with matplotlib: SVG for the HTML report, PNG for report.md.

Per model, size against accuracy drop (or parity with the source model when it has no labels), on linear axes from
zero: one marker shape per format, one colour per target, the shipped variant filled, a dropped one hollow, a failed
one crossed, and the model's budgets as dashed lines.  Artifacts with the same figures on several targets would
hide each other, so each target's marker is a size smaller than the one before: they nest as concentric rings,
and the page's tooltips name each.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

from .. import formats, fsutil, metrics
from ..steps._selection import figure as number
from .views import ArtifactView, ModelView, latency_text

# One marker per format in the registry's order (more than these cycle); one colour per target (tab10, then cycle).
_MARKERS = ("o", "s", "D", "^", "v", "P", "X")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_BUDGET_COLOUR = "#444444"
_BUDGET_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
_FAILED_COLOUR = "#b2182b"


@dataclass(frozen=True)
class Quality:
    """The figure a model's plot puts against size."""

    metric: str
    label: str  # the axis'
    short: str  # beside a figure
    scale: float  # 100: a fraction shown in percentage points
    budget: str  # the budget key that bounds it


def quality(model: ModelView) -> Quality | None:
    present = {name for view in model.artifacts for name in view.measured.metrics}
    for candidate in (
        Quality(metrics.ACCURACY_DROP, "accuracy drop (points, lower is better)", "drop", 100, f"max_{metrics.ACCURACY_DROP}"),
        Quality(metrics.IOU_DROP, "mean IoU drop (points, lower is better)", "IoU drop", 100, f"max_{metrics.IOU_DROP}"),
        Quality(metrics.SNR_DB, "parity with the source: SNR (dB, higher is closer)", "SNR (dB)", 1, f"min_{metrics.SNR_DB}"),
        Quality(metrics.COSINE_SIMILARITY, "parity with the source: cosine similarity", "cosine", 1,
                f"min_{metrics.COSINE_SIMILARITY}"),
    ):
        if candidate.metric in present:
            return candidate
    return None


def target_colours(targets: list[str]) -> dict[str, str]:
    return {target: _COLOURS[index % len(_COLOURS)] for index, target in enumerate(targets)}


def _marker(fmt: str) -> str:
    return _MARKERS[formats.FORMATS.index(fmt) % len(_MARKERS)] if fmt in formats.FORMATS else "o"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _budget_lines(model: ModelView, key: str) -> list[tuple[float, str]]:
    """(limit, label) of each distinct limit of a budget; the label names the targets when not all have it."""
    targets = list(dict.fromkeys(v.artifact.target for v in model.artifacts))
    limits: dict[float, list[str]] = {}
    for view in model.artifacts:
        for budget in view.artifact.budgets:
            if budget.key == key and view.artifact.target not in limits.setdefault(budget.limit, []):
                limits[budget.limit].append(view.artifact.target)
    lines = []
    for limit, on in limits.items():
        others = [t for t in targets if t not in on]
        where = "" if not others else f" ({', '.join(on)})" if len(on) <= len(others) else f" (all but {', '.join(others)})"
        lines.append((limit, f"{key} {limit:g}{where}"))  # as the spec writes it: 0.999999 stays
    return lines


def _heading(text: str):
    from matplotlib.lines import Line2D

    line = Line2D([], [], linestyle="", marker="", label=text)
    line.set_gid("heading")
    return line


@dataclass
class _Drawn:
    """What the SVG gets beyond matplotlib's drawing: a tooltip per marker, classes for the page's tests and scripts."""

    titles: dict[str, str]
    classes: dict[str, str]


def _quality_text(view: ArtifactView, q: Quality | None) -> str:
    value = view.measured.metrics.get(q.metric) if q else None
    if value is None:
        return "figures not measured"
    return f"{q.short} {value * q.scale:+.2f} pt" if q.scale == 100 else f"{q.short} {number(value)}"  # type: ignore[union-attr]


def draw_size_quality(ax, model: ModelView, colours: dict[str, str], prefix: str) -> _Drawn:
    """One model's size against its quality figure on ``ax``."""
    from matplotlib.lines import Line2D

    q = quality(model)
    size_limits = _budget_lines(model, f"max_{metrics.SIZE_KB}")
    quality_limits = _budget_lines(model, q.budget) if q else []
    drawn = _Drawn({}, {})
    order = list(dict.fromkeys(v.artifact.target for v in model.artifacts))
    built = [v for v in model.artifacts if not v.measured.not_built and metrics.SIZE_KB in v.measured.metrics]
    sizes, values, size_only = [], [], False
    for number_, view in enumerate(sorted(built, key=lambda v: order.index(v.artifact.target))):
        a, m = view.artifact, view.measured.metrics
        rank = order.index(a.target)
        area = max(16.0 - 3.2 * rank, 4.0) ** 2  # diameters 16, 12.8, 9.6 ... points: rings wide enough to see
        colour = colours[a.target]
        value = m.get(q.metric) if q else None
        gid = f"{prefix}-point-{number_}"
        sizes.append(m[metrics.SIZE_KB])
        status = view.status
        if value is None:
            size_only = True
            artist = ax.scatter([m[metrics.SIZE_KB]], [0.04], transform=ax.get_xaxis_transform(), marker="|", s=260,
                                color=colour, linewidths=2.5, zorder=3, clip_on=False)
        else:
            values.append(value * q.scale)  # type: ignore[union-attr]
            artist = ax.scatter([m[metrics.SIZE_KB]], [value * q.scale], marker=_marker(a.format), s=area,  # type: ignore[union-attr]
                                facecolors=colour if status == "shipped" else "white",
                                edgecolors="white" if status == "shipped" else colour, linewidths=0.9 if status == "shipped" else 1.8,
                                zorder=3 + rank)
            if status == "failed":
                ax.scatter([m[metrics.SIZE_KB]], [value * q.scale], marker="x", s=area * 0.45, color=_FAILED_COLOUR,  # type: ignore[union-attr]
                           linewidths=1.8, zorder=20)
        artist.set_gid(gid)
        drawn.classes[gid] = "point"
        tooltip = f"{a.id}\n{number(m[metrics.SIZE_KB])} KiB, {_quality_text(view, q)}"
        latency = m.get(metrics.LATENCY_MS)
        drawn.titles[gid] = tooltip + (f", {latency_text(latency)}" if latency is not None else "") + f"\n{view.bundle_cell}"

    handles = [_heading("colour: target")]
    handles += [Line2D([], [], linestyle="", marker="o", markersize=8, color=colours[t], label=t) for t in order]
    handles += [_heading("shape: format")]
    handles += [
        Line2D([], [], linestyle="", marker=_marker(f), markersize=8, color="#555555", label=f)
        for f in dict.fromkeys(v.artifact.format for v in model.artifacts)
    ]
    statuses = {v.status for v in built}
    if statuses:
        handles.append(_heading("fill: what became of it"))
    if "shipped" in statuses:
        handles.append(Line2D([], [], linestyle="", marker="h", markersize=8, color="#555555", label="shipped (filled)"))
    if statuses - {"shipped"}:
        handles.append(Line2D([], [], linestyle="", marker="h", markersize=8, markerfacecolor="white", color="#555555",
                              label="not shipped (hollow)"))
    if "failed" in statuses:
        handles.append(Line2D([], [], linestyle="", marker="x", markersize=7, color=_FAILED_COLOUR, label="failed a budget"))
    if size_only:
        handles.append(Line2D([], [], linestyle="", marker="|", markersize=12, markeredgewidth=2.5, color="#555555",
                              label="size only: figures\nnot measured here"))
    if size_limits or quality_limits:
        handles.append(_heading("budgets"))

    style = iter(_BUDGET_STYLES * 4)
    for index, (limit, label) in enumerate(size_limits):
        line = ax.axvline(limit, color=_BUDGET_COLOUR, linestyle=next(style), linewidth=1.3, zorder=2)
        line.set_gid(f"{prefix}-budget-size-{index}")
        drawn.classes[f"{prefix}-budget-size-{index}"] = "budget"
        handles.append(Line2D([], [], color=_BUDGET_COLOUR, linestyle=line.get_linestyle(), label=label))
    for index, (limit, label) in enumerate(quality_limits):
        shown = limit * q.scale  # type: ignore[union-attr]
        line = ax.axhline(shown, color=_BUDGET_COLOUR, linestyle=next(style), linewidth=1.3, zorder=2)
        line.set_gid(f"{prefix}-budget-quality-{index}")
        drawn.classes[f"{prefix}-budget-quality-{index}"] = "budget"
        values.append(shown)
        points = f" = {shown:g} point{'' if shown == 1 else 's'}" if q.scale == 100 else ""  # type: ignore[union-attr]
        handles.append(Line2D([], [], color=_BUDGET_COLOUR, linestyle=line.get_linestyle(), label=label + points))

    right = max(sizes + [limit for limit, _ in size_limits], default=1.0)
    ax.set_xlim(0, right * 1.08)
    if q and q.scale == 100:
        values.append(0.0)  # a drop axis starts at no drop
    low, high = min(values, default=0.0), max(values, default=1.0)
    span = (high - low) or max(abs(high), 1.0) * 0.5
    ax.set_ylim(low - span * (0.35 if size_only else 0.12), high + span * 0.12)
    ax.ticklabel_format(axis="both", style="plain", useOffset=False)
    if size_only:
        # The size-only markers have a lane of their own at the bottom, with no figure ticks in it.
        bottom = low - span * 0.12
        ax.axhspan(ax.get_ylim()[0], bottom, color="#f2f2f2", zorder=0)
        ax.set_yticks([tick for tick in ax.get_yticks() if bottom <= tick <= ax.get_ylim()[1]])
    ax.set_xlabel("artifact size (KiB, linear from 0)")
    ax.set_ylabel(q.label if q else "no accuracy or parity figure", fontsize=9)
    if not q:
        ax.set_yticks([])
    ax.grid(True, alpha=0.3)
    against = "" if not q else " against accuracy" if q.scale == 100 else " against parity"
    ax.set_title(f"{model.model.name}: size{against}", fontsize=11)
    if not built:
        ax.text(0.5, 0.5, "nothing of this model was built", transform=ax.transAxes, ha="center", color=_FAILED_COLOUR)
    legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    for handle, text in zip(handles, legend.get_texts(), strict=True):
        if handle.get_gid() == "heading":
            text.set_fontweight("bold")
    legend.set_gid(f"{prefix}-legend")
    drawn.classes[f"{prefix}-legend"] = "legend"
    missing = [f"{v.artifact.id} ({'not built' if v.measured.not_built else 'not evaluated'})"
               for v in model.artifacts if v not in built]
    if missing:
        ax.text(0, -0.2, "not plotted: " + ", ".join(missing), transform=ax.transAxes, fontsize=8, color=_FAILED_COLOUR, va="top")
    return drawn


def draw_size_per_target(ax, model: ModelView, colours: dict[str, str]) -> None:
    """One model's artifact sizes as bars grouped by target, linear from 0, with the size budget."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    q = quality(model)
    order = list(dict.fromkeys(v.artifact.target for v in model.artifacts))
    built = [v for v in model.artifacts if not v.measured.not_built and metrics.SIZE_KB in v.measured.metrics]
    built.sort(key=lambda v: (order.index(v.artifact.target), v.artifact.preference, v.artifact.variant, v.artifact.format))
    labels = [f"{v.artifact.target} · {v.artifact.variant} {v.artifact.format}" for v in built]
    sizes = [v.measured.metrics[metrics.SIZE_KB] for v in built]
    positions = list(range(len(built)))[::-1]
    for y, view, size in zip(positions, built, sizes, strict=True):
        colour = colours[view.artifact.target]
        shipped = view.status == "shipped"
        ax.barh(y, size, color=colour if shipped else "white", edgecolor=_FAILED_COLOUR if view.status == "failed" else colour,
                hatch=None if shipped else "///", linewidth=1.5, height=0.7)
        latency = view.measured.metrics.get(metrics.LATENCY_MS)
        text = f" {size:.1f} KiB · {_quality_text(view, q)}" + (f" · {latency_text(latency)}" if latency is not None else "")
        ax.text(size, y, text, va="center", fontsize=7, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85})
    ax.set_yticks(positions, labels, fontsize=8)
    limits = _budget_lines(model, f"max_{metrics.SIZE_KB}")
    statuses = {view.status for view in built}
    handles: list = [patch for status, patch in (
        ("shipped", Patch(facecolor="#777777", edgecolor="#777777", label="shipped")),
        ("dropped", Patch(facecolor="white", edgecolor="#777777", hatch="///", label="dropped")),
        ("failed", Patch(facecolor="white", edgecolor=_FAILED_COLOUR, hatch="///", label="failed")),
    ) if status in statuses]
    for (limit, label), style in zip(limits, _BUDGET_STYLES, strict=False):
        line = ax.axvline(limit, color=_BUDGET_COLOUR, linestyle=style, linewidth=1.3)
        handles.append(Line2D([], [], color=_BUDGET_COLOUR, linestyle=line.get_linestyle(), label=label))
    ax.set_xlim(0, max(sizes + [limit for limit, _ in limits], default=1.0) * 1.5)
    ax.set_ylim(-0.7, len(built) - 0.3)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel("artifact size (KiB, linear from 0)", fontsize=9)
    ax.set_title(f"{model.model.name}: size per target (colour: target)", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


_AUTOMATIC_ID = re.compile(r' id="[A-Za-z0-9.]+_\d+"')
_SIZE = re.compile(r' (width|height)="[0-9.]+pt"')
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def model_svg(model: ModelView, colours: dict[str, str], prefix: str) -> str:
    """One model's size/quality plot as an <svg> element to inline in HTML, each marker with its tooltip."""
    import matplotlib

    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(10, 4.4))
    drawn = draw_size_quality(ax, model, colours, prefix)
    figure.tight_layout()
    buffer = io.StringIO()
    # Text stays text (searchable, smaller); ids are salted per model, so several SVGs share one page without clashes.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    svg = buffer.getvalue()
    # Sized by the page (the viewBox keeps the proportions), without the ids matplotlib numbers from 1 in every SVG
    # and without its RDF metadata.
    svg = _SIZE.sub("", _METADATA.sub("", _AUTOMATIC_ID.sub("", svg[svg.index("<svg"):])), count=2)
    for gid, css in drawn.classes.items():
        title = f"<title>{escape(drawn.titles[gid])}</title>" if gid in drawn.titles else ""
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}" class="{css}">{title}', 1)
    return svg


def _save_png(figure, path: Path) -> None:
    figure.tight_layout()
    with fsutil.atomic_output(path) as handle:
        figure.savefig(handle, format="png", dpi=100, metadata={"Software": None})


def size_quality_png(models: list[ModelView], colours: dict[str, str], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(max(len(models), 1), 1, figsize=(11, 4.4 * max(len(models), 1)), squeeze=False)
    for index, model in enumerate(models):
        draw_size_quality(axes[index][0], model, colours, f"m{index}")
    _save_png(figure, path)
    plt.close(figure)


def per_target_png(models: list[ModelView], colours: dict[str, str], path: Path) -> None:
    plt = _pyplot()
    heights = [max(len(m.artifacts), 1) * 0.32 + 1.3 for m in models] or [1.0]
    figure, axes = plt.subplots(len(heights), 1, figsize=(11, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for index, model in enumerate(models):
        draw_size_per_target(axes[index][0], model, colours)
    _save_png(figure, path)
    plt.close(figure)
