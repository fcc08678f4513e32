"""A build whose budgets fail still gets both reports, saying at the top that it was not packaged and why."""
from __future__ import annotations

import json
from html import escape

from modelmake.report.markdown import NOT_PACKAGED

from tests.support.workspaces import BUNDLE, DIGITS_ARTIFACTS, VERSION


def test_a_broken_budget_under_continue_writes_both_reports_with_each_figure_and_limit(built_workspace):
    built_workspace.edit_spec("budgets: {max_size_kb: 64,", "budgets: {max_size_kb: 1,")
    run = built_workspace.doit("--continue", ok=False)
    assert f"report:{BUNDLE}" in run.executed, run.describe()
    reports = built_workspace.build / "reports" / BUNDLE / VERSION
    lines = (reports / "report.md").read_text(encoding="utf-8").splitlines()
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert lines[2] == f"**{NOT_PACKAGED}**" and 'id="not-packaged"' in page
    for artifact in DIGITS_ARTIFACTS:
        name, target = artifact.split("@")
        path = built_workspace.build / "metrics" / target / f"{name}.json"
        size = json.loads(path.read_text(encoding="utf-8"))["metrics"]["size_kb"]
        failure = f"{artifact}: over budget: size_kb is {size:.4g}, over its max_size_kb of 1 ({size - 1:+.0%})"
        assert f"- {failure}" in lines, lines[:12]
        assert f"<li>{escape(failure)}</li>" in page
