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
    for model in manifest["models"].values():
        for variant_id, variant in model["variants"].items():
            file = Path(directory) / variant["file"]
            if not file.is_file() or fsutil.sha256_file(file) != variant["sha256"] or file.stat().st_size != variant["size"]:
                raise TamperedFileError(f"{variant['file']} does not match its entry in the manifest ({variant_id}): the bundle was built wrongly")
    return manifest


def verify_bundle(path: Path, public_key: ec.EllipticCurvePublicKey) -> tuple[dict, int]:
    """Verify a bundle directory or .zip; return its manifest and the number of model files."""
    with opened_bundle(path) as directory:
        manifest = verify_bundle_directory(directory, public_key)
    return manifest, len(files_of(manifest))
