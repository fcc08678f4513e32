"""A cache of the task graph, so that a build with nothing to do reads no YAML, schema or key.

The graph is a pure function of what the plan read: models.yaml, the chipset
profiles, the files the spec names, the environment variables it honours, the
keys, the installed packages (tool versions) and modelmake's own code.  The
cache stores the graph with a signature (size and modification time, or the
value's digest for environment variables) of each of those inputs; if any
differs, the graph is built again from the spec, which also re-checks it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

from . import layout

CACHE = f"{layout.STATE}/tasks.pickle"
CACHE_FORMAT = 2
PACKAGE = Path(__file__).resolve().parent
ENVIRONMENT = ("SOURCE_DATE_EPOCH", "MODELMAKE_RELEASE")


def _stat(path: Path):
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def _tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts) if root.is_dir() else []


def _signature(workspace: Path, paths: list[str], variables: list[str]) -> dict:
    # Installed packages change the tool versions the tasks hash; an install touches site-packages.
    site = [Path(p) for p in sys.path if p.endswith("site-packages")]
    watched = [workspace / p for p in paths] + _tree(PACKAGE) + site
    return {
        "files": {str(path): _stat(path) for path in watched},
        "environment": {name: hashlib.sha256(os.environ.get(name, "\0unset").encode()).hexdigest() for name in variables},
    }


def load(workspace: Path) -> list[dict] | None:
    """The cached tasks, or None when there are none or any input changed."""
    try:
        with open(workspace / CACHE, "rb") as handle:
            cached = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    if cached.get("format") != CACHE_FORMAT:
        return None
    if cached["signature"] != _signature(workspace, cached["paths"], cached["variables"]):
        return None
    return cached["tasks"]


def store(workspace: Path, tasks: list[dict], paths: list[str], variables: list[str]) -> None:
    """Record the tasks with what they were built from; ``paths`` are relative to the workspace.

    Only into an existing build/: loading the graph (`doit list`, `doit info`) creates nothing,
    so a workspace that has never been built loads its graph from the spec each time.
    """
    from .fsutil import atomic_output

    if not (workspace / layout.BUILD).is_dir():
        return
    paths = sorted(set(paths))
    variables = sorted(set(ENVIRONMENT) | set(variables))
    cached = {
        "format": CACHE_FORMAT,
        "paths": paths,
        "variables": variables,
        "signature": _signature(workspace, paths, variables),
        "tasks": tasks,
    }
    try:
        with atomic_output(workspace / CACHE, durable=False) as handle:
            pickle.dump(cached, handle, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError:
        pass  # a full or read-only build/: the graph is made from the spec again next time, nothing is lost
