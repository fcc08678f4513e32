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

from .. import fsutil
from ..bundle import manifest as bundle_manifest
from ..bundle.archive import write_archive
from ..bundle.keyring import build_keys
from ..bundle.provenance import DEFAULT_BUILDER_ID, provenance_statement
from ..bundle.signing import sign_directory
from ..bundle.streaming_aead import associated_data_for, encrypt_file
from ..contracts import ArtifactRecord, BundleInputs, PackageJob, SourceRecord
from ..versions import tool_versions
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
            if data_key is None:
                shutil.copyfile(artifact.file, destination)
                destination.chmod(0o644)
                stored[path] = {"sha256": fsutil.sha256_file(destination), "size": destination.stat().st_size}
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
            }
    return stored, crc32


def _dependencies(inputs: BundleInputs, spec_file: str) -> dict[str, str]:
    """Everything the bundle was built from, by digest: the spec, source files, data sets, labels."""
    dependencies = {spec_file: fsutil.sha256_file(spec_file)}
    for model in inputs.models:
        dependencies |= SourceRecord.read(model.source_record).source_files
        for path in [*model.datasets, *(output.labels for output in model.outputs)]:
            if path:
                dependencies[path] = fsutil.sha256_file(path)
    return dependencies


def _finish(directory: Path, manifest: dict, dependencies: dict, signing_key, builder_id: str) -> None:
    """Write manifest and provenance into a directory holding the model files, then sign it all."""
    manifest_bytes = fsutil.canonical_json_document(manifest)
    (directory / bundle_manifest.MANIFEST).write_bytes(manifest_bytes)
    # The model files' digests were taken as they were written (and are in the manifest): not read again.
    subjects = {bundle_manifest.MANIFEST: hashlib.sha256(manifest_bytes).hexdigest()}
    subjects |= {v["file"]: v["sha256"] for m in manifest["models"].values() for v in m["variants"].values()}
    statement = provenance_statement(
        subjects=subjects,
        dependencies=dependencies,
        external_parameters={"bundle": manifest["bundle"], "version": manifest["version"], "slice": manifest.get("slice", "all")},
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


def package(job: PackageJob) -> str:
    inputs, out_dir, archives, keys = job.inputs, job.out_dir, job.archives, job.keys
    # Before anything is written: a bundle with an artifact that failed, or a target with no passing variant, is refused.
    shipped = set().union(*(selection.shipped() for selection in choose(inputs.models).values()))
    # Creates the workspace's development keys on first use when the spec configures none.
    build = build_keys(Path.cwd(), keys.signing_key, keys.encrypt, keys.encryption_key)
    epoch = inputs.bundle.created
    builder_id = os.environ.get("MODELMAKE_BUILDER_ID", DEFAULT_BUILDER_ID)
    dependencies = _dependencies(inputs, job.spec_file)
    with fsutil.atomic_directory(out_dir) as staging:
        stored, crc32 = _store_files(staging, inputs, shipped, build.data_key)
        manifest = bundle_manifest.build_manifest(inputs, stored, build.signing)
        _finish(staging, manifest, dependencies, build.signing_key, builder_id)
        for platform in bundle_manifest.platforms(manifest):
            with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".slice-") as scratch:
                slice_dir = Path(scratch) / f"{manifest['bundle']}-{platform}"
                part = bundle_manifest.slice_for(manifest, platform)
                for path in bundle_manifest.files_of(part):
                    (slice_dir / path).parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(staging / path, slice_dir / path)
                _finish(slice_dir, part, dependencies, build.signing_key, builder_id)
                _archive_directory(slice_dir, archives[platform], epoch, crc32)
        _archive_directory(staging, archives["all"], epoch, crc32)
    count = len(bundle_manifest.files_of(manifest))
    encrypted = ", encrypted" if build.data_key else ""
    return f"bundle {out_dir}: {count} artifacts, {build.signing} signature{encrypted}; archives for {', '.join(sorted(archives))}"
