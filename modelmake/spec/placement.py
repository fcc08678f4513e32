"""Keys indented one level off, said once with where they belong.

A model's key dedented under ``models:`` reads as a model with every required
key missing; a data set dedented beside the model's keys reads as an unknown
key.  ``regroup`` turns the schema's problems about such a key into one that
says where it belongs, and drops the missing key it leaves in the model above
it, which is the same mistake.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from ..yamlfile import YamlDocument
from .messages import YamlProblem
from .schema import MODELS_SCHEMA, composed_schemas

TOP, MODEL, DATA, IO = "top", "model", "data", "io"  # the levels of models.yaml a key can belong to


@cache
def _levels() -> dict[str, str]:
    """Each key of models.yaml's fixed levels -> the level it belongs to."""
    schema = composed_schemas()[MODELS_SCHEMA]
    model = schema["$defs"]["model"]["properties"]
    levels = dict.fromkeys(schema["properties"], TOP)
    levels |= dict.fromkeys(model, MODEL)
    levels |= dict.fromkeys(model["data"]["properties"], DATA)
    levels |= dict.fromkeys(model["io"]["properties"], IO)
    return levels


def model_keys() -> tuple[str, ...]:
    return tuple(key for key, level in _levels().items() if level == MODEL)


def data_keys() -> tuple[str, ...]:
    return tuple(key for key, level in _levels().items() if level == DATA)


def where_it_belongs(parent: tuple, key: str) -> str | None:
    """Why a key found under ``parent`` (a YAML path) looks indented one level off, and where it goes; None if it does not."""
    level = _levels().get(key)
    in_models = parent == ("models",)
    in_model = len(parent) == 2 and parent[0] == "models"
    if level == TOP and (in_models or in_model):
        return "it looks like a top-level key; dedent it to the start of the line"
    if level == MODEL and (in_models or parent == ()):
        return "it looks like a key of a model; indent it under the model it belongs to"
    if level == MODEL and len(parent) == 3 and parent[0] == "models" and parent[2] in (DATA, IO):
        return f"it looks like a key of a model; dedent it to the level of {parent[2]}"
    if level in (DATA, IO) and in_models:
        what = "a data set of a model" if level == DATA else "a key of a model's io"
        return f"it looks like {what}; indent it under the {level} of the model it belongs to"
    if level in (DATA, IO) and in_model:
        what = "a data set" if level == DATA else "a key of io"
        return f"it looks like {what}; indent it under models -> {parent[1]} -> {level}"
    return None


def regroup(doc: YamlDocument, problems: Sequence[YamlProblem]) -> tuple[list[YamlProblem], set[str]]:
    """The problems to report, and the names under models that are misplaced keys rather than models."""
    models = doc.data.get("models") if isinstance(doc.data, dict) else None
    models = models if isinstance(models, dict) else {}
    misplaced_models = {
        name
        for name in models
        if where_it_belongs(("models",), name) and any(p.invalid_part[:2] == ("models", name) for p in problems)
    }
    reported: list[YamlProblem] = []
    misplaced: list[tuple] = []  # the paths of the keys that stand one level off
    for name in misplaced_models:
        path = ("models", name)
        reported.append(YamlProblem(path, f"'{name}' is not a model: {where_it_belongs(('models',), name)}", True))
        misplaced.append(path)
    for problem in problems:
        if problem.path[:1] == ("models",) and problem.path[1:2] and problem.path[1] in misplaced_models:
            continue
        hint = where_it_belongs(problem.path[:-1], str(problem.path[-1])) if problem.unknown_key else None
        if hint:
            problem = problem._replace(message=f"{problem.message}; {hint}")
            misplaced.append(problem.path)
        reported.append(problem)
    same_mistake = {_owner_missing(doc, models, path) for path in misplaced}
    return [p for p in reported if not (p.part is not None and p.part in same_mistake)], misplaced_models


def _owner_missing(doc: YamlDocument, models: dict, path: tuple) -> tuple | None:
    """The required key that the model above a misplaced key misses because of it: (models, model, key)."""
    line = doc.position(path, of_key=True).line
    above = [name for name in models if doc.position(("models", name), of_key=True).line < line and ("models", name) != path]
    if not above:
        return None
    return ("models", max(above, key=lambda name: doc.position(("models", name), of_key=True).line), str(path[-1]))
