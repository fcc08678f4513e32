"""The JSON schemas of models.yaml and of the chipset profiles, and validation against them.

The files under modelmake/schema/ stay complete for editors (YAML modelines
point at them), but the precision names and output kinds come from ``kinds`` and the
source kinds and each format's profile section from the format registry.
Validation uses the schemas composed from both; ``python -m
modelmake.spec.schema --write`` writes them back to the files, and a unit test
fails while the files differ from them.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from functools import cache
from pathlib import Path

from .. import formats
from ..kinds import OutputKind, Precision
from ..yamlfile import YamlDocument
from .messages import YamlProblem, describe

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
MODELS_SCHEMA = "models.schema.json"
TARGET_SCHEMA = "target.schema.json"

RECIPE = "recipe"  # a Python file whose function builds the model: not a file of any format
RECIPE_OPTIONS = ("function", "depends", "framework")  # the source keys that only a recipe takes

# The longest a model's steps may be given (timeout_minutes): a week.  Without it, the build's default applies.
MAX_STEP_TIMEOUT_MINUTES = 7 * 24 * 60

# The most classes an output's top_k may present (and top-k accuracy measure): more than any app shows, and far
# within the 64-bit integer a manifest holds.
MAX_TOP_K = 1000

# plan.FormatSupport's common fields on op coverage, which a format's section has when it can report on an accelerator.
COVERAGE_KEYS = ("accelerator", "require_full_coverage")


def _coverage_properties(accelerators: dict[str, str]) -> dict:
    """The schema of COVERAGE_KEYS for a format whose runtime reports on these accelerators; none without any."""
    if not accelerators:
        return {}
    choices = [f"{name} ({what})" for name, what in accelerators.items()]
    return {
        "accelerator": {
            "enum": list(accelerators),
            "description": f"The accelerator whose op coverage the report shows: {', '.join(choices)}.",
        },
        "require_full_coverage": {"type": "boolean", "description": "Fail an artifact when any of its ops would fall back to the CPU."},
    }


def source_kinds() -> tuple[str, ...]:
    """Every kind of source some format is built from: model files in the registry's order, then recipes."""
    kinds = dict.fromkeys(kind for backend in formats.backends() for kind in backend.source_kinds)
    return tuple(kind for kind in kinds if kind != RECIPE) + (RECIPE,)


@cache
def _composed() -> dict[str, str]:
    schemas = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMA_DIR.glob("*.schema.json"))}
    _compose_models(schemas[MODELS_SCHEMA])
    _compose_target(schemas[TARGET_SCHEMA])
    return {name: _document(schema) for name, schema in schemas.items()}


def composed_schemas() -> dict[str, dict]:
    """Every schema by file name, as validation uses it."""
    return {name: json.loads(text) for name, text in _composed().items()}


def _compose_models(schema: dict) -> None:
    definitions = schema["$defs"]
    definitions["precision"]["enum"] = [precision.value for precision in Precision]
    definitions["output_kind"]["enum"] = [kind.value for kind in OutputKind]
    definitions["format"]["enum"] = [backend.name for backend in formats.backends()]
    source = definitions["source"]
    kinds = source_kinds()
    options = {key: source["properties"][key] for key in RECIPE_OPTIONS}
    source["properties"] = {kind: {"$ref": "#/$defs/path"} for kind in kinds} | options
    source["description"] = f"Exactly one of {', '.join(kinds[:-1])} or {kinds[-1]}."
    for output in ("output", "named_output"):
        definitions[output]["properties"]["top_k"]["maximum"] = MAX_TOP_K
    definitions["model"]["properties"]["timeout_minutes"]["maximum"] = MAX_STEP_TIMEOUT_MINUTES


def _compose_target(schema: dict) -> None:
    schema["properties"]["formats"]["properties"] = {
        backend.name: {
            "type": "object",
            "additionalProperties": False,
            "required": ["precisions"],
            "properties": {"precisions": {"$ref": "#/$defs/precisions"}}
            | copy.deepcopy(backend.profile_properties)
            | _coverage_properties(backend.accelerators),
        }
        for backend in formats.backends()
    }


def _document(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale_files() -> list[Path]:
    """The schema files whose text differs from the composed schema."""
    return [SCHEMA_DIR / name for name, text in _composed().items() if (SCHEMA_DIR / name).read_text(encoding="utf-8") != text]


@cache
def _validator(schema_name: str):
    import jsonschema
    from referencing import Registry, Resource

    schemas = composed_schemas()
    registry = Registry().with_resources((name, Resource.from_contents(schema)) for name, schema in schemas.items())
    schema = schemas[schema_name]
    return jsonschema.validators.validator_for(schema)(schema, registry=registry)


def schema_findings(doc: YamlDocument, schema_name: str) -> list[YamlProblem]:
    """Every schema violation in the document, worded, in no particular order.

    JSON has no infinity and no NaN, so the schemas' numbers take them: each is refused here, once.
    """
    non_finite = list(_non_finite_numbers(doc.data, ()))
    at = {problem.path for problem in non_finite}
    found = [problem for error in _validator(schema_name).iter_errors(doc.data) for problem in describe(error)]
    return non_finite + [problem for problem in found if problem.path not in at]


def _non_finite_numbers(data, path: tuple):
    if isinstance(data, float) and not math.isfinite(data):
        shown = ".nan" if math.isnan(data) else ".inf" if data > 0 else "-.inf"
        yield YamlProblem(path, f"expected a finite number, got {shown}: give a number, or leave the key out for its default", False)
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _non_finite_numbers(value, path + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _non_finite_numbers(value, path + (index,))


def schema_problems(doc: YamlDocument, schema_name: str) -> list[str]:
    """Every schema violation in the document, as one line each, in file order."""
    found = []
    for problem in schema_findings(doc, schema_name):
        pos = doc.position(problem.path, of_key=problem.of_key)
        found.append(((pos.line, pos.column), doc.problem(problem.path, problem.message, of_key=problem.of_key)))
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(message for _, message in found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelmake.spec.schema",
        description="Check (or, with --write, rewrite) the schema files against kinds.Precision and the format registry.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the files that differ")
    args = parser.parse_args(argv)
    stale = stale_files()
    if args.write:
        for path in stale:
            path.write_text(_composed()[path.name], encoding="utf-8")
            print(f"wrote {path}")
        return 0
    for path in stale:
        print(
            f"{path} differs from the precisions and formats modelmake knows: run python -m modelmake.spec.schema --write", file=sys.stderr
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
