"""What the writer and the reader of bundle archives share: the zip record layouts and the name rules.

FORMAT.md ("Archives") specifies both.
"""
from __future__ import annotations

import re
import struct

ZIP64_LIMIT = (1 << 31) - 1  # zipfile's bound: a larger size or offset goes in a zip64 field
ZIP64_COUNT_LIMIT = 0xFFFF  # more entries than this need the zip64 end records
VERSION = 20  # "version made by" and "needed to extract": 2.0 ...
ZIP64_VERSION = 45  # ... or 4.5 when the record carries a zip64 field
UTF8_NAME = 0x800  # general purpose flag bit 11
ZIP64_EXTRA_ID = 0x0001

LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
ZIP64_END = struct.Struct("<4sQ2H2L4Q")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
END = struct.Struct("<4s4H2LH")
LOCAL_SIGNATURE = b"PK\x03\x04"
CENTRAL_SIGNATURE = b"PK\x01\x02"
ZIP64_END_SIGNATURE = b"PK\x06\x06"
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
END_SIGNATURE = b"PK\x05\x06"

_DRIVE = re.compile(r"^[A-Za-z]:")
# Control characters in a name could rewrite the terminal that prints an error about it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problems(names: list[str]) -> list[tuple[str, str]]:
    """(name, reason) for every name that is unsafe to create under a directory."""
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        reason = name_problem(name)
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


def name_problem(name: str) -> str | None:
    """Why one name is unsafe to create under a directory, or None."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL byte"
    if _CONTROL.search(name):
        return "contains a control character"
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
