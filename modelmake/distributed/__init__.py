"""Model steps run on a Dask cluster: a scheduler's address, or a LocalCluster of warm worker processes for ``-j N``.

doit still decides what is up to date and in what order; it runs with
threads (``-n N -P thread``) so that several tasks are in flight, each
waiting on its future.  The runner (``steps/runner._in_worker``) hands a
model step to ``client.run_step``: the task's input files go into the store
as blobs, a worker materializes them into a scratch directory of its own,
runs the step there (``remote.py``), uploads what the step wrote and returns
the digests; the client fetches the outputs into a staging directory under
build/ and moves them into place only once all of them are there and verified.

Nothing here is imported while the graph loads, and nothing imports Dask
unless a cluster is configured (``settings``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelmakeError

ADDRESS_VARIABLE = "MODELMAKE_DASK"  # tcp://host:8786: the scheduler of a running cluster
WORKERS_VARIABLE = "MODELMAKE_DASK_WORKERS"  # N: a LocalCluster of N worker processes on this machine (`modelmake build -j N`)
STORE_VARIABLE = "MODELMAKE_DASK_STORE"  # the fsspec URL blobs travel through, when it is not the cache's
CACHE_VARIABLE = "MODELMAKE_CACHE"  # the shared cache (modelmake/cache/), which blobs travel through by default
CONNECT_TIMEOUT_VARIABLE = "MODELMAKE_DASK_TIMEOUT"  # seconds to wait for the scheduler (default 10)
TRANSFER_STORE = "build/.modelmake/transfer"  # the store of a local build when no cache is configured


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None  # a running scheduler; None: a LocalCluster started for this build
    workers: int  # the LocalCluster's worker processes (ignored with an address)
    store: str | None  # fsspec URL of the store; None: TRANSFER_STORE in the workspace
    connect_timeout: float = 10.0


def settings(environ=None) -> ClusterSettings | None:
    """The cluster the environment asks for, or None for the local warm worker."""
    environ = os.environ if environ is None else environ
    address = environ.get(ADDRESS_VARIABLE, "").strip() or None
    workers_text = environ.get(WORKERS_VARIABLE, "").strip()
    if address is None and not workers_text:
        return None
    workers = _positive_int(workers_text, WORKERS_VARIABLE, "the number of worker processes") if workers_text else 1
    timeout_text = environ.get(CONNECT_TIMEOUT_VARIABLE, "").strip()
    timeout = float(_positive_int(timeout_text, CONNECT_TIMEOUT_VARIABLE, "seconds")) if timeout_text else 10.0
    store = environ.get(STORE_VARIABLE, "").strip() or environ.get(CACHE_VARIABLE, "").strip() or None
    return ClusterSettings(address=address, workers=workers, store=store, connect_timeout=timeout)


def configured() -> bool:
    return bool(os.environ.get(ADDRESS_VARIABLE, "").strip() or os.environ.get(WORKERS_VARIABLE, "").strip())


def store_url(settings: ClusterSettings, workspace: Path) -> str:
    if settings.store:
        return settings.store
    return (Path(workspace).resolve() / TRANSFER_STORE).as_uri()


def _positive_int(text: str, variable: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ModelmakeError(f"{variable}={text!r}: give {what} as a whole number of at least 1")
    return value


def run_step(step: str, task_name: str, job, log: str, timeout: float, *, file_dep, targets, clean_dirs, tools):
    """Run one model step on the cluster (``client.run_step``); returns its summary line."""
    from .client import run_step as run

    return run(step, task_name, job, log, timeout, file_dep=file_dep, targets=targets, clean_dirs=clean_dirs, tools=tools)
