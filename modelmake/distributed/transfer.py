"""Which files a model step reads and writes, and how its outputs reach the workspace: all of them or none.

A task's inputs are its ``file_dep`` plus what its records stand for: a
source record (``build/sources/<model>/source.json``, or a fine-tuned
variant's under ``build/trained/``) stands for the model directory beside
it, an export record for the exported files it names, an evaluation's
artifact record for the artifact file it describes (absent when the
conversion failed).  Its outputs are its ``targets``, every
file under its ``clean_dirs`` (the source's model directory) and its log.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path, PurePosixPath

from .. import fsutil, layout

SOURCE_RECORD_NAME = "source.json"
INCOMING = f"{layout.STATE}/incoming"  # where the client stages a task's outputs before they move into place


@cache
def store(url: str):
    """The store at ``url`` (a ``cache.store.CacheStore``), opened once per process: the client's and each worker's."""
    from ..cache.store import CacheStore

    return CacheStore(url)


def relative(path: str) -> str:
    """A workspace-relative POSIX path, refused when it is absolute or climbs out (a remote side never names others)."""
    pure = PurePosixPath(Path(path).as_posix())
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"{path!r} is not a path inside the workspace")
    return pure.as_posix()


def input_files(workspace: Path, job, file_dep: Iterable[str]) -> list[str]:
    """Every file the step reads, relative to the workspace, in a stable order."""
    files: dict[str, None] = {}
    for dep in file_dep:
        files[relative(dep)] = None
        for path in _described_by(workspace, relative(dep)):
            files[path] = None
    artifact = getattr(job, "artifact", None)  # an evaluation reads the file its record describes
    if isinstance(artifact, str) and (workspace / artifact).is_file():
        files[relative(artifact)] = None
    return list(files)


def _described_by(workspace: Path, record: str) -> list[str]:
    """The files a record in a task's file_dep stands for (none for any other file)."""
    if record.startswith((f"{layout.BUILD}/sources/", f"{layout.BUILD}/trained/")) and Path(record).name == SOURCE_RECORD_NAME:
        directory = (workspace / record).parent
        return [p.relative_to(workspace).as_posix() for p in sorted(directory.rglob("*")) if p.is_file() and not _temporary(p)]
    if record.startswith(f"{layout.EXPORTS}/") and record.endswith(".json"):
        export = fsutil.read_json(workspace / record)
        return [relative(export["model"]), *(relative(p["file"]) for _, p in sorted(export.get("prepared", {}).items()))]
    return []


def output_files(root: Path, targets: Iterable[str], clean_dirs: Iterable[str], log: str) -> list[str]:
    """The files under ``root`` (the worker's scratch) that the step wrote and the workspace gets."""
    files: dict[str, None] = {}
    for directory in clean_dirs:
        for path in sorted((root / directory).rglob("*")):
            if path.is_file() and not _temporary(path):
                files[path.relative_to(root).as_posix()] = None
    for target in targets:
        if (root / target).is_file():
            files[relative(target)] = None
    if (root / log).is_file():
        files[relative(log)] = None
    return list(files)


def _temporary(path: Path) -> bool:
    return path.name.endswith((".partial", ".old")) and path.name.startswith(".")


def deliver(store, outputs: Mapping[str, str], workspace: Path, *, targets: Iterable[str], clean_dirs: Iterable[str]) -> None:
    """Fetch ``outputs`` ({relpath: sha256}) from the store and move them into the workspace all together.

    Every blob is fetched (and verified by the store) into one staging
    directory under build/.modelmake/ first: a failure or a kill while
    fetching leaves the workspace as it was.  Then each directory under a
    ``clean_dirs`` entry replaces its old self whole (as a local step's
    ``fsutil.atomic_directory`` does), loose files are renamed into place, and
    the targets (the records later tasks depend on) come last.
    """
    workspace = Path(workspace)
    incoming = workspace / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="task.", dir=incoming))
    try:
        for path, digest in sorted(outputs.items()):
            destination = staging / relative(path)
            destination.parent.mkdir(parents=True, exist_ok=True)
            store.get_blob(digest, destination)
        _move_into_place(staging, workspace, list(outputs), targets=set(map(relative, targets)), clean_dirs=list(clean_dirs))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, workspace: Path, paths: list[str], *, targets: set[str], clean_dirs: list[str]) -> None:
    placed: set[str] = set()
    for directory in map(relative, clean_dirs):
        staged = staging / directory
        if not staged.is_dir():
            continue
        for child in sorted(staged.iterdir()):
            name = f"{directory}/{child.name}"
            if child.is_dir():
                # A whole directory (a SavedModel) replaces the old one at once.
                with fsutil.atomic_directory(workspace / name) as fresh:
                    for item in child.iterdir():
                        os.replace(item, fresh / item.name)
                placed.update(p for p in paths if p.startswith(name + "/"))
    later = sorted(p for p in paths if p not in placed and p in targets)
    for path in sorted(p for p in paths if p not in placed and p not in targets) + later:
        destination = workspace / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(staging / path, 0o644)
        os.replace(staging / path, destination)
