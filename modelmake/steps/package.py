"""Step `package`: the signed, versioned bundle, its per-platform slices and their archives.

Writes build/bundles/<bundle>/<version>/ (manifest.json, provenance.json,
model.sig, files/...) and, beside it, <bundle>-<version>.zip and one
<bundle>-<version>-<platform>.zip per platform, each slice a complete bundle
signed on its own.  The directory is staged and swapped into place whole, so
a killed build leaves the previous bundle or the new one, never a mix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import fsutil, layout
from ..bundle import manifest as bundle_manifest
from ..bundle.archive import write_archive
from ..bundle.keyring import build_keys
from ..bundle.provenance import DEFAULT_BUILDER_ID, provenance_statement
from ..bundle.signing import sign_directory
from ..bundle.streaming_aead import associated_data_for, encrypt_file
from ..contracts import ArtifactRecord, BundleInputs, MetricsRecord, PackageJob, SourceRecord, SpecDigest
from ..errors import PublishError
from ..repository.publish import RELEASE_FILE, release_dir
from ..versions import tool_versions
from ._baselines import document as baseline_document
from ._selection import choose


def _store_files(staging: Path, inputs: BundleInputs, shipped: set[str], data_key: bytes | None) -> tuple[dict, dict[str, int]]:
    """Copy (or encrypt) every artifact into the bundle.

    Returns what the manifest says of each stored file, and the CRC-32 of each encrypted
    one (measured while writing it, so the archives need not read it to compute it).
    """
    bundle = inputs.bundle
    stored, crc32 = {}, {}
    for model in inputs.models:
        for artifact in model.artifacts:
            if artifact.id not in shipped:
                continue
            path = artifact.bundle_path
            destination = staging / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            baseline = _store_baseline(staging, model, artifact)
            if data_key is None:
                shutil.copyfile(artifact.file, destination)
                destination.chmod(0o644)
                stored[path] = {"sha256": fsutil.sha256_file(destination), "size": destination.stat().st_size, "baseline": baseline}
                continue
            # The convert step recorded the artifact's digest; encrypt_file checks it against the bytes it
            # encrypts and measures the ciphertext as it writes, so neither file is read again here.
            # No fsync per file: the staged directory as a whole is what a killed build keeps or drops.
            encrypted = encrypt_file(
                Path(artifact.file),
                destination,
                data_key,
                associated_data_for(bundle.name, bundle.version, path),
                plaintext_sha256=ArtifactRecord.read(artifact.record).sha256,
                durable=False,
            )
            destination.chmod(0o644)
            crc32[path] = encrypted.crc32
            stored[path] = {
                "sha256": encrypted.sha256,
                "size": encrypted.size,
                "encryption": {
                    "scheme": bundle_manifest.ENCRYPTION_SCHEME,
                    "associated_data": {"bundle": bundle.name, "version": bundle.version, "path": path},
                    "plaintext_sha256": encrypted.plaintext_sha256,
                    "plaintext_size": encrypted.plaintext_size,
                },
                "baseline": baseline,
            }
    return stored, crc32


def _store_baseline(staging: Path, model, artifact) -> dict:
    """The artifact's baseline (FORMAT.md, "Baselines") as canonical JSON, never encrypted: it holds only
    aggregates of the evaluation data, and an app reads it before it has a key.  Returns the manifest's entry."""
    measured = MetricsRecord.read(artifact.metrics).baseline
    data = fsutil.canonical_json_document(baseline_document(artifact=artifact, model=model, measured=measured))
    path = f"{bundle_manifest.BASELINES}/{artifact.id}.json"
    destination = staging / path
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    destination.chmod(0o644)
    return {"file": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _dependencies(inputs: BundleInputs) -> dict[str, str]:
    """The files the bundle was built from, by digest: source files, data sets, labels (the spec is a parameter)."""
    dependencies: dict[str, str] = {}
    for model in inputs.models:
        dependencies |= SourceRecord.read(model.source_record).source_files
        for path in [*model.datasets, *(output.labels for output in model.outputs)]:
            if path:
                dependencies[path] = fsutil.sha256_file(path)
    return dependencies


def _finish(directory: Path, manifest: dict, dependencies: dict, spec: SpecDigest, signing_key, builder_id: str) -> None:
    """Write manifest and provenance into a directory holding the model files, then sign it all."""
    manifest_bytes = fsutil.canonical_json_document(manifest)
    (directory / bundle_manifest.MANIFEST).write_bytes(manifest_bytes)
    # The model files' digests were taken as they were written (and are in the manifest): not read again.
    subjects = {bundle_manifest.MANIFEST: hashlib.sha256(manifest_bytes).hexdigest()}
    subjects |= {v["file"]: v["sha256"] for m in manifest["models"].values() for v in m["variants"].values()}
    subjects |= bundle_manifest.baselines_of(manifest)
    statement = provenance_statement(
        subjects=subjects,
        dependencies=dependencies,
        external_parameters={
            "bundle": manifest["bundle"],
            "version": manifest["version"],
            "slice": manifest.get("slice", "all"),
            "spec": {"path": spec.path, "build_settings_sha256": spec.build_settings_sha256},
        },
        tools=tool_versions("modelmake", "tensorflow", "keras", "ai-edge-litert", "numpy"),
        builder_id=builder_id,
        started_on=manifest["created"],
    )
    (directory / bundle_manifest.PROVENANCE).write_bytes(fsutil.canonical_json_document(statement))
    for path in (bundle_manifest.MANIFEST, bundle_manifest.PROVENANCE):
        (directory / path).chmod(0o644)
    subject = "-".join(filter(None, (manifest["bundle"], manifest["version"], manifest.get("slice"))))
    sign_directory(directory, signing_key, subject_name=subject, digests=subjects)


def _link_or_copy(source: Path, destination: Path) -> None:
    """A slice holds the very bytes of the bundle's files: a hard link saves writing large models again."""
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, destination)


def _archive_directory(directory: Path, destination: str, epoch: int, crc32: dict[str, int]) -> None:
    """Archive ``directory``; ``crc32`` may name files it lacks (a slice holds some of the bundle's)."""
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    write_archive(Path(destination), files, epoch, crc32={name: crc32[name] for name in files if name in crc32})


def _remove_stale_outputs(inputs: BundleInputs, archives: dict[str, str]) -> None:
    """Remove what an earlier spec made and this one does not: slices of this version for platforms it no longer
    targets (they would still verify, describing another bundle), and the files of removed variants."""
    from ..spec.schema import TARGET_SCHEMA, composed_schemas

    bundle = inputs.bundle
    platforms = composed_schemas()[TARGET_SCHEMA]["properties"]["platform"]["enum"]
    for platform in platforms:
        if platform not in archives:
            Path(layout.bundle_archive(bundle.name, bundle.version, platform)).unlink(missing_ok=True)
    made = {path for model in inputs.models for a in model.artifacts for path in (a.file, a.record, a.metrics)}
    for root in (Path(layout.ARTIFACTS), Path(layout.METRICS)):
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_file() and path.as_posix() not in made:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _published_archives(repository: str | None, version: str) -> dict[str, str] | None:
    """The archive digests of ``version`` as the download repository holds it, or None when it is not published."""
    if repository is None:
        return None
    release = Path(repository) / release_dir(version) / RELEASE_FILE
    if not release.is_file():
        return None
    return {key: archive["sha256"] for key, archive in fsutil.read_json(release)["archives"].items()}


def _refuse_other_bytes(published: dict[str, str], staged: dict[str, Path], job: PackageJob) -> None:
    """A published version never changes: clients have it, and the repository keeps its bytes for good."""
    made = {key: fsutil.sha256_file(path) for key, path in staged.items()}
    if made == published:
        return
    differing = sorted(Path(job.archives[key]).name for key in made.keys() & published.keys() if made[key] != published[key])
    differing += sorted(f"{key} (only {'in this build' if key in made else 'published'})" for key in made.keys() ^ published.keys())
    bundle = job.inputs.bundle
    raise PublishError(
        f"{bundle.name} {bundle.version} is already published in {job.repository}, and this build makes other bytes "
        f"({', '.join(differing)} differ): nothing was written, and {job.out_dir} still holds the published bundle. "
        "Raise bundle.version to ship this change, or undo the change; channels, rollouts and pins are publish "
        "settings, which change without a new bundle"
    )


def package(job: PackageJob) -> str:
    inputs, out_dir, archives, keys = job.inputs, job.out_dir, job.archives, job.keys
    # Before anything is written: a bundle with an artifact that failed, or a target with no passing variant, is refused.
    shipped = set().union(*(selection.shipped() for selection in choose(inputs.models).values()))
    # Creates the workspace's development keys on first use when the spec configures none.
    build = build_keys(Path.cwd(), keys.signing_key, keys.encrypt, keys.encryption_key)
    epoch = inputs.bundle.created
    builder_id = os.environ.get("MODELMAKE_BUILDER_ID", DEFAULT_BUILDER_ID)
    dependencies = _dependencies(inputs)
    published = _published_archives(job.repository, inputs.bundle.version)
    with fsutil.atomic_directory(out_dir) as staging, tempfile.TemporaryDirectory(dir=staging.parent, prefix=".archives-") as made:
        # The archives are made beside the staged bundle, and both take their final names only once they are
        # known to match what is published under this version.
        staged = {key: Path(made) / Path(path).name for key, path in archives.items()}
        stored, crc32 = _store_files(staging, inputs, shipped, build.data_key)
        manifest = bundle_manifest.build_manifest(inputs, stored, build.signing)
        _finish(staging, manifest, dependencies, job.spec, build.signing_key, builder_id)
        for platform in bundle_manifest.platforms(manifest):
            with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".slice-") as scratch:
                slice_dir = Path(scratch) / f"{manifest['bundle']}-{platform}"
                part = bundle_manifest.slice_for(manifest, platform)
                for path in [*bundle_manifest.files_of(part), *bundle_manifest.baselines_of(part)]:
                    (slice_dir / path).parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(staging / path, slice_dir / path)
                _finish(slice_dir, part, dependencies, job.spec, build.signing_key, builder_id)
                _archive_directory(slice_dir, str(staged[platform]), epoch, crc32)
        _archive_directory(staging, str(staged["all"]), epoch, crc32)
        if published is not None:
            _refuse_other_bytes(published, staged, job)
        for key, archive in staged.items():
            os.replace(archive, archives[key])
    _remove_stale_outputs(inputs, archives)
    count = len(bundle_manifest.files_of(manifest))
    encrypted = ", encrypted" if build.data_key else ""
    return f"bundle {out_dir}: {count} artifacts, {build.signing} signature{encrypted}; archives for {', '.join(sorted(archives))}"
