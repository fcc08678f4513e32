"""The reference OTA client: fetch the signed index, choose a model file for this device, install it.

Read it beside OTA.md, which it implements step by step (``Client.update`` numbers the
steps); Kotlin and Swift ports follow the same modules:

    index.py     parse and verify the signed index              steps 2 to 7
    trust.py     the persisted highest index version            step 8
    offer.py     buckets, rollout, A/B arms, variant choice     step 9
    download.py  capped, resumable, verified download           steps 1 and 10
    transport.py the deadline and minimum rate; http(s) only    client limits
    install.py   decryption and the atomic install              steps 11 and 12

    client = Client(base_url="https://models.example.com/acme-vision/", cache_dir=..., state_dir=...,
                    repository="acme-vision", trusted_keys=[public_pem], data_key=key)
    result = client.update(DeviceProfile(...), "digits")   # raises an UpdateError, or says what happened
    model_path = client.installed("digits").path

One update runs at a time per cache directory (an app serializes them, e.g. in one worker).
"""
from __future__ import annotations

import enum
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.bundle.keys import DATA_KEY_SIZE, load_public_key
from modelmake.bundle.signing import public_key_hint
from modelmake.repository.index import INDEX_FILE

from .download import Downloader, Limits
from .errors import (
    BlobMismatchError,
    DecryptionError,
    DownloadError,
    IndexExpiredError,
    IndexFormatError,
    IndexSignatureError,
    NoCompatibleVariantError,
    OversizedResponseError,
    RollbackError,
    TrustStateError,
    UnknownKeyError,
    UpdateError,
)
from .files import safe_name
from .index import verify_index
from .install import InstalledModel, ModelStore
from .offer import DeviceProfile, bucket, choose_release, choose_variant
from .trust import TrustState, TrustStore

__all__ = [
    "BlobMismatchError", "Client", "DecryptionError", "DeviceProfile", "DownloadError", "IndexExpiredError",
    "IndexFormatError", "IndexSignatureError", "InstalledModel", "Limits", "NoCompatibleVariantError",
    "OversizedResponseError", "RollbackError", "TrustStateError", "UnknownKeyError", "UpdateError", "UpdateResult",
    "UpdateStatus", "bucket",
]


class UpdateStatus(enum.Enum):
    INSTALLED = "installed"  # a new model is current
    CURRENT = "current"  # the offered model already is the installed one
    NOT_OFFERED = "not_offered"  # nothing for this device now; whatever is installed stays


@dataclass(frozen=True)
class UpdateResult:
    status: UpdateStatus
    model: str
    installed: InstalledModel | None  # the current model after the update (None: none installed)
    index_version: int
    offered_version: str | None
    arm: str | None  # the A/B arm, for the app's analytics
    reason: str  # why, for logs (for NOT_OFFERED, what a NoCompatibleVariantError would say, among others)


class Client:
    def __init__(
        self,
        *,
        base_url: str,
        cache_dir: Path,
        repository: str,
        trusted_keys: Iterable[bytes | ec.EllipticCurvePublicKey],
        data_key: bytes | None = None,
        channel: str = "stable",
        state_dir: Path | None = None,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
    ):
        """``trusted_keys`` are P-256 public keys (PEM or key objects); ``data_key`` the bundle's raw 32-byte key.

        ``state_dir`` holds the trust state and defaults to ``cache_dir``; on a phone, point it
        at storage the OS never purges (Application Support, ``Context.getFilesDir()``).
        ``ssl_context`` sets the certificates an https:// repository is checked against
        (default: the system's).
        """
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} must be an http:// or https:// URL")
        if data_key is not None and len(data_key) != DATA_KEY_SIZE:
            raise ValueError(f"data_key must be the {DATA_KEY_SIZE} raw bytes of the bundle's key (decode its hex first)")
        keys = [k if isinstance(k, ec.EllipticCurvePublicKey) else load_public_key(k, source="a trusted key") for k in trusted_keys]
        if not keys:
            raise ValueError("trusted_keys is empty: give the public key the repository's index is signed with")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.repository = repository
        self.channel = channel
        self._keys = {public_key_hint(key): key for key in keys}
        self._data_key = data_key
        self._clock = clock
        self._store = ModelStore(Path(cache_dir))
        self._trust = TrustStore(Path(state_dir or cache_dir) / f"trust-{safe_name(repository, 'repository')}.json")
        self._http = Downloader(limits, ssl_context=ssl_context)

    def installed(self, model: str) -> InstalledModel | None:
        return self._store.current(model)

    def previous(self, model: str) -> InstalledModel | None:
        """The model current before the last install: the fallback if the new one fails to load."""
        return self._store.previous(model)

    def update(self, device: DeviceProfile, model: str) -> UpdateResult:
        """Bring ``model`` to what the repository offers this device; raises an UpdateError if it cannot."""
        safe_name(model, "model name")  # an app's mistake is a ValueError, before anything is fetched
        data = self._http.fetch_index(self._url(INDEX_FILE))  # 1
        trusted = self._trust.load()
        index = verify_index(data, self._keys, repository=self.repository, now=self._clock(), trusted=trusted)  # 2-7
        if trusted != TrustState(index.index_version, index.sha256):  # 8: before acting on the index
            self._trust.save(TrustState(index.index_version, index.sha256))
        current = self._store.current(model)

        def result(status: UpdateStatus, reason: str, version=None, arm=None, installed=current) -> UpdateResult:
            return UpdateResult(status, model, installed, index.index_version, version, arm, reason)

        offer = index.offer(self.channel, model)  # 9
        if offer is None:
            return result(UpdateStatus.NOT_OFFERED, f"channel {self.channel!r} of index {index.index_version} offers no {model}")
        decision = choose_release(offer, repository=self.repository, channel=self.channel, model=model, device=device)
        if decision.version is None:
            return result(UpdateStatus.NOT_OFFERED, decision.reason)
        release = index.releases[decision.version]
        try:
            variant = choose_variant(release, model, device)
        except NoCompatibleVariantError as error:
            return result(UpdateStatus.NOT_OFFERED, error.detail, decision.version, decision.arm)
        if current is not None and current.is_release(release.version, variant):
            return result(UpdateStatus.CURRENT, f"{variant.id} of {release.version} is installed", decision.version, decision.arm)
        blob = self._http.fetch_blob(self._url(variant.blob), self._store.partial_path(variant),  # 10
                                     size=variant.size, sha256=variant.sha256)
        baseline = None
        if variant.baseline is not None:  # 10, for the file's baseline: what its telemetry is binned by
            baseline = self._http.fetch_blob(self._url(variant.baseline.blob), self._store.partial_baseline_path(variant),
                                             size=variant.baseline.size, sha256=variant.baseline.sha256)
        installed = self._store.install(model, release, variant, blob, self._data_key, baseline=baseline)  # 11, 12
        return result(UpdateStatus.INSTALLED, f"installed {variant.id} of {release.version} ({decision.reason})",
                      decision.version, decision.arm, installed)

    def _url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path)
