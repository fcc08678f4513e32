"""Workspaces for the spec tests, built in a temporary directory from text written in the tests."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from modelmake.errors import SpecError
from modelmake.spec import load_plan

# The line numbers matter: the expected error messages in the tests quote them.
VALID_SPEC = textwrap.dedent(
    """\
    format: 1
    bundle:
      name: acme-vision
      version: "1.4.0"
    models:
      digits:
        source: {recipe: recipes/digits.py}
        data:
          calibration: {recipe: recipes/digits.py, split: calibration, samples: 200}
          evaluation: {recipe: recipes/digits.py, split: test}
        io:
          input: {layout: NHWC, scale: 1/16}
          output: {labels: recipes/digits_labels.txt, top_k: 3}
        variants:
          fp32: {}
          fp16: {quantize: fp16}
          int8: {quantize: int8}
        targets:
          pixel-8: [fp32, fp16, int8]
          snapdragon-8-gen-3: [int8]
        budgets: {max_size_kb: 200, max_accuracy_drop: 0.005, max_latency_ms: 33}
        budget_overrides:
          snapdragon-8-gen-3: {max_latency_ms: 10}
    """
)

# A recipe only has to exist: compiling the spec never runs it.
DEFAULT_FILES = {
    "recipes/digits.py": "def build_model():\n    raise NotImplementedError\n",
    "recipes/digits_labels.txt": "".join(f"{digit}\n" for digit in range(10)),
}


def edit(text: str, *replacements: tuple[str, str]) -> str:
    """Apply (old, new) replacements, each of which must match exactly once."""
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def make_workspace(root: Path, spec: str | None = VALID_SPEC, *, files=None, profiles=None) -> Path:
    """models.yaml (unless spec is None), the given files (default: the recipe and labels) and targets/<name>.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        (root / "models.yaml").write_text(spec, encoding="utf-8")
    for relative, content in (DEFAULT_FILES if files is None else files).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    for name, content in (profiles or {}).items():
        path = root / "targets" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


def spec_problems(workspace: Path, environ=None) -> list[str]:
    """The problems load_plan reports for the workspace; fails the test if it compiles."""
    with pytest.raises(SpecError) as caught:
        load_plan(workspace, environ={} if environ is None else environ)
    problems = caught.value.problems
    noun = "problem" if len(problems) == 1 else "problems"
    assert str(caught.value) == f"{len(problems)} {noun} in the spec:\n" + "\n".join(f"  {p}" for p in problems)
    return problems
