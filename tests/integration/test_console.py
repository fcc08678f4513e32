"""Quiet by default: the console shows doit's progress and one result line per artifact; the noise goes to logs."""
from tests.support.workspaces import ALL_TASKS, ARTIFACTS, NOISE, TASK_LINE


def test_console_has_no_framework_noise(built):
    run = built.first_build
    for pattern in NOISE:
        assert not pattern.search(run.stdout), f"{pattern.pattern!r} in the console output:\n{run.stdout}"
        assert not pattern.search(run.stderr), f"{pattern.pattern!r} in the console output:\n{run.stderr}"
    assert run.stderr == "", run.describe()


def test_console_shows_every_task_and_one_result_line_per_artifact(built):
    run = built.first_build
    assert run.executed == ALL_TASKS, run.describe()
    lines = run.stdout.splitlines()
    for artifact in ARTIFACTS:
        results = [line for line in lines if line.startswith(f"{artifact}: ")]
        assert len(results) == 1, f"expected one result line for {artifact}:\n{run.stdout}"
        assert "size_kb" in results[0] and "budgets" in results[0]
    # apart from the task lines, at most one line per task: each step's one-line summary
    others = [line for line in lines if not TASK_LINE.match(line)]
    assert len(others) <= len(ALL_TASKS), run.stdout


def test_every_task_has_a_log_and_conversions_log_the_converter(built):
    logs = built.workspace.build / "logs"
    for task in ALL_TASKS:
        kind, name = task.split(":", 1)
        assert (logs / kind / f"{name}.log").is_file(), f"no log for {task}"
    for artifact in ARTIFACTS:
        text = (logs / "convert" / f"{artifact}.log").read_text(encoding="utf-8")
        assert "SavedModel" in text, f"the converter's output is not in the log of convert:{artifact}:\n{text}"
