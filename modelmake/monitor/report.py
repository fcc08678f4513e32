"""The monitor's report: monitor.json for machines, monitor.html for people (self-contained, the build report's style)."""
from __future__ import annotations

from html import escape
from pathlib import Path

from .. import fsutil
from ..report.html import _SCRIPT, _STYLE
from .analysis import ALERT, NOT_ENOUGH

JSON_NAME, HTML_NAME = "monitor.json", "monitor.html"
_EXTRA_STYLE = "tr.alert td { background: #fdecea; } tr.thin td { color: #777; } td.alerts { color: #b2182b; }\n"


def write_report(document: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    fsutil.write_json(json_path, document)
    with fsutil.atomic_output(html_path) as out:
        out.write(render_html(document).encode("utf-8"))
    return json_path, html_path


def _cell(value, number: bool = False) -> str:
    if value is None:
        return "<td>–</td>"
    if number:
        return f'<td class="num" data-value="{value}">{escape(f"{value:.4g}" if isinstance(value, float) else str(value))}</td>'
    return f"<td>{escape(str(value))}</td>"


def _percent(value) -> str:
    if value is None:
        return "<td>–</td>"
    return f'<td class="num" data-value="{value}">{value:.2%}</td>'


def _table(headings: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join(f'<tr class="{cls}">{"".join(cells)}</tr>' for cls, cells in rows)
    return f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(document: dict) -> str:
    alerts, intake = document["alerts"], document["intake"]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>modelmake monitor</title>"
             f"<style>{_STYLE}{_EXTRA_STYLE}</style></head><body><h1>Device telemetry</h1>"]
    parts.append(f'<p class="intro">{intake["counted"]} of {intake["lines"]} records counted, from '
                 f'{len(document["groups"])} groups (model version × chipset × channel × arm); compared with the baselines '
                 f'of {len(document["bundles"])} verified bundles.</p>')
    if alerts:
        items = "".join(f"<li><b>{escape(a['guardrail'])}</b> — {escape(a['where'])}: {escape(a['message'])}</li>" for a in alerts)
        parts.append(f'<div class="failures"><h2>{len(alerts)} alerts</h2><ul>{items}</ul></div>')
    else:
        parts.append('<p class="ok">No alert: every group with enough data holds its budgets and baselines.</p>')

    left_out = {k: v for k, v in intake["left_out"].items() if v}
    if left_out:
        parts.append("<h2>Records left out</h2><ul>")
        for kind, count in left_out.items():
            shown = intake["messages"].get(kind, [])
            examples = "".join(f"<li><code>{escape(m)}</code></li>" for m in shown)
            more = f"<li>… and {count - len(shown)} more</li>" if count > len(shown) else ""
            parts.append(f"<li>{escape(kind.replace('_', ' '))}: {count}<ul>{examples}{more}</ul></li>")
        parts.append("</ul>")

    parts.append("<h2>Groups</h2>")
    rows = []
    for g in document["groups"]:
        cls = "alert" if g["status"] == ALERT else "thin" if g["status"] == NOT_ENOUGH else ""
        drift = max((d.get("psi") or 0 for d in g["drift"]), default=None)
        accuracy = g["accuracy_proxy"]["estimate"] if g["accuracy_proxy"] else None
        latency = g["latency_ms"]
        rows.append((cls, [
            _cell(g["model"]), _cell(g["version"]), _cell(g["chipset"]), _cell(g["channel"]), _cell(g["arm"]),
            _cell(g["devices"], True), _cell(g["inferences"], True),
            _cell(latency.get("p50"), True), _cell(latency.get("p90"), True), _cell(g["max_latency_ms"], True),
            _cell(g["fps"], True), _cell(g["min_fps"], True),
            _percent(g["rates"]["failure_rate"]["estimate"]), _percent(g["rates"]["fallback_rate"]["estimate"]),
            _cell(drift, True), _percent(accuracy),
            _cell(g["status"]), f'<td class="alerts">{escape("; ".join(g["alerts"]) or (g["evidence"] or ""))}</td>',
        ]))
    parts.append(_table(["model", "version", "chipset", "channel", "arm", "devices", "inferences", "p50 ms", "p90 ms",
                         "budget ms", "fps", "min fps", "failures", "fallbacks", "max PSI", "accuracy proxy", "status",
                         "alerts"], rows))

    if document["comparisons"]:
        parts.append("<h2>Comparisons</h2>")
        rows = []
        for c in document["comparisons"]:
            cells = [_cell(c["what"])]
            for name in ("accuracy_proxy", "failure_rate"):
                figure = c[name]
                if figure["verdict"] == NOT_ENOUGH:
                    cells += [_cell(figure["evidence"]), _cell(None)]
                else:
                    d = figure["difference"]
                    shown = f"{d['estimate'] * 100:+.2f} points [{d['low'] * 100:+.2f}, {d['high'] * 100:+.2f}]"
                    cells += [_cell(shown), _cell(figure["verdict"])]
            worse = any(c[n]["verdict"] == "worse" for n in ("accuracy_proxy", "failure_rate"))
            rows.append(("alert" if worse else "", cells))
        parts.append(_table(["comparison", "accuracy proxy: difference [interval]", "verdict",
                             "failure rate: difference [interval]", "verdict"], rows))
    parts.append(f'<p class="note">Drift: PSI and Jensen–Shannon distance of each distribution against its baseline; '
                 f'settings: {escape(", ".join(f"{k}={v}" for k, v in document["settings"].items()))}.</p>')
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)
