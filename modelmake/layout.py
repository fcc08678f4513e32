"""The workspace's file names and where every output lives under build/.

Paths are relative to the workspace, which is doit's working directory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .bundle import manifest as bundle_manifest
from .formats import backend

if TYPE_CHECKING:
    from .plan import Artifact

SPEC_FILE = "models.yaml"
WORKSPACE_PROFILES = "targets"  # a workspace's own chipset profiles
BUILD = "build"
DEP_FILE = f"{BUILD}/.doit.db"
# The workspace's development keys: outside build/, so nothing under build/ is ever secret.
DEVELOPMENT_KEYS = "keys/dev"
DEVELOPMENT_SIGNING_KEY = f"{DEVELOPMENT_KEYS}/signing.pem"
DEVELOPMENT_PUBLIC_KEY = f"{DEVELOPMENT_KEYS}/signing.pub.pem"
DEVELOPMENT_DATA_KEY = f"{DEVELOPMENT_KEYS}/data.key"


def source_dir(model: str) -> str:
    return f"{BUILD}/sources/{model}"


def source_record(model: str) -> str:
    """Written last by the source step; downstream tasks depend on it rather than on the model directory."""
    return f"{source_dir(model)}/source.json"


def source_keras_model(model: str) -> str:
    """A tf-keras recipe's model as it built it (Keras v3 file), which a training variant wraps and fine-tunes."""
    return f"{source_dir(model)}/model.keras"


def trained_dir(model: str, variant: str) -> str:
    return f"{BUILD}/trained/{model}/{variant}"


def trained_record(model: str, variant: str) -> str:
    """The fine-tuned model's record (a source record), written last by the train step."""
    return f"{trained_dir(model, variant)}/source.json"


def dataset(model: str, role: str) -> str:
    return f"{BUILD}/data/{model}/{role}.npz"


def reference_metrics(model: str) -> str:
    return f"{BUILD}/reference/{model}.json"


def reference_outputs(model: str) -> str:
    return f"{BUILD}/reference/{model}.npz"


def artifact_file_name(artifact: Artifact) -> str:
    return f"{artifact.model}.{artifact.variant}{backend(artifact.format).suffix}"


ARTIFACTS = f"{BUILD}/artifacts"  # <target>/<file> and its record <file>.json
METRICS = f"{BUILD}/metrics"  # <target>/<artifact>.json


def artifact_file(artifact: Artifact) -> str:
    return f"{ARTIFACTS}/{artifact.target}/{artifact_file_name(artifact)}"


def artifact_record(artifact: Artifact) -> str:
    return artifact_file(artifact) + ".json"


def artifact_metrics(artifact: Artifact) -> str:
    return f"{METRICS}/{artifact.target}/{artifact.name}.json"


def log_file(task_name: str) -> str:
    kind, _, name = task_name.partition(":")
    return f"{BUILD}/logs/{kind}/{name or kind}.log"


# What modelmake keeps for itself under build/: the graph cache and the failure records.
STATE = f"{BUILD}/.modelmake"
FAILURES = f"{STATE}/failures"


def failure_record(task_name: str) -> str:
    """Where the runner records a failed task's exit code and message, until the task succeeds."""
    kind, _, name = task_name.partition(":")
    return f"{FAILURES}/{kind}/{name or kind}.json"


def bundle_dir(bundle: str, version: str) -> str:
    return f"{BUILD}/bundles/{bundle}/{version}"


def bundle_file_path(artifact: Artifact, encrypted: bool) -> str:
    """An artifact's path inside the bundle; encrypted files say so in their name."""
    return f"files/{artifact.target}/{artifact_file_name(artifact)}" + (bundle_manifest.ENCRYPTED_SUFFIX if encrypted else "")


def bundle_archive(bundle: str, version: str, platform: str | None = None) -> str:
    """The whole bundle as one archive, or one platform's slice of it."""
    suffix = f"-{platform}" if platform else ""
    return f"{BUILD}/bundles/{bundle}/{bundle}-{version}{suffix}.zip"


# The download repository `doit publish` writes unless publish.repository names another directory.
DEFAULT_REPOSITORY = f"{BUILD}/repository"


def report_dir(bundle: str, version: str) -> str:
    return f"{BUILD}/reports/{bundle}/{version}"


EXPORTS = f"{BUILD}/exports"  # <model>/<format>-<options><suffix> and its record <file>.json


def export_name(model: str, format: str, options: dict) -> str:
    """An export's name in its task name, export:<model>.<format>-<options>: digits.onnx-opset17.

    ``model`` is what the export is of: a model's name, or a name of its own for
    another source model of it (a fine-tuned one).
    """
    return f"{model}.{_export_kind(format, options)}"


def _export_kind(format: str, options: dict) -> str:
    return "-".join([format, *(f"{key}{value}" for key, value in sorted(options.items()))])


def export_file(model: str, format: str, options: dict) -> str:
    return f"{EXPORTS}/{model}/{_export_kind(format, options)}{backend(format).suffix}"


def export_prepared_file(model: str, format: str, options: dict, kind: str) -> str:
    """The exported float model as the format's quantizers take it, beside the export (ExportJob.out_prepared)."""
    return f"{EXPORTS}/{model}/{_export_kind(format, options)}.prepared-{kind}{backend(format).suffix}"


def export_record(model: str, format: str, options: dict) -> str:
    """Written last by the export step; convert tasks depend on it rather than on the exported file."""
    return export_file(model, format, options) + ".json"
