"""The local model store: decrypted model files and, per model, the record of which one is current.

    <root>/downloads/<blob sha256>.partial      a blob being downloaded (kept across runs to resume)
    <root>/models/<model>/<plaintext sha256>-<file name>   installed model files
    <root>/models/<model>/<plaintext sha256>-<file name>.baseline.json   each one's baseline, where the release has one
    <root>/models/<model>/install.json          {"current": record, "previous": record or null}

An install decrypts into a temporary file beside the models, fsyncs and renames it into
place, and only then replaces install.json (also by rename): the record is the single
switch that makes a model current, so a crash at any point leaves the old one current.
The previous model's file stays until the next successful install, so an app whose new
model fails to load can fall back to it (``previous``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from modelmake.bundle.manifest import ENCRYPTED_SUFFIX
from modelmake.bundle.streaming_aead import associated_data_for, decrypt_file
from modelmake.errors import DecryptionError as _AuthenticationFailed  # what streaming_aead raises

from .errors import DecryptionError
from .files import replace_durably, safe_name, write_atomically
from .index import Encryption, Release, Variant

RECORD = "install.json"


@dataclass(frozen=True)
class InstalledModel:
    model: str
    version: str
    variant_id: str
    format: str
    sha256: str  # of the blob as downloaded: with version and variant id, what "already installed" compares
    plaintext_sha256: str
    size: int  # of the model file
    path: Path  # the model file to load
    # Its baseline (FORMAT.md, "Baselines"), for client.telemetry.TelemetryRecorder; None where the release has none.
    baseline: Path | None = None

    def is_release(self, version: str, variant: Variant) -> bool:
        return (self.version, self.variant_id, self.sha256) == (version, variant.id, variant.sha256)


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def current(self, model: str) -> InstalledModel | None:
        """The current model, or None if none is installed (or the OS purged its file)."""
        return self._read(model).get("current")

    def previous(self, model: str) -> InstalledModel | None:
        """The model that was current before the current one, while its file is kept."""
        return self._read(model).get("previous")

    def partial_path(self, variant: Variant) -> Path:
        # Named by the blob's digest, so an interrupted download resumes only into the same file.
        return self.root / "downloads" / f"{variant.sha256}.partial"

    def partial_baseline_path(self, variant: Variant) -> Path:
        assert variant.baseline is not None
        return self.root / "downloads" / f"{variant.baseline.sha256}.partial"

    def install(
        self, model: str, release: Release, variant: Variant, blob: Path, data_key: bytes | None, *, baseline: Path | None = None
    ) -> InstalledModel:
        """Decrypt (if encrypted) and install the verified ``blob`` (and its verified ``baseline``); return the new
        current model."""
        folder = self._folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        plaintext_sha256 = variant.encryption.plaintext_sha256 if variant.encryption else variant.sha256
        name = PurePosixPath(variant.path).name.removesuffix(ENCRYPTED_SUFFIX)
        final = folder / f"{plaintext_sha256}-{name}"
        if variant.encryption is None:
            replace_durably(blob, final)  # already verified against the signed SHA-256 and fsynced
        else:
            staged = folder / f".{final.name}.incoming"
            _decrypt(blob, staged, release, variant, variant.encryption, data_key)
            replace_durably(staged, final)
            blob.unlink(missing_ok=True)
        kept_baseline = None
        if baseline is not None:
            kept_baseline = folder / f"{final.name}.baseline.json"
            replace_durably(baseline, kept_baseline)  # verified against the signed SHA-256 and fsynced
        installed = InstalledModel(model, release.version, variant.id, variant.format, variant.sha256, plaintext_sha256,
                                   final.stat().st_size, final, kept_baseline)
        old = self._read(model)
        previous = old.get("current")
        if previous is None or previous.path == final:  # reinstalling the same file keeps the older fallback
            previous = old.get("previous")
        write_atomically(folder / RECORD, json.dumps({"current": _record(installed), "previous": _record(previous)}).encode() + b"\n")
        # Only now is the new model current; everything but it and its fallback can go.
        kept = [m for m in (installed, previous) if m is not None]
        keep = {RECORD, *(m.path.name for m in kept), *(m.baseline.name for m in kept if m.baseline)}
        for leftover in folder.iterdir():
            if leftover.name not in keep and leftover.is_file():
                leftover.unlink(missing_ok=True)
        return installed

    def _folder(self, model: str) -> Path:
        return self.root / "models" / safe_name(model, "model name")

    def _read(self, model: str) -> dict[str, InstalledModel]:
        folder = self._folder(model)
        try:
            record = json.loads((folder / RECORD).read_bytes())
        except (FileNotFoundError, ValueError):  # never installed, or damaged: the next update installs afresh
            return {}
        out = {}
        for role in ("current", "previous"):
            entry = record.get(role) if isinstance(record, dict) else None
            if not isinstance(entry, dict):  # no entry (null), or not one this client wrote
                continue
            try:
                fields = {key: value for key, value in entry.items() if key not in ("file", "baseline")}
                baseline = folder / entry["baseline"] if isinstance(entry.get("baseline"), str) else None
                installed = InstalledModel(**fields, path=folder / entry["file"],
                                           baseline=baseline if baseline is not None and baseline.is_file() else None)
            except (TypeError, KeyError):  # not an entry this client wrote
                installed = None
            if installed is not None and installed.path.is_file():
                out[role] = installed
        return out


def _record(installed: InstalledModel | None) -> dict | None:
    if installed is None:
        return None
    record = asdict(installed)
    del record["path"]
    record["baseline"] = installed.baseline.name if installed.baseline else None
    return {**record, "file": installed.path.name}


def _decrypt(blob: Path, staged: Path, release: Release, variant: Variant, expected: Encryption, data_key: bytes | None) -> None:
    """Decrypt into ``staged`` (written atomically and fsynced) and check the plaintext the index names."""
    if data_key is None:
        raise DecryptionError(f"{variant.id} of release {release.version} is encrypted, and the client has no data key")
    # The associated data binds the file to its bundle, version and path: a blob moved from
    # another place in the repository fails to authenticate.
    associated_data = associated_data_for(release.bundle, release.version, variant.path)
    try:
        decrypt_file(blob, staged, data_key, associated_data)
    except _AuthenticationFailed as error:
        raise DecryptionError(f"{variant.id} of release {release.version} did not decrypt: {error}") from None
    digest, size = hashlib.sha256(), 0
    with open(staged, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    if (digest.hexdigest(), size) != (expected.plaintext_sha256, expected.plaintext_size):
        staged.unlink(missing_ok=True)
        raise DecryptionError(
            f"{variant.id} of release {release.version} decrypted to {size} bytes with SHA-256 {digest.hexdigest()}, "
            f"but the index names {expected.plaintext_size} bytes with SHA-256 {expected.plaintext_sha256}"
        )
