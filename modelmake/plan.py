"""The frozen build plan that modelmake.spec compiles models.yaml into.

Everything here is plain, immutable data: paths are relative to the workspace
so that the plan (and every config hashed from it) is the same wherever the
workspace is checked out.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .kinds import OutputKind, Precision
from .repository.offer import Offer


@dataclass(frozen=True)
class FormatSupport:
    """What a chipset runs in one format, read from its profile.

    ``settings`` is the format's own frozen settings record (delegates, execution
    providers, deployment target...), parsed by its backend in ``modelmake/formats``;
    the rest is what every format has.
    """

    format: str
    precisions: tuple[Precision, ...]
    settings: Any
    accelerator: str | None = None  # whose op coverage to report: gpu, npu or qnn
    require_full_coverage: bool = False  # fail an artifact any of whose ops fall back to the CPU


@dataclass(frozen=True)
class TargetProfile:
    name: str
    soc: str
    platform: str
    profile_file: str  # relative to the workspace, or "builtin:<name>.yaml"
    formats: Mapping[str, FormatSupport]
    min_os: str = ""
    description: str = ""
    chipsets: tuple[str, ...] = ()  # what devices with this chip report; empty: any device of the platform
    min_os_version: str | None = None  # min_os as a device reports it (API level, iOS version)


@dataclass(frozen=True)
class Source:
    kind: str  # one of spec.schema.source_kinds(): a TensorFlow model, a file of a format, or a recipe
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
    conditions: tuple[tuple[str, float], ...] = ()  # (condition, strength), evaluation only


@dataclass(frozen=True)
class InputSpec:
    """One model input: how an app feeds it.  ``name`` is empty for a model's only input when io names none."""

    name: str = ""
    layout: str = "NHWC"
    scale: str = "1"
    offset: str = "0"
    # Per-channel (x - mean[c]) / std[c] on the layout's channel axis, instead of scale and offset; empty when not set.
    mean: tuple[str, ...] = ()
    std: tuple[str, ...] = ()
    dtype: str | None = None  # what the app feeds (float32, int64...), checked against the model; None: the model's
    # Every dimension, batch first, fixed in the artifact so accelerators see no dynamic dimension; None keeps the model's.
    shape: tuple[int, ...] | None = None
    # Shapes fixed in one target's artifacts only, (target, shape); the job of an artifact carries its own as ``shape``.
    target_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def for_target(self, target: str | None) -> InputSpec:
        """This input as one target's artifacts have it (None: as the source model has it, for steps that run it)."""
        shape = dict(self.target_shapes).get(target, self.shape) if target else self.shape
        return dataclasses.replace(self, shape=shape, target_shapes=())


@dataclass(frozen=True)
class CustomMetrics:
    """A recipe function that scores an output: ``function(outputs, data)`` returns the figures named in ``names``."""

    recipe: str
    function: str = "metrics"
    names: tuple[str, ...] = ()  # declared in the spec, so budgets can bound them before anything runs
    depends: tuple[str, ...] = ()
    # Declared under io -> metrics (every output, by name) rather than one output's: the function receives
    # {output name: array} instead of the output's array.
    by_name: bool = False


@dataclass(frozen=True)
class OutputSpec:
    """One model output: what it means and how it is evaluated.  ``name`` is empty for a model's only output
    when io names none."""

    name: str = ""
    labels: str | None = None  # classes: the class names; mask: the names of the mask's classes
    top_k: int = 1  # classes only
    kind: OutputKind = OutputKind.CLASSES
    threshold: float = 0.5  # mask only: on a one-channel probability map, a pixel is in the mask when its value is at least this
    state: str | None = None  # the input this output feeds at the next step of a stream (a recurrent state)


def input_arrays(inputs: tuple[InputSpec, ...]) -> tuple[str, ...]:
    """The data sets' arrays that feed the inputs: each input's name, or x for the only input when io names none."""
    return tuple(spec.name or "x" for spec in inputs)


def label_array(output: OutputSpec) -> str:
    """The data sets' array of an output's labels: y_<output name>, or y for the only output when io names none."""
    return f"y_{output.name}" if output.name else "y"


@dataclass(frozen=True)
class Budget:
    key: str  # as written in the spec, e.g. max_size_kb
    metric: str  # e.g. size_kb
    bound: str  # max | min
    limit: float

    @classmethod
    def parse(cls, key: str, limit: float) -> Budget:
        bound, metric = key.split("_", 1)
        return cls(key=key, metric=metric, bound=bound, limit=float(limit))

    def holds_for(self, value: float) -> bool:
        return value <= self.limit if self.bound == "max" else value >= self.limit


@dataclass(frozen=True)
class Artifact:
    """One file to build: a model's variant in one format for one target."""

    model: str
    variant: str
    format: str
    target: str
    precision: Precision
    budgets: tuple[Budget, ...]
    per_channel: bool = True
    palettize: int | None = None  # Core ML weight palettization bits
    selection: str | None = None  # set when the target ships one of several variants ("first_passing")
    preference: int = 0  # position in the target's list; lower is preferred

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
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    artifacts: tuple[Artifact, ...]
    description: str = ""
    metrics: CustomMetrics | None = None  # figures of the user's own, measured on the evaluation data
    timeout_minutes: int | None = None  # how long one step of this model may run before it fails; None: the default

    @property
    def stateful(self) -> bool:
        """Whether the model runs over streams: an output feeds an input at the next step."""
        return any(output.state for output in self.outputs)


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
class PublishSpec:
    """Where ``doit publish`` puts the download repository and what its channels offer (OTA.md)."""

    repository: str
    on_build: bool
    expires_after_days: int
    channels: Mapping[str, Mapping[str, Offer]]  # channel -> model -> offer


@dataclass(frozen=True)
class BuildPlan:
    spec_file: str
    bundle: BundleSpec
    models: tuple[Model, ...]
    targets: Mapping[str, TargetProfile]
    publish: PublishSpec
    # The digest of the spec's build settings: the document as parsed, without its publish section (FORMAT.md,
    # provenance). Who gets which release is publish configuration, not bundle content: editing it, or a comment,
    # must neither repackage nor re-sign a bundle that may already be published.
    build_settings_sha256: str = ""
    # The shared remote cache the spec names (``cache:``); MODELMAKE_CACHE overrides it at run time. Not part of any
    # task's hash, nor of the build settings digest: where outputs may come from does not change what they are.
    cache: CacheSettings | None = None

    def artifacts(self):
        for model in self.models:
            yield from model.artifacts


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache:`` section: where task outputs are shared (any fsspec URL) and whether this build uploads to it.

    Endpoints, credentials and regions are never here: they come from the environment or fsspec's configuration.
    """

    url: str
    write: bool = True
