"""Run doit on a workspace with every step stubbed: the cluster path's planning and submission order, no model work.

``python -m benchmarks._schedule_stub WORKSPACE THREADS OUT.json``: doit decides
what is out of date and the order, with THREADS tasks in flight (``-n THREADS
-P thread``, as ``modelmake build -j`` runs it); each model step goes as far
as the cluster path goes before it would submit (the files it would upload,
``distributed.transfer.input_files``) and is recorded as a submission instead
of running; every task writes placeholders for its targets so that the tasks
after it can run.  No recipe is imported and no model file is read or written.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUBMISSIONS: list[dict] = []
_lock = threading.Lock()
_in_flight = [0, 0]  # now, most at once


def stub_run_step(step, task_name, job, targets, record_failures=False, timeout_minutes=None, cache=None):
    """runner.run_step's signature, with ``targets``, which doit passes to an action that names it."""
    from modelmake.distributed import transfer
    from modelmake.steps.worker import MODEL_STEPS

    with _lock:
        _in_flight[0] += 1
        _in_flight[1] = max(_in_flight[1], _in_flight[0])
    try:
        if step.split(".", 1)[0] in MODEL_STEPS:
            inputs = transfer.input_files(Path.cwd(), job, cache.file_dep)
            with _lock:
                SUBMISSIONS.append({"task": task_name, "inputs": len(inputs), "outputs": len(targets), "at": time.perf_counter()})
        for target in targets:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(task_name + "\n", encoding="utf-8")
    finally:
        with _lock:
            _in_flight[0] -= 1
    return None


def main(workspace: str, threads: str, out: str) -> int:
    import os

    from doit.cmd_base import DodoTaskLoader
    from doit.doit_cmd import DoitMain

    import modelmake.graph
    from modelmake.steps import runner

    # The graph's actions name runner.run_step; the stub also takes the task's targets, which doit passes to an
    # action that names them, so it is not typed as run_step.
    stub: Callable[..., Any] = stub_run_step
    runner.run_step = stub
    modelmake.graph.run_step = stub
    os.chdir(workspace)
    start = time.perf_counter()
    result = DoitMain(DodoTaskLoader()).run(["-n", threads, "-P", "thread", "--continue"])
    elapsed = time.perf_counter() - start
    kinds: dict[str, int] = {}
    for submission in SUBMISSIONS:
        kind = submission["task"].split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    Path(out).write_text(json.dumps({
        "result": result, "seconds": elapsed, "submissions": len(SUBMISSIONS), "by_kind": kinds, "most_in_flight": _in_flight[1],
        "first": [s["task"] for s in SUBMISSIONS[:5]], "last": [s["task"] for s in SUBMISSIONS[-3:]],
    }), encoding="utf-8")
    return result


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
