"""The bundle manifest (format version 1): writing it, reading it, its version rules and per-platform slicing.

FORMAT.md specifies it.  The writer takes what the package step gathered
(the bundle's inputs and the files it stored) and the records earlier steps
left; the reader is what verify, inspect, decrypt and publish use.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .. import tensors
from ..errors import FormatVersionError, VerificationError
from .untrusted_json import JSONProblem, parse, read_limited
from .zipformat import name_problem, name_problems

if TYPE_CHECKING:
    from ..contracts import ArtifactInputs, BundleInputs, ModelInputs
    from ..plan import InputSpec, OutputSpec

FORMAT_VERSION = 1
# Every format version this modelmake reads; a reader refuses anything else rather than guess.
READABLE_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
# The largest manifest.json a reader takes in, and of any other signed file that no variant names (provenance.json).
MAX_MANIFEST_BYTES = 16 << 20
# The files of a bundle besides its model files: no variant's file may be one of them.
BUNDLE_METADATA = (MANIFEST, PROVENANCE, "model.sig")
# The one encryption scheme of format version 1 (FORMAT.md, "Encrypted model files").
ENCRYPTION_SCHEME = "AES256_GCM_HKDF_1MB"
# An encrypted file's name in a bundle: the plaintext's name and this suffix (fixed for format version 1).
ENCRYPTED_SUFFIX = ".enc"
# A shipped artifact's baseline (FORMAT.md, "Baselines"): BASELINES/<artifact id>.json, listed by its variant.
BASELINES = "baselines"


def read_manifest(directory: Path) -> dict:
    """The manifest of a bundle directory, judged by ``parse_manifest``; nothing in it is used before then."""
    path = Path(directory) / MANIFEST
    try:
        raw = read_limited(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise VerificationError(f"{path} is missing: this is not a modelmake bundle") from None
    except JSONProblem as problem:
        raise VerificationError(f"{path} {problem}") from None
    except OSError as error:
        raise VerificationError(f"{path} cannot be read: {error.strerror or error}") from None
    return parse_manifest(raw, path)


def parse_manifest(raw: bytes, where: Path | str) -> dict:
    """The manifest in ``raw``, refused unless it is JSON of bounded depth, format version 1 and well-formed.

    The version comes first (exit code 8), as FORMAT.md requires; then every field a
    reader uses is checked for its type, and every ``file`` against the archive name
    rules, so that no path in it can reach outside the bundle (exit code 6).
    """
    try:
        manifest = parse(raw)
    except JSONProblem as refusal:
        raise VerificationError(f"{where} {refusal}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    # Exactly the integer: JSON's true and 1.0 compare equal to 1 in Python, but are not the version.
    if type(version) is not int or version not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        if type(version) is int:
            declared, advice = f"format_version {version}", "upgrade modelmake to read it"
        else:
            declared = "no format_version" if version is None else f"format_version {json.dumps(version)}, not an integer"
            advice = "it is not a bundle modelmake wrote"
        raise FormatVersionError(f"{where} has {declared}; this modelmake reads version {readable}: {advice}")
    malformed = next(_structure_problems(manifest), None)
    if malformed:
        raise VerificationError(f"{where} is malformed: {malformed}; modelmake did not write it")
    return manifest


_TOP_LEVEL = ({"bundle": str, "version": str, "models": dict}, {"slice": str, "signing": str, "targets": dict})
_VARIANT = (
    {"target": str, "platform": str, "format": str, "precision": str, "file": str, "sha256": str, "size": int},
    {"metrics": dict, "encryption": dict},
)
_ENCRYPTION: tuple[dict, dict] = ({"scheme": str, "plaintext_sha256": str, "plaintext_size": int}, {})
_BASELINE: tuple[dict, dict] = ({"file": str, "sha256": str, "size": int}, {})
_INT64 = 1 << 63


def _structure_problems(manifest: dict) -> Iterator[str]:
    yield from _field_problems(manifest, (), *_TOP_LEVEL)
    # They name directories (the bundle's, decrypt's default --out): each must be one plain path component.
    for key in ("bundle", "version", "slice"):
        value = manifest.get(key)
        if isinstance(value, str) and (name_problem(value) or "/" in value or value == ".."):
            yield f"{key} {value!r} is not a plain name (it names a directory)"
    for name, target in _object(manifest.get("targets")).items():
        if not isinstance(target, dict):
            yield f"{_path('targets', name)} is not an object"
    files: dict[str, tuple[str, ...]] = {}
    for name, model in _object(manifest.get("models")).items():
        if not isinstance(model, dict) or not isinstance(model.get("variants"), dict):
            yield f"{_path('models', name)} is not an object with an object of variants"
            continue
        for variant_id, variant in model["variants"].items():
            where = ("models", name, "variants", variant_id)
            if not isinstance(variant, dict):
                yield f"{_path(*where)} is not an object"
                continue
            yield from _field_problems(variant, where, *_VARIANT)
            if "encryption" in variant:
                yield from _field_problems(variant["encryption"], (*where, "encryption"), *_ENCRYPTION)
            yield from _baseline_problems(variant, where, files)
            for key in ("sha256", "plaintext_sha256"):
                digest = variant.get("encryption", {}).get(key) if key == "plaintext_sha256" else variant.get(key)
                if isinstance(digest, str) and not is_sha256_hex(digest):
                    yield f"{_path(*where, key)} is not 64 lowercase hexadecimal characters"
            if isinstance(variant.get("file"), str):
                files.setdefault(variant["file"], (*where, "file"))
    for file, reason in name_problems(list(files)):
        yield f"{_path(*files[file])} {file!r} {reason}"
    for file in sorted(set(files) & set(BUNDLE_METADATA)):
        yield f"{_path(*files[file])} {file!r} names one of the bundle's own files"


def _baseline_problems(variant: dict, where: tuple[str, ...], files: dict[str, tuple[str, ...]]) -> Iterator[str]:
    """A variant's optional baseline: an object naming a file under baselines/ with its digest and size."""
    if "baseline" not in variant:
        return
    baseline = variant["baseline"]
    if not isinstance(baseline, dict):
        yield f"{_path(*where, 'baseline')} is not an object"
        return
    yield from _field_problems(baseline, (*where, "baseline"), *_BASELINE)
    digest, file = baseline.get("sha256"), baseline.get("file")
    if isinstance(digest, str) and not is_sha256_hex(digest):
        yield f"{_path(*where, 'baseline', 'sha256')} is not 64 lowercase hexadecimal characters"
    if isinstance(file, str):
        if not file.startswith(BASELINES + "/"):
            yield f"{_path(*where, 'baseline', 'file')} {file!r} is not under {BASELINES}/"
        files.setdefault(file, (*where, "baseline", "file"))


def _field_problems(value: dict, where: tuple[str, ...], required: dict, optional: dict) -> Iterator[str]:
    for key, kind in {**required, **optional}.items():
        if key not in value:
            if key in required:
                yield f"{_path(*where, key)} is missing"
            continue
        item = value[key]
        if kind is int:
            if type(item) is not int or not 0 <= item < _INT64:
                yield f"{_path(*where, key)} is not an integer from 0 to 2^63 - 1"
        elif not isinstance(item, kind):
            yield f"{_path(*where, key)} is not {_KIND_NAMES[kind]}"


_KIND_NAMES = {str: "a string", dict: "an object", list: "an array"}


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _path(*keys: str) -> str:
    """A JSON path for messages; keys that could be mistaken for structure, or rewrite a terminal, are quoted."""
    return ".".join(key if key.replace("-", "").replace("_", "").replace("@", "").isalnum() else repr(key) for key in keys)


def is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def platforms(manifest: dict) -> list[str]:
    return sorted({v["platform"] for m in manifest["models"].values() for v in m["variants"].values()})


def slice_for(manifest: dict, platform: str) -> dict:
    """The manifest of a per-platform slice: only that platform's variants, targets and models."""
    models = {}
    for name, model in manifest["models"].items():
        variants = {vid: v for vid, v in model["variants"].items() if v["platform"] == platform}
        if variants:
            models[name] = {**model, "variants": variants}
    targets = {name: t for name, t in manifest["targets"].items() if t["platform"] == platform}
    return {**manifest, "slice": platform, "models": models, "targets": targets}


def files_of(manifest: dict) -> list[str]:
    return sorted(v["file"] for m in manifest["models"].values() for v in m["variants"].values())


def baselines_of(manifest: dict) -> dict[str, str]:
    """Each variant's baseline file with its digest (a bundle written before baselines has none)."""
    return {
        v["baseline"]["file"]: v["baseline"]["sha256"]
        for m in manifest["models"].values() for v in m["variants"].values() if "baseline" in v
    }


# --- writing ---------------------------------------------------------------------------


def build_manifest(inputs: BundleInputs, stored: dict, signing: str) -> dict:
    """The manifest of the whole bundle; ``stored`` says what each stored file became (digest, size, encryption)."""
    from ..versions import tool_versions

    bundle = inputs.bundle
    return {
        "format_version": FORMAT_VERSION,
        "bundle": bundle.name,
        "version": bundle.version,
        "created": created(bundle.created),
        "signing": signing,
        "targets": {name: asdict(target) for name, target in inputs.targets.items()},
        "models": {m.name: _model(m, stored) for m in inputs.models},
        "tools": tool_versions("modelmake"),
    }


def created(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decimal(value: float) -> str:
    """Measured fractions as fixed-precision text: the manifest carries no binary floats."""
    return f"{value:.6f}"


def _io(io: dict, named: bool) -> dict:
    """A file's tensors as an app binds them: the one input and output as they have always been listed, or every
    one of a model whose io names them (in the file's order)."""
    if not named and len(io[tensors.INPUTS]) == 1 and len(io[tensors.OUTPUTS]) == 1:
        return {"input": io[tensors.INPUTS][0], "output": io[tensors.OUTPUTS][0]}
    return io


def _output_metrics(outputs: dict[str, dict[str, float]]) -> dict:
    return {name: {k: _decimal(v) for k, v in figures.items()} for name, figures in outputs.items()}


def _variant(artifact: ArtifactInputs, stored: dict, named: bool) -> dict:
    from ..contracts import ArtifactRecord, MetricsRecord

    record = ArtifactRecord.read(artifact.record)
    measured = MetricsRecord.read(artifact.metrics)
    # Latency varies from run to run; the manifest records its budget verdict, the report the figure.
    # The frame rate is read from the latency (min_fps budgets), so it varies with it.
    reproducible = {k: _decimal(v) for k, v in measured.metrics.items() if k not in ("latency_ms", "fps")}
    entry = {
        "target": artifact.target,
        "platform": artifact.platform,
        "format": artifact.format,
        "variant": artifact.variant,
        "precision": str(artifact.precision),
        "file": artifact.bundle_path,
        "sha256": stored["sha256"],
        "size": stored["size"],
        "io": _io(record.io, named),
        "delegates": record.delegates,
        "metrics": reproducible,
        # A model with several outputs: each output's own figures, beside the worst of them above.
        **({"output_metrics": _output_metrics(measured.outputs)} if measured.outputs else {}),
        "budgets": [
            {"metric": v["metric"], "bound": v["bound"], "limit": _decimal(v["limit"]), "passed": v["passed"]}
            for v in measured.budgets
        ],
        "tools": record.tools | measured.tools,
    }
    if "encryption" in stored:
        entry["encryption"] = stored["encryption"]
    if "baseline" in stored:
        entry["baseline"] = stored["baseline"]
    return entry


def _input(spec: InputSpec, signature: dict) -> dict:
    """The preprocessing an app applies and the tensor it feeds; keys a model does not use are left out."""
    entry = {k: v for k, v in asdict(spec).items() if k in ("layout", "scale", "offset", "mean", "std")}
    for key in ("mean", "std"):
        if entry[key]:
            entry[key] = list(entry[key])
        else:
            del entry[key]
    fed = tensors.entry(signature, tensors.INPUTS, spec.name)
    shape = list(spec.shape) if spec.shape else fed["shape"]
    # A model with one input keeps the entry it has always had; with several each names its dtype too.
    return {**entry, "name": fed["name"], "shape": shape} | ({"dtype": fed["dtype"]} if spec.name else {})


def _output(spec: OutputSpec) -> dict:
    """How an app reads the output.  A classifier's entry is what it has always been (top_k, labels); other
    kinds name their kind, and only the keys that apply to it: a mask's threshold and labels, nothing else."""
    from ..kinds import OutputKind

    if spec.kind is OutputKind.CLASSES:
        output: dict = {"top_k": spec.top_k}
    elif spec.kind is OutputKind.MASK:
        output = {"kind": str(spec.kind), "threshold": repr(spec.threshold)}  # as text: the manifest carries no binary floats
    else:
        output = {"kind": str(spec.kind)}
    if spec.labels:
        output["labels"] = Path(spec.labels).read_text(encoding="utf-8").splitlines()
    if spec.name:
        output = {"name": spec.name, "kind": str(spec.kind), **output}
    if spec.state:
        output["state"] = spec.state  # the input this output's value goes back into at the next step
    return output


def _model(model: ModelInputs, stored: dict) -> dict:
    from ..contracts import SourceRecord
    from ..fsutil import read_json

    source = SourceRecord.read(model.source_record)
    inputs = [_input(spec, source.signature) for spec in model.inputs]
    outputs = [_output(spec) for spec in model.outputs]
    # A model with one input and one output keeps the entries it has always had; several are listed in the model's order.
    named = any(spec.name for spec in model.inputs + model.outputs)
    io: dict[str, dict | list] = {"input": inputs[0]} if len(inputs) == 1 and not model.inputs[0].name else {"inputs": inputs}
    io |= {"output": outputs[0]} if len(outputs) == 1 and not model.outputs[0].name else {"outputs": outputs}
    entry = {
        "description": model.description,
        **io,
        "provenance": {
            "source": {"kind": source.kind, "path": source.path, "files": source.source_files},
            "recipe": source.metadata,
            "tools": source.tools,
        },
        "variants": {a.id: _variant(a, stored[a.bundle_path], named) for a in model.artifacts if a.bundle_path in stored},
    }
    if model.reference:
        reference = read_json(model.reference)
        # Figures only: a note beside them (how the source was batched) is the build's business, not the app's.
        figures = {k: v for k, v in reference.items() if k != "samples" and isinstance(v, int | float)}
        entry["source_metrics"] = {k: _decimal(v) for k, v in figures.items()} | {"samples": reference["samples"]}
        if "outputs" in reference:
            entry["source_output_metrics"] = _output_metrics(reference["outputs"])
    return entry
