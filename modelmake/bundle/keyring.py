"""The keys one build uses: configured ones from the spec, or the workspace's development keys."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from . import keys
from .signing import public_key_hint

DEVELOPMENT = "development"
RELEASE = "release"


@dataclass(frozen=True)
class BuildKeys:
    signing_key: ec.EllipticCurvePrivateKey
    signing: str  # DEVELOPMENT or RELEASE: what the manifest says about the signature
    data_key: bytes | None  # None: files stay clear

    def fingerprints(self) -> dict:
        """Identifies the keys for change detection without revealing them: a rebuild follows a key change."""
        data_id = None
        if self.data_key is not None:
            data_id = hmac.new(self.data_key, b"modelmake data key id", hashlib.sha256).hexdigest()[:32]
        return {"signing": self.signing, "public_key": public_key_hint(self.signing_key.public_key()), "data_key": data_id}


def build_keys(workspace: Path, signing_key: str | None, encrypt: bool, encryption_key: str | None) -> BuildKeys:
    """Resolve the spec's key references; fall back to development keys for what is not configured.

    spec.py already refuses a release build without configured keys, so a
    development key here always means a development build.
    """
    workspace = Path(workspace)
    needs_development = signing_key is None or (encrypt and encryption_key is None)
    development = keys.development_keys(workspace) if needs_development else None
    if signing_key is None:
        private_key, signing = development[0], DEVELOPMENT
    else:
        private_key = keys.load_private_key(
            keys.resolve_key_reference(signing_key, workspace, setting="bundle.signing.key"), source=f"bundle.signing.key ({signing_key})"
        )
        signing = RELEASE
    data_key = None
    if encrypt:
        if encryption_key is None:
            data_key = development[2]
        else:
            data_key = keys.load_data_key(
                keys.resolve_key_reference(encryption_key, workspace, setting="bundle.encryption.key"), source=f"bundle.encryption.key ({encryption_key})"
            )
    return BuildKeys(signing_key=private_key, signing=signing, data_key=data_key)
