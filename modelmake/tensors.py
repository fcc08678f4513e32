"""Named tensors: a model's inputs and outputs as ``{name: array}``, and the signature that describes them.

A signature is ``{"inputs": [{name, shape, dtype}, ...], "outputs": [...]}``
in the model's own order, shape None where a dimension is dynamic.  Every
artifact keeps its source's input and output names, so the same names feed
and read the source and every file built from it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy stays out of loading the graph (the manifest's module imports this one)
    import numpy as np

Tensors = dict[str, "np.ndarray"]

INPUTS = "inputs"
OUTPUTS = "outputs"


def signature(inputs: Iterable[dict], outputs: Iterable[dict]) -> dict:
    return {INPUTS: list(inputs), OUTPUTS: list(outputs)}


def names(signature: dict, role: str) -> list[str]:
    """The names of the inputs or outputs (role INPUTS or OUTPUTS), in the model's order."""
    return [entry["name"] for entry in signature[role]]


def entry(signature: dict, role: str, name: str) -> dict:
    """One input's or output's {name, shape, dtype}; ``name`` "" is the only one (as io without names means)."""
    entries = signature[role]
    if not name:
        if len(entries) != 1:
            raise KeyError(f"the model has {len(entries)} {role}, so each must be named")
        return entries[0]
    for candidate in entries:
        if candidate["name"] == name:
            return candidate
    raise KeyError(name)


def resolve(signature: dict, role: str, name: str) -> str:
    """The model's name for a declared input or output ("" for the only one)."""
    return entry(signature, role, name)["name"]


def samples(tensors: Mapping[str, np.ndarray]) -> int:
    """How many samples a set of tensors holds (their first dimension; they all have the same)."""
    return len(next(iter(tensors.values()))) if tensors else 0


def rows(tensors: Mapping[str, np.ndarray], start: int, stop: int) -> Tensors:
    return {name: array[start:stop] for name, array in tensors.items()}


def concatenate(parts: list[Tensors]) -> Tensors:
    """Outputs computed a chunk at a time, joined along the samples."""
    import numpy as np

    if not parts:
        return {}
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def first(tensors: Mapping[str, np.ndarray]) -> Tensors:
    """One sample of each tensor, without its batch dimension (what latency is timed on)."""
    return {name: array[0] for name, array in tensors.items()}


def shown(shape: Iterable) -> str:
    """A shape as messages print it: (1, ?, 64)."""
    return "(" + ", ".join("?" if d is None or d == -1 else str(d) for d in shape) + ")"
