"""Load a YAML file into plain Python data while remembering where every value came from.

ruamel.yaml's round-trip loader keeps line and column numbers on the nodes it
builds; we flatten those into a path -> position table so that validation
errors can say ``models.yaml:12:7: models -> digits -> variants``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError

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
    from ruamel.yaml.error import MarkedYAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{display_name}: file not found: create it, or run `modelmake init` for a starting point"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{display_name}: cannot read the file ({exc})"]) from None

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        raise SpecError([_syntax_problem(exc, display_name)]) from None

    values: dict = {}
    keys: dict = {}
    data = _plain(root, (), values, keys)
    values.setdefault((), Position(1, 1))
    return YamlDocument(path=path, display_name=display_name, data=data, value_positions=values, key_positions=keys)


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
