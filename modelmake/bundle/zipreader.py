"""A strict zip reader that judges a whole archive before it hands out a byte of it.

Python's ``zipfile`` is lenient where a bundle reader must not be: it finds an archive
inside other bytes, reads overlapping entries, follows a central directory that
disagrees with the local headers, and raises half a dozen kinds of exception
(``BadZipFile``, ``NotImplementedError``, ``struct.error``, ``OSError``...) on damage. So
this module parses the subset of the zip format that FORMAT.md ("How modelmake reads
them") allows, and accounts for every byte of the file: the entries lie end to end from
offset 0, each local header repeats its central directory record, the central directory
follows the last entry and the end records close the file. Then no other zip reader
(Android's streaming ``ZipInputStream``, Apple's, 7-Zip) can see other entries or other
bytes in the same file, and a zip bomb built from overlapping entries is refused before
any of it is decompressed. Every problem is an ``UnsafeArchiveError`` naming the archive.

Reading an entry stops at its declared size and checks its CRC-32; callers decide which
entries to read at all (bundle verification reads only the signed ones).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, NoReturn

from modelmake.errors import ModelmakeError, UnsafeArchiveError, VerificationError

from .zipformat import (
    CENTRAL_HEADER,
    CENTRAL_SIGNATURE,
    END,
    END_SIGNATURE,
    LOCAL_HEADER,
    LOCAL_SIGNATURE,
    UTF8_NAME,
    ZIP64_END,
    ZIP64_END_SIGNATURE,
    ZIP64_EXTRA_ID,
    ZIP64_LOCATOR,
    ZIP64_LOCATOR_SIGNATURE,
    ZIP64_VERSION,
    name_problems,
)

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_TOTAL_BYTES = 16 << 30  # generous for on-device models; pass a tighter bound when known
# A deflated entry may expand to at most this many times its compressed size plus the
# allowance; real model files compress a few times at most, a bomb a thousand times.
MAX_EXPANSION_RATIO = 100
EXPANSION_ALLOWANCE = 1 << 20
STORED, DEFLATED = 0, 8
# Bits 1 and 2 only record deflate's compression level; bit 11 says the name is UTF-8.
_KNOWN_FLAGS = 0x0006 | UTF8_NAME
_ENCRYPTED, _DATA_DESCRIPTOR = 0x0001, 0x0008
_MSDOS_DIRECTORY = 0x10
_FULL32, _FULL16 = 0xFFFFFFFF, 0xFFFF
_CHUNK_SIZE = 1 << 20
MAX_NAME_BYTES = 4096  # PATH_MAX on Linux; bundle paths are a few dozen bytes
# A central directory record with the longest name and a full zip64 field: what bounds the directory's size.
_LARGEST_RECORD = CENTRAL_HEADER.size + MAX_NAME_BYTES + 4 + 3 * 8


class Entry(NamedTuple):
    """One entry, as its central directory record and its local header (which agree) describe it."""

    name: str
    method: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int


class _Central(NamedTuple):
    """A central directory record's fields, before they are judged."""

    raw_name: bytes
    needed: tuple[int, int]  # version needed to extract, and its host byte
    flags: int
    method: int
    dos_time: tuple[int, int]
    crc32: int
    compressed_size: int
    size: int
    extra: bytes
    comment_length: int
    disk: int
    external_attr: int
    header_offset: int


class ArchiveReader:
    """An archive judged as a whole on opening; ``chunks`` and ``extract_to`` read its entries.

    Opening refuses anything outside the allowed subset, any name that is unsafe to
    create under a directory, any link or special file, and more than ``max_entries``
    entries or ``max_total_bytes`` declared bytes.
    """

    def __init__(
        self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    ):
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise VerificationError(f"{self.path} does not exist") from None
        except OSError as error:
            raise VerificationError(f"{self.path} cannot be read: {error.strerror}") from None
        try:
            self.entries: dict[str, Entry] = self._judge(max_entries, max_total_bytes)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # --- reading entries -----------------------------------------------------------

    def chunks(self, name: str) -> Iterator[bytes]:
        """The entry's data, a chunk at a time; never more than its declared size, and CRC-checked at the end."""
        entry = self.entries[name]
        produced, crc = 0, 0
        raw = self._raw_chunks(entry)
        if entry.method == STORED:
            pieces: Iterator[bytes] = raw
        else:
            pieces = self._inflate(entry, raw)
        for piece in pieces:
            produced += len(piece)
            if produced > entry.size:
                self._refuse(name, f"yields more bytes than its declared size of {entry.size}")
            crc = zlib.crc32(piece, crc)
            yield piece
        if produced != entry.size:
            self._refuse(name, f"yields {produced} bytes but declares {entry.size}")
        if crc != entry.crc32:
            self._refuse(name, "is corrupt (its CRC-32 does not match its data)")

    def read(self, name: str) -> bytes:
        return b"".join(self.chunks(name))

    def extract_to(self, name: str, target: Path) -> str:
        """Write the entry to ``target`` (a new file) and return its SHA-256 (hex)."""
        digest = hashlib.sha256()
        try:
            with open(target, "xb") as out:
                for chunk in self.chunks(name):  # reading problems are UnsafeArchiveErrors, not OSErrors
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as error:  # a full disk, a file size limit: the destination's problem, not the archive's
            _cannot_write(self.path, name, target, error)
        return digest.hexdigest()

    def _raw_chunks(self, entry: Entry) -> Iterator[bytes]:
        offset, left = entry.data_offset, entry.compressed_size
        while left:
            chunk = self._pread(offset, min(left, _CHUNK_SIZE))
            offset += len(chunk)
            left -= len(chunk)
            yield chunk

    def _inflate(self, entry: Entry, raw: Iterator[bytes]) -> Iterator[bytes]:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        produced = 0
        try:
            for chunk in raw:
                if inflater.eof:
                    self._refuse(entry.name, "has data after the end of its deflate stream")
                data = chunk
                while data and not inflater.eof:
                    # One byte more than declared is enough to tell that it is too long.
                    piece = inflater.decompress(data, entry.size + 1 - produced)
                    data = inflater.unconsumed_tail
                    produced += len(piece)
                    yield piece
                    if produced > entry.size:
                        return
                if inflater.unused_data or data:
                    self._refuse(entry.name, "has data after the end of its deflate stream")
        except zlib.error as error:
            self._refuse(entry.name, f"is corrupt ({error})")
        if not inflater.eof:
            self._refuse(entry.name, "is corrupt (its deflate stream is cut short)")

    # --- judging the archive --------------------------------------------------------

    def _judge(self, max_entries: int, max_total_bytes: int) -> dict[str, Entry]:
        size = os.fstat(self._file.fileno()).st_size
        count, directory_offset, directory = self._central_directory(size, max_entries)
        centrals = self._records(directory, count)
        names = [self._name(central) for central in centrals]
        for name, reason in name_problems(names):
            self._refuse(name, reason)
        for name, central in zip(names, centrals, strict=True):
            self._check_kind(name, central)
        entries = self._laid_end_to_end(names, centrals, directory_offset)
        total = 0
        for entry in entries:
            if entry.method == DEFLATED and entry.size > MAX_EXPANSION_RATIO * entry.compressed_size + EXPANSION_ALLOWANCE:
                self._refuse(
                    entry.name,
                    f"would expand {entry.compressed_size} bytes to {entry.size} (more than {MAX_EXPANSION_RATIO} "
                    "times): a decompression bomb",
                )
            total += entry.size
            if total > max_total_bytes:
                self._refuse(entry.name, f"takes the declared total size past the limit of {max_total_bytes} bytes")
        return {entry.name: entry for entry in entries}

    def _central_directory(self, size: int, max_entries: int) -> tuple[int, int, bytes]:
        """(entry count, offset, bytes) of the central directory, from the end records that must close the file."""
        if size < END.size:
            self._unreadable(f"it is {size} bytes long, too short for a zip archive")
        end_offset = size - END.size
        signature, disk, directory_disk, disk_count, count, directory_size, directory_offset, comment = END.unpack(
            self._pread(end_offset, END.size)
        )
        if signature != END_SIGNATURE:
            self._unreadable(
                "its last 22 bytes are not an end of central directory record (it is cut short, has bytes after "
                "its end or an archive comment, or is not a zip archive)"
            )
        if comment:
            self._unreadable("its end record declares an archive comment that is not there")
        if disk or directory_disk:
            self._unreadable("its end record describes several disks")
        if disk_count != count:
            self._unreadable(f"its end record gives two entry counts, {disk_count} and {count}")
        records_start = end_offset
        locator_offset = end_offset - ZIP64_LOCATOR.size
        if locator_offset >= 0 and self._pread(locator_offset, 4) == ZIP64_LOCATOR_SIGNATURE:
            short = (count, directory_size, directory_offset)
            count, directory_size, directory_offset = self._zip64_end(locator_offset)
            if short != (min(count, _FULL16), min(directory_size, _FULL32), min(directory_offset, _FULL32)):
                self._unreadable("its end record and its zip64 end record disagree")
            records_start = locator_offset - ZIP64_END.size
        elif _FULL16 == count or _FULL32 in (directory_size, directory_offset):
            self._unreadable("its end record points to zip64 end records that are not there")
        if directory_offset + directory_size != records_start:
            self._unreadable(
                "its central directory does not end where its end records begin (the file was cut, or bytes were "
                "added or removed)"
            )
        if count > max_entries:
            raise UnsafeArchiveError(
                f"{self.path} has {count} entries, more than the limit of {max_entries}; nothing was extracted"
            )
        if directory_size > count * _LARGEST_RECORD:
            self._unreadable(f"its central directory of {directory_size} bytes is larger than {count} entries can need")
        return count, directory_offset, self._pread(directory_offset, directory_size)

    def _zip64_end(self, locator_offset: int) -> tuple[int, int, int]:
        _, disk, end_offset, disks = ZIP64_LOCATOR.unpack(self._pread(locator_offset, ZIP64_LOCATOR.size))
        if disk or disks != 1 or end_offset != locator_offset - ZIP64_END.size:
            self._unreadable("its zip64 end locator does not point at the record just before it")
        signature, record_size, _, _, disk, directory_disk, disk_count, count, directory_size, directory_offset = (
            ZIP64_END.unpack(self._pread(end_offset, ZIP64_END.size))
        )
        if signature != ZIP64_END_SIGNATURE or record_size != ZIP64_END.size - 12:
            self._unreadable("its zip64 end record is damaged")
        if disk or directory_disk or disk_count != count:
            self._unreadable("its zip64 end record describes several disks or two entry counts")
        return count, directory_size, directory_offset

    def _records(self, directory: bytes, count: int) -> list[_Central]:
        records, position = [], 0
        for index in range(count):
            if position + CENTRAL_HEADER.size > len(directory):
                self._unreadable(f"its central directory ends after {index} of its {count} entries")
            (
                signature, _, _, needed, needed_host, flags, method, time, date, crc, compressed_size, size,
                name_length, extra_length, comment_length, disk, _, external_attr, header_offset,
            ) = CENTRAL_HEADER.unpack_from(directory, position)
            if signature != CENTRAL_SIGNATURE:
                self._unreadable(f"central directory record {index + 1} of {count} is damaged (no signature)")
            if name_length > MAX_NAME_BYTES:
                self._unreadable(f"central directory record {index + 1} has a name of {name_length} bytes, more than {MAX_NAME_BYTES}")
            name_start = position + CENTRAL_HEADER.size
            extra_start = name_start + name_length
            position = extra_start + extra_length + comment_length
            if position > len(directory):
                self._unreadable(f"central directory record {index + 1} of {count} runs past the directory's end")
            records.append(_Central(
                directory[name_start:extra_start], (needed, needed_host), flags, method, (time, date), crc,
                compressed_size, size, directory[extra_start : extra_start + extra_length], comment_length, disk,
                external_attr, header_offset,
            ))
        if position != len(directory):
            self._unreadable(f"its central directory holds {len(directory) - position} bytes after its last record")
        return records

    def _name(self, central: _Central) -> str:
        # A name without the UTF-8 flag is CP437 to some readers and the local code page to others: only ASCII
        # means the same to all of them.
        encoding = "utf-8" if central.flags & UTF8_NAME else "ascii"
        try:
            return central.raw_name.decode(encoding)
        except UnicodeDecodeError:
            raise UnsafeArchiveError(
                f"{self.path}: entry {central.raw_name!r} has a name that is not valid {encoding.upper()}; nothing was extracted"
            ) from None

    def _check_kind(self, name: str, central: _Central) -> None:
        """Refuse an entry that is not a plain stored or deflated regular file this reader can read."""
        file_type = stat.S_IFMT(central.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            self._refuse(name, "is a symbolic link")
        if file_type not in (0, stat.S_IFREG) or central.external_attr & _MSDOS_DIRECTORY:
            self._refuse(name, "is not a regular file")
        if central.flags & _ENCRYPTED:
            self._refuse(name, "is encrypted")
        if central.flags & _DATA_DESCRIPTOR:
            self._refuse(name, "has a data descriptor (its sizes follow its data), which bundle archives never use")
        if central.flags & ~_KNOWN_FLAGS:
            self._refuse(name, f"sets general purpose flags {central.flags:#06x} that this reader does not know")
        version, host = central.needed
        if version > ZIP64_VERSION or host:
            self._refuse(name, f"needs zip version {version / 10:.1f} (host {host}) to extract; this reader reads up to 4.5")
        if central.method not in (STORED, DEFLATED):
            self._refuse(name, f"uses compression method {central.method}; only stored and deflated are read")
        if central.comment_length:
            self._refuse(name, "has a file comment, which bundle archives never carry")
        if central.disk:
            self._refuse(name, "lies on another disk")

    def _laid_end_to_end(self, names: list[str], centrals: list[_Central], directory_offset: int) -> list[Entry]:
        """The entries, each checked against its local header, refusing gaps and overlaps between them."""
        entries, expected = [], 0
        records = [(self._sizes(name, central), name, central) for name, central in zip(names, centrals, strict=True)]
        for (compressed_size, size, header_offset), name, central in sorted(records, key=lambda record: record[0][2]):
            if header_offset < expected:
                self._refuse(name, "overlaps the entry before it")
            if header_offset > expected:
                self._unreadable(f"{header_offset - expected} bytes before entry {name!r} belong to no entry")
            data_offset = self._local_header(name, central, compressed_size, size, header_offset, directory_offset)
            expected = data_offset + compressed_size
            if expected > directory_offset:
                self._refuse(name, "runs into the central directory")
            if central.method == STORED and compressed_size != size:
                self._refuse(name, f"holds {compressed_size} bytes of stored data but declares {size}")
            entries.append(Entry(name, central.method, central.crc32, compressed_size, size, header_offset, data_offset))
        if expected != directory_offset:
            self._unreadable(f"{directory_offset - expected} bytes before its central directory belong to no entry")
        return entries

    def _sizes(self, name: str, central: _Central) -> tuple[int, int, int]:
        """(compressed size, size, local header offset), from the zip64 field for those that need it."""
        values = [central.size, central.compressed_size, central.header_offset]
        wanted = [i for i, value in enumerate(values) if value == _FULL32]
        if central.extra or wanted:
            expected_length = 4 + 8 * len(wanted)
            if len(central.extra) != expected_length or not wanted:
                self._refuse(name, "has extra fields other than the one zip64 field it needs")
            field_id, length = struct.unpack_from("<HH", central.extra)
            if field_id != ZIP64_EXTRA_ID or length != 8 * len(wanted):
                self._refuse(name, "has extra fields other than the one zip64 field it needs")
            for index, value in zip(wanted, struct.unpack_from(f"<{len(wanted)}Q", central.extra, 4), strict=True):
                values[index] = value
        size, compressed_size, header_offset = values
        return compressed_size, size, header_offset

    def _local_header(
        self, name: str, central: _Central, compressed_size: int, size: int, offset: int, directory_offset: int
    ) -> int:
        """Check the entry's local header against its central record; return where its data starts."""
        if offset + LOCAL_HEADER.size > directory_offset:
            self._refuse(name, "has its local header past the end of the entries")
        (
            signature, needed, needed_host, flags, method, time, date, crc, local_compressed, local_size,
            name_length, extra_length,
        ) = LOCAL_HEADER.unpack(self._pread(offset, LOCAL_HEADER.size))
        if signature != LOCAL_SIGNATURE:
            self._refuse(name, "has no local header where the central directory says")
        if offset + LOCAL_HEADER.size + name_length + extra_length > directory_offset:
            self._refuse(name, "has a local header that runs into the central directory")
        raw = self._pread(offset + LOCAL_HEADER.size, name_length + extra_length)
        local_name, extra = raw[:name_length], raw[name_length:]
        if local_compressed == local_size == _FULL32:
            zip64 = struct.pack("<HHQQ", ZIP64_EXTRA_ID, 16, size, compressed_size)
            sizes_agree = extra == zip64
        else:
            sizes_agree = not extra and (local_compressed, local_size) == (compressed_size, size)
        disagreements = [
            what for what, agrees in (
                ("name", local_name == central.raw_name),
                ("flags", flags == central.flags),
                ("method", method == central.method),
                ("time", (time, date) == central.dos_time),
                ("CRC-32", crc == central.crc32),
                ("sizes or extra fields", sizes_agree),
            ) if not agrees
        ]
        # The versions needed may differ (zipfile and modelmake write 2.0 in the local header of an entry that
        # needs zip64 only for its offset, which only the central directory holds), but neither may be unreadable.
        if needed > ZIP64_VERSION or needed_host:
            self._refuse(name, f"has a local header that needs zip version {needed / 10:.1f} (host {needed_host}) to extract")
        if disagreements:
            self._refuse(name, f"has a local header that disagrees with the central directory ({', '.join(disagreements)})")
        return offset + LOCAL_HEADER.size + name_length + extra_length

    # --- plumbing --------------------------------------------------------------------

    def _pread(self, offset: int, size: int) -> bytes:
        try:
            self._file.seek(offset)
            data = self._file.read(size)
        except (OSError, OverflowError, ValueError) as error:
            self._unreadable(f"reading {size} bytes at offset {offset} failed ({error})")
        if len(data) != size:
            self._unreadable(f"it ends in the middle of a record (offset {offset})")
        return data

    def _unreadable(self, reason: str) -> NoReturn:
        raise UnsafeArchiveError(f"{self.path} is not a readable zip archive: {reason}; nothing was extracted")

    def _refuse(self, name: str, reason: str) -> NoReturn:
        raise UnsafeArchiveError(f"{self.path}: entry {name!r} {reason}; nothing was extracted")


def _cannot_write(archive: Path, name: str, target: Path, error: OSError) -> NoReturn:
    raise ModelmakeError(
        f"cannot extract {name!r} from {archive} to {target.parent}: {error.strerror or error}; "
        "make room there or choose another place"
    )


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[str]:
    """Extract ``archive`` into ``dest`` (replacing it) and return the entry names.

    The whole archive is judged before anything is written; extraction goes to a fresh
    directory beside ``dest`` that is renamed into place only when complete, so on any
    error ``dest`` is left as it was.
    """
    archive, dest = Path(archive), Path(dest)
    with ArchiveReader(archive, max_entries=max_entries, max_total_bytes=max_total_bytes) as reader:
        staging = _fresh_directory_beside(dest)
        try:
            for name in reader.entries:
                target = staging.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                reader.extract_to(name, target)
            _move_into_place(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return sorted(reader.entries)


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
