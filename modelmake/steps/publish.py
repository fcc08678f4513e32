"""Step `publish`: add the built bundle to the download repository and sign a new index (OTA.md)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..bundle.keyring import build_keys
from ..repository.offer import Offer
from ..repository.publish import publish as publish_bundle

SECONDS_PER_DAY = 86_400


def _signing_time() -> int:
    """SOURCE_DATE_EPOCH when set, so that two publishes of one build give the same repository; else now.

    spec.py has already refused a SOURCE_DATE_EPOCH that is not a whole number, before any task ran.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return int(time.time()) if epoch is None else int(epoch)


def publish(
    bundle_dir: str,
    archives: dict,
    repository: str,
    preferences: dict,
    targets: dict,
    channels: dict,
    expires_after_days: int,
    keys: dict,
) -> str:
    result = publish_bundle(
        Path(repository),
        bundle_dir=Path(bundle_dir),
        archives={key: Path(path) for key, path in archives.items()},
        preferences=preferences,
        targets=targets,
        channels={c: {m: Offer.from_document(offer) for m, offer in models.items()} for c, models in channels.items()},
        signing_key=build_keys(Path.cwd(), **keys).signing_key,
        now=_signing_time(),
        expires_after=expires_after_days * SECONDS_PER_DAY,
    )
    if not result.changed:
        return f"repository {repository}: already offers this (index version {result.index_version}); nothing written"
    return f"repository {repository}: index version {result.index_version}, {result.new_blobs} new blobs, channels {', '.join(sorted(channels))}"
