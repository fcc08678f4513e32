"""report.html: one self-contained page (inline CSS, script and SVG; nothing fetched when it is viewed)."""
from __future__ import annotations

import re
from html import escape

from .markdown import INTRO, NOT_PACKAGED, OTHER_KINDS
from .plots import model_svg, target_colours
from .tables import Table, classifier_table, kind_table, kind_title, output_table, selection_lines, source_tables
from .views import BundleView, ModelView, is_classifier

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; } h3 { margin-bottom: .3em; }
.failures { border: 2px solid #b2182b; background: #fdecea; padding: .2em 1em .6em; border-radius: 6px; }
.failures h2 { border: 0; color: #b2182b; margin-top: .5em; }
.ok { border: 2px solid #1a7f37; background: #e9f7ec; padding: .5em 1em; border-radius: 6px; }
.intro, .note { color: #555; max-width: 75em; }
nav a { margin-right: 1em; }
figure { margin: 0; } figure svg { width: 100%; max-width: 1150px; height: auto; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .4em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; vertical-align: top; white-space: nowrap; }
td:nth-last-child(-n+3) { white-space: normal; min-width: 14em; }
th { background: #f4f4f4; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort=ascending]::after { content: " ▲"; }
table.sortable th[aria-sort=descending]::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.shipped td:last-child { color: #1a7f37; } tr.dropped td:last-child { color: #8a6d00; }
tr.failed td { background: #fdecea; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .3em; vertical-align: -1px; }
ul.selection li { margin-bottom: .2em; }
"""

# Click a heading to sort by it; click again to reverse.  Numbers sort by value, text by its words.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var p = x.dataset.value, q = y.dataset.value, order;
        if (p !== undefined && q !== undefined) { order = parseFloat(p) - parseFloat(q); }
        else if (p !== undefined) { order = -1; } else if (q !== undefined) { order = 1; }
        else { order = x.textContent.localeCompare(y.textContent, undefined, {numeric: true}); }
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _text(markdown: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", escape(markdown))


def _table(table: Table, statuses: list[str] | None = None, kind: str = "") -> str:
    head = "".join(f"<th scope=\"col\">{escape(c.heading)}</th>" for c in table.columns)
    rows = []
    for index, row in enumerate(table.rows):
        cells = []
        for column, cell in zip(table.columns, row, strict=True):
            value = f' data-value="{cell.value!r}"' if cell.value is not None else ""
            css = ' class="num"' if column.numeric else ""
            cells.append(f"<td{css}{value}>{_text(cell.text)}</td>")
        status = f' class="{statuses[index]}"' if statuses else ""
        rows.append(f"<tr{status}>{''.join(cells)}</tr>")
    classes = f"sortable {kind}".strip()
    return f'<div class="scroll"><table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _coverage(model: ModelView) -> str:
    covered = [v for v in model.artifacts if v.measured.coverage]
    if not covered:
        return ""
    items = []
    for view in covered:
        coverage = view.measured.coverage or {}
        share = coverage["on_accelerator"] / coverage["ops"] if coverage["ops"] else 1.0
        fallback = ", ".join(f"{escape(op)} ×{count}" for op, count in coverage["fallback"].items())
        items.append(
            f"<tr><td>{escape(view.artifact.target)}</td><td>{escape(view.artifact.format)}</td>"
            f"<td>{escape(view.artifact.variant)}</td><td>{escape(coverage['accelerator'])}</td>"
            f"<td class=\"num\" data-value=\"{share!r}\">{coverage['on_accelerator']}/{coverage['ops']} ({share:.0%})</td>"
            f"<td>{fallback or 'none: every op runs on the accelerator'}</td></tr>"
        )
    return (
        "<h3>Accelerator coverage</h3><div class=\"scroll\"><table class=\"sortable coverage\"><thead><tr><th>target</th>"
        "<th>format</th><th>variant</th><th>accelerator</th><th>ops on it</th><th>ops that fall back to the CPU</th></tr>"
        f"</thead><tbody>{''.join(items)}</tbody></table></div>"
    )


def _selection(model: ModelView) -> str:
    groups = selection_lines(model)
    if not groups:
        return ""
    items = []
    for title, candidates in groups:
        shown = "; ".join(f"<strong>{escape(v.artifact.variant)}</strong> {escape(text)}" for v, text in candidates)
        items.append(f"<li>{escape(title)}: {shown}</li>")
    return f"<h3>Selection</h3><ul class=\"selection\">{''.join(items)}</ul>"


def _model_section(index: int, model: ModelView, colours: dict[str, str]) -> str:
    name = model.model.name
    table = classifier_table([model]) if is_classifier(model.model) else kind_table(model)
    statuses = [view.status for view in model.artifacts]
    parts = [
        f'<section class="model" id="model-{escape(name)}"><h2>{escape(name)} ({escape(kind_title(model.model))})</h2>',
        f"<p class=\"note\">{escape(model.model.description)}</p>" if model.model.description else "",
        f"<figure>{model_svg(model, colours, f'm{index}')}</figure>",
        _selection(model),
        "<h3>Artifacts</h3>",
        _table(table, statuses, "artifacts"),
    ]
    if len(model.model.outputs) > 1:
        parts += [f"<h3>Each output of {escape(name)}</h3>", _table(output_table(model))]
    parts += [_coverage(model), "</section>"]
    return "".join(parts)


def html(view: BundleView) -> str:
    bundle = view.inputs.bundle
    title = f"{bundle.name} {bundle.version}"
    colours = target_colours(view.targets)
    if view.failures:
        verdict = (
            f'<section class="failures" id="not-packaged"><h2>{escape(NOT_PACKAGED)}</h2><ul>'
            + "".join(f"<li>{escape(failure)}</li>" for failure in view.failures)
            + "</ul></section>"
        )
    else:
        shipped = sum(1 for a in view.artifacts if a.status == "shipped")
        verdict = f'<p class="ok" id="packaged">Every artifact the bundle needs passes its budgets: {shipped} ship.</p>'
    targets = " ".join(
        f'<span><span class="swatch" style="background:{colours[t]}"></span>{escape(t)}</span>' for t in view.targets
    )
    notes = sorted({note for a in view.artifacts for note in a.measured.not_measured.values()})
    body = [
        f"<h1>{escape(title)}</h1>",
        verdict,
        f'<p class="intro">{escape(INTRO)}</p>',
        f'<p class="note">{escape(OTHER_KINDS)}</p>' if any(not is_classifier(m.model) for m in view.models) else "",
        f'<p class="note">Not measured on this host: {escape("; ".join(notes))}.</p>' if notes else "",
        "<nav>Models: " + "".join(f'<a href="#model-{escape(m.model.name)}">{escape(m.model.name)}</a>' for m in view.models)
        + f"</nav><p>Targets: {targets}</p>",
        *(_model_section(index, model, colours) for index, model in enumerate(view.models)),
        _optimizations_section(view),
        *(f"<h2>{escape(heading)}</h2>{_table(table)}" for heading, table in source_tables(list(view.models))),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{escape(title)} report</title><style>{_STYLE}</style></head><body>"
        + "\n".join(part for part in body if part)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _optimizations_section(view: BundleView) -> str:
    from .optimizations import NOTE, TITLE, optimizations_table

    table = optimizations_table(list(view.models))
    if table is None:
        return ""
    return f'<h2>{escape(TITLE)}</h2><p class="note">{escape(NOTE)}</p>{_table(table)}'
