"""Reproducible zip archives, and a reader that refuses anything a hostile archive could try.

Writing: entries are the given files only (no directory entries), sorted by the UTF-8
bytes of their names, each STORED (not deflated) with the same DOS timestamp, Unix mode
0644, create_system 3 (Unix), no extra fields and no comments. Stored rather than
deflated because deflate output depends on the zlib build (zlib, zlib-ng, Apple's) and
would break byte-identical rebuilds across machines; model files barely compress and
encrypted ones not at all, and stored entries can be read or mapped in place on a device.

Reading: Python's ``zipfile`` is enough for the container itself: it parses the central
directory, handles zip64, checks that each local header names the same file as the
central directory and checks every entry's CRC-32 at its end. What it does not do is
judge names, types and sizes (``ZipFile.extract`` quietly rewrites dangerous names rather
than refusing them), so ``extract_archive`` validates every entry itself before writing a
byte, and never calls ``extract``.
"""
from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

from modelmake.errors import UnsafeArchiveError, VerificationError

FILE_MODE = 0o644
ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold
ZIP_EPOCH_MAX = 4354819198  # 2107-12-31T23:59:58Z, the latest
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_TOTAL_BYTES = 16 << 30  # generous for on-device models; pass a tighter bound when known
_CHUNK_SIZE = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


# --- writing -------------------------------------------------------------------------

def write_archive(dst: Path, files: Mapping[str, Path], epoch: int) -> None:
    """Write ``files`` (archive name -> source file) to ``dst``, reproducibly.

    The same names, contents and ``epoch`` give the same bytes whatever the source
    files' own timestamps and modes, the umask, the time zone or the directory order.
    """
    dst = Path(dst)
    names = sorted(files, key=lambda name: name.encode("utf-8"))
    problems = [f"{name!r}: {reason}" for name, reason in _name_problems(names)]
    if problems:
        raise ValueError("cannot archive these names: " + "; ".join(problems))
    date_time = time.gmtime(min(max(int(epoch), ZIP_EPOCH_MIN), ZIP_EPOCH_MAX))[:6]

    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(8)}.tmp")
    try:
        with zipfile.ZipFile(tmp, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name in names:
                _add_file(archive, name, Path(files[name]), date_time)
        os.chmod(tmp, FILE_MODE)  # not part of the bytes, but predictable for whoever ships it
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _add_file(archive: zipfile.ZipFile, name: str, source: Path, date_time: tuple) -> None:
    info = zipfile.ZipInfo(name, date_time)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so that external_attr carries a Unix mode on every host OS
    info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
    with open(source, "rb") as src:
        # The size is known up front so zipfile picks zip64 from the size alone.
        info.file_size = os.fstat(src.fileno()).st_size
        with archive.open(info, "w") as out:
            shutil.copyfileobj(src, out, _CHUNK_SIZE)


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
    probe.CRC = None
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
