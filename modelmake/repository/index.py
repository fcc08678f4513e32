"""The signed index of a download repository: its document, its envelope, and what may change it.

The index is a DSSE envelope (as the bundle's ``model.sig`` carries one) whose payload is
the canonical JSON of the index document; OTA.md specifies both. One file, not a document
and a detached signature, so that a CDN serving a stale copy of one of two files can never
make a client see a signature that does not belong to the index it got.
"""
from __future__ import annotations

import base64
import calendar
import json
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..bundle.signing import pae, public_key_hint
from ..fsutil import canonical_json, canonical_json_document

INDEX_FORMAT_VERSION = 1
INDEX_PAYLOAD_TYPE = "application/vnd.modelmake.index.v1+json"
INDEX_FILE = "index.json"

# RFC 6979 nonces: the same index and key give the same bytes, so publishing twice is a no-op.
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # always UTC


def timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> int:
    return calendar.timegm(time.strptime(text, TIMESTAMP_FORMAT))


def sign_index(document: dict, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The bytes of index.json: ``document`` in a DSSE envelope signed with ``private_key``."""
    payload = canonical_json(document)
    signature = private_key.sign(pae(payload, INDEX_PAYLOAD_TYPE), _ECDSA)
    envelope = {
        "payloadType": INDEX_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": public_key_hint(private_key.public_key()), "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return canonical_json_document(envelope)


def read_unverified(data: bytes) -> dict:
    """The document inside an index this repository wrote itself (the publisher trusts its own output)."""
    return json.loads(base64.b64decode(json.loads(data)["payload"]))
