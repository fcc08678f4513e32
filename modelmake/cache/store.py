"""A content-addressed store of task outputs over any fsspec file system.

Layout under the store's root URL::

    <root>/v1/blobs/<sha[:2]>/<sha>      one file's bytes, named by their SHA-256
    <root>/v1/entries/<key>.json         one task's outputs: {relpath: {sha256, size}} and meta

Blobs are immutable and named by their content, so any number of writers may
upload the same blob at once: whoever wins, the bytes are the same.  An entry
is written after its blobs, whole, in one write (one PUT on an object store; a
rename on a local file system), so a reader sees either no entry or a whole
one whose blobs are all there.  A reader still trusts nothing: every file is
checked against the SHA-256 its entry records before it reaches the
workspace, and an entry whose record or blobs do not hold up raises
``CacheEntryInvalid``, so that the caller runs the task instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

LAYOUT = "v1"
ENTRY_FORMAT = 1
CHUNK = 1 << 20
MAX_ENTRY_BYTES = 16 << 20  # an entry is a small JSON record; anything larger is not one of ours
_DIGEST = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,199}")

# Object stores answer a dead endpoint quickly only when told to: a few seconds to connect, one retry.
S3_DEFAULTS = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"}}}


class CacheError(Exception):
    """A cache problem; the build goes on without the cache (or without the entry)."""


class CacheUnavailable(CacheError):
    """The cache cannot be reached or used at all: server down, wrong credentials, no such bucket."""


class CacheEntryInvalid(CacheError):
    """An entry that cannot be trusted: unreadable record, missing blob, or bytes that do not match their digest."""


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size: int


@dataclass(frozen=True)
class Entry:
    """One task's outputs in the cache: each file by its workspace-relative POSIX path."""

    key: str
    files: Mapping[str, FileDigest]
    meta: Mapping = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    def document(self) -> dict:
        return {
            "format": ENTRY_FORMAT,
            "key": self.key,
            "files": {path: {"sha256": f.sha256, "size": f.size} for path, f in sorted(self.files.items())},
            "meta": dict(self.meta),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def _storage_options(protocol: str) -> dict:
    """Short timeouts for object stores, unless fsspec's own configuration (FSSPEC_S3_*) says otherwise."""
    if protocol not in ("s3", "s3a"):
        return {}
    from fsspec.config import conf

    configured = conf.get("s3", {})
    options = {}
    for name, value in S3_DEFAULTS.items():
        if name not in configured:
            options[name] = value
    return options


def safe_relpath(path: str) -> str:
    """A workspace-relative POSIX path that stays inside the workspace, or CacheEntryInvalid."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or str(pure) != path or path.startswith("./"):
        raise CacheEntryInvalid(f"unsafe path {path!r} in the entry")
    return path


def parse_entry(key: str, data: bytes) -> Entry:
    """The entry recorded in ``data``, checked for shape; CacheEntryInvalid if it is not a whole entry for ``key``."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CacheEntryInvalid(f"entry {key} is not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != ENTRY_FORMAT:
        raise CacheEntryInvalid(f"entry {key} has an unknown format")
    if document.get("key") != key:
        raise CacheEntryInvalid(f"entry {key} records another key ({document.get('key')!r})")
    files, meta = document.get("files"), document.get("meta", {})
    if not isinstance(files, dict) or not isinstance(meta, dict):
        raise CacheEntryInvalid(f"entry {key} has no file table")
    parsed = {}
    for path, record in files.items():
        if not isinstance(record, dict):
            raise CacheEntryInvalid(f"entry {key}: file {path!r} has no digest")
        sha, size = record.get("sha256"), record.get("size")
        if not isinstance(sha, str) or not _DIGEST.fullmatch(sha) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CacheEntryInvalid(f"entry {key}: file {path!r} has a malformed digest or size")
        parsed[safe_relpath(path)] = FileDigest(sha, size)
    return Entry(key, parsed, meta)


class CacheStore:
    """A content-addressed store of task outputs at ``url`` (file://, s3://, gs://, az:// or any fsspec URL).

    ``write=False`` makes it read-only: ``put_blob`` and ``put_entry`` upload
    nothing.  ``bytes_down`` and ``bytes_up`` count what moved through this
    instance.  Connection problems raise ``CacheUnavailable``; an entry that
    does not hold up raises ``CacheEntryInvalid``.
    """

    def __init__(self, url: str, *, write: bool = True, storage_options: Mapping | None = None):
        import fsspec

        self.url = url
        self.write = write
        protocol = fsspec.utils.get_protocol(url)
        options = {**_storage_options(protocol), **(storage_options or {})}
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as error:
            raise CacheUnavailable(f"cannot open the cache {url}: {error}") from None
        self.local = _is_local(self.fs)
        self.root = root.rstrip("/")
        self.base = f"{self.root}/{LAYOUT}"
        self.bytes_down = 0
        self.bytes_up = 0

    # -- paths

    def blob_path(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest):
            raise CacheEntryInvalid(f"malformed digest {digest!r}")
        return f"{self.base}/blobs/{digest[:2]}/{digest}"

    def entry_path(self, key: str) -> str:
        if not _KEY.fullmatch(key):
            raise ValueError(f"malformed cache key {key!r}")
        return f"{self.base}/entries/{key}.json"

    # -- reachability

    def check(self) -> None:
        """Raise CacheUnavailable unless the store answers (and, for a writer, can be written)."""
        try:
            if self.local:
                if self.write:
                    os.makedirs(self.base, exist_ok=True)
                elif not os.path.isdir(self.root):
                    raise CacheUnavailable(f"the cache folder {self.root} does not exist")
                return
            bucket = self.root.split("/", 1)[0]
            self.fs.info(bucket)
        except CacheUnavailable:
            raise
        except FileNotFoundError:
            raise CacheUnavailable(f"the cache {self.url} does not exist (no such bucket or container)") from None
        except Exception as error:  # noqa: BLE001 - every client library has its own errors; all mean "cannot use it"
            raise CacheUnavailable(f"cannot reach the cache {self.url}: {describe(error)}") from None

    # -- blobs

    def has_blob(self, digest: str) -> bool:
        return self._call(self.fs.exists, self.blob_path(digest))

    def put_blob(self, path: Path) -> str:
        """Upload ``path`` under its SHA-256 unless a blob of that digest is there already; return the digest."""
        return self._put_blob(Path(path))[0]

    def _put_blob(self, path: Path) -> tuple[str, int]:
        """The digest, and how many bytes went up (0 when the blob was there already)."""
        digest = file_sha256(path)
        if not self.write or self.has_blob(digest):
            return digest, 0
        target = self.blob_path(digest)
        if self.local:
            self._local_write(target, lambda tmp: shutil.copyfile(path, tmp))
        else:
            self._call(self.fs.put_file, str(path), target)
        size = path.stat().st_size
        self.bytes_up += size
        return digest, size

    def get_blob(self, digest: str, dest: Path) -> None:
        """Download the blob ``digest`` to ``dest``, checked against its digest, written whole or not at all."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".fetch", dir=dest.parent)
        os.close(fd)
        try:
            try:
                self._call(self.fs.get_file, self.blob_path(digest), tmp)
            except FileNotFoundError:
                raise CacheEntryInvalid(f"blob {digest} is missing") from None
            actual = file_sha256(Path(tmp))
            if actual != digest:
                raise CacheEntryInvalid(f"blob {digest} holds other bytes (SHA-256 {actual})")
            self.bytes_down += os.path.getsize(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- entries

    def put_entry(self, key: str, files: Mapping[str, Path], meta: dict) -> int:
        """Upload every file's blob, then the entry itself in one write: readers never see half an entry.

        Returns the bytes uploaded (blobs already in the store are not uploaded again); 0 when read-only.
        """
        if not self.write:
            return 0
        digests = {}
        uploaded = 0
        for relpath, path in sorted(files.items()):
            safe_relpath(relpath)
            size = Path(path).stat().st_size
            digest, sent = self._put_blob(Path(path))
            digests[relpath] = FileDigest(digest, size)
            uploaded += sent
        data = json.dumps(Entry(key, digests, meta).document(), sort_keys=True, indent=1).encode("utf-8")
        target = self.entry_path(key)
        if self.local:
            self._local_write(target, lambda tmp: Path(tmp).write_bytes(data))
        else:
            self._call(self.fs.pipe_file, target, data)
        self.bytes_up += len(data)
        return uploaded + len(data)

    def get_entry(self, key: str) -> Entry | None:
        """The entry for ``key``, None when there is none; CacheEntryInvalid when its record does not hold up."""
        path = self.entry_path(key)
        try:
            data = self._call(self.fs.cat_file, path)
        except FileNotFoundError:
            return None
        if len(data) > MAX_ENTRY_BYTES:
            raise CacheEntryInvalid(f"entry {key} is {len(data)} bytes, too large to be an entry")
        self.bytes_down += len(data)
        return parse_entry(key, data)

    def fetch(self, entry: Entry, workspace: Path, *, staging: Path | None = None, replace_dirs: tuple[str, ...] = ()) -> None:
        """Download every file of ``entry`` into a staging folder, verify it, then move each into place.

        A missing or mismatching blob raises CacheEntryInvalid before anything
        in the workspace changes.  ``staging`` (default: a folder under the
        workspace's build/) must be on the workspace's file system.
        ``replace_dirs`` (workspace-relative) are emptied just before the files
        move in, so a directory output holds exactly the entry's files.
        """
        workspace = Path(workspace)
        root = Path(staging) if staging is not None else workspace / "build" / ".modelmake" / "cache" / "staging"
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{entry.key[:16]}.", dir=root))
        try:
            staged = []
            for index, (relpath, digest) in enumerate(sorted(entry.files.items())):
                safe_relpath(relpath)
                scratch = folder / str(index)
                self.get_blob(digest.sha256, scratch)
                if scratch.stat().st_size != digest.size:
                    raise CacheEntryInvalid(f"entry {entry.key}: {relpath} is {scratch.stat().st_size} bytes, the entry says {digest.size}")
                staged.append((scratch, workspace / relpath))
            for folder_path in replace_dirs:
                shutil.rmtree(workspace / safe_relpath(folder_path), ignore_errors=True)
            for scratch, final in staged:
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                os.replace(scratch, final)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- helpers

    def _local_write(self, target: str, fill) -> None:
        """Write a local file under a unique temporary name beside ``target`` and rename it: whole, and safe with many writers."""
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.partial")
        try:
            fill(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _call(self, function, *args):
        """Call the file system; a missing object stays FileNotFoundError, anything else that is not ours is CacheUnavailable."""
        try:
            return function(*args)
        except (FileNotFoundError, CacheError):
            raise
        except Exception as error:  # noqa: BLE001 - botocore, aiohttp, gcsfs, adlfs: each has its own errors
            raise CacheUnavailable(f"the cache {self.url} failed: {describe(error)}") from None


def describe(error: BaseException) -> str:
    """One line for an exception from a storage client, without its traceback."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
