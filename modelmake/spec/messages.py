"""jsonschema's errors in the words a user acts on: the YAML path, what is wrong and what to write instead."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import NamedTuple


class YamlProblem(NamedTuple):
    """One schema violation, worded for the user."""

    path: tuple  # where the message points
    message: str
    of_key: bool  # whether it points at the key rather than the value
    part: tuple | None = None  # the part of the document it leaves invalid, when not ``path`` (a missing key: the key)
    unknown_key: bool = False  # the last part of ``path`` is a key the schema does not allow there

    @property
    def invalid_part(self) -> tuple:
        return self.path if self.part is None else self.part


def describe(error) -> Iterator[YamlProblem]:
    """Turn one jsonschema error into problems a user can act on: the YAML path, the message, whether it points at a key."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    instance = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad key against the mapping that holds it; point at the key itself.
        what = _expected(schema.get("description")) or f"a name matching {schema.get('pattern', 'the schema')}"
        yield YamlProblem(path + (str(instance),), f"invalid name '{instance}': expected {what}", True)
        return
    describer = _DESCRIBERS.get(kind)
    if describer is not None:
        yield from describer(path, schema, instance, error)
        return
    if kind == "oneOf" and schema.get("description"):
        branch = _container_branch(error)
        if branch:
            # A list or mapping where the one alternative of that shape is allowed: say what is wrong inside it.
            for sub in branch:
                yield from describe(sub)
            return
        yield YamlProblem(path, f"{instance!r} is not valid: expected {_expected(schema['description'])}", False)
        return
    yield YamlProblem(path, error.message, False)


def _unknown_keys(path, schema, instance, error) -> Iterator[YamlProblem]:
    if not isinstance(instance, dict):
        yield YamlProblem(path, error.message, False)
        return
    allowed = sorted(schema.get("properties", {}))
    patterns = schema.get("patternProperties", {})
    for key in instance:
        if key in allowed or any(re.search(p, key) for p in patterns):
            continue
        hint = difflib.get_close_matches(key, allowed, n=1)
        advice = f"did you mean '{hint[0]}'? " if hint else ""
        yield YamlProblem(path + (key,), f"unknown key '{key}'; {advice}allowed keys: {', '.join(allowed)}", True, unknown_key=True)


def _missing_key(path, schema, instance, error) -> Iterator[YamlProblem]:
    missing = error.message.split("'")[1] if "'" in error.message else error.message
    yield YamlProblem(path, f"missing required key '{missing}'", True, part=path + (missing,))


def _wrong_type(path, schema, instance, error) -> Iterator[YamlProblem]:
    expected = schema.get("type")
    expected = " or ".join(map(_article, expected)) if isinstance(expected, list) else _article(expected)
    if not path and instance is None:
        yield YamlProblem(path, f"the file is empty: it needs {', '.join(schema.get('required', ()))}", False)
        return
    got = "nothing (an empty value)" if instance is None else f"{_json_type(instance)} {instance!r}"
    advice = ""
    if isinstance(instance, str) and _parses_as(instance, expected):
        advice = ": remove the quotes"
    elif schema.get("description") and path:
        advice = f" ({_expected(schema['description'])})"
    yield YamlProblem(path, f"expected {expected}, got {got}{advice}", False)


def _not_a_choice(path, schema, instance, error) -> Iterator[YamlProblem]:
    choices = [str(choice) for choice in schema["enum"]]
    by_lower = {choice.lower(): choice for choice in choices}
    hint = difflib.get_close_matches(str(instance).lower(), by_lower, n=1, cutoff=0.5)
    advice = f"; did you mean '{by_lower[hint[0]]}'?" if hint else ""
    yield YamlProblem(path, f"{instance!r} is not one of: {', '.join(choices)}{advice}", False)


def _too_small(path, schema, instance, error) -> Iterator[YamlProblem]:
    what = _expected(schema.get("description"))
    yield YamlProblem(path, f"expected at least {schema['minimum']}, got {instance!r}" + (f" ({what})" if what else ""), False)


def _too_large(path, schema, instance, error) -> Iterator[YamlProblem]:
    what = _expected(schema.get("description"))
    yield YamlProblem(path, f"expected at most {schema['maximum']}, got {instance!r}" + (f" ({what})" if what else ""), False)


def _not_the_constant(path, schema, instance, error) -> Iterator[YamlProblem]:
    yield YamlProblem(path, f"must be {schema['const']!r}, got {instance!r}", False)


def _no_match(path, schema, instance, error) -> Iterator[YamlProblem]:
    what = _expected(schema.get("description")) or f"a value matching {schema['pattern']}"
    yield YamlProblem(path, f"{instance!r} is not valid: expected {what}", False)


def _empty(path, schema, instance, error) -> Iterator[YamlProblem]:
    what = _expected(schema.get("description"))
    yield YamlProblem(path, "must not be empty" + (f": expected {what}" if what else ""), False)


def _repeated(path, schema, instance, error) -> Iterator[YamlProblem]:
    repeated = []
    for index, item in enumerate(instance):
        if item in instance[:index] and item not in repeated:
            repeated.append(item)
    yield YamlProblem(path, f"lists {', '.join(map(repr, repeated))} more than once: remove the repeats", False)


def _refused_key(path, schema, instance, error) -> Iterator[YamlProblem]:
    """A key the schema refuses outright (``"not": {}``), with the reason its description gives."""
    reason = schema.get("description") or "this key is not allowed here"
    yield YamlProblem(path, f"'{path[-1]}' is not allowed here: {reason}" if path else reason, True)


_DESCRIBERS = {
    "additionalProperties": _unknown_keys,
    "required": _missing_key,
    "type": _wrong_type,
    "enum": _not_a_choice,
    "const": _not_the_constant,
    "minimum": _too_small,
    "maximum": _too_large,
    "pattern": _no_match,
    "minProperties": _empty,
    "minItems": _empty,
    "minLength": _empty,
    "uniqueItems": _repeated,
    "not": _refused_key,
}


def _container_branch(error) -> list:
    """The errors of the one oneOf alternative that takes a list (or a mapping) when the value is one; else []."""
    shape = "array" if isinstance(error.instance, list) else "object" if isinstance(error.instance, dict) else None
    alternatives = error.schema.get("oneOf", []) if isinstance(error.schema, dict) else []
    matching = [i for i, alt in enumerate(alternatives) if isinstance(alt, dict) and alt.get("type") == shape]
    if shape is None or len(matching) != 1:
        return []
    return [sub for sub in error.context if sub.relative_schema_path and sub.relative_schema_path[0] == matching[0]]


def _expected(description) -> str:
    """A schema description as the object of 'expected ...': first letter lower-cased, no final full stop."""
    if not description:
        return ""
    return (description[0].lower() + description[1:]).removesuffix(".")


def _parses_as(text: str, expected: str) -> bool:
    """Whether a quoted YAML string would have been the expected type without its quotes."""
    try:
        if expected == "an integer":
            int(text)
        elif expected == "a number":
            float(text)
        else:
            return False
    except ValueError:
        return False
    return True


def _json_type(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _article(word) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "a boolean",
    }
    return names.get(word, str(word))
