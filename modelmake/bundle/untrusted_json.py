"""Reading a bundle's JSON documents before they are trusted: bounded in size and depth, one meaning only.

``model.sig`` and ``manifest.json`` are read before (or without) any proof of where they
came from, so neither their size nor their nesting may be the attacker's to choose, and
no key may appear twice in an object (JSON readers disagree on which of the two wins,
so an app and modelmake could read different manifests from the same bytes).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

# The deepest nesting of arrays and objects a bundle document may have: a manifest is about
# ten levels deep, plus whatever a recipe's METADATA nests below provenance.recipe.
MAX_DEPTH = 64


class JSONProblem(ValueError):
    """Why a document was refused, phrased to follow its name ("... is not valid JSON")."""


def read_limited(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing one larger than ``limit`` without reading past it, and anything but a regular file."""
    # Non-blocking, so that opening a FIFO put in the file's place returns at once instead of waiting for a writer.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise JSONProblem("is not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise JSONProblem(f"is larger than the limit of {limit} bytes")
    return data


def parse(raw: bytes) -> Any:
    """The document in ``raw`` (UTF-8 JSON), or JSONProblem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JSONProblem("is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
    except RecursionError:
        raise JSONProblem(f"is nested deeper than {MAX_DEPTH} levels") from None
    except _DuplicateKey as duplicate:
        raise JSONProblem(f"has the key {duplicate.args[0]!r} twice in one object") from None
    except ValueError:  # also NaN and Infinity, and integers of more than 4300 digits
        raise JSONProblem("is not valid JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise JSONProblem(f"is nested deeper than {MAX_DEPTH} levels")
    return value


class _DuplicateKey(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))  # type: ignore[func-returns-value]
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """The nesting depth of arrays and objects, without recursion (a scalar is 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest
