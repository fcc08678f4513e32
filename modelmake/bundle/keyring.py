"""The keys one build uses: configured ones from the spec, or the workspace's development keys."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .. import layout
from . import keys
from .signing import public_key_hint

DEVELOPMENT = "development"
RELEASE = "release"


@dataclass(frozen=True)
class BuildKeys:
    signing_key: ec.EllipticCurvePrivateKey
    signing: str  # DEVELOPMENT or RELEASE: what the manifest says about the signature
    data_key: bytes | None  # None: files stay clear


def build_keys(workspace: Path, signing_key: str | None, encrypt: bool, encryption_key: str | None) -> BuildKeys:
    """Resolve the spec's key references; fall back to development keys for what is not configured.

    spec.py already refuses a release build without configured keys, so a
    development key here always means a development build.  The development
    keys are created here when missing (the ``keys:development`` task makes
    them before any step that signs runs, so this is only a fallback).
    """
    workspace = Path(workspace)
    needs_development = signing_key is None or (encrypt and encryption_key is None)
    development = keys.development_keys(workspace) if needs_development else None
    if signing_key is None:
        assert development is not None
        private_key, signing = development[0], DEVELOPMENT
    else:
        private_key = _configured_signing_key(workspace, signing_key)
        signing = RELEASE
    data_key = None
    if encrypt and encryption_key is None:
        assert development is not None
        data_key = development[2]
    elif encrypt and encryption_key is not None:
        data_key = _configured_data_key(workspace, encryption_key)
    return BuildKeys(signing_key=private_key, signing=signing, data_key=data_key)


def development_files(signing_key: str | None, encrypt: bool, encryption_key: str | None) -> list[str]:
    """The development key files (relative to the workspace) a build with these references signs or encrypts with."""
    files = []
    if signing_key is None:
        files.append(layout.DEVELOPMENT_SIGNING_KEY)
    if encrypt and encryption_key is None:
        files.append(layout.DEVELOPMENT_DATA_KEY)
    return files


def fingerprints(workspace: Path, signing_key: str | None, encrypt: bool, encryption_key: str | None) -> dict:
    """Identifies the configured keys for change detection without revealing them, and creates nothing.

    A development key is identified only as such: the tasks that use one
    depend on its file (``development_files``), so a new development key
    rebuilds them through the file's digest instead.
    """
    workspace = Path(workspace)
    public_key = None
    if signing_key is not None:
        public_key = public_key_hint(_configured_signing_key(workspace, signing_key).public_key())
    data_id = None
    if encrypt:
        data_id = DEVELOPMENT
        if encryption_key is not None:
            data_key = _configured_data_key(workspace, encryption_key)
            data_id = hmac.new(data_key, b"modelmake data key id", hashlib.sha256).hexdigest()[:32]
    return {"signing": DEVELOPMENT if signing_key is None else RELEASE, "public_key": public_key, "data_key": data_id}


def _configured_signing_key(workspace: Path, reference: str) -> ec.EllipticCurvePrivateKey:
    return keys.load_private_key(
        keys.resolve_key_reference(reference, workspace, setting="bundle.signing.key"), source=f"bundle.signing.key ({reference})"
    )


def _configured_data_key(workspace: Path, reference: str) -> bytes:
    return keys.load_data_key(
        keys.resolve_key_reference(reference, workspace, setting="bundle.encryption.key"), source=f"bundle.encryption.key ({reference})"
    )
