"""Load a YAML file into plain Python data while remembering where every value came from.

ruamel.yaml's round-trip loader keeps line and column numbers on the nodes it
builds; we flatten those into a path -> position table so that validation
errors can say ``models.yaml:12:7: models -> digits -> variants``.

A spec is small, and a hostile or broken one must not take the machine: the
file is read only if it is a regular file no larger than MAX_YAML_BYTES, and
parsing stops at MAX_YAML_DEPTH levels of nesting or MAX_YAML_NODES keys,
values and list items (an alias counts as every node it repeats).  Control
characters, tags (``!!python/...``, ``!!binary``, even ``!!str``), keys that are
lists or mappings and aliases inside the value they repeat are refused: a spec
holds plain values only.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import SpecError

MAX_YAML_BYTES = 256 * 1024  # a spec with a hundred models is a few tens of kilobytes
MAX_YAML_DEPTH = 32  # models.yaml nests about eight levels deep
MAX_YAML_NODES = 20_000  # keys, values and list items, aliases expanded

# The characters YAML does not allow in a stream (YAML 1.2, 5.1): C0 controls but tab and line breaks, DEL, C1 controls but NEL.
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")

Path_ = tuple  # a YAML path: keys and list indexes from the document root


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    display_name: str  # the file as the user should see it, relative to the workspace
    data: Any
    value_positions: dict = field(default_factory=dict)
    key_positions: dict = field(default_factory=dict)

    def position(self, yaml_path: Path_, *, of_key: bool = False) -> Position:
        """The position of a value (or of its key), falling back to the nearest enclosing node."""
        table = self.key_positions if of_key else self.value_positions
        path = tuple(yaml_path)
        while path:
            if path in table:
                return table[path]
            if path in self.value_positions:
                return self.value_positions[path]
            path = path[:-1]
        return self.value_positions.get((), Position(1, 1))

    def problem(self, yaml_path: Path_, message: str, *, of_key: bool = False) -> str:
        """One error line: ``file:line:column: a -> b -> c: message``."""
        pos = self.position(yaml_path, of_key=of_key)
        where = " -> ".join(str(p) for p in yaml_path) or "(top level)"
        return f"{self.display_name}:{pos.line}:{pos.column}: {where}: {message}"


def load_yaml(path: Path, display_name: str) -> YamlDocument:
    """Parse one YAML file; syntax errors and duplicate keys become a SpecError with the line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    text = _read_text(path, display_name)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = _composer_class()
    try:
        root = yaml.load(text)
    except _LimitExceeded as exc:
        raise SpecError([f"{display_name}:{exc.line}:{exc.column}: {exc}"]) from None
    except MarkedYAMLError as exc:
        raise SpecError([_syntax_problem(exc, display_name)]) from None
    except YAMLError as exc:  # the reader's own errors carry no line; ours are caught before
        raise SpecError([f"{display_name}: invalid YAML: {' '.join(str(exc).split())}"]) from None

    values: dict = {}
    keys: dict = {}
    data = _plain(root, (), values, keys)
    values.setdefault((), Position(1, 1))
    return YamlDocument(path=path, display_name=display_name, data=data, value_positions=values, key_positions=keys)


def _read_text(path: Path, display_name: str) -> str:
    """The file's text: a regular file of at most MAX_YAML_BYTES, in UTF-8, without control characters."""
    try:
        # Non-blocking, so that a FIFO in place of the file is refused rather than waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError([f"{display_name}: file not found: create it, or run `modelmake init` for a starting point"]) from None
    except OSError as exc:
        raise SpecError([f"{display_name}: cannot read the file ({exc.strerror})"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError([f"{display_name}: not a regular file (a directory, pipe or device): make it a plain YAML file"])
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_YAML_BYTES + 1)
        except OSError as exc:
            raise SpecError([f"{display_name}: cannot read the file ({exc.strerror})"]) from None
    if len(data) > MAX_YAML_BYTES:
        raise SpecError([
            f"{display_name}: the file is larger than {MAX_YAML_BYTES // 1024} KiB, the most a spec may be: "
            "keep only the models and targets you build"
        ])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(data, exc.start, b"\n")
        raise SpecError([
            f"{display_name}:{line}:{column}: the file is not UTF-8 text (byte 0x{data[exc.start]:02x}): save it as UTF-8"
        ]) from None
    control = _NOT_PRINTABLE.search(text)
    if control:
        line, column = _line_and_column(text, control.start(), "\n")
        raise SpecError([
            f"{display_name}:{line}:{column}: invalid YAML: control character U+{ord(control.group()):04X} is not allowed: remove it"
        ])
    return text


def _line_and_column(text, offset: int, newline) -> tuple[int, int]:
    """1-based, of the character (or byte) at ``offset``."""
    return text.count(newline, 0, offset) + 1, offset - (text.rfind(newline, 0, offset) + 1) + 1


class _LimitExceeded(Exception):
    """Parsing stopped at one of the limits, or at a tag a spec may not use."""

    def __init__(self, message: str, mark):
        super().__init__(message)
        self.line, self.column = mark.line + 1, mark.column + 1


@cache
def _composer_class():
    from ruamel.yaml.composer import Composer
    from ruamel.yaml.events import AliasEvent, ScalarEvent
    from ruamel.yaml.nodes import MappingNode, ScalarNode

    class LimitedComposer(Composer):
        """ruamel's composer, counting nodes (an alias as many as it repeats) and depth as it goes."""

        def compose_document(self):
            self.nodes = 0
            self.sizes: dict[str, int] = {}  # anchor -> how many nodes it holds, its aliases expanded
            self.open: set[str] = set()  # the anchors of the nodes being composed
            self.warn_double_anchors = False  # YAML allows it: the later anchor wins
            return super().compose_document()

        def compose_node(self, parent, index):
            event = self.parser.peek_event()
            # ruamel composes a mapping's key with no index, its value with the key; a key that is a list or a mapping
            # ('? [a, b]: 1', often a stray '?') cannot become a key of a dict.
            if isinstance(parent, MappingNode) and index is None:
                aliased = self.anchors.get(event.anchor) if isinstance(event, AliasEvent) else None
                if not (isinstance(event, ScalarEvent) or isinstance(aliased, ScalarNode)):
                    raise _LimitExceeded(
                        "a key must be a plain value, not a list or a mapping: check the indentation, or remove the '?' before it",
                        event.start_mark,
                    )
            if isinstance(event, AliasEvent) and event.anchor in self.open:
                raise _LimitExceeded(
                    f"the alias *{event.anchor} is inside the value it repeats, which never ends: remove it", event.start_mark
                )
            if isinstance(event, AliasEvent):
                self.nodes += self.sizes.get(event.anchor, 1)
                if self.nodes > MAX_YAML_NODES:
                    raise _LimitExceeded(
                        f"aliases expand to more than {MAX_YAML_NODES} keys, values and list items, the most a spec may hold: "
                        "write the repeated parts out, or use fewer aliases",
                        event.start_mark,
                    )
                return super().compose_node(parent, index)
            if self.depth >= MAX_YAML_DEPTH:
                raise _LimitExceeded(
                    f"nested more than {MAX_YAML_DEPTH} levels deep, the most a spec may be: check the brackets and the indentation",
                    event.start_mark,
                )
            tag = getattr(event, "tag", None)
            tag = getattr(tag, "value", tag)  # ruamel wraps a tag in a Tag object
            if tag is not None:
                shown = tag.replace("tag:yaml.org,2002:", "!!")
                raise _LimitExceeded(
                    f"the tag {shown} is not allowed (a spec holds plain values): remove it, or quote the value", event.start_mark
                )
            self.nodes += 1
            if self.nodes > MAX_YAML_NODES:
                raise _LimitExceeded(
                    f"more than {MAX_YAML_NODES} keys, values and list items, the most a spec may hold: "
                    "keep only the models and targets you build",
                    event.start_mark,
                )
            before = self.nodes
            if event.anchor is not None:
                self.open.add(event.anchor)
            node = super().compose_node(parent, index)
            if event.anchor is not None:
                self.open.discard(event.anchor)
                self.sizes[event.anchor] = self.nodes - before + 1
            return node

    return LimitedComposer


def _syntax_problem(exc, display_name: str) -> str:
    """One line for a YAML syntax error: where the parser stopped, what it expected, and what to look for."""
    from ruamel.yaml.constructor import DuplicateKeyError

    mark, start = exc.problem_mark or exc.context_mark, exc.context_mark
    where = f"{display_name}:{mark.line + 1}:{mark.column + 1}" if mark else display_name
    problem = (exc.problem or "").strip()
    began_earlier = start is not None and mark is not None and start.line != mark.line
    if isinstance(exc, DuplicateKeyError):
        within = f" in the mapping that starts on line {start.line + 1}" if began_earlier else ""
        return f"{where}: invalid YAML: {problem}{within}; keep only one of them"
    context = (exc.context or "").strip()
    if "\\t" in problem:
        fix = "indent with spaces; YAML does not allow tabs"
    elif began_earlier and ("flow" in context or "quoted" in context):
        context += f" that starts on line {start.line + 1}, column {start.column + 1}"
        opener = "quote" if "quoted" in context else "'['" if "sequence" in context else "'{'"
        fix = f"close the {opener} opened there"
    elif "mapping values are not allowed" in problem:
        fix = "check the indentation of this line, or quote a value that contains ': '"
    elif "block" in context:
        fix = "check the indentation of this line and the one before"
    elif "another document" in problem:
        fix = "keep one YAML document in the file: remove the '---' line"
    else:
        fix = "fix the syntax at this line"
    if problem.startswith("but "):
        what = f"{context} {problem}"  # e.g. "expected a single document in the stream but found another document"
    else:
        what = f"{problem} ({context})" if context else problem
    return f"{where}: invalid YAML: {what}; {fix}"


def _plain(node: Any, path: tuple, values: dict, keys: dict) -> Any:
    """Convert ruamel's commented containers to dict/list/scalars, recording positions on the way."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarbool import ScalarBoolean
    from ruamel.yaml.scalarstring import ScalarString

    if isinstance(node, CommentedMap):
        if path == ():
            values[path] = Position(node.lc.line + 1, node.lc.col + 1)
        out = {}
        for key, value in node.items():
            key_str = str(key)
            child = path + (key_str,)
            if key in node.lc.data:
                kline, kcol = node.lc.key(key)
                vline, vcol = node.lc.value(key)
            else:
                # Merged in with '<<: *anchor': ruamel records no position; point at the merging mapping.
                kline, kcol = vline, vcol = node.lc.line, node.lc.col
            if value is None and vline != kline:
                # An empty value: ruamel marks the next token, often the next key; the key's line is the one to fix.
                vline, vcol = kline, kcol
            keys[child] = Position(kline + 1, kcol + 1)
            values[child] = Position(vline + 1, vcol + 1)
            out[key_str] = _plain(value, child, values, keys)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for index, value in enumerate(node):
            child = path + (index,)
            line, col = node.lc.item(index)
            values[child] = Position(line + 1, col + 1)
            out_list.append(_plain(value, child, values, keys))
        return out_list
    if isinstance(node, ScalarString):
        return str(node)
    if isinstance(node, ScalarBoolean):
        # An anchored true/false; it subclasses int, so it must be caught before the loop below.
        return bool(node)
    if type(node).__module__.startswith("ruamel"):
        # ruamel wraps some scalars (ScalarFloat, ScalarInt and its hex/octal forms); hand out the plain value.
        for plain in (bool, int, float):
            if isinstance(node, plain):
                return plain(node)
    return node
