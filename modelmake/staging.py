"""Writing a set of files into a directory the user names, all of them or none, even if the process is killed.

The files are written into one staging directory inside the destination, named
``.modelmake-staging-<8 random characters>.partial`` (mode 0700), and moved to their
final names only once every one of them is complete. A killed process leaves its
files in that directory and nowhere else; every later run into the same destination
removes such leftovers first. A staging directory is locked while its run is alive,
so two runs into one destination do not remove each other's files. A failed run
removes its staging directory, and the destination too if the run created it.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): leftovers are still removed, concurrent runs are not told apart
    fcntl = None  # type: ignore[assignment]

STAGING_PREFIX, STAGING_SUFFIX = ".modelmake-staging-", ".partial"
_STAGING_NAME = re.compile(rf"{re.escape(STAGING_PREFIX)}[a-z0-9_]{{8}}{re.escape(STAGING_SUFFIX)}")


@contextmanager
def staged_files(destination: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success each file in it moves to the same relative path under ``destination``."""
    created = _missing_ancestors(destination)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        remove_stale_staging(destination)
        staging, lock = _locked_staging(destination)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield staging
        for file in sorted(p for p in staging.rglob("*") if not p.is_dir()):
            target = destination / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)


def remove_stale_staging(destination: Path) -> list[Path]:
    """Remove the staging directories that runs killed before they finished left in ``destination``."""
    removed = []
    with os.scandir(destination) as entries:
        candidates = [Path(e.path) for e in entries if _STAGING_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    for candidate in candidates:
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # its own run just finished
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live run's
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


def _locked_staging(destination: Path) -> tuple[Path, int]:
    """A new staging directory and the descriptor holding its lock (released when the process ends, however)."""
    while True:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=STAGING_SUFFIX, dir=destination))
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # another run's clean-up may have taken it between its creation and the lock
            if os.stat(staging).st_ino == os.fstat(fd).st_ino:
                return staging, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or gone): what is left was not made by this run alone
