"""Verify a bundle directory or archive: signature, file set, format version, manifest consistency."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .. import fsutil
from ..errors import TamperedFileError, VerificationError
from .archive import extract_archive
from .manifest import files_of, read_manifest
from .signing import verify_directory


@contextmanager
def opened_bundle(path: Path):
    """Yield a directory holding the bundle: the directory itself, or a hardened extraction of an archive."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise VerificationError(f"{path} does not exist: give a bundle directory or a .zip bundle")
    with tempfile.TemporaryDirectory(prefix="modelmake-verify-") as scratch:
        destination = Path(scratch) / "bundle"
        extract_archive(path, destination)
        yield destination


def verify_bundle_directory(directory: Path, public_key: ec.EllipticCurvePublicKey) -> dict:
    """Return the manifest of a bundle whose signature, files and format version all check out."""
    verify_directory(directory, public_key)
    manifest = read_manifest(directory)
    try:
        variants = [(vid, v["file"], v["sha256"], v["size"]) for m in manifest["models"].values() for vid, v in m["variants"].items()]
    except (AttributeError, KeyError, TypeError) as error:
        raise VerificationError(
            f"{directory}/manifest.json is signed but malformed ({type(error).__name__}: {error}): it was not written by modelmake"
        ) from None
    for variant_id, path, digest, size in variants:
        file = Path(directory) / path
        if not file.is_file() or fsutil.sha256_file(file) != digest or file.stat().st_size != size:
            raise TamperedFileError(f"{path} does not match its entry in the manifest ({variant_id}): the bundle was built wrongly")
    return manifest


def verify_bundle(path: Path, public_key: ec.EllipticCurvePublicKey) -> tuple[dict, int]:
    """Verify a bundle directory or .zip; return its manifest and the number of model files."""
    with opened_bundle(path) as directory:
        manifest = verify_bundle_directory(directory, public_key)
    return manifest, len(files_of(manifest))
