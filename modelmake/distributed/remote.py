"""What a Dask worker runs for one model step: inputs from the store into scratch, the step, outputs back to the store.

The worker never sees the workspace.  Each step runs in a fresh scratch
directory under the worker's own local directory, its working directory set
there, so the job's workspace-relative paths (build/..., recipes/...) resolve
inside it.  Blobs are kept per worker by digest and linked into each scratch
directory, so the source model a worker has fetched once serves every
conversion it runs.  One step runs at a time per worker process, in the
worker's warm step process (``steps/worker.py``, started by it and kept): start
workers with one thread each and as many processes as there are cores.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelmakeError, StepError
from . import transfer

_one_step_at_a_time = threading.Lock()
# A Dask event topic: the key of each step as its worker begins it (not when the step is only queued there).
STARTED_TOPIC = "modelmake-step-started"


@dataclass(frozen=True)
class RemoteStep:
    """What the client sends: the step, its job, where its log goes, and its inputs by digest."""

    step: str  # "<module>.<function>" under modelmake.steps
    task_name: str
    job: object
    log: str
    store: str  # the fsspec URL of the store
    inputs: dict[str, str]  # workspace-relative path -> sha256
    targets: tuple[str, ...]
    clean_dirs: tuple[str, ...] = ()
    timeout: float = 45 * 60  # seconds; the step process is stopped past it
    tools: Mapping[str, str] = field(default_factory=dict)  # the tool versions the task's key holds (JobUnchanged)


@dataclass(frozen=True)
class RemoteResult:
    """What comes back: the summary line or the error, and what the step wrote (path -> sha256) for the client to fetch."""

    outputs: dict[str, str]
    summary: str | None = None
    error: Exception | None = None  # a ModelmakeError as raised, or a bug's type and message
    traceback: str | None = None  # set for a bug
    worker: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stopped: tuple | None = None  # ("crashed", exit code) or ("timed_out", seconds): the step process died or was stopped


def run(request: RemoteStep) -> RemoteResult:
    """Run the step on this worker (the function the client submits)."""
    import time

    other_tools = _other_tools(request)
    if other_tools is not None:
        return RemoteResult({}, error=other_tools, worker=_worker_address())
    with _one_step_at_a_time:
        _announce_start()
        started = time.perf_counter()
        root = _worker_root()
        store = transfer.store(request.store)
        scratch = Path(tempfile.mkdtemp(prefix="task.", dir=root / "tasks"))
        before = os.getcwd()
        try:
            _materialize(store, request.inputs, root / "blobs", scratch)
            fetched = time.perf_counter()
            os.chdir(scratch)
            summary, error, trace, stopped = _run_step(request)
            ran = time.perf_counter()
            written = transfer.output_files(scratch, request.targets, request.clean_dirs, request.log)
            if error is not None or stopped is not None:
                written = [p for p in written if p == request.log]  # a failed step's partial outputs stay here
            outputs = {path: store.put_blob(scratch / path) for path in written}
            timings = {"fetch": fetched - started, "step": ran - fetched, "upload": time.perf_counter() - ran}
            return RemoteResult(outputs, summary, error, trace, _worker_address(), timings, stopped)
        finally:
            os.chdir(before)
            shutil.rmtree(scratch, ignore_errors=True)


def _other_tools(request: RemoteStep) -> StepError | None:
    """A worker whose tools differ from the client's would write other bytes under the key the client gave the step
    (into the shared cache too): the step is refused there instead."""
    from ..versions import version_of

    here = {tool: version_of(tool) for tool in sorted(request.tools)}
    differing = [tool for tool, version in here.items() if version != request.tools[tool]]
    if not differing:
        return None
    listed = ", ".join(f"{tool} {here[tool]} (this build has {request.tools[tool]})" for tool in differing)
    return StepError(
        f"{request.task_name}: the Dask worker {_worker_address() or 'running it'} has {listed}, and would give other bytes "
        "than this build's tools: install the same versions on the workers as where `modelmake build` runs "
        "(the same image, or pip install -c constraints.txt)"
    )


def _run_step(request: RemoteStep):
    """The step in this worker's warm step process (``steps/worker.py``), as a local build runs it: its summary, its
    error, a bug's traceback, and how its step process stopped (RemoteResult.stopped).

    Not in the Dask worker's own thread: TensorFlow training there, next to
    the worker's event loop, was seen to compute other weights from run to run
    when two workers trained at once, where the step process gives a local
    build's bytes; and a native crash or a step past its timeout then fails the
    task with the local build's message instead of taking the Dask worker down.
    """
    import multiprocessing

    from ..steps import worker

    # A Dask worker process is a daemon (distributed.worker.daemon), and multiprocessing refuses a daemon children.
    # The step process exits with this one all the same: it is a daemon itself and watches its parent.
    multiprocessing.current_process()._config["daemon"] = False  # type: ignore[attr-defined]
    try:
        return worker.run(request.step, request.job, request.log, request.timeout), None, None, None
    except worker.WorkerCrashed as crash:  # raised again by the client (these two do not survive pickling)
        return None, None, None, ("crashed", crash.exitcode)
    except worker.StepTimedOut as late:
        return None, None, None, ("timed_out", late.seconds)
    except ModelmakeError as error:
        return None, error, None, None
    except Exception as error:
        remote = error.__cause__.text if isinstance(error.__cause__, worker.RemoteTraceback) else traceback.format_exc()
        error.__cause__ = None
        return None, error, remote, None


def _materialize(store, inputs: dict[str, str], blobs: Path, scratch: Path) -> None:
    """Each input at its path under ``scratch``, linked from this worker's blobs (fetched from the store once)."""
    for path, digest in inputs.items():
        blob = blobs / digest
        if not blob.is_file():
            store.get_blob(digest, blob)
        destination = scratch / transfer.relative(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob, destination)
        except OSError:
            shutil.copyfile(blob, destination)


def _worker_root() -> Path:
    """This worker's directory for blobs and scratch: under Dask's local directory, never the workspace."""
    try:
        from distributed import get_worker

        base = Path(get_worker().local_directory)
    except (ImportError, ValueError):
        base = Path(tempfile.gettempdir())
    root = base / "modelmake"
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    return root


def _announce_start() -> None:
    """The scheduler counts a worker's death against every step handed to that worker, the ones queued there too:
    this tells the client which steps were running (client.run_step tries a step again that was only waiting)."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(STARTED_TOPIC, worker.get_current_task())


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return ""
