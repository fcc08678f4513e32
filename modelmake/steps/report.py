"""Step `report`: every artifact's figures, budgets and fate, as Markdown with PNG plots and as one HTML page.

It is written for every build, also when budgets fail, conversions fail or no variant passes on a selecting
target: it then says at the top that the bundle was not packaged, and why.
"""
from __future__ import annotations

from pathlib import Path

from .. import fsutil
from ..contracts import ReportJob
from ..report.html import html
from ..report.markdown import markdown
from ..report.plots import per_target_png, size_quality_png, target_colours
from ..report.views import bundle_view

MARKDOWN = "report.md"
HTML = "report.html"
PLOT = "size_vs_accuracy.png"
TARGET_PLOT = "per_target.png"
OUTPUTS = (MARKDOWN, HTML, PLOT, TARGET_PLOT)


def report(job: ReportJob) -> str:
    out = Path(job.out_dir)
    view = bundle_view(job.inputs)
    colours = target_colours(view.targets)
    out.mkdir(parents=True, exist_ok=True)
    models = list(view.models)
    size_quality_png(models, colours, out / PLOT)
    per_target_png(models, colours, out / TARGET_PLOT)
    plots = [("size against accuracy drop or parity, per model", PLOT), ("size per target, per model", TARGET_PLOT)]
    fsutil.write_bytes(out / MARKDOWN, markdown(view, plots).encode("utf-8"))
    fsutil.write_bytes(out / HTML, html(view).encode("utf-8"))
    verdict = f", not packaged: {len(view.failures)} failure(s)" if view.failures else ""
    return f"report {out / HTML}{verdict}"
