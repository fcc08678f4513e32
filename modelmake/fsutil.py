"""Writing outputs so that a killed build never leaves a partial file under a final name."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20


def _remove_leftovers(path: Path) -> None:
    """Delete the temporaries a killed earlier write of ``path`` left beside it.

    Only names this module makes for ``path`` itself match (``.<name>.<8
    random characters>.partial`` or ``.old``), so a sibling such as
    ``<name>.json`` keeps its own; each output has one writer at a time.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(?:partial|old)")
    with os.scandir(path.parent) as entries:
        leftovers = [Path(entry.path) for entry in entries if pattern.fullmatch(entry.name)]
    for leftover in leftovers:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path | str, mode: str = "wb", *, permissions: int = 0o644, durable: bool = True, scratch: Path | None = None):
    """Yield a file open on a temporary name; rename it onto ``path`` only on success.

    The temporary lives beside ``path`` unless ``scratch`` names another folder
    on the same file system (a signature must not leave a stray file inside the
    directory it signs).  ``durable=False`` skips the fsync, for a caller that
    stages a whole directory and settles its durability itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    folder = Path(scratch) if scratch is not None else path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_output(path) as handle:
        handle.write(data)


def canonical_json(value) -> bytes:
    """Sorted keys, no insignificant whitespace, raw UTF-8: one byte string per value (FORMAT.md, "Serialization").

    These are the bytes that are signed (DSSE payloads) and the bytes of model.sig.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def canonical_json_document(value) -> bytes:
    """A JSON document file (manifest.json, provenance.json, index.json, release.json): canonical JSON and one line feed."""
    return canonical_json(value) + b"\n"


def write_json(path: Path | str, value, *, pretty: bool = True) -> None:
    if pretty:
        data = (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    else:
        data = canonical_json_document(value)
    write_bytes(path, data)


def read_json(path: Path | str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path | str) -> str:
    """A digest of a directory's relative file names and contents, independent of listing order."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


@contextmanager
def atomic_directory(path: Path | str):
    """Yield an empty staging directory beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
