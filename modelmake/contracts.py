"""What each task kind receives (a job) and records (a record): the typed seam between graph and steps.

``graph.py`` builds one frozen job per task from the plan; doit hashes it
(``config_hash``) to decide whether the task is up to date, and the runner
hands it to the step, which reads nothing else from the graph.  Records are
the JSON files steps leave for the steps after them; each has one writer
(``write``) and one reader (``read``), so their keys live in one place.

Everything here is plain data: paths are relative to the workspace, and no
framework is imported.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .kinds import OutputKind, Precision
from .plan import Budget, BundleSpec, CustomMetrics, Dataset, FormatSupport, InputSpec, OutputSpec, Pruning, Source, Training

__all__ = [
    "Precision",
    "OutputKind",
    "DeclaredInput",
    "DeclaredIo",
    "DataLabels",
    "SourceJob",
    "TrainJob",
    "DataJob",
    "ReferenceJob",
    "ConvertJob",
    "ExportJob",
    "EvaluateJob",
    "ArtifactInputs",
    "ModelInputs",
    "BundleInputs",
    "KeyReferences",
    "PackageJob",
    "ReportJob",
    "PublishJob",
    "SpecDigest",
    "SourceRecord",
    "ArtifactRecord",
    "ExportRecord",
    "MetricsRecord",
    "config_hash",
]


# The metadata of a job field that changes where a step looks, not what it makes: it is left out of the hash.
NOT_HASHED = {"hashed": False}


def config_hash(job: Any) -> dict:
    """The JSON-able form of a job that doit's ``config_changed`` hashes (what ``json.loads(json.dumps(asdict(job)))``
    gives, made directly: a large graph hashes thousands of jobs each time it is built)."""
    return {name: _json_form(getattr(job, name)) for name in _field_names(job, hashed_only=True)}


_FIELD_NAMES: dict[tuple[type, bool], tuple[str, ...]] = {}


def _field_names(value: Any, *, hashed_only: bool = False) -> tuple[str, ...]:
    """A dataclass's field names (those that are hashed), looked up once per class."""
    key = (type(value), hashed_only)
    if key not in _FIELD_NAMES:
        fields = dataclasses.fields(value)
        _FIELD_NAMES[key] = tuple(f.name for f in fields if not (hashed_only and f.metadata.get("hashed") is False))
    return _FIELD_NAMES[key]


def _json_form(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_form(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_form(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value):
        return {name: _json_form(getattr(value, name)) for name in _field_names(value)}
    raise TypeError(f"a job holds {type(value).__name__}, which has no JSON form")


# --- jobs: what a task receives ---------------------------------------------------------


@dataclass(frozen=True)
class DeclaredInput:
    """What io declares of one input that the model file must match, checked once the file is known."""

    name: str  # "" for the model's only input
    key: str  # where the spec declares it, for messages: models.yaml: models -> m -> io -> inputs -> audio
    layout: str
    dtype: str | None = None
    # The shapes io fixes: (None, shape) for every target, (target, shape) for one.
    shapes: tuple[tuple[str | None, tuple[int, ...]], ...] = ()
    channels: int | None = None  # how many values per-channel mean/std give


@dataclass(frozen=True)
class DeclaredIo:
    """The names io gives, checked against the model file by the source step before any conversion.

    Only names, dtypes, shapes and channel counts: changing a scale or an
    output's kind does not rebuild the source.
    """

    key: str  # models.yaml: models -> m -> io
    inputs: tuple[DeclaredInput, ...]
    outputs: tuple[str, ...]  # "" for the model's only output
    states: tuple[tuple[str, str], ...] = ()  # (output, input) pairs: the output feeds the input at the next step


@dataclass(frozen=True)
class SourceJob:
    source: Source
    out_dir: str
    record: str
    io: DeclaredIo | None = None


@dataclass(frozen=True)
class TrainJob:
    """Fine-tune one variant's model from its source recipe (QAT, pruning) and export it as a SavedModel.

    Its record is a SourceRecord of the fine-tuned model, which the variant's conversions read instead of the source's."""

    variant: str  # model.variant, for messages
    source: Source
    source_record: str
    keras_model: str  # the source's tf-keras model file, which the step wraps and fine-tunes
    training: Training
    prune: Pruning | None
    out_dir: str
    record: str


@dataclass(frozen=True)
class DataLabels:
    """The labels one output may have in a data set: the array that holds them and the output's kind."""

    array: str  # y for a model's only output, y_<output> otherwise
    output: str
    kind: OutputKind


@dataclass(frozen=True)
class DataJob:
    dataset: Dataset
    out: str
    # The arrays that feed the inputs: x for a model's only input when io names none, else each input's name.
    inputs: tuple[str, ...] = ("x",)
    labels: tuple[DataLabels, ...] = (DataLabels("y", "", OutputKind.CLASSES),)
    # Evaluation data a custom metric reads: keep every label and every other array of an .npz file.
    keep_arrays: bool = False
    # A stateful model's data: each input array holds sequences, (sequences, steps, *sample); state inputs may be
    # absent (they start at zero) or hold each sequence's first state.
    sequences: bool = False
    optional_inputs: tuple[str, ...] = ()  # state inputs


@dataclass(frozen=True)
class ReferenceJob:
    source_record: str
    evaluation: str
    evaluation_origin: str  # the data set as the user declared it, for messages
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    out_metrics: str
    out_outputs: str
    custom_metrics: CustomMetrics | None = None


@dataclass(frozen=True)
class ConvertJob:
    """One artifact to convert.  ``support`` carries the target's settings for this format;
    which accelerator the evaluation reports on is not part of it (graph.py clears it), so
    changing it re-evaluates without re-converting."""

    artifact_id: str
    source_record: str
    precision: Precision
    per_channel: bool
    palettize: int | None
    calibration: str | None  # the calibration .npz, for full int8
    calibration_origin: str | None
    inputs: tuple[InputSpec, ...]
    support: FormatSupport
    out: str
    out_record: str
    # The ExportRecord of the source's float model in this format (ExportJob), which the conversion starts from
    # instead of the source; None when the format converts from the source itself.
    export_record: str | None = None
    prune: Pruning | None = None  # encode the zeros sparse where the format can; Core ML without training prunes here

@dataclass(frozen=True)
class ExportJob:
    """One source model exported into a format's float model, once for every variant converted from it.

    ``options`` are the format's settings the export depends on (ONNX: its
    opset), so that variants differing in anything else share it.  The export
    is keyed on the source record it reads: a model with another source model
    for some variants (a fine-tuned one) gets its own export of it.
    """

    format: str
    source_record: str
    options: dict[str, Any]
    out: str
    out_record: str
    # Where the format also writes its float model as its quantizers take it (ONNX: after ONNX Runtime's quantization
    # pre-processing), by kind (ONNX: "any-batch", and "batch-1" for static-shape providers), for conversions that change
    # nothing else before quantizing; empty when it writes none.
    out_prepared: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateJob:
    artifact_id: str
    format: str
    artifact: str
    record: str
    source_record: str
    evaluation: str | None
    reference: str | None
    reference_outputs: str | None
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    conditions: tuple[tuple[str, float], ...]
    budgets: tuple[Budget, ...]
    support: FormatSupport
    out: str
    custom_metrics: CustomMetrics | None = None
    # The baseline the step records (steps/_baselines.py, FORMAT.md "Baselines"): part of the job, so a build whose
    # figures predate it, or another baseline format, evaluates again instead of packaging an empty baseline.
    baseline_format: int = 1


@dataclass(frozen=True)
class ArtifactInputs:
    """One artifact as package, report and selection see it."""

    id: str
    variant: str
    target: str
    platform: str
    format: str
    precision: Precision
    file: str
    record: str
    metrics: str
    bundle_path: str
    selection: str | None
    preference: int
    budgets: tuple[Budget, ...]


@dataclass(frozen=True)
class ModelInputs:
    name: str
    description: str
    source_record: str
    reference: str | None
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    datasets: tuple[str, ...]
    conditions: tuple[str, ...]
    artifacts: tuple[ArtifactInputs, ...]
    metrics: CustomMetrics | None = None


@dataclass(frozen=True)
class TargetSummary:
    """What the manifest says of a target."""

    soc: str
    platform: str
    min_os: str


@dataclass(frozen=True)
class BundleInputs:
    """What the package and report steps read, by model and artifact."""

    bundle: BundleSpec
    targets: dict[str, TargetSummary]
    models: tuple[ModelInputs, ...]

    def files(self) -> list[str]:
        """Every file the bundle is made from: the package and report tasks' file_dep."""
        deps: list[str] = []
        for model in self.models:
            deps.append(model.source_record)
            if model.reference:
                deps.append(model.reference)
            deps += [output.labels for output in model.outputs if output.labels]
            deps += model.datasets
            for artifact in model.artifacts:
                # An artifact may have no file (its conversion failed); its record, with the file's digest, stands for it.
                deps += [artifact.record, artifact.metrics]
        return deps


@dataclass(frozen=True)
class KeyReferences:
    """The spec's key references (env:VAR, file:PATH or None for the development keys); never the keys."""

    signing_key: str | None
    encrypt: bool
    encryption_key: str | None


@dataclass(frozen=True)
class SpecDigest:
    """What the bundle's provenance says of models.yaml: its path, and the digest of its build settings
    (the document as parsed, without its publish section), so that comments and rollouts do not change the bundle."""

    path: str
    build_settings_sha256: str


@dataclass(frozen=True)
class PackageJob:
    inputs: BundleInputs
    out_dir: str
    archives: dict[str, str]  # "all" and each platform -> archive path
    spec: SpecDigest
    keys: KeyReferences
    # Where this version may already be published: the step refuses to make other bytes under a published version.
    repository: str | None = field(default=None, metadata=NOT_HASHED)


@dataclass(frozen=True)
class ReportJob:
    inputs: BundleInputs
    out_dir: str


@dataclass(frozen=True)
class PublishTarget:
    platform: str
    chipsets: tuple[str, ...]
    min_os_version: str | None


@dataclass(frozen=True)
class PublishJob:
    bundle_dir: str
    archives: dict[str, str]
    repository: str
    preferences: dict[str, int]  # artifact id -> position in its target's list
    targets: dict[str, PublishTarget]
    channels: dict[str, dict[str, dict]]  # channel -> model -> offer document (repository/offer.py)
    expires_after_days: int
    keys: KeyReferences


# --- records: what a task leaves for the tasks after it ----------------------------------

_Record = TypeVar("_Record", bound="_JsonRecord")


class _JsonRecord:
    """A record written as pretty JSON by one step and read back by later ones."""

    def write(self, path: str) -> None:
        from .fsutil import write_json

        write_json(path, dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def read(cls: type[_Record], path: str) -> _Record:
        from .fsutil import read_json

        return cls.from_document(read_json(path))

    @classmethod
    def from_document(cls: type[_Record], data: dict) -> _Record:
        """The record from its JSON document, already read."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        record = cls(**known)
        if extra and "extra" in names:
            record = dataclasses.replace(record, extra={**record.extra, **extra})  # type: ignore[attr-defined, type-var]
        return record


@dataclass(frozen=True)
class SourceRecord(_JsonRecord):
    """build/sources/<model>/source.json: the materialized source model and its signature."""

    kind: str  # keras | saved_model | recipe, or a format name for a foreign file
    path: str  # as declared in the spec
    model: str  # the SavedModel directory or the copied file under build/
    model_sha256: str
    source_files: dict[str, str]  # file -> sha256, every file the source was made from
    signature: dict  # {"inputs": [{name, shape, dtype}, ...], "outputs": [...]} (modelmake/tensors.py)
    metadata: dict  # the recipe's METADATA
    tools: dict[str, str]


@dataclass(frozen=True)
class ArtifactRecord(_JsonRecord):
    """<artifact>.json beside each converted file."""

    precision: str
    integer_io: bool
    per_channel: bool
    delegates: list[str]  # TFLite delegates, ONNX execution providers or Core ML compute units
    io: dict  # {"inputs": [{name, dtype, shape, quantization?}, ...], "outputs": [...]} as an app binds them
    sha256: str
    size: int
    tools: dict[str, str]
    extra: dict = field(default_factory=dict)  # what only one format records (Core ML's compression)

    def write(self, path: str) -> None:
        from .fsutil import write_json

        data = dataclasses.asdict(self)
        write_json(path, {**{k: v for k, v in data.items() if k != "extra"}, **data["extra"]})


@dataclass(frozen=True)
class ExportRecord(_JsonRecord):
    """build/exports/<model>/<export>.<suffix>.json beside each exported float model: convert tasks depend on it."""

    format: str
    options: dict[str, Any]
    source_record: str  # the source record it was exported from
    model: str  # the exported file
    sha256: str
    size: int
    tools: dict[str, str]
    # ExportJob.out_prepared once written: kind -> {"file", "sha256", "name" (the file name the quantizers read it under)}
    prepared: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsRecord(_JsonRecord):
    """build/metrics/<target>/<artifact>.json: what the evaluate step measured and its budget verdicts."""

    artifact: str
    size_bytes: int
    metrics: dict[str, float]
    not_measured: dict[str, str]
    coverage: dict | None
    structure: dict | None
    source: dict | None
    budgets: list[dict]
    tools: dict[str, str]
    latency_host: str | None
    # How the outputs were computed: batched, or one sample at a time and why (steps/_batching.py); None when not run.
    batching: str | None = None
    # A model with several outputs: each output's own figures by name; the top-level parity figures are the worst of them.
    outputs: dict[str, dict[str, float]] | None = None
    not_built: str | None = None  # why the artifact has no file: its conversion failed
    not_evaluated: str | None = None  # why the artifact has no figures: its evaluation failed
    exit_code: int | None = None  # the failed step's exit code, for `modelmake build` when the package step refuses
    # The distributions of the outputs and inputs on the evaluation data, which the package step makes the bundle's
    # baseline of this artifact (steps/_baselines.py); None without evaluation data.
    baseline: dict | None = None

    def write(self, path: str) -> None:
        from .fsutil import write_json

        data = dataclasses.asdict(self)
        for key in ("not_built", "not_evaluated", "exit_code", "outputs", "baseline"):
            if data[key] is None:
                del data[key]
        write_json(path, data)


@dataclass(frozen=True)
class CacheableTask:
    """What the runner needs to key a model step in the shared cache and to fetch or upload its outputs (modelmake/cache/),
    and what the step reads and writes when a Dask worker runs it (modelmake/distributed/).

    ``hashed`` is what the task's ``JobUnchanged`` hashes (its job, tool versions and keys), the very same dict;
    the key adds the task kind, the job's type and the SHA-256 of each ``file_dep`` at run time.  Handed to the
    action as a keyword argument, never hashed itself, so that the cache settings change no task's hash.
    """

    kind: str
    job_type: str
    hashed: Mapping[str, Any]
    file_dep: tuple[str, ...]
    targets: tuple[str, ...]
    output_dirs: tuple[str, ...] = ()
    settings: Any = None  # plan.CacheSettings from models.yaml, or None; the environment may override it
