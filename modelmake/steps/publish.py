"""Step `publish`: add the built bundle to the download repository and sign a new index (OTA.md)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..bundle.keyring import build_keys
from ..contracts import PublishJob
from ..repository.offer import Offer
from ..repository.publish import publish as publish_bundle
from ..repository.rollouts import steered

SECONDS_PER_DAY = 86_400


def _signing_time() -> int:
    """SOURCE_DATE_EPOCH when set, so that two publishes of one build give the same repository; else now.

    spec.py has already refused a SOURCE_DATE_EPOCH that is not a whole number, before any task ran.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return int(time.time()) if epoch is None else int(epoch)


def publish(job: PublishJob) -> str:
    keys = job.keys
    # Publishing signs only: no data key is made or read for it.
    signing_key = build_keys(Path.cwd(), keys.signing_key, False, None).signing_key
    channels = {c: {m: Offer.from_document(offer) for m, offer in models.items()} for c, models in job.channels.items()}
    result = publish_bundle(
        Path(job.repository),
        bundle_dir=Path(job.bundle_dir),
        archives={key: Path(path) for key, path in job.archives.items()},
        preferences=job.preferences,
        targets={
            name: {"platform": t.platform, "chipsets": list(t.chipsets), "min_os_version": t.min_os_version}
            for name, t in job.targets.items()
        },
        # A release under a staged rollout is offered as its latest logged decision left it (repository/rollouts.py).
        channels=steered(Path(job.repository), channels, signing_key.public_key()),
        signing_key=signing_key,
        now=_signing_time(),
        expires_after=job.expires_after_days * SECONDS_PER_DAY,
    )
    if not result.changed:
        return f"repository {job.repository}: already offers this (index version {result.index_version}); nothing written"
    return (
        f"repository {job.repository}: index version {result.index_version}, {result.new_blobs} new blobs, "
        f"channels {', '.join(sorted(job.channels))}"
    )
