"""Verify a bundle directory or archive: signature, file set, format version, manifest consistency.

An archive is judged before anything in it is used, and nothing is extracted to judge
it: the reader checks the whole container, then ``model.sig`` and ``manifest.json`` are
read from it (each bounded in size) and checked, and only then are the files they vouch
for read, each bounded by the size the manifest declares for it. Files are written to a
scratch directory only when a caller needs them on disk (``decrypt``), and only the
model files the manifest names. FORMAT.md ("Verifying a bundle: the order of checks")
is the specification.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import ModelmakeError, SignatureFormatError, TamperedFileError, VerificationError
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest, read_manifest
from .signing import (
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    check_files,
    is_ignored,
    verify_directory_digests,
    verify_signature,
)
from .zipreader import ArchiveReader


@dataclass(frozen=True)
class OpenedBundle:
    """A judged bundle: its manifest, and a directory holding its files (for an archive, those extracted)."""

    manifest: dict
    directory: Path | None  # None for an archive opened without extracting


@contextmanager
def opened_bundle(path: Path, public_key: ec.EllipticCurvePublicKey | None = None, *, extract: bool = False) -> Iterator[OpenedBundle]:
    """Open a bundle directory or archive, verified with ``public_key`` when one is given.

    Without a key only the manifest is judged (format version, structure, safe paths).
    For an archive, ``extract`` puts the manifest's model files in a scratch directory
    for the duration; without it nothing is written anywhere.
    """
    path = Path(path)
    if path.is_dir():
        manifest = verify_bundle_directory(path, public_key) if public_key else read_manifest(path)
        yield OpenedBundle(manifest, path)
        return
    if not path.is_file():
        raise VerificationError(f"{path} does not exist: give a bundle directory or a .zip bundle")
    with ArchiveReader(path) as reader, ExitStack() as cleanup:
        scratch: list[Path] = []

        def scratch_directory() -> Path:
            # Made only once the signature and the manifest have passed: a refused archive touches no disk.
            if not scratch:
                scratch.append(cleanup.enter_context(_scratch_directory()))
            return scratch[0]

        manifest = _judge_archive(reader, public_key, scratch_directory if extract else None)
        yield OpenedBundle(manifest, scratch_directory() if extract else None)


@contextmanager
def extracted_bundle(path: Path, public_key: ec.EllipticCurvePublicKey | None = None) -> Iterator[tuple[dict, Path]]:
    """(manifest, directory holding its model files) of a bundle directory or archive, as ``opened_bundle``."""
    with opened_bundle(path, public_key, extract=True) as bundle:
        yield bundle.manifest, bundle.directory or Path(path)  # an archive's is always its scratch directory


def verify_bundle_directory(directory: Path, public_key: ec.EllipticCurvePublicKey) -> dict:
    """Return the manifest of a bundle whose signature, files and format version all check out."""
    digests = verify_directory_digests(directory, public_key)
    manifest = read_manifest(directory)
    sizes = {name: (Path(directory) / name).stat().st_size for name in digests}
    _check_variants(manifest, digests, sizes)
    return manifest


def verify_bundle(path: Path, public_key: ec.EllipticCurvePublicKey) -> tuple[dict, int]:
    """Verify a bundle directory or .zip; return its manifest and the number of model files."""
    with opened_bundle(path, public_key) as bundle:
        return bundle.manifest, len(variant_files(bundle.manifest))


def variant_files(manifest: dict) -> dict[str, dict]:
    """Each model file of a judged manifest, by path, with its variant."""
    return {v["file"]: v for model in manifest["models"].values() for v in model["variants"].values()}


def _check_variants(manifest: dict, digests: dict[str, str], sizes: dict[str, int]) -> None:
    """Step 7: every variant's file is there with the digest and size the manifest gives it."""
    for model in manifest["models"].values():
        for variant_id, variant in model["variants"].items():
            path = variant["file"]
            if digests.get(path) != variant["sha256"] or sizes.get(path) != variant["size"]:
                raise TamperedFileError(
                    f"{path} does not match its entry in the manifest ({variant_id}): the bundle was built wrongly"
                )
            baseline = variant.get("baseline")
            if baseline and (digests.get(baseline["file"]) != baseline["sha256"] or sizes.get(baseline["file"]) != baseline["size"]):
                raise TamperedFileError(
                    f"{baseline['file']} does not match its entry in the manifest ({variant_id} baseline): "
                    "the bundle was built wrongly"
                )


# --- archives ----------------------------------------------------------------------


def _judge_archive(
    reader: ArchiveReader, public_key: ec.EllipticCurvePublicKey | None, scratch: Callable[[], Path] | None
) -> dict:
    """The archive's manifest, once everything the key can vouch for checks out; extract into ``scratch()`` if given."""

    def where(name: str) -> str:
        return f"{name} in {reader.path}"

    signed: dict[str, str] | None = None
    if public_key is not None:
        signed = _verified_signature(reader, public_key, where(SIGNATURE_NAME))
    raw = _bounded_read(reader, MANIFEST, MAX_MANIFEST_BYTES, where(MANIFEST))
    if signed is not None:
        check_files(signed, {**signed, MANIFEST: hashlib.sha256(raw).hexdigest()}, reader.path)
    manifest = parse_manifest(raw, where(MANIFEST))

    # Only now is it known how large each file may be: what the manifest declares.
    variants = variant_files(manifest)
    wanted = set(signed or ()) | (set(variants) if scratch is not None else set())
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for name in sorted(wanted - {MANIFEST}):
        entry = reader.entries.get(name)
        if entry is None:
            continue  # a signed file not there was refused above; a variant's file is checked when it is used
        if name in variants:
            if entry.size != variants[name]["size"]:
                raise TamperedFileError(
                    f"{where(name)} holds {entry.size} bytes, but manifest.json gives it {variants[name]['size']}: "
                    "the file was changed, or the manifest is another build's"
                )
        elif entry.size > MAX_MANIFEST_BYTES:
            raise VerificationError(
                f"{where(name)} is {entry.size} bytes, more than the limit of {MAX_MANIFEST_BYTES} for a file "
                "that no variant names"
            )
        if scratch is not None and name in variants:
            target = scratch().joinpath(*name.split("/"))
            _make_parent(target, reader.path)
            digests[name] = reader.extract_to(name, target)
        else:
            digest = hashlib.sha256()
            for chunk in reader.chunks(name):
                digest.update(chunk)
            digests[name] = digest.hexdigest()
        sizes[name] = entry.size
    if signed is not None:
        check_files(signed, {**digests, MANIFEST: signed[MANIFEST]}, reader.path)
        _check_variants(manifest, digests, sizes)
    return manifest


def _verified_signature(reader: ArchiveReader, public_key: ec.EllipticCurvePublicKey, where: str) -> dict[str, str]:
    """Steps 2 to 5 for an archive: the signature, the statement, and the file set from the entry names."""
    entry = reader.entries.get(SIGNATURE_NAME)
    if entry is None:
        raise SignatureFormatError(f"{where} is missing: the bundle is unsigned or its signature was removed")
    if entry.size > MAX_SIGNATURE_BYTES:
        raise SignatureFormatError(f"{where} is not a valid OMS signature: it is larger than the limit of {MAX_SIGNATURE_BYTES} bytes")
    signed, ignore = verify_signature(reader.read(SIGNATURE_NAME), public_key, where)
    present = [name for name in reader.entries if not is_ignored(name, ignore)]
    # Names alone show a missing or an extra file: refuse those before reading any of them.
    check_files(signed, {name: signed.get(name, "") for name in present}, reader.path)
    if MANIFEST not in signed:
        raise VerificationError(f"{reader.path} holds no manifest.json: this is not a modelmake bundle")
    return signed


def _bounded_read(reader: ArchiveReader, name: str, limit: int, where: str) -> bytes:
    entry = reader.entries.get(name)
    if entry is None:
        raise VerificationError(f"{where} is missing: this is not a modelmake bundle")
    if entry.size > limit:
        raise VerificationError(f"{where} is larger than the limit of {limit} bytes")
    return reader.read(name)


@contextmanager
def _scratch_directory() -> Iterator[Path]:
    try:
        scratch = tempfile.TemporaryDirectory(prefix="modelmake-bundle-")
    except OSError as error:
        raise ModelmakeError(
            f"cannot create a scratch directory in {_temporary_root()}: {error.strerror or error}; "
            "set TMPDIR to a writable directory with room"
        ) from None
    with scratch as directory:
        yield Path(directory)


def _temporary_root() -> str:
    try:
        return tempfile.gettempdir()
    except OSError:  # no usable temporary directory at all
        return "TMPDIR"


def _make_parent(target: Path, archive: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelmakeError(f"cannot extract from {archive} into {target.parent}: {error.strerror or error}") from None


@contextmanager
def judged_archive(path: Path, public_key: ec.EllipticCurvePublicKey) -> Iterator[tuple[dict, ArchiveReader]]:
    """(manifest, reader) of an archive whose signature and every signed file check out, to read signed files from.

    Nothing is extracted; a file read through the reader afterwards is one the signature vouched for by digest.
    """
    with ArchiveReader(Path(path)) as reader:
        yield _judge_archive(reader, public_key, None), reader
