"""The frozen build plan that spec.py compiles models.yaml into.

Everything here is plain, immutable data: paths are relative to the workspace
so that the plan (and every config hashed from it) is the same wherever the
workspace is checked out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

@dataclass(frozen=True)
class FormatSupport:
    """What a chipset runs in one format (tflite, onnx, coreml), read from its profile."""

    format: str
    precisions: tuple[str, ...]
    delegates: tuple[str, ...] = ()
    integer_io: bool = False


@dataclass(frozen=True)
class TargetProfile:
    name: str
    soc: str
    platform: str
    profile_file: str  # relative to the workspace, or "builtin:<name>.yaml"
    formats: Mapping[str, FormatSupport]
    min_os: str = ""
    description: str = ""


@dataclass(frozen=True)
class Source:
    kind: str  # keras | saved_model | tflite | onnx | recipe
    path: str
    function: str = ""
    depends: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    role: str  # calibration | evaluation
    path: str  # the recipe or the .npz file
    from_recipe: bool
    function: str = ""
    split: str = ""
    samples: int | None = None
    depends: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputSpec:
    layout: str = "NHWC"
    scale: str = "1"
    offset: str = "0"


@dataclass(frozen=True)
class OutputSpec:
    labels: str | None = None
    top_k: int = 1


@dataclass(frozen=True)
class Budget:
    key: str  # as written in the spec, e.g. max_size_kb
    metric: str  # e.g. size_kb
    bound: str  # max | min
    limit: float

    def holds_for(self, value: float) -> bool:
        return value <= self.limit if self.bound == "max" else value >= self.limit


@dataclass(frozen=True)
class Artifact:
    """One file to build: a model's variant in one format for one target."""

    model: str
    variant: str
    format: str
    target: str
    precision: str
    integer_io: bool
    budgets: tuple[Budget, ...]
    per_channel: bool = True

    @property
    def name(self) -> str:
        """The artifact's name inside its target, e.g. digits.int8.tflite."""
        return f"{self.model}.{self.variant}.{self.format}"

    @property
    def id(self) -> str:
        """Unique within a plan and used in task names, e.g. digits.int8.tflite@pixel-8."""
        return f"{self.name}@{self.target}"


@dataclass(frozen=True)
class Model:
    name: str
    source: Source
    calibration: Dataset | None
    evaluation: Dataset | None
    input: InputSpec
    output: OutputSpec
    artifacts: tuple[Artifact, ...]
    description: str = ""


@dataclass(frozen=True)
class BundleSpec:
    name: str
    version: str
    created: int  # seconds since the epoch
    signing_key: str | None  # env:VAR or file:path; None means the workspace's development key
    release: bool
    encrypt: bool
    encryption_key: str | None  # None with encrypt means the development data key


@dataclass(frozen=True)
class BuildPlan:
    spec_file: str
    bundle: BundleSpec
    models: tuple[Model, ...]
    targets: Mapping[str, TargetProfile]

    def artifacts(self):
        for model in self.models:
            yield from model.artifacts
