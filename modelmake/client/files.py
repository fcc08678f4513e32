"""Durable file replacement: the one primitive the trust state and the model store rely on.

A file is written to a temporary name in the same directory, flushed to disk (fsync), and
renamed over its final name; then the directory itself is fsynced so that the rename
survives a power cut. A reader therefore sees the old content or the new, never a mix.
(Kotlin: ``Files.move(tmp, path, ATOMIC_MOVE)``; Swift: ``Data.write(to:options: .atomic)``.)
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def safe_name(name: str, what: str) -> str:
    """``name`` if it can be used as a file name as it is (modelmake's model and bundle names always can)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '.', '_' and '-', not starting with '.'")
    return name


def fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, destination: Path) -> None:
    """Rename an already fsynced ``source`` over ``destination`` (same directory or file system)."""
    os.replace(source, destination)
    fsync_directory(destination.parent)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        replace_durably(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
