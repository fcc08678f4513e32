"""The doit action that runs a step: lazy import, quiet console, user errors as failed tasks."""
from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import ModelmakeError


def run_step(step: str, log: str, config: dict):
    """Run ``modelmake.steps.<module>.<function>(**config)``.

    The step module is imported here, not when the graph loads, so that a
    no-op ``doit`` never imports TensorFlow.  Everything the converters print
    goes to ``log``; the console gets the one line the step returns.  A
    ModelmakeError is a failed task (bad input, broken budget) with its
    message; any other exception is a bug and doit shows its traceback.
    """
    from doit.exceptions import TaskFailed

    module_name, function_name = step.rsplit(".", 1)
    function = getattr(importlib.import_module(f"modelmake.steps.{module_name}"), function_name)
    try:
        with output_captured_in(Path(log)):
            summary = function(**config)
    except ModelmakeError as error:
        return TaskFailed(f"{error}\n(details in {log})")
    if summary:
        print(summary)
    return None


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
                stream.flush()
            sys.stdout, sys.stderr = wrappers
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
