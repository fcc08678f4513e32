"""The bundle manifest (format version 1): writing it, reading it, its version rules and per-platform slicing.

FORMAT.md specifies it.  The writer takes what the package step gathered
(the bundle's inputs and the files it stored) and the records earlier steps
left; the reader is what verify, inspect, decrypt and publish use.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .. import tensors
from ..errors import FormatVersionError, VerificationError

if TYPE_CHECKING:
    from ..contracts import ArtifactInputs, BundleInputs, ModelInputs
    from ..plan import InputSpec, OutputSpec

FORMAT_VERSION = 1
# Every format version this modelmake reads; a reader refuses anything else rather than guess.
READABLE_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
# The one encryption scheme of format version 1 (FORMAT.md, "Encrypted model files").
ENCRYPTION_SCHEME = "AES256_GCM_HKDF_1MB"
# An encrypted file's name in a bundle: the plaintext's name and this suffix (fixed for format version 1).
ENCRYPTED_SUFFIX = ".enc"


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise VerificationError(f"{path} is missing: this is not a modelmake bundle") from None
    except ValueError:
        raise VerificationError(f"{path} is not valid JSON") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        raise FormatVersionError(
            f"{path} has format_version {version!r}; this modelmake reads version {readable}: upgrade modelmake to read it"
        )
    return manifest


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
    reproducible = {k: _decimal(v) for k, v in measured.metrics.items() if k != "latency_ms"}
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
