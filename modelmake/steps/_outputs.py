"""Figures of a model with any number of outputs: each output scored by its kind (``_kinds.Scoring``), then held
together.

A model with one output keeps the figures it has always had.  With several,
each output's figures are recorded under its name, and the model's figures,
which budgets bound, are the worst of its outputs' for each name: a detector
is as good as its worse head.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..errors import StepError
from ..plan import InputSpec, OutputSpec, label_array
from ..tensors import OUTPUTS, Tensors, resolve
from ._kinds import Scoring


@dataclass(frozen=True)
class OutputScoring:
    name: str  # the model's name for the output
    labels: str  # the data's array of its labels
    scoring: Scoring


def scorings(outputs: tuple[OutputSpec, ...], inputs: tuple[InputSpec, ...], signature: dict) -> list[OutputScoring]:
    """How each declared output is read, under the model's names.  A mask follows the layout of the image input."""
    layout = next((spec.layout for spec in inputs if spec.layout in ("NHWC", "NCHW")), inputs[0].layout)
    return [
        OutputScoring(
            resolve(signature, OUTPUTS, spec.name), label_array(spec), Scoring(spec.kind, layout, spec.top_k, spec.threshold)
        )
        for spec in outputs
    ]


def check_shapes(scored: list[OutputScoring], signature: dict, *, what: str) -> None:
    shapes = {entry["name"]: entry["shape"] for entry in signature[OUTPUTS]}
    for output in scored:
        output.scoring.check_shape(shapes.get(output.name), what=f"{what}, output {output.name}" if len(scored) > 1 else what)


def labels(scored: list[OutputScoring], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """Each output's labels from the data's arrays (None where it has none or its kind takes none)."""
    return {o.name: arrays.get(o.labels) if o.scoring.kind.has_labels else None for o in scored}


@dataclass
class Figures:
    """The model's figures (what budgets bound) and, for several outputs, each output's."""

    model: dict[str, float]
    outputs: dict[str, dict[str, float]] | None

    def add(self, per_output: dict[str, dict[str, float]]) -> None:
        """Merge figures measured per output: recorded under each output, and their worst at the model's level."""
        if self.outputs is None:
            (figures,) = per_output.values()
            self.model |= figures
            return
        for name, figures in per_output.items():
            self.outputs.setdefault(name, {}).update(figures)
        self.model |= metrics.model_figures(per_output)


def new_figures(scored: list[OutputScoring]) -> Figures:
    return Figures({}, None if len(scored) == 1 else {})


def per_output_source(scored: list[OutputScoring], source: dict) -> dict[str, dict]:
    """The reference step's figures of each output (the model's own for a model with one output)."""
    if len(scored) == 1:
        return {scored[0].name: source}
    return {o.name: source.get("outputs", {}).get(o.name, {}) for o in scored}


def check_labels(scored: list[OutputScoring], outputs: Tensors, labels_by_output: dict, *, what: str) -> None:
    for output in scored:
        if output.name not in outputs:
            raise StepError(f"{what}: the model gives no output {output.name}; it gives {', '.join(outputs)}")
        output.scoring.check_labels(outputs[output.name], labels_by_output.get(output.name), what=what)
