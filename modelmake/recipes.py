"""Loading a recipe: a Python file in the workspace that builds a model or provides data.

A recipe exposes ``build_model()`` returning a Keras model (trained or not),
``load_data(split)`` returning ``(x, y)`` numpy arrays, and optionally a
``METADATA`` dict (data set, hyper-parameters, ``seed``) that travels into
the bundle's manifest.  Function names can be changed in models.yaml.
"""
from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from .errors import StepError

# What a recipe can raise to end the process rather than fail: a build must not take it for success.
_ESCAPES = (SystemExit, KeyboardInterrupt)


def _escaped(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"raised {type(exc).__name__}"


def load_recipe(path: Path):
    """Import the recipe file; its directory is importable while it loads, for helper modules beside it."""
    path = Path(path).resolve()
    module_name = f"modelmake_recipe_{path.stem}_{abs(hash(path)) & 0xFFFFFF:06x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StepError(f"recipe {path.name}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except _ESCAPES as exc:
        raise StepError(
            f"recipe {path.name} {_escaped(exc)} while it was imported: a recipe must define functions, not end the process"
        ) from None
    except Exception as exc:
        traceback.print_exc()
        raise StepError(f"recipe {path.name} failed to import: {type(exc).__name__}: {exc}; fix the recipe") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def call_recipe(module, path: Path, function: str, *args):
    """Call a recipe function; an exception in it is the recipe's problem, reported as such."""
    target = getattr(module, function, None)
    if not callable(target):
        raise StepError(
            f"recipe {Path(path).name} has no function '{function}': define it, or name another with 'function:' in models.yaml"
        )
    sys.path.insert(0, str(Path(path).resolve().parent))
    try:
        return target(*args)
    except _ESCAPES as exc:
        raise StepError(
            f"recipe {Path(path).name}: {function}({', '.join(map(repr, args))}) {_escaped(exc)}: "
            "a recipe must return its result or raise an exception, not end the process"
        ) from None
    except Exception as exc:
        traceback.print_exc()
        raise StepError(
            f"recipe {Path(path).name}: {function}({', '.join(map(repr, args))}) raised {type(exc).__name__}: {exc}; fix the recipe"
        ) from exc
    finally:
        sys.path.remove(str(Path(path).resolve().parent))


def recipe_metadata(module) -> dict:
    metadata = getattr(module, "METADATA", {})
    if not isinstance(metadata, dict):
        raise StepError("a recipe's METADATA must be a dict (data set, hyper-parameters, seed)")
    return metadata
