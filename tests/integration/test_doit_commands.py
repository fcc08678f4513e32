"""`doit clean`, `doit forget` and `doit -n N` behave as doit users expect; `doit list` and `doit info`
change nothing; `modelmake build` runs doit and exits with modelmake's codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmake import errors
from modelmake.versions import version_of

from tests.support.workspaces import ALL_TASKS, BUNDLE, BUNDLE_TASKS, NOISE, DoitRun, Workspace, subprocess_env, tree_digest

SIGNING_LINE = '  signing: {key: "file:keys/signing.pem"}\n'


def test_clean_removes_outputs_and_a_parallel_rebuild_gives_the_same_bundle(built, built_workspace):
    assert built_workspace.outputs()
    built_workspace.doit("clean")
    assert built_workspace.outputs() == {}, "doit clean left outputs behind"
    assert not (built_workspace.build / "bundles" / "test-bundle" / "0.3.0").exists()

    run = built_workspace.doit("-n", "2")
    assert run.executed == ALL_TASKS, run.describe()
    noisy = [pattern.pattern for pattern in NOISE if pattern.search(run.output)]
    assert noisy == [], f"framework noise on the console of a parallel build: {noisy}\n{run.output}"
    assert built_workspace.bundle_bytes() == built.bundle
    assert built_workspace.doit().executed == set()


def test_clean_dry_run_names_every_path_it_would_remove_and_removes_nothing(built_workspace):
    before = built_workspace.outputs(logs=True)
    run = built_workspace.doit("clean", "-n")
    lines = run.stdout.splitlines()
    assert "convert:digits.int8.tflite@pixel-8 - executing 'remove build/artifacts/pixel-8/digits.int8.tflite, "
    "build/artifacts/pixel-8/digits.int8.tflite.json'" in lines, run.describe()
    assert "source:digits - executing 'remove build/sources/digits/'" in lines, run.describe()
    assert (
        f"package:{BUNDLE} - executing 'remove build/bundles/{BUNDLE}/0.3.0/, build/bundles/{BUNDLE}/{BUNDLE}-0.3.0-android.zip, "
        f"build/bundles/{BUNDLE}/{BUNDLE}-0.3.0.zip'"
    ) in lines, run.describe()
    assert "function" not in run.output, run.describe()
    assert built_workspace.outputs(logs=True) == before


def test_info_names_what_changed_since_the_last_run(built_workspace):
    task = "convert:digits.int8.tflite@pixel-8"
    assert "status     : up-to-date" in built_workspace.doit("info", task).stdout
    built_workspace.edit_spec("int8: {quantize: int8}", "int8: {quantize: int8, per_channel: false}")
    run = built_workspace.doit("info", task, ok=False)
    assert "    - changed since the last successful run: ConvertJob.per_channel (args=[], kwargs={})" in run.stdout, run.describe()
    assert "config_changed" not in run.stdout, run.describe()


def test_info_on_a_task_never_run_names_what_it_hashes(fresh_workspace):
    run = fresh_workspace.doit("info", "convert:digits.int8.tflite@pixel-8", ok=False)
    tools = f"modelmake {version_of('modelmake')}, tensorflow {version_of('tensorflow')}"
    expected = f"    - no successful run recorded of ConvertJob with {tools}"
    assert expected in run.stdout, run.describe()


def test_forget_one_task_makes_just_it_run_again(built_workspace):
    task = "convert:digits.fp16.tflite@pixel-8"
    built_workspace.doit("forget", task)
    run = built_workspace.doit()
    # the conversion gives the same bytes again, so nothing downstream has to run
    assert run.executed == {task}, run.describe()


def test_rerunning_the_sources_reruns_nothing_that_depends_on_them(built, built_workspace):
    """A recipe retrained from its seed and exported again gives the same model: its record, and so the tasks after it, stay."""
    records = {model: (built_workspace.build / "sources" / model / "source.json").read_bytes() for model in ("digits", "glyphs")}
    built_workspace.doit("forget", "source")
    run = built_workspace.doit()
    assert run.executed == {"source:digits", "source:glyphs"}, run.describe()
    assert {model: (built_workspace.build / "sources" / model / "source.json").read_bytes() for model in records} == records
    assert built_workspace.bundle_bytes() == built.bundle


def test_forget_without_arguments_forgets_the_default_tasks(built, built_workspace):
    built_workspace.doit("forget")
    run = built_workspace.doit()
    assert run.executed == BUNDLE_TASKS, run.describe()
    assert built_workspace.bundle_bytes() == built.bundle


# --- loading the graph changes nothing -----------------------------------------------------

def tree(root: Path) -> dict[str, int | None]:
    """Every file and directory under ``root``, with each file's size."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("keys", ["configured", "development"])
def test_list_and_info_in_a_fresh_workspace_create_nothing(fresh_workspace, keys):
    if keys == "development":
        fresh_workspace.edit_spec(SIGNING_LINE, "  encryption: {}\n")
    before = tree(fresh_workspace.root)
    fresh_workspace.doit("list", "--all")
    fresh_workspace.doit("list")
    fresh_workspace.doit("info", "convert:digits.int8.tflite@pixel-8", ok=None)
    run = fresh_workspace.doit("info", f"package:{BUNDLE}", ok=None)
    assert f"package:{BUNDLE}" in run.stdout, run.describe()
    assert tree(fresh_workspace.root) == before
    assert not fresh_workspace.build.exists()
    assert not (fresh_workspace.root / "keys" / "dev").exists()


# --- modelmake build: doit with modelmake's exit codes -------------------------------------

def modelmake_build(workspace: Workspace, *args: str) -> DoitRun:
    command = [sys.executable, "-m", "modelmake.cli", "build", *args]
    result = subprocess.run(command, cwd=workspace.root, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    return DoitRun(("modelmake build", *args), result.returncode, result.stdout, result.stderr)


def failure_records(workspace: Workspace) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workspace.build / ".modelmake" / "failures").rglob("*.json"))]


def test_build_exits_with_the_spec_error_code_on_a_bad_spec(fresh_workspace):
    fresh_workspace.edit_spec("    budgets: {max_size_kb: 64", "    budget: {max_size_kb: 64")
    run = modelmake_build(fresh_workspace)
    assert run.returncode == errors.SpecError.exit_code, run.describe()
    assert "unknown key 'budget'" in run.stderr and "Traceback" not in run.output
    assert not fresh_workspace.build.exists()


def test_build_passes_a_bad_command_line_on_as_a_usage_error(fresh_workspace):
    run = modelmake_build(fresh_workspace, "info", "convert:no-such-task")
    assert run.returncode == errors.USAGE, run.describe()


@pytest.mark.slow
def test_a_broken_budget_refuses_the_bundle_after_writing_the_report(built_workspace):
    """Needs the whole pipeline (real steps)."""
    bundle = sorted(built_workspace.build.glob("bundles/*/*"))
    before = tree_digest(built_workspace.build / "bundles")
    report = next(built_workspace.build.glob("reports/*/*/report.md"))
    report.unlink()
    built_workspace.edit_spec("budgets: {max_size_kb: 64,", "budgets: {max_size_kb: 1,")
    run = modelmake_build(built_workspace)
    assert run.returncode == errors.BudgetExceeded.exit_code, run.describe()
    [failed] = failure_records(built_workspace)
    assert failed["exit_code"] == errors.BudgetExceeded.exit_code and failed["task"].startswith("package:")
    assert "the bundle is not packaged" in failed["message"] and "over its max_size_kb of 1 (+" in failed["message"]
    assert f"{failed['task']} failed (exit {errors.BudgetExceeded.exit_code})" in run.stderr
    # The report says what failed, and the bundle of the last good build is as it was.
    assert "max_size_kb" in report.read_text(encoding="utf-8")
    assert sorted(built_workspace.build.glob("bundles/*/*")) == bundle and tree_digest(built_workspace.build / "bundles") == before

    # doit itself can only say that a task failed
    assert built_workspace.doit(ok=False).returncode == 1

    built_workspace.edit_spec("budgets: {max_size_kb: 1,", "budgets: {max_size_kb: 64,")
    run = modelmake_build(built_workspace)
    assert run.returncode == 0, run.describe()
    assert failure_records(built_workspace) == []


def test_a_second_build_in_the_workspace_stops_naming_the_first_and_reading_still_works(fresh_workspace):
    from modelmake import buildlock

    buildlock.acquire(fresh_workspace.root, ["-n", "2"])
    try:
        run = fresh_workspace.doit(ok=False)
        assert run.returncode == errors.BuildInProgressError.exit_code, run.describe()
        assert f"another build is running in this workspace: process {os.getpid()} (`" in run.stderr, run.describe()
        assert "-n 2`, started " in run.stderr and "Traceback" not in run.output
        assert fresh_workspace.outputs(logs=True) == {}, "the second build did something"
        assert "report:" in fresh_workspace.doit("list").stdout  # reading needs no lock
    finally:
        buildlock.release(fresh_workspace.root)
    assert fresh_workspace.doit("list").returncode == 0
