"""The doit action that runs a step: lazy import, quiet console, failures recorded with their exit code."""
from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .. import distributed, layout
from ..errors import WRITE_REFUSED, ModelmakeError, StepError, exit_code_for, output_error
from . import worker

# The value a task that recorded its failure leaves in doit's state, so that the next build runs it again.
RECORDED_FAILURE = "recorded_failure"
# The steps that run in the doit process (package, report, publish) run one at a time, however doit runs tasks.
_in_process = threading.Lock()
# The result line of each step this process ran successfully, by task name (read by modelmake/cache/hook.py).
SUMMARIES: dict[str, str | None] = {}


def run_step(step: str, task_name: str, job, record_failures: bool = False, timeout_minutes: float | None = None, cache=None):
    """Run ``modelmake.steps.<module>.<function>(job)`` for the task ``task_name``.

    The step module is imported here, not when the graph loads, so that a
    no-op ``doit`` never imports TensorFlow; the steps that run converters and
    runtimes run in the worker process (``worker.py``), so that a native crash
    fails this task with the signal instead of ending the build.  Everything
    the converters print goes to the task's log; the console gets the one
    line the step returns.  A ModelmakeError is a failed task (bad input,
    broken budget, a crashed tool) with its message; any other exception is a
    bug and doit shows its traceback.  Either way the task's exit code and
    message are recorded under build/.modelmake/failures/ for ``modelmake
    build`` (doit itself can only exit 1 or 2); the record goes when the task
    succeeds.

    ``record_failures`` is for convert and evaluate: a failure is recorded in
    place of the artifact or metrics record (``_selection.record_failure``)
    and the task succeeds, so that the report is still written and says why;
    the package step then refuses the bundle, or a selecting target drops the
    candidate and ships the next one.

    ``cache`` (a model step's ``contracts.CacheableTask``) keys the task in the
    shared cache and says what it reads and writes, for a step run on a Dask
    worker (``distributed/``).
    """
    if cache is not None:
        # A cacheable task (contracts.CacheableTask): fetched from the shared cache when its key is there, else run
        # and uploaded (modelmake/cache/hook.py); with no cache in force it simply runs.
        from ..cache.hook import run_cached

        return run_cached(cache, task_name, lambda: _run(step, task_name, job, record_failures, timeout_minutes, cache))
    return _run(step, task_name, job, record_failures, timeout_minutes, None)


def _run(step: str, task_name: str, job, record_failures: bool, timeout_minutes: float | None, task_io):
    from doit.exceptions import TaskFailed

    log = layout.log_file(task_name)
    module_name, function_name = step.rsplit(".", 1)
    try:
        if module_name in worker.MODEL_STEPS:
            summary = _in_worker(step, task_name, job, log, timeout_minutes, task_io)
        else:
            function = getattr(importlib.import_module(f"modelmake.steps.{module_name}"), function_name)
            # doit runs tasks in threads when model steps go to a cluster: descriptors 1 and 2 are the process's.
            with _in_process, output_captured_in(Path(log)):
                summary = function(job)
    except ModelmakeError as error:
        if record_failures:
            from ._selection import record_failure

            print(record_failure(job, error, log))
            # doit keeps a returned dict as the task's values: the next build's uptodate check reads it (graph.py).
            return {RECORDED_FAILURE: True}
        else:
            _record_failure(task_name, error, log)
            return TaskFailed(f"{error}\n(details in {log})")
    except Exception as error:
        if isinstance(error, OSError) and error.errno in WRITE_REFUSED:
            refused = output_error(error)  # a full disk or a read-only build/ is the user's to fix, not a bug
            _record_failure(task_name, refused, log)
            return TaskFailed(str(refused))
        _record_failure(task_name, error, log)
        raise
    Path(layout.failure_record(task_name)).unlink(missing_ok=True)
    if summary:
        print(summary)
    SUMMARIES[task_name] = summary  # the shared cache keeps it with the outputs, for the line a fetch prints
    return None


def _in_worker(step: str, task_name: str, job, log: str, timeout_minutes: float | None, task_io):
    timeout = worker.STEP_TIMEOUT_SECONDS if timeout_minutes is None else timeout_minutes * 60
    kind = step.split(".", 1)[0]
    try:
        if distributed.configured():  # MODELMAKE_DASK or `modelmake build -j N`: a Dask worker runs it
            if task_io is None:
                raise RuntimeError(f"{task_name}: a step sent to the cluster needs what it reads and writes (a CacheableTask): a bug")
            return distributed.run_step(
                step, task_name, job, log, timeout, file_dep=task_io.file_dep, targets=task_io.targets, clean_dirs=task_io.output_dirs,
                tools=task_io.hashed.get("tools", {}),
            )
        return worker.run(step, job, log, timeout)
    except worker.StepTimedOut as late:
        raise StepError(
            f"{task_name}: {_tool(kind, job)} {late} while {_doing(kind, task_name, job)} and was stopped; "
            "if it is stuck (a recipe in an endless loop), fix it; if it needs longer, raise the model's timeout_minutes"
        ) from None
    except worker.WorkerCrashed as crash:
        raise StepError(
            f"{task_name}: {_tool(kind, job)} crashed ({crash}) while {_doing(kind, task_name, job)}; "
            f"the Python stack at the crash is in the log. {_ADVICE.get(kind, _ADVICE['source'])}"
        ) from None


_ADVICE = {
    "convert": "Try another precision or opset for this artifact, or another version of the converter.",
    "evaluate": "The runtime could not run this artifact: try another precision for it, or another version of the runtime.",
    "source": "Check the model file or recipe, and the versions of the tools it loads with.",
}


def _tool(kind: str, job) -> str:
    if kind == "convert":
        return f"the {job.support.format} converter"
    if kind == "evaluate":
        return f"the {job.format} runtime"
    return f"the {kind} step"


def _doing(kind: str, task_name: str, job) -> str:
    name = task_name.partition(":")[2]
    return {
        "convert": f"converting {getattr(job, 'artifact_id', name)}",
        "evaluate": f"evaluating {getattr(job, 'artifact_id', name)}",
        "source": f"materializing the source of {name}",
        "data": f"materializing the data set {name}",
        "reference": f"running the source model of {name}",
        "train": f"fine-tuning {name}",
    }.get(kind, f"running {task_name}")


def _record_failure(task_name: str, error: Exception, log: str) -> None:
    from ..fsutil import write_json

    record = {"task": task_name, "exit_code": exit_code_for(error), "message": str(error) or type(error).__name__, "log": log}
    write_json(layout.failure_record(task_name), record)


def read_failures(workspace: Path) -> list[dict]:
    """The failure records of the tasks that failed since they were cleared, by task name."""
    records = []
    for path in sorted((Path(workspace) / layout.FAILURES).rglob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a record being written by a killed build: the task's own message says what failed
    return records


@contextmanager
def output_captured_in(log: Path):
    """Send file descriptors 1 and 2 to ``log``.

    Redirecting the descriptors rather than sys.stdout catches what the C++
    parts of TensorFlow, LiteRT and the converters print as well.  While the
    step runs, sys.stdout and sys.stderr are the process's own streams rather
    than doit's capturing wrappers, because libraries imported here (absl's
    logging) keep a reference to the stream they find and use it at exit.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    wrappers = (sys.stdout, sys.stderr)
    for stream in (*wrappers, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "w", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            sys.stdout, sys.stderr = wrappers
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
