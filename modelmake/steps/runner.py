"""The doit action that runs a step: lazy import, quiet console, failures recorded with their exit code."""
from __future__ import annotations

import importlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .. import layout
from ..errors import ModelmakeError, exit_code_for


def run_step(step: str, task_name: str, job):
    """Run ``modelmake.steps.<module>.<function>(job)`` for the task ``task_name``.

    The step module is imported here, not when the graph loads, so that a
    no-op ``doit`` never imports TensorFlow.  Everything the converters print
    goes to the task's log; the console gets the one line the step returns.
    A ModelmakeError is a failed task (bad input, broken budget) with its
    message; any other exception is a bug and doit shows its traceback.
    Either way the task's exit code and message are recorded under
    build/.modelmake/failures/ for ``modelmake build`` (doit itself can only
    exit 1 or 2); the record goes when the task succeeds.
    """
    from doit.exceptions import TaskFailed

    log = layout.log_file(task_name)
    module_name, function_name = step.rsplit(".", 1)
    function = getattr(importlib.import_module(f"modelmake.steps.{module_name}"), function_name)
    try:
        with output_captured_in(Path(log)):
            summary = function(job)
    except ModelmakeError as error:
        _record_failure(task_name, error, log)
        return TaskFailed(f"{error}\n(details in {log})")
    except Exception as error:
        _record_failure(task_name, error, log)
        raise
    Path(layout.failure_record(task_name)).unlink(missing_ok=True)
    if summary:
        print(summary)
    return None


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
