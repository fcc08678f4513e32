"""Reproducible zip archives, and a reader that refuses anything a hostile archive could try.

Writing: entries are the given files only (no directory entries), sorted by the UTF-8
bytes of their names, each STORED (not deflated) with the same DOS timestamp, Unix mode
0644, create_system 3 (Unix), no extra fields but zip64 ones and no comments. Stored
rather than deflated because deflate output depends on the zlib build (zlib, zlib-ng,
Apple's) and would break byte-identical rebuilds across machines; model files barely
compress and encrypted ones not at all, and stored entries can be read or mapped in
place on a device.

Reading: Python's ``zipfile`` is enough for the container itself: it parses the central
directory, handles zip64, checks that each local header names the same file as the
central directory and checks every entry's CRC-32 at its end. What it does not do is
judge names, types and sizes (``ZipFile.extract`` quietly rewrites dangerous names rather
than refusing them), so ``extract_archive`` validates every entry itself before writing a
byte, and never calls ``extract``.
"""
from __future__ import annotations

import copy
import errno
import os
import re
import secrets
import shutil
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from modelmake.errors import StepError, UnsafeArchiveError, VerificationError

FILE_MODE = 0o644
ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold
ZIP_EPOCH_MAX = 4354819198  # 2107-12-31T23:59:58Z, the latest
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_TOTAL_BYTES = 16 << 30  # generous for on-device models; pass a tighter bound when known
_CHUNK_SIZE = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


# --- writing -------------------------------------------------------------------------
#
# We write the zip headers ourselves rather than through zipfile: zipfile pushes every
# byte of every entry through Python and computes each CRC-32 as it goes, which on a
# 1 GiB encrypted model costs about as much as encrypting it did. Our own writer copies
# the data inside the kernel (os.copy_file_range) and takes the CRC-32s that
# encrypt_file measured on the way. The bytes are those zipfile writes for the same
# entries (tests/unit/test_archive.py compares them), except that a local header gets
# its zip64 field only when the entry's size needs one, where zipfile adds it already
# above (2^31 - 1) / 1.05 bytes because it does not know the stored size in advance.

ZIP64_LIMIT = (1 << 31) - 1  # zipfile's bound: a larger size or offset goes in a zip64 field
ZIP64_COUNT_LIMIT = 0xFFFF  # more entries than this need the zip64 end records
_VERSION = 20  # "version made by" and "needed to extract": 2.0 ...
_ZIP64_VERSION = 45  # ... or 4.5 when the record carries a zip64 field
_UNIX = 3  # create_system, so that external attributes carry a Unix mode on every host OS
_EXTERNAL_ATTR = (stat.S_IFREG | FILE_MODE) << 16
_UTF8_NAME = 0x800  # general purpose flag bit 11
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_END = struct.Struct("<4s4H2LH")
_COPY_CHUNK_SIZE = 8 << 20
# copy_file_range is refused across file systems (EXDEV), missing from old kernels
# (ENOSYS) and some file systems (EINVAL, EOPNOTSUPP): copy through Python there.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


class _Entry(NamedTuple):
    """One stored entry, as the headers describe it."""

    name: str
    size: int
    crc32: int
    offset: int  # of its local header
    dos_time: tuple[int, int]  # (MS-DOS time, MS-DOS date)


def write_archive(dst: Path, files: Mapping[str, Path], epoch: int, crc32: Mapping[str, int] | None = None) -> None:
    """Write ``files`` (archive name -> source file) to ``dst``, reproducibly.

    The same names, contents and ``epoch`` give the same bytes whatever the source
    files' own timestamps and modes, the umask, the time zone or the directory order.
    ``crc32`` gives the CRC-32 of some of the files by archive name, measured when they
    were written; it is used as given. The others are read once to compute theirs.
    """
    dst = Path(dst)
    crc32 = dict(crc32 or {})
    names = sorted(files, key=lambda name: name.encode("utf-8"))
    problems = [f"{name!r}: {reason}" for name, reason in _name_problems(names)]
    problems += [f"{name!r}: has a CRC-32 but is not among the files" for name in sorted(set(crc32) - set(files))]
    if problems:
        raise ValueError("cannot archive these names: " + "; ".join(problems))
    dos_time = _dos_time(time.gmtime(min(max(int(epoch), ZIP_EPOCH_MIN), ZIP_EPOCH_MAX)))

    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.tmp")
    try:
        # Unbuffered, so that header writes and kernel copies share the one file offset.
        with open(tmp, "xb", buffering=0) as out:
            entries = []
            for name in names:
                with open(files[name], "rb", buffering=0) as source:
                    size = os.fstat(source.fileno()).st_size
                    crc = crc32[name] if name in crc32 else _crc32(source, size)
                    entry = _Entry(name, size, crc, out.tell(), dos_time)
                    _write_all(out, _local_header(entry))
                    _copy(source, out, size, files[name])
                entries.append(entry)
            start = out.tell()
            directory = b"".join(map(_central_header, entries))
            _write_all(out, directory + _end_records(len(entries), start, len(directory)))
        os.chmod(tmp, FILE_MODE)  # not part of the bytes, but predictable for whoever ships it
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _dos_time(utc: time.struct_time) -> tuple[int, int]:
    """(time, date) in MS-DOS form, which counts seconds in twos (rounding down)."""
    return (
        utc.tm_hour << 11 | utc.tm_min << 5 | utc.tm_sec // 2,
        (utc.tm_year - 1980) << 9 | utc.tm_mon << 5 | utc.tm_mday,
    )


def _encoded_name(name: str) -> tuple[bytes, int]:
    """The name's bytes and general purpose flags: bit 11 says UTF-8 when it is not ASCII."""
    return (name.encode("ascii"), 0) if name.isascii() else (name.encode("utf-8"), _UTF8_NAME)


def _local_header(entry: _Entry) -> bytes:
    name, flags = _encoded_name(entry.name)
    zip64 = entry.size > ZIP64_LIMIT
    extra = struct.pack("<HHQQ", 1, 16, entry.size, entry.size) if zip64 else b""
    size = 0xFFFFFFFF if zip64 else entry.size
    version = _ZIP64_VERSION if zip64 else _VERSION
    header = _LOCAL_HEADER.pack(
        b"PK\x03\x04", version, 0, flags, zipfile.ZIP_STORED, *entry.dos_time, entry.crc32, size, size,
        len(name), len(extra),
    )
    return header + name + extra


def _central_header(entry: _Entry) -> bytes:
    name, flags = _encoded_name(entry.name)
    # As zipfile does: both sizes when the size needs zip64, then the offset when it does.
    zip64 = [entry.size, entry.size] if entry.size > ZIP64_LIMIT else []
    zip64 += [entry.offset] if entry.offset > ZIP64_LIMIT else []
    extra = struct.pack(f"<HH{len(zip64)}Q", 1, 8 * len(zip64), *zip64) if zip64 else b""
    size = 0xFFFFFFFF if entry.size > ZIP64_LIMIT else entry.size
    offset = 0xFFFFFFFF if entry.offset > ZIP64_LIMIT else entry.offset
    version = _ZIP64_VERSION if zip64 else _VERSION
    header = _CENTRAL_HEADER.pack(
        b"PK\x01\x02", version, _UNIX, version, 0, flags, zipfile.ZIP_STORED, *entry.dos_time, entry.crc32,
        size, size, len(name), len(extra), 0, 0, 0, _EXTERNAL_ATTR, offset,
    )
    return header + name + extra


def _end_records(count: int, start: int, size: int) -> bytes:
    """The end of central directory record, after the zip64 ones when zipfile would write them."""
    records = b""
    if count > ZIP64_COUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
        records += _ZIP64_END.pack(b"PK\x06\x06", 44, _ZIP64_VERSION, _ZIP64_VERSION, 0, 0, count, count, size, start)
        records += _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, start + size, 1)
        count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
    return records + _END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0)


def _read_chunks(source: BinaryIO, size: int) -> Iterator[bytes]:
    """At most ``size`` bytes from ``source``'s current offset, a chunk at a time."""
    while size > 0 and (chunk := source.read(min(_CHUNK_SIZE, size))):
        size -= len(chunk)
        yield chunk


def _crc32(source: BinaryIO, size: int) -> int:
    crc = 0
    for chunk in _read_chunks(source, size):
        crc = zlib.crc32(chunk, crc)
    source.seek(0)
    return crc


def _write_all(out: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]  # an unbuffered write may take only part


def _copy(source: BinaryIO, out: BinaryIO, size: int, path: Path) -> None:
    """Copy ``size`` bytes from ``source`` to ``out``, each from its current offset."""
    copied = _kernel_copy(source, out, size)
    # Both offsets have moved past what the kernel copied, so the plain loop carries on from there.
    for chunk in _read_chunks(source, size - copied):
        _write_all(out, chunk)
        copied += len(chunk)
    if copied != size:
        raise StepError(f"{path} shrank from {size} to {copied} bytes while it was being archived; run the build again")


def _kernel_copy(source: BinaryIO, out: BinaryIO, size: int) -> int:
    """Copy up to ``size`` bytes without passing them through Python; return how many were copied."""
    copied = 0
    if not hasattr(os, "copy_file_range"):  # macOS, Windows
        return copied
    try:
        while copied < size:
            done = os.copy_file_range(source.fileno(), out.fileno(), min(_COPY_CHUNK_SIZE, size - copied))
            if not done:  # end of the source
                break
            copied += done
    except OSError as error:
        if error.errno not in _NO_KERNEL_COPY:
            raise
    return copied


# --- reading -------------------------------------------------------------------------

def extract_archive(
    archive: Path,
    dest: Path,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[str]:
    """Extract ``archive`` into ``dest`` (replacing it) and return the entry names.

    Every entry is checked before anything is written; extraction goes to a fresh
    directory beside ``dest`` that is renamed into place only when complete, so on
    any error ``dest`` is left as it was.
    """
    archive, dest = Path(archive), Path(dest)
    with _open_zip(archive) as zf:
        entries = zf.infolist()
        _validate(archive, entries, max_entries, max_total_bytes)
        staging = _fresh_directory_beside(dest)
        try:
            for info in entries:
                _extract_entry(zf, info, staging, archive)
            _move_into_place(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return sorted(info.filename for info in entries)


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise VerificationError(f"{archive} does not exist") from None
    except zipfile.BadZipFile as error:
        raise UnsafeArchiveError(f"{archive} is not a readable zip archive: {error}") from None


def _validate(archive: Path, entries: list[zipfile.ZipInfo], max_entries: int, max_total_bytes: int) -> None:
    def reject(name: str, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: entry {name!r} {reason}; nothing was extracted")

    if len(entries) > max_entries:
        raise UnsafeArchiveError(
            f"{archive} has {len(entries)} entries, more than the limit of {max_entries}; nothing was extracted"
        )
    # orig_filename is the name as stored: zipfile cuts .filename at a NUL byte and, on
    # Windows, turns backslashes into slashes, which would hide both from the checks.
    for name, reason in _name_problems([info.orig_filename for info in entries]):
        raise reject(name, reason)

    total = 0
    for info in entries:
        name = info.orig_filename
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            raise reject(name, "is a symbolic link")
        if file_type not in (0, stat.S_IFREG) or info.external_attr & 0x10:  # 0x10: MS-DOS directory bit
            raise reject(name, "is not a regular file")
        if info.flag_bits & 0x1:
            raise reject(name, "is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise reject(name, f"uses compression method {info.compress_type}; only stored and deflated are read")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise reject(
                name,
                f"holds {info.compress_size} bytes of stored data but declares {info.file_size}",
            )
        total += info.file_size
        if total > max_total_bytes:
            raise reject(name, f"takes the declared total size past the limit of {max_total_bytes} bytes")


def _name_problems(names: list[str]) -> list[tuple[str, str]]:
    """(name, reason) for every name that is unsafe to create under a directory."""
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        reason = _name_problem(name)
        # Case-insensitive file systems (macOS, Windows) would merge these into one file.
        folded = name.casefold()
        if reason is None and folded in seen:
            earlier = seen[folded]
            reason = "appears twice" if earlier == name else f"differs from {earlier!r} only by letter case"
        if reason:
            problems.append((name, reason))
        seen.setdefault(folded, name)
    folded_names = set(seen)
    for name in names:
        parents = name.casefold().split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            parent = "/".join(parents[:depth])
            if parent in folded_names:
                problems.append((name, f"needs {parent!r} to be a directory, but it is also a file entry"))
                break
    return problems


def _name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash (a path separator on Windows)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if name.endswith("/"):
        return "is a directory entry (archives list files only)"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' component that could climb out of the destination"
    if "" in parts or "." in parts:
        return "has an empty or '.' component"
    return None


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path, archive: Path) -> None:
    target = staging.joinpath(*info.filename.split("/"))
    # Belt and braces: the names were validated, and staging holds only what we created.
    if os.path.commonpath([staging, target]) != str(staging):
        raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} would land outside the destination")
    target.parent.mkdir(parents=True, exist_ok=True)
    # zipfile stops reading at the declared size and then checks the CRC, so a longer
    # entry shows up only as a CRC error. Let it read one byte further instead: if that
    # byte arrives, the entry holds more than it declares and we stop right there. The
    # CRC is then ours to check.
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    probe.CRC = None  # type: ignore[assignment]  # None turns zipfile's own CRC check off
    written, crc = 0, 0
    try:
        with zf.open(probe) as src, open(target, "xb") as out:
            for chunk in iter(lambda: src.read(_CHUNK_SIZE), b""):
                written += len(chunk)
                if written > info.file_size:
                    raise _entry_error(archive, info, f"yields more bytes than its declared size of {info.file_size}")
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise _entry_error(archive, info, f"is corrupt ({error})") from None
    if written != info.file_size:
        raise _entry_error(archive, info, f"yields {written} bytes but declares {info.file_size}")
    if crc != info.CRC:
        raise _entry_error(archive, info, "is corrupt (its CRC-32 does not match its data)")


def _entry_error(archive: Path, info: zipfile.ZipInfo, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: entry {info.orig_filename!r} {reason}; nothing was extracted")


def _fresh_directory_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.partial")
    staging.mkdir()  # plain mkdir, not mkdtemp: the result should get the usual umask mode, not 0700
    return staging


def _move_into_place(staging: Path, dest: Path) -> None:
    # A directory cannot be renamed over a non-empty one, so move the old one aside first.
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.old")
        os.rename(dest, old)
        os.rename(staging, dest)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.rename(staging, dest)
