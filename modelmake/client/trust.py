"""The trust state: the highest index this device has accepted (OTA.md, step 8).

One small JSON file per repository, ``{"index_version": n, "sha256": "<hex of index.json>"}``,
replaced atomically. It must outlive app restarts and must not sit where the OS purges
caches: losing it re-opens the door to replaying an old signed index (a rollback).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import TrustStateError
from .files import write_atomically

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrustState:
    index_version: int
    sha256: str  # of the index file's bytes as fetched, so an equal version must be the very same index


class TrustStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> TrustState | None:
        """The trusted state, or None before the first accepted index."""
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise TrustStateError(f"the trust state {self.path} is not valid JSON ({error})") from None
        version = document.get("index_version") if isinstance(document, dict) else None
        digest = document.get("sha256") if isinstance(document, dict) else None
        if type(version) is not int or not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise TrustStateError(f"the trust state {self.path} lacks an integer index_version and a SHA-256")
        return TrustState(version, digest)

    def save(self, state: TrustState) -> None:
        write_atomically(self.path, json.dumps({"index_version": state.index_version, "sha256": state.sha256}).encode() + b"\n")
