"""The step worker: a native crash in a step fails its task with the signal, errors come back as themselves."""
from __future__ import annotations

import json
import os
import pickle
import signal
import textwrap

import pytest
from doit.exceptions import TaskFailed

from modelmake import errors, layout
from modelmake.contracts import DataJob, MetricsRecord
from modelmake.plan import Dataset
from modelmake.steps import worker
from modelmake.steps.runner import run_step

# A data recipe is user code run in the worker; this one dies in native code as a broken extension would.
RECIPE = textwrap.dedent(
    """\
    import ctypes

    import numpy as np


    def load_data(split):
        if split == "crash":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if split == "abort":
            import os
            os.abort()
        if split == "loop":
            while True:
                pass
        if split == "exit":
            import sys
            sys.exit(0)
        if split == "wrong":
            return np.zeros((4, 2), np.float32)
        return np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6, dtype=np.int64)
    """
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with the recipe, as the working directory (steps take workspace-relative paths)."""
    (tmp_path / "recipe.py").write_text(RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    worker.shutdown()


def _job(split: str) -> DataJob:
    return DataJob(Dataset(role="evaluation", path="recipe.py", from_recipe=True, function="load_data", split=split), f"out/{split}.npz")


def test_a_recipe_that_exits_fails_its_task_and_writes_nothing(workspace):
    result = run_step("data.materialize", "data:m.evaluation", _job("exit"))
    assert isinstance(result, TaskFailed)
    assert "recipe recipe.py: load_data('exit') called sys.exit(0): a recipe must return its result" in str(result)
    assert not (workspace / "out").exists()
    assert json.loads((workspace / layout.failure_record("data:m.evaluation")).read_text())["exit_code"] == errors.StepError.exit_code


def test_a_step_in_an_endless_loop_is_stopped_at_its_time_limit_and_the_next_task_gets_a_fresh_worker(workspace):
    result = run_step("data.materialize", "data:m.evaluation", _job("loop"), timeout_minutes=0.02)
    assert isinstance(result, TaskFailed)
    assert (
        "data:m.evaluation: the data step ran longer than 0.02 minutes while materializing the data set m.evaluation and was "
        "stopped; if it is stuck (a recipe in an endless loop), fix it; if it needs longer, raise the model's timeout_minutes"
    ) in str(result)
    assert run_step("data.materialize", "data:m.test", _job("test")) is None


def test_a_segfault_fails_the_task_with_the_signal_and_the_next_task_gets_a_fresh_worker(workspace, capsys):
    result = run_step("data.materialize", "data:m.evaluation", _job("crash"))

    assert isinstance(result, TaskFailed)
    message = str(result)
    assert "data:m.evaluation: the data step crashed (signal 11, SIGSEGV) while materializing the data set m.evaluation" in message
    log = layout.log_file("data:m.evaluation")
    assert f"(details in {log})" in message
    # faulthandler wrote the Python stack of the crash into the task's log
    text = (workspace / log).read_text(encoding="utf-8")
    assert "Segmentation fault" in text and "load_data" in text, text
    record = json.loads((workspace / layout.failure_record("data:m.evaluation")).read_text())
    assert record["exit_code"] == errors.StepError.exit_code == 21
    assert "SIGSEGV" in record["message"] and record["log"] == log

    # the same doit process goes on: a new worker runs the next step
    assert run_step("data.materialize", "data:m.good", _job("good")) is None
    assert "6 samples of shape (4,)" in capsys.readouterr().out
    assert (workspace / "out" / "good.npz").is_file()
    assert not (workspace / layout.failure_record("data:m.good")).exists()


def test_an_abort_names_sigabrt(workspace):
    result = run_step("data.materialize", "data:m.abort", _job("abort"))
    assert isinstance(result, TaskFailed)
    assert "crashed (signal 6, SIGABRT)" in str(result)


def test_a_step_error_in_the_worker_comes_back_as_itself_and_the_worker_stays(workspace):
    first = worker._worker
    message = r"load_data\('wrong'\) must return a tuple \(x, y\) or a dict of numpy arrays named x, y; it returned ndarray$"
    with pytest.raises(errors.StepError, match=message):
        worker.run("data.materialize", _job("wrong"), "logs/wrong.log")
    pid = worker._worker.process.pid
    assert first is None or first.process.pid != pid
    worker.run("data.materialize", _job("good"), "logs/good.log")
    assert worker._worker.process.pid == pid, "a step error must not cost the warm worker"


def test_the_worker_runs_in_the_callers_working_directory_and_is_not_forked(workspace):
    worker.run("data.materialize", _job("good"), "logs/good.log")
    assert worker._worker.process._popen.method == "spawn"
    assert (workspace / "logs" / "good.log").is_file() and (workspace / "out" / "good.npz").is_file()


@pytest.mark.parametrize("kind", errors._with_codes(errors.ModelmakeError))
def test_every_modelmake_error_survives_the_trip_from_the_worker(kind):
    error = kind(["models.yaml:3:1: one", "models.yaml:4:1: two"]) if kind is errors.SpecError else kind("what went wrong")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is kind and str(back) == str(error) and back.exit_code == kind.exit_code
    if kind is errors.SpecError:
        assert back.problems == error.problems


def test_exit_descriptions():
    assert worker.describe_exit(-signal.SIGSEGV) == "signal 11, SIGSEGV"
    assert worker.describe_exit(-signal.SIGKILL) == "signal 9, SIGKILL"
    assert worker.describe_exit(3) == "exit code 3"


def test_a_not_built_metrics_record_keeps_the_usual_bytes_when_built(tmp_path):
    fields = dict(artifact="a", size_bytes=1, metrics={}, not_measured={}, coverage=None, structure=None, source=None,
                  budgets=[], tools={}, latency_host=None)
    MetricsRecord(**fields).write(str(tmp_path / "built.json"))
    assert "not_built" not in json.loads((tmp_path / "built.json").read_text())
    MetricsRecord(**fields, not_built="TFLite conversion failed").write(str(tmp_path / "dropped.json"))
    assert MetricsRecord.read(str(tmp_path / "dropped.json")).not_built == "TFLite conversion failed"


def test_the_worker_leaves_when_its_parent_dies(tmp_path):
    """A worker whose doit process was killed (SIGKILL: no exit handlers) does not linger."""
    import subprocess
    import sys
    import time

    script = textwrap.dedent(
        f"""\
        import os, sys
        os.chdir({str(tmp_path)!r})
        open("recipe.py", "w").write({RECIPE!r})
        from modelmake.contracts import DataJob
        from modelmake.plan import Dataset
        from modelmake.steps import worker
        worker.run("data.materialize", DataJob(Dataset("evaluation", "recipe.py", True, "load_data", "good"), "x.npz"), "x.log")
        print(worker._worker.process.pid, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    pid = int(process.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the worker outlived its parent by 10 s")


def test_a_bug_in_a_worker_step_keeps_its_type_and_the_workers_traceback(workspace):
    with pytest.raises(AttributeError) as raised:
        worker.run("data.materialize", None, "logs/bug.log")  # not a DataJob: a bug, not a user error
    cause = raised.value.__cause__
    assert isinstance(cause, worker.RemoteTraceback) and "in materialize" in str(cause), str(cause)
