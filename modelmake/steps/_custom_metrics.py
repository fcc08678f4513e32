"""A model's own figures: a recipe function scores an output on the evaluation data (mAP, word error rate...).

The reference step calls it on the source model's outputs and the evaluate
step on each artifact's, with the same arrays parity compares; its figures
are recorded and bounded by budgets like any metric modelmake measures.
"""
from __future__ import annotations

import math
import numbers
import sys
import traceback
from pathlib import Path

import numpy as np

from ..errors import StepError
from ..plan import CustomMetrics
from ..recipes import load_recipe
from ..tensors import Tensors


def evaluation_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the materialized evaluation data: the inputs, labels and whatever else its file holds."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def measure(spec: CustomMetrics | None, outputs: Tensors, evaluation: str) -> dict[str, float]:
    """``spec.function(outputs, data)``'s figures, checked against the names the spec declares; none without a spec.

    The function receives every output by name when the spec declares it for
    the model (io -> metrics), else the one output's array (io -> output -> metrics).
    """
    if spec is None:
        return {}
    call = f"{spec.function}(outputs, data) in {spec.recipe}"
    key = _key(spec)
    module = load_recipe(Path(spec.recipe))
    function = getattr(module, spec.function, None)
    if not callable(function):
        raise StepError(
            f"metrics recipe {spec.recipe} has no function '{spec.function}': define it, "
            f"or name another with {key} -> function"
        )
    folder = str(Path(spec.recipe).resolve().parent)
    sys.path.insert(0, folder)  # helper modules beside the recipe, as for other recipes
    try:
        result = function(dict(outputs) if spec.by_name else next(iter(outputs.values())), evaluation_arrays(evaluation))
    except Exception as exc:
        traceback.print_exc()
        raise StepError(f"{call} raised {type(exc).__name__}: {exc}; fix the function") from exc
    finally:
        sys.path.remove(folder)
    return _checked(spec, call, result)


def _key(spec: CustomMetrics) -> str:
    """Where the spec declares the metrics, for messages."""
    return "io -> metrics" if spec.by_name else "io -> output -> metrics"


def _checked(spec: CustomMetrics, call: str, result) -> dict[str, float]:
    declared = ", ".join(spec.names)
    if not isinstance(result, dict):
        raise StepError(f"{call} returned {type(result).__name__}: return a dict of the declared figures ({declared}) to numbers")
    missing = [name for name in spec.names if name not in result]
    extra = [str(name) for name in result if name not in spec.names]
    if missing or extra:
        found = "; ".join(
            part for part in (f"missing {', '.join(missing)}" if missing else "", f"undeclared {', '.join(extra)}" if extra else "") if part
        )
        raise StepError(
            f"{call} must return exactly the figures {_key(spec)} -> names declares ({declared}): {found}; "
            "return those names, or declare the others"
        )
    figures = {}
    for name in spec.names:
        value = result[name]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise StepError(f"{call} returned {name} = {value!r}, which is not a number: return a float for {name}")
        if not math.isfinite(value):
            raise StepError(
                f"{call} returned {name} = {value}: a figure must be finite (a budget cannot bound it); "
                f"fix how {name} is computed (an empty set divided by zero?)"
            )
        figures[name] = float(value)
    return figures
