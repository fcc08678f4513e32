"""Reproducible zip archives, and a reader that refuses anything a hostile archive could try.

Writing: entries are the given files only (no directory entries), sorted by the UTF-8
bytes of their names, each STORED (not deflated) with the same DOS timestamp, Unix mode
0644, create_system 3 (Unix), no extra fields but zip64 ones and no comments. Stored
rather than deflated because deflate output depends on the zlib build (zlib, zlib-ng,
Apple's) and would break byte-identical rebuilds across machines; model files barely
compress and encrypted ones not at all, and stored entries can be read or mapped in
place on a device.

Reading is ``zipreader``'s: a strict reader that judges the whole archive before it hands
out a byte (re-exported here).
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from modelmake.errors import StepError

from .zipformat import (
    CENTRAL_HEADER,
    CENTRAL_SIGNATURE,
    END,
    END_SIGNATURE,
    LOCAL_HEADER,
    LOCAL_SIGNATURE,
    UTF8_NAME,
    VERSION,
    ZIP64_COUNT_LIMIT,
    ZIP64_END,
    ZIP64_END_SIGNATURE,
    ZIP64_LIMIT,
    ZIP64_LOCATOR,
    ZIP64_LOCATOR_SIGNATURE,
    ZIP64_VERSION,
    name_problems,
)
from .zipreader import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TOTAL_BYTES, ArchiveReader, extract_archive

__all__ = [
    "DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_TOTAL_BYTES", "FILE_MODE", "ZIP64_COUNT_LIMIT", "ZIP64_LIMIT", "ZIP_EPOCH_MAX", "ZIP_EPOCH_MIN",
    "ArchiveReader", "extract_archive", "write_archive",
]

FILE_MODE = 0o644
ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold
ZIP_EPOCH_MAX = 4354819198  # 2107-12-31T23:59:58Z, the latest
_CHUNK_SIZE = 1 << 20


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

_UNIX = 3  # create_system, so that external attributes carry a Unix mode on every host OS
_EXTERNAL_ATTR = (stat.S_IFREG | FILE_MODE) << 16
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
    problems = [f"{name!r}: {reason}" for name, reason in name_problems(names)]
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
    return (name.encode("ascii"), 0) if name.isascii() else (name.encode("utf-8"), UTF8_NAME)


def _local_header(entry: _Entry) -> bytes:
    name, flags = _encoded_name(entry.name)
    zip64 = entry.size > ZIP64_LIMIT
    extra = struct.pack("<HHQQ", 1, 16, entry.size, entry.size) if zip64 else b""
    size = 0xFFFFFFFF if zip64 else entry.size
    version = ZIP64_VERSION if zip64 else VERSION
    header = LOCAL_HEADER.pack(
        LOCAL_SIGNATURE, version, 0, flags, zipfile.ZIP_STORED, *entry.dos_time, entry.crc32, size, size,
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
    version = ZIP64_VERSION if zip64 else VERSION
    header = CENTRAL_HEADER.pack(
        CENTRAL_SIGNATURE, version, _UNIX, version, 0, flags, zipfile.ZIP_STORED, *entry.dos_time, entry.crc32,
        size, size, len(name), len(extra), 0, 0, 0, _EXTERNAL_ATTR, offset,
    )
    return header + name + extra


def _end_records(count: int, start: int, size: int) -> bytes:
    """The end of central directory record, after the zip64 ones when zipfile would write them."""
    records = b""
    if count > ZIP64_COUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT:
        records += ZIP64_END.pack(ZIP64_END_SIGNATURE, 44, ZIP64_VERSION, ZIP64_VERSION, 0, 0, count, count, size, start)
        records += ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIGNATURE, 0, start + size, 1)
        count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
    return records + END.pack(END_SIGNATURE, 0, 0, count, count, size, start, 0)


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


