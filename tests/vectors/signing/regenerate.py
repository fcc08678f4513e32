"""Rewrite the signing test vector in this directory.

    .venv/bin/python tests/vectors/signing/regenerate.py

The test suite only reads these files; run this when the signature format changes on
purpose, and review the diff. The private key is derived from a published constant, so
running this twice gives the same files.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.bundle import keys, signing

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "bundle"
KEY_SEED = b"modelmake PUBLIC TEST signing key v1"
KEY_LABEL = (
    b"PUBLIC TEST KEY for the modelmake signing test vector. It is published in the\n"
    b"modelmake repository: anyone can sign with it. Never trust or ship it.\n"
)
FILES = {
    "manifest.json": b'{"bundle":"acme-vision","format":1,"version":"1.4.0"}\n',
    "files/digits.bin": bytes(range(256)),
    "files/labels.txt": b"zero\none\ntwo\n",
}


def vector_signing_key() -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(KEY_SEED).digest(), "big")
    return ec.derive_private_key(scalar, ec.SECP256R1())


def main() -> None:
    key = vector_signing_key()
    for name, data in FILES.items():
        path = BUNDLE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # The .pem.txt names keep these files out of the repository's *.pem ignore rule.
    (HERE / "test-signing-key.pem.txt").write_bytes(KEY_LABEL + keys.private_key_pem(key))
    (HERE / "public.pem.txt").write_bytes(keys.public_key_pem(key))
    signing.sign_directory(BUNDLE, key)
    signing.verify_directory(BUNDLE, key.public_key())
    print(f"wrote {BUNDLE / 'model.sig'}")


if __name__ == "__main__":
    main()
