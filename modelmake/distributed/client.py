"""The doit process's side: one Dask client per build, the task's inputs uploaded, its future awaited, its outputs fetched.

The client (and, for ``-j N``, the LocalCluster) is started once, on the
first model step or by ``modelmake build`` before doit runs, and closed when
the build ends.  A LocalCluster's workers are processes with one thread each
(one step at a time), each step in the worker's step process with one thread per framework (steps/worker.py).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from ..errors import ClusterUnreachable, ModelmakeError, StepError
from . import CACHE_VARIABLE, STORE_VARIABLE, ClusterSettings, remote, settings, store_url, transfer

# A worker that dies while running a step (killed, out of memory, its machine gone) is replaced and the step tried
# again this many times in all before the task fails; a LocalCluster's scheduler is told so (a remote one keeps its own
# distributed.scheduler.allowed-failures).
ALLOWED_FAILURES = 2
# The scheduler also counts a death against the steps only queued on that worker: a step that was waiting there rather
# than running at one of its deaths is sent again, this many times at most, instead of failing beside the step that
# killed the worker.
BYSTANDER_RETRIES = 2
BACKSTOP_SECONDS = 120  # beyond the step's timeout: a worker that has not answered by then is restarted
# A LocalCluster's configuration: how often a step whose worker died runs again, and less of Dask's own upkeep.  A
# worker's thread only waits for its step process, so Dask's profiler (which samples it every 10 ms) learns nothing,
# and its monitors need not wake so often: an idle 2-worker LocalCluster took 10% of a core with the defaults, 2% so.
LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES - 1,
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "200ms",
}
# Of the steps waiting for a worker, sources go first: they are the long poles (a recipe that trains) and every
# other step of their model waits for them.
PRIORITY = {"source": 30, "data": 20, "reference": 10}


# Where each step's time went in the last build on a cluster: when it was submitted (seconds into the build),
# uploading its inputs, waiting for a worker and fetching them there, the step itself, uploading its outputs, and
# fetching them into the workspace.
TIMINGS = "build/.modelmake/cluster-timings.json"


class Session:
    def __init__(self, config: ClusterSettings):
        self.settings = config
        self.client, self.cluster = self._connect(config)
        self._uploaded: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, so an unchanged input is hashed once
        self.timings: list[dict] = []  # per step, where its wall time went (TIMINGS)
        self.started = time.perf_counter()
        self.workspace: Path | None = None
        self.runs: Counter[str] = Counter()  # Dask key -> how many times a worker began it (remote.STARTED_TOPIC)
        self.client.subscribe_topic(remote.STARTED_TOPIC, lambda event: self.runs.update((event[1],)))

    @staticmethod
    def _connect(config: ClusterSettings):
        import dask
        from distributed import Client, LocalCluster

        if config.address is None:
            try:
                with dask.config.set(LOCAL_CLUSTER_CONFIG):
                    cluster = LocalCluster(
                        n_workers=config.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR,
                    )
            except Exception as error:  # noqa: BLE001 - whatever stops the workers from starting, nothing can be built
                raise ClusterUnreachable(
                    f"could not start {config.workers} local worker processes (-j {config.workers}): {type(error).__name__}: {error}; "
                    "build without -j, or with fewer workers"
                ) from None
            return Client(cluster, set_as_default=False), cluster
        try:
            return Client(config.address, timeout=config.connect_timeout, set_as_default=False), None
        except (OSError, TimeoutError) as error:
            raise ClusterUnreachable(
                f"cannot reach the Dask scheduler at {config.address} (MODELMAKE_DASK or --dask): {error}. "
                "Start it (`dask scheduler`, then `dask worker ADDRESS --nthreads 1`), correct the address, "
                "or build on this machine without it (unset MODELMAKE_DASK; `modelmake build -j N` for local workers)"
            ) from None

    def threads(self) -> int:
        """How many steps the cluster runs at once."""
        return max(1, sum(self.client.nthreads().values()))

    def store(self, workspace: Path):
        return transfer.store(store_url(self.settings, workspace))

    def check_store(self, workspace: Path) -> None:
        """A running cluster's workers must see the store that each step's files travel through: checked on connecting
        (before doit runs, with `modelmake build`), since a worker that cannot would fail every step it is given."""
        store = self.store(workspace)
        if self.settings.address is None or not store.local:
            return
        os.makedirs(store.base, exist_ok=True)
        seen = self.client.run(os.path.isdir, store.base)
        blind = sorted(worker for worker, sees in seen.items() if not sees)
        if blind:
            raise ClusterUnreachable(
                f"the Dask workers {', '.join(blind)} cannot see {store.url}, where each step's "
                f"files travel: a cluster on other machines needs a store they all reach. Set {CACHE_VARIABLE} (or "
                f"{STORE_VARIABLE}) to object storage (s3://bucket/prefix) or to a folder every worker mounts"
            )

    def upload(self, store, workspace: Path, path: str) -> str:
        file = workspace / path
        status = file.stat()
        key = (str(file), status.st_size, status.st_mtime_ns)
        digest = self._uploaded.get(key)
        if digest is None:
            digest = self._uploaded[key] = store.put_blob(file)
        return digest

    def close(self) -> None:
        if self.workspace is not None and self.timings:
            from ..fsutil import write_json

            write_json(self.workspace / TIMINGS, {"steps": self.timings})
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_session: Session | None = None
_lock = threading.Lock()


def session() -> Session:
    """This build's session, connected (and its LocalCluster started) on first use."""
    global _session
    with _lock:
        if _session is None:
            config = settings()
            if config is None:
                raise ModelmakeError("no Dask cluster is configured: set MODELMAKE_DASK or pass -j N / --dask ADDRESS")
            current = Session(config)
            try:
                current.check_store(Path.cwd())  # the doit process runs in the workspace
            except BaseException:
                current.close()
                raise
            _session = current
            atexit.register(shutdown)
        return _session


def shutdown() -> None:
    """Close the client and stop the LocalCluster, if this process started one."""
    global _session
    with _lock:
        if _session is not None:
            current, _session = _session, None
            current.close()


def run_step(step: str, task_name: str, job, log: str, timeout: float, *, file_dep, targets, clean_dirs, tools):
    """Send one step to the cluster, wait for it and move its outputs into the workspace; returns its summary line.

    Raises the step's ModelmakeError as it was raised on the worker, a bug's
    exception with the worker's traceback as its cause, ``StepTimedOut`` when
    it runs past ``timeout`` and ``WorkerCrashed`` when its step process dies
    (both as a local build raises them), and a StepError naming the task when
    the Dask workers running it kept dying.
    """
    from distributed import TimeoutError as DaskTimeout

    from ..steps.worker import RemoteTraceback, StepTimedOut, WorkerCrashed

    current = session()
    workspace = Path.cwd()
    current.workspace = workspace
    store = current.store(workspace)
    started = time.perf_counter()
    inputs = {path: current.upload(store, workspace, path) for path in transfer.input_files(workspace, job, file_dep)}
    request = remote.RemoteStep(
        step=step, task_name=task_name, job=job, log=log, store=store_url(current.settings, workspace), inputs=inputs,
        targets=tuple(targets), clean_dirs=tuple(clean_dirs), timeout=timeout, tools=dict(tools),
    )
    submitted = time.perf_counter()
    priority = PRIORITY.get(task_name.split(":", 1)[0], 0)
    for retries_left in range(BYSTANDER_RETRIES, -1, -1):
        key = f"{task_name}-{uuid.uuid4().hex[:12]}"
        future = current.client.submit(remote.run, request, key=key, pure=False, priority=priority)
        try:
            # The step process stops a step past its timeout itself; this is for a worker that does not answer.
            result = future.result(timeout=timeout + BACKSTOP_SECONDS)
            break
        except (DaskTimeout, TimeoutError):
            _stop(current.client, future)
            raise StepTimedOut(timeout) from None
        except Exception as error:
            if type(error).__name__ != "KilledWorker":
                raise
            deaths = error.allowed_failures + 1  # type: ignore[attr-defined]
            if retries_left and current.runs[key] < deaths:
                continue
            raise StepError(
                f"{task_name}: the Dask worker running this step died {deaths} times (killed, out of memory, or its "
                "machine went away), so it was not tried again. Run the build again if workers were lost; if the worker "
                f"dies each time, give the workers more memory, or run `modelmake build {task_name}` without Dask to see "
                f"what the step does in {log}"
            ) from None
    returned = time.perf_counter()
    transfer.deliver(store, result.outputs, workspace, targets=targets, clean_dirs=clean_dirs)
    remote_time = sum(result.timings.values())
    current.timings.append({
        "task": task_name, "worker": result.worker, "submitted_at": round(submitted - current.started, 2),
        "upload_inputs": round(submitted - started, 4),
        "queued": round(returned - submitted - remote_time, 4), **{k: round(v, 4) for k, v in result.timings.items()},
        "deliver": round(time.perf_counter() - returned, 4),
    })
    if result.stopped is not None:
        how, value = result.stopped
        raise WorkerCrashed(value) if how == "crashed" else StepTimedOut(value)
    if result.error is not None:
        if result.traceback:
            result.error.__cause__ = RemoteTraceback(f"(Dask worker {result.worker})\n{result.traceback}")
        raise result.error
    return result.summary


def _stop(client, future) -> None:
    """Stop the step where it is: cancel it (or the scheduler would run it again elsewhere), then restart the worker
    running it, since a thread cannot be killed."""
    try:
        workers = [worker for worker, keys in client.processing().items() if future.key in keys]
        future.cancel()
        if workers:
            client.restart_workers(workers)
    except Exception as error:  # noqa: BLE001 - the timeout is reported either way
        logging.getLogger(__name__).warning("could not restart the worker running %s: %s", future.key, error)
