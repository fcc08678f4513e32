"""BuildPlan -> doit task dicts.

Each task is a plain doit record: ``file_dep`` and ``targets`` name its files,
``uptodate=[JobUnchanged(...)]`` (doit's ``config_changed``, readable in
``doit info``) hashes its job (``contracts.config_hash``) and the versions of
the tools it runs, and its action is ``runner.run_step``
naming the step function and handing it the job, so nothing heavy is imported
while the graph loads, and loading it creates nothing on disk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import buildlock, layout, taskcache
from .contracts import (
    ArtifactInputs,
    BundleInputs,
    CacheableTask,
    ConvertJob,
    DataJob,
    DataLabels,
    DeclaredInput,
    DeclaredIo,
    EvaluateJob,
    ExportJob,
    KeyReferences,
    ModelInputs,
    PackageJob,
    PublishJob,
    PublishTarget,
    ReferenceJob,
    ReportJob,
    SourceJob,
    SpecDigest,
    TargetSummary,
    TrainJob,
    config_hash,
)
from .errors import ModelmakeError, exit_code_for
from .formats import backend, for_source_kind
from .kinds import Precision
from .layout import SPEC_FILE, WORKSPACE_PROFILES
from .plan import InputSpec, input_arrays, label_array
from .steps.runner import RECORDED_FAILURE, run_step
from .steps.worker import MODEL_STEPS
from .versions import tool_versions

if TYPE_CHECKING:
    from .plan import Artifact, BuildPlan, Dataset, Model, Source

STEP_TOOLS = {
    "data": ("modelmake", "numpy"),
    "reference": ("modelmake", "tensorflow", "keras", "ai-edge-litert", "onnxruntime"),
    "package": ("modelmake", "cryptography"),
    "publish": ("modelmake", "cryptography"),
    "report": ("modelmake", "matplotlib"),
    "train": ("modelmake", "tensorflow", "tf-keras", "tensorflow-model-optimization"),
}


def doit_config(workspace: Path) -> dict:
    publishes = any(task.get("meta", {}).get("on_build") for task in _workspace_task_list(workspace))
    # After the spec is known to be valid: a refused spec creates nothing, not even the lock.
    try:
        buildlock.acquire(workspace, sys.argv[1:])
    except ModelmakeError as error:
        print(f"modelmake: {error}", file=sys.stderr)
        raise SystemExit(exit_code_for(error)) from None
    return {
        "default_tasks": ["report", "package"] + (["publish"] if publishes else []),
        "dep_file": layout.DEP_FILE,
        # sqlite never leaves a corrupt state file when a build is killed; doit records results when a
        # run ends, so a killed run repeats its tasks (with the same bytes as outputs).  This variant
        # creates build/ and the file on its first write, so `doit list` and `doit info` create nothing.
        "backend": "modelmake-sqlite3",
        # steps already send converter noise to build/logs; what they print is the one result line
        "verbosity": 2,
    }


def workspace_tasks(workspace: Path):
    """The tasks of the workspace's models.yaml; a bad spec exits with its message, not a traceback."""
    yield from _workspace_task_list(workspace)


@cache
def _workspace_task_list(workspace: Path) -> list[dict]:
    """Loaded once per process: doit_config needs to know whether the default build publishes."""
    workspace = Path(workspace)
    try:
        tasks = taskcache.load(workspace)
        if tasks is None:
            from .spec import load_plan

            plan = load_plan(workspace)
            tasks = list(plan_tasks(plan, workspace))
            taskcache.store(workspace, tasks, *_plan_inputs(plan, workspace))
    except ModelmakeError as error:
        print(f"modelmake: {error}", file=sys.stderr)
        raise SystemExit(exit_code_for(error)) from None
    return tasks


def _plan_inputs(plan: BuildPlan, workspace: Path) -> tuple[list[str], list[str]]:
    """The files (relative to the workspace) and environment variables the plan and its tasks were made from."""
    paths = [SPEC_FILE, WORKSPACE_PROFILES]
    profiles = workspace / WORKSPACE_PROFILES
    if profiles.is_dir():
        paths += [f"{WORKSPACE_PROFILES}/{p.name}" for p in profiles.glob("*.yaml")]
    variables = []
    for model in plan.models:
        paths += _source_files(workspace, model) + [model.source.path]
        for dataset in (model.calibration, model.evaluation):
            if dataset:
                paths += _dataset_files(dataset)
        paths += [output.labels for output in model.outputs if output.labels]
    for reference in (plan.bundle.signing_key, plan.bundle.encryption_key):
        if reference and reference.startswith("env:"):
            variables.append(reference[len("env:"):])
        elif reference:
            paths.append(reference.removeprefix("file:"))
    return paths, variables


def plan_tasks(plan: BuildPlan, workspace: Path):
    for group, doc in (
        ("source", "Materialize each model's source (run recipes, load files) as a SavedModel."),
        ("train", "Fine-tune a variant's model from its source recipe: quantization-aware training, pruning."),
        ("data", "Materialize calibration and evaluation data sets."),
        ("reference", "Evaluate each source model: the figures artifacts are compared with."),
        ("export", "Export each source once per format and the settings its float model depends on (ONNX: opset)."),
        ("convert", "Convert (and quantize) one variant of a model for one target."),
        ("evaluate", "Load, run and measure an artifact; fail when it breaks a budget."),
        ("package", "Assemble the signed bundle, its per-platform slices and archives."),
        ("report", "Write the bundle's report: the table of figures and its plots."),
        ("publish", "Publish the bundle into the over-the-air download repository and sign its index."),
    ):
        yield {"basename": group, "name": None, "doc": doc}
    for model in plan.models:
        yield from _with_cache_settings(model_tasks(plan, model, workspace), plan.cache)
    keys = _key_references(plan)
    fingerprints = _key_fingerprints(keys, workspace)
    yield package_task(plan, keys, fingerprints)
    yield report_task(plan)
    yield publish_task(plan, keys, fingerprints)


def _task(
    kind: str, name: str, step: str, job, *, file_dep, targets, doc: str, clean_dirs=(), also_hash=None, tools=None, uptodate=(), meta=None,
    record_failures=False, timeout_minutes=None,
):
    """``also_hash`` joins the change detection without reaching the step (key fingerprints);
    ``record_failures`` records a failure for the report and the package step instead of failing, and
    ``timeout_minutes`` bounds a step run in the worker (``runner.run_step``); neither is part of the hash."""
    from .task_checks import JobUnchanged, RemoveOutputs

    task_name = f"{kind}:{name}"
    action = (run_step, [step, task_name, job], {"record_failures": record_failures, "timeout_minutes": timeout_minutes})
    unchanged = JobUnchanged(type(job).__name__, config_hash(job), tool_versions(*(tools or STEP_TOOLS[kind])), also_hash)
    cacheable = _cacheable(kind, step, job, unchanged, file_dep, targets, clean_dirs)
    if cacheable is not None:
        action[2]["cache"] = cacheable
    return {
        "basename": kind,
        "name": name,
        "doc": doc,
        "actions": [action],
        "file_dep": sorted(set(file_dep)),
        "targets": list(targets),
        "uptodate": [unchanged, *uptodate],
        "clean": [RemoveOutputs(list(targets), list(clean_dirs))],
        "verbosity": 2,
        "meta": meta or {},
    }


def _source_files(workspace: Path, model: Model) -> list[str]:
    source = model.source
    if source.kind == "saved_model":
        root = workspace / source.path
        return [str(p.relative_to(workspace)) for p in sorted(root.rglob("*")) if p.is_file()]
    return [source.path, *source.depends]


def _source_tools(source: Source) -> tuple[str, ...]:
    """A recipe, Keras or SavedModel source runs TensorFlow; a foreign file is read with its own format's tools."""
    foreign = for_source_kind(source.kind)
    tools = ("modelmake", "tensorflow", "keras", *(foreign.convert_tools + foreign.runtime_tools if foreign else ()))
    tools += ("tf-keras",) if source.framework == "tf-keras" else ()
    return tuple(dict.fromkeys(tools))


def _dataset_files(dataset: Dataset) -> list[str]:
    return [dataset.path, *dataset.depends]


def _metrics_files(model: Model) -> list[str]:
    """A custom metric's recipe and what it reads: editing them re-measures without re-converting."""
    custom = model.metrics
    return [custom.recipe, *custom.depends] if custom else []


def _data_origin(dataset: Dataset) -> str:
    """A data set as the user declared it, so that an error about its contents names the file to fix."""
    if dataset.from_recipe:
        return f"{dataset.path} {dataset.function}({dataset.split!r})"
    return dataset.path


def _declared_shapes(spec: InputSpec) -> tuple[tuple[str | None, tuple[int, ...]], ...]:
    every: tuple[tuple[str | None, tuple[int, ...]], ...] = ((None, spec.shape),) if spec.shape else ()
    return every + spec.target_shapes


def _declared_io(plan: BuildPlan, model: Model) -> DeclaredIo:
    """What io declares that the model file must match: the source step checks it before any conversion."""
    key = f"{plan.spec_file}: models -> {model.name} -> io"
    inputs = tuple(
        DeclaredInput(
            name=spec.name,
            key=f"{key} -> inputs -> {spec.name}" if spec.name else f"{key} -> input",
            layout=spec.layout,
            dtype=spec.dtype,
            shapes=_declared_shapes(spec),
            # How many values per-channel mean/std give: the model's channel axis must have as many.
            channels=len(spec.mean) if spec.mean else None,
        )
        for spec in model.inputs
    )
    return DeclaredIo(
        key=key,
        inputs=inputs,
        outputs=tuple(output.name for output in model.outputs),
        states=tuple((output.name, output.state) for output in model.outputs if output.state),
    )


def _data_job(model: Model, dataset: Dataset, out: str) -> DataJob:
    """The arrays a data set must hold: one per input, labels per output, sequences for a stateful model."""
    arrays = input_arrays(model.inputs)
    state_inputs = {output.state for output in model.outputs if output.state}
    return DataJob(
        dataset=dataset,
        out=out,
        inputs=arrays,
        labels=tuple(DataLabels(label_array(output), output.name, output.kind) for output in model.outputs),
        keep_arrays=dataset.role == "evaluation" and model.metrics is not None,
        sequences=model.stateful,
        # A state input starts at zero unless the data gives each sequence's first state.
        optional_inputs=tuple(array for spec, array in zip(model.inputs, arrays, strict=True) if spec.name in state_inputs),
    )


def model_tasks(plan: BuildPlan, model: Model, workspace: Path):
    source_record = layout.source_record(model.name)
    yield _task(
        "source",
        model.name,
        "source.materialize",
        SourceJob(source=model.source, out_dir=layout.source_dir(model.name), record=source_record, io=_declared_io(plan, model)),
        file_dep=_source_files(workspace, model),
        targets=[source_record, *_keras_model_files(model)],
        clean_dirs=[layout.source_dir(model.name)],
        tools=_source_tools(model.source),
        timeout_minutes=model.timeout_minutes,
        doc=f"{model.name}: {model.source.kind} source {model.source.path}",
    )
    for dataset in (model.calibration, model.evaluation):
        if dataset is None:
            continue
        out = layout.dataset(model.name, dataset.role)
        yield _task(
            "data",
            f"{model.name}.{dataset.role}",
            "data.materialize",
            _data_job(model, dataset, out),
            file_dep=_dataset_files(dataset),
            targets=[out],
            timeout_minutes=model.timeout_minutes,
            doc=f"{model.name}: {dataset.role} data from {dataset.path}",
        )
    if model.evaluation is not None:
        job = ReferenceJob(
            source_record=source_record,
            evaluation=layout.dataset(model.name, "evaluation"),
            evaluation_origin=_data_origin(model.evaluation),
            inputs=tuple(spec.for_target(None) for spec in model.inputs),
            outputs=model.outputs,
            out_metrics=layout.reference_metrics(model.name),
            out_outputs=layout.reference_outputs(model.name),
            custom_metrics=model.metrics,
        )
        yield _task(
            "reference",
            model.name,
            "reference.evaluate_source",
            job,
            file_dep=[source_record, job.evaluation, *_metrics_files(model)],
            targets=[job.out_metrics, job.out_outputs],
            timeout_minutes=model.timeout_minutes,
            doc=f"{model.name}: accuracy of the source model",
        )
    yield from train_tasks(model)
    yield from export_tasks(plan, model)
    for artifact in model.artifacts:
        yield convert_task(plan, model, artifact)
        yield evaluate_task(plan, model, artifact)


def _export_options(plan: BuildPlan, model: Model, artifact: Artifact) -> dict | None:
    """What the artifact's float model depends on, when its format exports it once for every variant (else None)."""
    support = plan.targets[artifact.target].formats[artifact.format]
    return backend(artifact.format).export_options(support, model.source.kind)


def export_record_of(plan: BuildPlan, model: Model, artifact: Artifact) -> str | None:
    """The export record the artifact's conversion starts from; None when its format converts from the source."""
    options = _export_options(plan, model, artifact)
    return None if options is None else layout.export_record(_converted_label(model, artifact), artifact.format, options)


def export_tasks(plan: BuildPlan, model: Model):
    """One export task per model the artifacts convert from (the source, or a variant's fine-tuned model), format
    and export options."""
    exported = set()
    for artifact in model.artifacts:
        options = _export_options(plan, model, artifact)
        label = _converted_label(model, artifact)
        if options is None or (label, artifact.format, tuple(sorted(options.items()))) in exported:
            continue
        exported.add((label, artifact.format, tuple(sorted(options.items()))))
        yield export_task(model, artifact.format, options, source_record=converted_record(model, artifact), label=label)


def export_task(model: Model, format: str, options: dict, *, source_record: str, label: str):
    described = ", ".join(f"{key} {value}" for key, value in sorted(options.items()))
    job = ExportJob(
        format=format,
        source_record=source_record,
        options=dict(sorted(options.items())),
        out=layout.export_file(label, format, options),
        out_record=layout.export_record(label, format, options),
        out_prepared={kind: layout.export_prepared_file(label, format, options, kind) for kind in backend(format).export_prepared},
    )
    return _task(
        "export",
        layout.export_name(label, format, options),
        "export.export",
        job,
        file_dep=[source_record],
        targets=[job.out, *job.out_prepared.values(), job.out_record],
        tools=backend(format).export_tools,
        # As for a conversion: a failed export is recorded in its record, each conversion from it fails with its
        # reason (so the report says why), and the next build tries it again.
        record_failures=True,
        uptodate=[_succeeded],
        timeout_minutes=model.timeout_minutes,
        doc=f"{label}: float {format} model ({described}) its {format} variants convert from",
    )


def convert_task(plan: BuildPlan, model: Model, artifact: Artifact):
    calibration = layout.dataset(model.name, "calibration") if artifact.precision is Precision.INT8 else None
    support = plan.targets[artifact.target].formats[artifact.format]
    job = ConvertJob(
        artifact_id=artifact.id,
        source_record=converted_record(model, artifact),
        precision=artifact.precision,
        per_channel=artifact.per_channel,
        palettize=artifact.palettize,
        calibration=calibration,
        calibration_origin=_data_origin(model.calibration) if calibration and model.calibration else None,
        inputs=tuple(spec.for_target(artifact.target) for spec in model.inputs),
        # Which accelerator is reported on, and whether it must take every op, is the evaluation's business.
        support=dataclasses.replace(support, accelerator=None, require_full_coverage=False),
        out=layout.artifact_file(artifact),
        out_record=layout.artifact_record(artifact),
        export_record=export_record_of(plan, model, artifact),
        prune=artifact.prune,
    )
    return _task(
        "convert",
        artifact.id,
        "convert.convert",
        job,
        file_dep=[job.source_record] + ([calibration] if calibration else []) + ([job.export_record] if job.export_record else []),
        targets=[job.out, job.out_record],
        # Per format, so that upgrading one format's tools rebuilds only that format's artifacts.
        tools=backend(artifact.format).convert_tools,
        # A failed conversion is recorded for the report and the package step: its record says why, and its
        # missing file makes doit try the conversion again on the next build.
        record_failures=True,
        timeout_minutes=model.timeout_minutes,
        doc=f"{model.name} {artifact.variant} ({artifact.precision}) as {artifact.format} for {artifact.target}",
    )


def evaluate_task(plan: BuildPlan, model: Model, artifact: Artifact):
    evaluation = layout.dataset(model.name, "evaluation") if model.evaluation else None
    reference = layout.reference_metrics(model.name) if model.evaluation else None
    reference_outputs = layout.reference_outputs(model.name) if model.evaluation else None
    job = EvaluateJob(
        artifact_id=artifact.id,
        format=artifact.format,
        artifact=layout.artifact_file(artifact),
        record=layout.artifact_record(artifact),
        source_record=layout.source_record(model.name),
        evaluation=evaluation,
        reference=reference,
        reference_outputs=reference_outputs,
        inputs=tuple(spec.for_target(artifact.target) for spec in model.inputs),
        outputs=model.outputs,
        conditions=model.evaluation.conditions if model.evaluation else (),
        budgets=artifact.budgets,
        support=plan.targets[artifact.target].formats[artifact.format],
        out=layout.artifact_metrics(artifact),
        custom_metrics=model.metrics if model.evaluation else None,
    )
    runtime_tools = backend(artifact.format).runtime_tools
    return _task(
        "evaluate",
        artifact.id,
        "evaluate.evaluate",
        job,
        # The artifact may have no file (its conversion failed); its record, always written, carries the
        # file's digest, so a new file still re-evaluates.
        file_dep=[job.record, job.source_record]
        + [p for p in (evaluation, reference, reference_outputs) if p]
        + (_metrics_files(model) if model.evaluation else []),
        targets=[job.out],
        # Per format, as for convert; numpy does the measuring for every format.
        tools=tuple(dict.fromkeys(("modelmake", "numpy", *runtime_tools))),
        # A failed evaluation is recorded for the report and the package step, and tried again next build.
        record_failures=True,
        uptodate=[_succeeded],
        timeout_minutes=model.timeout_minutes,
        doc=f"load, run and measure {artifact.id}; check its budgets",
    )


def _succeeded(task, values) -> bool:
    """doit ``uptodate``: False when the last run recorded a failure instead of failing, so that it runs again."""
    return not values.get(RECORDED_FAILURE)


def _bundle_inputs(plan: BuildPlan) -> BundleInputs:
    """What the package and report steps read, by model and artifact."""
    models = []
    for model in plan.models:
        artifacts = tuple(
            ArtifactInputs(
                id=a.id,
                variant=a.variant,
                target=a.target,
                platform=plan.targets[a.target].platform,
                format=a.format,
                precision=a.precision,
                file=layout.artifact_file(a),
                record=layout.artifact_record(a),
                metrics=layout.artifact_metrics(a),
                bundle_path=layout.bundle_file_path(a, encrypted=plan.bundle.encrypt),
                selection=a.selection,
                preference=a.preference,
                budgets=a.budgets,
            )
            for a in model.artifacts
        )
        models.append(
            ModelInputs(
                name=model.name,
                description=model.description,
                source_record=layout.source_record(model.name),
                reference=layout.reference_metrics(model.name) if model.evaluation else None,
                inputs=model.inputs,
                outputs=model.outputs,
                datasets=tuple(layout.dataset(model.name, d.role) for d in (model.calibration, model.evaluation) if d),
                conditions=tuple(c for c, _ in model.evaluation.conditions) if model.evaluation else (),
                artifacts=artifacts,
                metrics=model.metrics,
            )
        )
    return BundleInputs(
        bundle=plan.bundle,
        targets={name: TargetSummary(soc=t.soc, platform=t.platform, min_os=t.min_os) for name, t in plan.targets.items()},
        models=tuple(models),
    )


def _archives(plan: BuildPlan) -> dict[str, str]:
    """The bundle's archives: "all" and one per platform."""
    bundle = plan.bundle
    platforms = sorted({plan.targets[a.target].platform for a in plan.artifacts()})
    archives = {p: layout.bundle_archive(bundle.name, bundle.version, p) for p in platforms}
    archives["all"] = layout.bundle_archive(bundle.name, bundle.version)
    return archives


def _key_references(plan: BuildPlan) -> KeyReferences:
    bundle = plan.bundle
    return KeyReferences(signing_key=bundle.signing_key, encrypt=bundle.encrypt, encryption_key=bundle.encryption_key)


def _key_fingerprints(keys: KeyReferences, workspace: Path) -> dict:
    """Fingerprints of the configured keys, for change detection; reads them and creates nothing."""
    from .bundle.keyring import fingerprints

    return fingerprints(workspace, keys.signing_key, keys.encrypt, keys.encryption_key)


def _development_keys_check(keys: KeyReferences) -> list:
    from .bundle.keyring import development_files

    files = development_files(keys.signing_key, keys.encrypt, keys.encryption_key)
    return [DevelopmentKeysUnchanged(tuple(files))] if files else []


class DevelopmentKeysUnchanged:
    """doit ``uptodate``: the development keys a task signs or encrypts with are the ones of its last run.

    The task that signs creates them when they are missing, so they cannot be
    a ``file_dep`` (nothing declares them before the first build); instead this
    check identifies them as they are when the task is checked, and records
    them as they are once it has run, so a second build runs nothing and a
    deleted or replaced key rebuilds.  It reads the files and creates nothing.
    """

    def __init__(self, files: tuple[str, ...]):
        self.files = files

    def identify(self) -> dict[str, str | None]:
        """An id per file that reveals nothing of the key (a keyed digest, as the data key's id)."""
        ids: dict[str, str | None] = {}
        for name in self.files:
            try:
                secret = Path(name).read_bytes()
            except FileNotFoundError:
                ids[name] = None
                continue
            ids[name] = hmac.new(secret, b"modelmake development key id", hashlib.sha256).hexdigest()[:32]
        return ids

    def configure_task(self, task) -> None:
        task.value_savers.append(lambda: {"_development_keys": self.identify()})

    def __call__(self, task, values) -> bool:
        saved = values.get("_development_keys")
        return saved is not None and None not in saved.values() and saved == self.identify()

    def __repr__(self) -> str:
        return f"DevelopmentKeysUnchanged({list(self.files)!r})"


def package_task(plan: BuildPlan, keys: KeyReferences, fingerprints: dict):
    bundle = plan.bundle
    inputs = _bundle_inputs(plan)
    out_dir = layout.bundle_dir(bundle.name, bundle.version)
    archives = _archives(plan)
    targets = [f"{out_dir}/{name}" for name in ("manifest.json", "provenance.json", "model.sig")]
    # Which of a selecting target's variants ships is known only after evaluation, so only the others are declared.
    targets += [f"{out_dir}/{a.bundle_path}" for m in inputs.models for a in m.artifacts if a.selection is None]
    targets += sorted(archives.values())
    return _task(
        "package",
        bundle.name,
        "package.package",
        PackageJob(
            inputs=inputs, out_dir=out_dir, archives=archives, spec=SpecDigest(SPEC_FILE, plan.build_settings_sha256), keys=keys,
            repository=plan.publish.repository,
        ),
        # Not models.yaml itself: its build settings are in the job (``spec``), and its publish section is not bundle content.
        file_dep=inputs.files(),
        targets=targets,
        clean_dirs=[out_dir],
        also_hash=fingerprints,
        uptodate=_development_keys_check(keys),
        doc=f"signed bundle {bundle.name} {bundle.version}, its platform slices and archives",
    )


def report_task(plan: BuildPlan):
    inputs = _bundle_inputs(plan)
    out_dir = layout.report_dir(plan.bundle.name, plan.bundle.version)
    targets = [f"{out_dir}/{name}" for name in ("report.md", "report.html", "size_vs_accuracy.png", "per_target.png")]
    return _task(
        "report",
        plan.bundle.name,
        "report.report",
        ReportJob(inputs=inputs, out_dir=out_dir),
        file_dep=inputs.files(),
        targets=targets,
        doc=f"report for {plan.bundle.name} {plan.bundle.version}",
    )


def publish_task(plan: BuildPlan, keys: KeyReferences, fingerprints: dict):
    bundle, publish = plan.bundle, plan.publish
    out_dir = layout.bundle_dir(bundle.name, bundle.version)
    archives = _archives(plan)
    index = f"{publish.repository}/index.json"
    # Publishing signs only: a development data key plays no part in it.
    signing = dataclasses.replace(keys, encrypt=False, encryption_key=None)
    job = PublishJob(
        bundle_dir=out_dir,
        archives=archives,
        repository=publish.repository,
        preferences={a.id: a.preference for a in plan.artifacts()},
        targets={
            name: PublishTarget(platform=t.platform, chipsets=tuple(t.chipsets), min_os_version=t.min_os_version)
            for name, t in plan.targets.items()
        },
        channels={c: {m: offer.document() for m, offer in models.items()} for c, models in publish.channels.items()},
        expires_after_days=publish.expires_after_days,
        keys=keys,
    )
    task = _task(
        "publish",
        bundle.name,
        "publish.publish",
        job,
        file_dep=[f"{out_dir}/manifest.json", f"{out_dir}/model.sig", *archives.values()],
        targets=[index],
        also_hash=fingerprints,
        uptodate=_development_keys_check(signing),
        meta={"on_build": publish.on_build},
        doc=f"publish {bundle.name} {bundle.version} into {publish.repository} and sign its index",
    )
    # The repository is release history that clients have seen: `doit clean` must never remove it.
    task["clean"] = []
    return task


def _keras_model_files(model: Model) -> list[str]:
    """A tf-keras recipe's source also keeps the model as built, for the variants that fine-tune it."""
    return [layout.source_keras_model(model.name)] if model.source.framework == "tf-keras" else []


def _converted_label(model: Model, artifact: Artifact) -> str:
    """The name of the model an artifact is converted from, for the exports of it: ``digits`` or ``digits.qat_int8``."""
    return model.name if artifact.training is None else f"{model.name}.{artifact.variant}"


def converted_record(model: Model, artifact: Artifact) -> str:
    """The record of the model an artifact is converted from: its variant's fine-tuned model, or the source."""
    if artifact.training is not None:
        return layout.trained_record(model.name, artifact.variant)
    return layout.source_record(model.name)


def train_tasks(model: Model):
    """One train task per variant that fine-tunes, shared by its artifacts on every target and format."""
    trained: dict[str, Artifact] = {}
    for artifact in model.artifacts:
        if artifact.training is not None:
            trained.setdefault(artifact.variant, artifact)
    for variant, artifact in trained.items():
        assert artifact.training is not None  # only such artifacts were kept above
        job = TrainJob(
            variant=f"{model.name}.{variant}",
            source=model.source,
            source_record=layout.source_record(model.name),
            keras_model=layout.source_keras_model(model.name),
            training=artifact.training,
            prune=artifact.prune,
            out_dir=layout.trained_dir(model.name, variant),
            record=layout.trained_record(model.name, variant),
        )
        method = "quantization-aware training" if artifact.training.method == "qat" else "fine-tuning"
        pruning = f", pruned to {artifact.prune.sparsity:g} sparsity" if artifact.prune else ""
        yield _task(
            "train",
            job.variant,
            "train.train",
            job,
            # The recipe itself: editing its fine-tuning function re-trains.
            file_dep=[job.source_record, model.source.path, *model.source.depends],
            targets=[job.record],
            clean_dirs=[job.out_dir],
            timeout_minutes=model.timeout_minutes,
            doc=f"{model.name} {variant}: {method} of its source recipe's model{pruning}",
        )
def _cacheable(kind: str, step: str, job, unchanged, file_dep, targets, clean_dirs) -> CacheableTask | None:
    """What the runner needs to fetch the outputs of a model step from the shared cache, or to upload them.

    Every step that runs in the model worker (``worker.MODEL_STEPS``) is cacheable; package, report and publish
    always run here.  ``hashed`` is the very dict ``JobUnchanged`` hashes, shared rather than copied.
    """
    if step.split(".", 1)[0] not in MODEL_STEPS:
        return None
    return CacheableTask(
        kind=kind,
        job_type=type(job).__name__,
        hashed=unchanged.config,
        file_dep=tuple(sorted(set(file_dep))),
        targets=tuple(targets),
        output_dirs=tuple(clean_dirs),
    )


def _with_cache_settings(tasks, settings):
    """The tasks, each cacheable one told the spec's cache settings (None: only MODELMAKE_CACHE can name a cache)."""
    for task in tasks:
        if settings is not None:
            for action in task.get("actions", ()):
                if isinstance(action, tuple) and len(action) == 3 and "cache" in action[2]:
                    action[2]["cache"] = dataclasses.replace(action[2]["cache"], settings=settings)
        yield task
