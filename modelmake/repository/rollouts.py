"""The decision log of guarded rollouts: rollouts.jsonl in the repository, append-only and chained.

Each line is one decision (advance, hold, roll back, or none for want of evidence) with its evidence
and the index it left in force. Every line carries the SHA-256 of the line before it and is signed
with the key that signs the index (ECDSA P-256 over the canonical JSON of the rest of the line), so a
line changed, removed or reordered breaks the chain or its signature, and the next decision refuses
to be written on top of a rewritten history. Lines cut from the end leave a shorter log that still
verifies: keep the bucket's object versioning on. A log whose last decision names a higher index
version than the repository's index is out of sync, and refused.

The log also steers ``doit publish``: while a release is under a staged
rollout, the offer last published for it (``offer`` of its latest decision) is what publishing offers
again, so a rebuild neither restarts the rollout nor undoes a rollback.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import RolloutLogError
from ..fsutil import canonical_json
from .offer import Offer

LOG_FILE = "rollouts.jsonl"


def _chain(line: bytes | None) -> str | None:
    return None if line is None else hashlib.sha256(line).hexdigest()


_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _signed_part(entry: dict) -> bytes:
    return canonical_json({k: v for k, v in entry.items() if k != "signature"})


def read_log(repository: Path, public_key: ec.EllipticCurvePublicKey | None = None) -> list[dict]:
    """Every decision, oldest first, after checking the chain (and each line's signature, given the key).

    RolloutLogError names the first line that breaks it.
    """
    path = Path(repository) / LOG_FILE
    if not path.exists():
        return []
    entries, previous = [], None
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise RolloutLogError(f"{path}:{number} is not JSON: the decision log was edited; restore it from the bucket") from None
        if not isinstance(entry, dict) or entry.get("sequence") != number or entry.get("chain") != _chain(previous):
            raise RolloutLogError(
                f"{path}:{number} does not follow the line before it (sequence or chain differ): the decision log was "
                "rewritten; restore it from the bucket, since a decision log is only ever appended to"
            )
        if public_key is not None:
            try:
                public_key.verify(base64.b64decode(entry.get("signature", "")), _signed_part(entry), _ECDSA)
            except (InvalidSignature, ValueError):
                raise RolloutLogError(
                    f"{path}:{number}: its signature does not verify with the repository's key: the decision log was "
                    "rewritten; restore it from the bucket, since a decision log is only ever appended to"
                ) from None
        if not line.endswith(b"\n"):
            raise RolloutLogError(f"{path}:{number} is cut short: an append was interrupted; restore the log from the bucket")
        entries.append(entry)
        previous = line
    return entries


def append_decision(repository: Path, entry: dict, signing_key: ec.EllipticCurvePrivateKey) -> dict:
    """Append ``entry`` (with its sequence, chain and signature) as one line, flushed to disk; return it."""
    path = Path(repository) / LOG_FILE
    existing = read_log(repository, signing_key.public_key())
    last = path.read_bytes().splitlines(keepends=True)[-1] if existing else None
    entry = {**entry, "sequence": len(existing) + 1, "chain": _chain(last)}
    entry["signature"] = base64.b64encode(signing_key.sign(_signed_part(entry), _ECDSA)).decode("ascii")
    line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())
    return entry


def latest_offer(entries: list[dict], channel: str, model: str, version: str) -> Offer | None:
    """The offer the last decision about ``version`` of ``model`` on ``channel`` published, or None."""
    for entry in reversed(entries):
        if (entry.get("channel"), entry.get("model"), entry.get("version")) == (channel, model, version) and entry.get("offer"):
            return Offer.from_document(entry["offer"])
    return None


def steered(repository: Path, channels: Mapping[str, Mapping[str, Offer]],
            public_key: ec.EllipticCurvePublicKey | None = None) -> dict[str, dict[str, Offer]]:
    """``channels`` with each offer under a logged rollout replaced by the one its latest decision published."""
    entries = read_log(repository, public_key)
    return {
        channel: {model: latest_offer(entries, channel, model, offer.version) or offer for model, offer in models.items()}
        for channel, models in channels.items()
    }
