"""A Dask LocalCluster with worker processes on loopback, for the tests of builds on a cluster.

The workers' own directory (blobs, each step's scratch) is a folder of its
own, never a workspace; one cluster serves a whole test session.  A worker
that dies is restarted by its nanny, and the scheduler gives a task whose
worker died one more try (allowed-failures 1), so a test that kills a worker
twice sees the task fail.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunningCluster:
    address: str  # tcp://127.0.0.1:PORT
    local_directory: Path  # where the workers keep blobs and scratch directories


@contextmanager
def local_cluster(directory: Path, *, workers: int = 2) -> Iterator[RunningCluster]:
    import dask
    from distributed import LocalCluster

    from modelmake.distributed.client import LOCAL_CLUSTER_CONFIG

    directory.mkdir(parents=True, exist_ok=True)
    # The settings of `modelmake build -j N`'s own LocalCluster (allowed-failures 1 among them).
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
            local_directory=str(directory), silence_logs=logging.ERROR,
        )
    try:
        yield RunningCluster(cluster.scheduler_address, directory)
    finally:
        cluster.close()
