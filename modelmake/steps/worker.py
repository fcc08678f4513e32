"""A warm process for the steps that run converters and runtimes, so that a native crash fails one task, not the build.

TensorFlow, LiteRT, ONNX Runtime and coremltools are C++ underneath: a
segfault or an abort in one of them ends the process it happens in.  The
steps that load them (``MODEL_STEPS``) therefore run in a worker process,
one per doit process (so ``doit -n 2`` gets one per doit subprocess),
started on first use and kept for the rest of the run so that TensorFlow is
imported once.  It is started with ``spawn``, never forked: forking a
process that has imported TensorFlow copies threads and locks it cannot
recover.  A worker that dies mid-step raises ``WorkerCrashed`` with the
signal, and the next step gets a fresh worker.

The worker exits when its doit process does: at doit's exit it is
terminated, and if doit is killed the worker sees its parent change and
leaves on its own.
"""
from __future__ import annotations

import atexit
import faulthandler
import importlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from ..errors import ModelmakeError

# The step modules that import a framework or run a recipe (user code, often importing one);
# package, report and publish run in the doit process.
MODEL_STEPS = frozenset({"source", "data", "reference", "train", "export", "convert", "evaluate"})

# Keras flavours, each in a worker of its own: importing TensorFlow decides once per process which Keras tf.keras is, so
# the steps of tf-keras recipes (source, train) run where TF_USE_LEGACY_KERAS=1 was set before anything was imported, and
# every other step where it is not.  SavedModels are framework-neutral: the Keras 3 worker converts and runs theirs.
KERAS = "keras"
TF_KERAS = "tf-keras"
LEGACY_KERAS_ENVIRONMENT = {"TF_USE_LEGACY_KERAS": "1"}

# Every framework computes on one thread in a step process.  What they compute depends on how the work is split
# between threads (TensorFlow's training and its kernels, Core ML's k-means palettization, BLAS reductions), so a
# fixed count is what makes the same inputs give the same bytes on a laptop, a CI runner and a cluster worker alike.
# A build uses more cores by running more steps at once (`modelmake build -j N`).  ONNX Runtime and LiteRT are given
# one thread where their sessions are made.  Set before the process starts: the libraries read them once, on import.
ONE_THREAD_EACH = {
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
}
# Left out of a step process's environment.  A Dask nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its worker's own
# memory; a step process that inherited it trained the example's MobileNet in 152 s instead of 92 s.
NOT_INHERITED = ("MALLOC_TRIM_THRESHOLD_",)


def keras_flavour(job) -> str:
    """The Keras a step's job needs: tf-keras for a train job, and for the source of a recipe that declares it."""
    source = getattr(job, "source", None)
    if type(job).__name__ in ("SourceJob", "TrainJob") and getattr(source, "framework", KERAS) == TF_KERAS:
        return TF_KERAS
    return KERAS

# How often an idle or busy worker checks that the doit process that started it is still there.
_PARENT_POLL_SECONDS = 0.5
# Far beyond any real conversion or training recipe on a laptop, short of a CI job's limit: a step in an endless loop
# fails rather than hangs the build (a model's timeout_minutes in models.yaml sets another limit).
STEP_TIMEOUT_SECONDS = 45 * 60
_EXIT_GRACE_SECONDS = 5  # how long a worker told to stop may take to exit on its own


class StepTimedOut(Exception):
    """The step ran longer than its time limit; the worker was killed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"ran longer than {seconds / 60:g} minutes")


class WorkerCrashed(Exception):
    """The worker died while running a step: killed by a signal, or it exited on its own."""

    def __init__(self, exitcode: int | None):
        self.exitcode = exitcode
        super().__init__(describe_exit(exitcode))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the worker, attached as the cause of the one raised here."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nin the step worker:\n{self.text}"


def describe_exit(exitcode: int | None) -> str:
    """``signal 11, SIGSEGV`` for a process killed by a signal, ``exit code 3`` for one that exited."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
        return f"signal {-exitcode}, {name}"
    return f"exit code {exitcode}"


def run(step: str, job, log: str, timeout: float = STEP_TIMEOUT_SECONDS):
    """Run ``modelmake.steps.<step>(job)`` in this process's worker, its output going to ``log``; returns the step's summary.

    A step still running after ``timeout`` seconds is killed with its worker (StepTimedOut).

    A ModelmakeError raised by the step is raised here with its type and
    message; any other exception is raised with the worker's traceback as its
    cause; a worker that dies raises WorkerCrashed.
    """
    global _worker
    flavour = keras_flavour(job)
    with _lock:
        current = _worker if flavour == KERAS else _workers.get(flavour)
        if current is None or not current.alive():
            current = _Worker(LEGACY_KERAS_ENVIRONMENT if flavour == TF_KERAS else {})
            if flavour == KERAS:
                _worker = current
            else:
                _workers[flavour] = current
            # Registered after multiprocessing's own exit handler, so it runs first (atexit is last in, first
            # out) and lets the worker exit rather than be terminated; once, however many workers were started.
            atexit.unregister(shutdown)
            atexit.register(shutdown)
        worker = current
        try:
            return worker.run(step, job, log, timeout)
        except BaseException as error:
            # A crash, a timeout, or an interrupt while the step runs: the worker's state is unknown, the next step gets a new one.
            if isinstance(error, (WorkerCrashed, StepTimedOut)) or not isinstance(error, Exception):
                worker.stop()
                if flavour == KERAS:
                    _worker = None
                else:
                    _workers.pop(flavour, None)
            raise


def shutdown() -> None:
    """Stop this process's worker, if it has one (also done at exit)."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None
        while _workers:
            _workers.popitem()[1].stop()


_worker: _Worker | None = None
_workers: dict[str, _Worker] = {}  # the workers of other Keras flavours, by flavour
_lock = threading.Lock()


class _Worker:
    def __init__(self, environment: dict[str, str] | None = None):
        """A step process with ONE_THREAD_EACH and ``environment`` set, and without NOT_INHERITED."""
        environment = ONE_THREAD_EACH | (environment or {})
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        # daemon: multiprocessing terminates it when this process exits, doit subprocesses included
        # (they leave through multiprocessing's exit path, which skips atexit).
        self.process = context.Process(
            target=_serve, args=(child, os.getpid(), environment), name="modelmake-step-worker", daemon=True
        )
        # A spawned child starts with this process's environment: set for the start only, so the variables are there
        # before the child imports anything (its bootstrap included), and this process keeps its own.
        saved = {name: os.environ.get(name) for name in [*environment, *NOT_INHERITED]}
        for name in NOT_INHERITED:
            os.environ.pop(name, None)
        os.environ.update(environment)
        try:
            self.process.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        child.close()

    def alive(self) -> bool:
        return self.process.is_alive()

    def run(self, step: str, job, log: str, timeout: float):
        try:
            self.connection.send((step, job, log, os.getcwd()))
            if not self.connection.poll(timeout):
                # A step that never returns (a recipe in an endless loop) is stopped where it is.
                self.process.kill()
                self.process.join()
                raise StepTimedOut(timeout)
            reply = self.connection.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.process.join(timeout=10)
            raise WorkerCrashed(self.process.exitcode) from None
        kind, value, remote = reply
        if kind == "ok":
            return value
        if remote:
            value.__cause__ = RemoteTraceback(remote)
        raise value

    def stop(self) -> None:
        # Closing the connection ends the worker's loop: it then exits on its own, so the semaphores
        # that libraries made in it are released rather than reported as leaked by multiprocessing.
        self.connection.close()
        self.process.join(timeout=_EXIT_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _serve(connection: Connection, parent: int, environment: dict[str, str] | None = None) -> None:
    """The worker's loop: one step at a time until the connection closes or the parent goes."""
    os.environ.update(environment or {})  # already inherited at the start; kept for the steps that spawn their own processes
    # Ctrl-C reaches the whole process group: doit stops the build and then this worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    # On a native crash, the Python stack goes to descriptor 2: the log of the step that crashed.
    faulthandler.enable()
    _quiet_between_steps()
    from .runner import output_captured_in

    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            _exit_now()
        step, job, log, cwd = request
        os.chdir(cwd)
        reply: tuple[str, object, str | None]
        try:
            module_name, function_name = step.rsplit(".", 1)
            function = getattr(importlib.import_module(f"modelmake.steps.{module_name}"), function_name)
            with output_captured_in(Path(log)):
                reply = ("ok", function(job), None)
        except ModelmakeError as error:
            reply = ("error", error, None)
        except Exception as error:
            reply = ("bug", _portable(error), traceback.format_exc())
        try:
            connection.send(reply)
        except Exception as error:  # an exception that does not pickle: its type, message and traceback still go back
            text = reply[2] or traceback.format_exc()
            connection.send(("bug", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({error})"), text))


def _exit_now() -> None:
    """Leave once the doit process is done with this worker, without tearing down the interpreter.

    The exit handlers run as at any exit (multiprocessing's among them, which
    releases the semaphores libraries made here); what is skipped is freeing
    every module and object one by one, which for ONNX Runtime's quantization
    tools (sympy) or TensorFlow takes the better part of a second, while the
    doit process waits for this worker to be gone.
    """
    atexit._run_exitfuncs()
    os._exit(0)


def _portable(error: Exception) -> Exception:
    """The exception itself when the doit process can unpickle it without importing a framework, else its text."""
    if type(error).__module__ == "builtins" or type(error).__module__.startswith("modelmake."):
        return error
    return RuntimeError(f"{type(error).__module__}.{type(error).__qualname__}: {error}")


def _quiet_between_steps() -> None:
    """Between steps, what the frameworks print (at exit, from their threads) goes nowhere rather than to the console."""
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    os.close(sink)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)
