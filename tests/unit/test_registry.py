"""Every registered format is wired end to end through the registry, and no other list names a format."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from modelmake import formats, layout
from modelmake.contracts import ConvertJob, EvaluateJob, PublishJob
from modelmake.graph import plan_tasks
from modelmake.kinds import Precision
from modelmake.repository import publish
from modelmake.spec import load_plan
from modelmake.spec.schema import stale_files

from tests.support.spec_workspace import DEFAULT_FILES, VALID_SPEC, edit, make_workspace

PACKAGE = Path(formats.__file__).resolve().parent.parent

# A variant at every precision, listed for the one target below; calibration data is in VALID_SPEC.
SPEC = edit(
    VALID_SPEC,
    ("      int8: {quantize: int8}\n", "      int8: {quantize: int8}\n      dynamic: {quantize: dynamic_int8}\n"),
    ("      pixel-8: [fp32, fp16, int8]\n      snapdragon-8-gen-3: [int8]\n", "      only-{fmt}: [fp32, fp16, int8, dynamic]\n"),
    ("    budget_overrides:\n      snapdragon-8-gen-3: {max_latency_ms: 10}\n", ""),
)
PROFILE = """\
name: only-{fmt}
soc: a chip that runs {fmt} only
platform: {platform}
formats:
  {fmt}: {{precisions: [{precisions}]}}
"""


def _string_literals(path: Path):
    """The string constants of a module that are not docstrings, with their lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_outside_the_registry_names_a_format():
    named = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if formats.__name__.split(".")[-1] not in path.relative_to(PACKAGE).parts[:1]
        for line, value in _string_literals(path)
        if value in formats.FORMATS
    ]
    assert named == [], "ask modelmake.formats instead of naming a format:\n" + "\n".join(named)


def test_the_schema_files_list_what_the_registry_and_the_precisions_list():
    assert stale_files() == [], "run: python -m modelmake.spec.schema --write"


@pytest.mark.parametrize("name", formats.FORMATS)
def test_each_backend_implements_the_interface(name):
    backend = formats.backend(name)
    for member in ("name", "suffix", "source_kinds", "precisions", "convert_tools", "runtime_tools", "profile_properties"):
        assert getattr(backend, member), f"{name}: {member} is empty"
    assert backend.name == name
    assert set(backend.precisions) <= set(Precision)
    runtime = backend.runtime()
    for method in ("predict", "median_latency_ms", "io_details", "accelerator_coverage", "structural_check"):
        assert callable(getattr(runtime, method)), f"{name}'s runtime lacks {method}"


@pytest.mark.parametrize("name", formats.FORMATS)
def test_a_target_running_only_one_format_is_wired_through_plan_graph_evaluate_and_publish(tmp_path, name):
    backend = formats.backend(name)
    profile = PROFILE.format(fmt=name, platform="android", precisions=", ".join(backend.precisions))
    workspace = make_workspace(tmp_path, SPEC.replace("{fmt}", name), files=DEFAULT_FILES, profiles={f"only-{name}": profile})
    plan = load_plan(workspace)

    artifacts = list(plan.artifacts())
    assert {a.format for a in artifacts} == {name}
    assert {a.precision for a in artifacts} == {Precision.FP32, Precision.FP16, Precision.INT8, Precision.DYNAMIC_INT8}

    tasks = {f"{t['basename']}:{t['name']}": t for t in plan_tasks(plan, workspace) if t.get("name")}
    for artifact in artifacts:
        convert = tasks[f"convert:{artifact.id}"]
        job = convert["actions"][0][1][2]
        assert isinstance(job, ConvertJob) and job.support.format == name
        assert job.out.endswith(backend.suffix) and job.out in convert["targets"]
        assert layout.artifact_file(artifact) == job.out
        evaluate = tasks[f"evaluate:{artifact.id}"]
        evaluated = evaluate["actions"][0][1][2]
        assert isinstance(evaluated, EvaluateJob) and evaluated.format == name and evaluated.artifact == job.out

    published = tasks["publish:acme-vision"]["actions"][0][1][2]
    assert isinstance(published, PublishJob)
    # The repository orders a target's variants by the registry's order of formats.
    assert publish._format_rank(name) == formats.FORMATS.index(name)
