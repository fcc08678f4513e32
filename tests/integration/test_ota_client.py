"""The reference OTA client against a real HTTP server: updates, every refusal OTA.md lists, bucketing, variant choice.

Each refusal is checked twice: the typed error, and that the model installed before is
still the installed one and still loads and runs (OTA.md: "Every error leaves the
installed model as it was").
"""
from __future__ import annotations

import base64
import json
import time

import pytest

from modelmake.bundle import keys
from modelmake.bundle.signing import public_key_hint
from modelmake.client import (
    BlobMismatchError,
    Client,
    DecryptionError,
    DeviceProfile,
    DownloadError,
    IndexExpiredError,
    IndexFormatError,
    IndexSignatureError,
    Limits,
    NoCompatibleVariantError,
    OversizedResponseError,
    RollbackError,
    UnknownKeyError,
    UpdateStatus,
    bucket,
)
from modelmake.client.index import verify_index
from modelmake.client.offer import choose_release, choose_variant
from modelmake.repository.index import read_unverified, sign_index
from modelmake.repository.offer import Arm, Offer
from modelmake.repository.publish import publish

from tests.support.ota_server import (
    BUNDLE,
    DATA_KEY,
    GENERIC,
    SIGNING_KEY,
    TARGETS,
    RepositoryServer,
    VariantFile,
    expected_output,
    make_bundle,
    run_model,
    tflite_models,
)

NOW = int(time.time())
DAY = 86_400
DEVICE = DeviceProfile(platform="android", chipset="Tensor G3", os_version="34", app_version="5.2",
                       device_id="device-1", formats=frozenset({"tflite"}))


@pytest.fixture(scope="session")
def models() -> dict[str, bytes]:
    return tflite_models()


class Repository:
    """A repository directory served over loopback HTTP, bundles to publish into it, and clients for it."""

    def __init__(self, tmp_path, server: RepositoryServer, models: dict[str, bytes]):
        self.tmp, self.server, self.models = tmp_path, server, models

    def publish(self, version: str, *, encrypt: bool = True, channels=None, signing_key=SIGNING_KEY,
                files=None, targets=TARGETS, preferences=None) -> bytes:
        """Publish ``version`` of model "digits" (the real model, on the generic target by default); return index.json."""
        files = files or [VariantFile(GENERIC, "fp32", "tflite", self.models[version])]
        bundle = make_bundle(self.tmp / "bundles", version, files, encrypt=encrypt)
        publish(
            self.server.root, bundle_dir=bundle, archives={"all": next((self.tmp / "bundles").glob(f"*-{version}-*.zip"))},
            preferences=preferences or {}, targets=targets,
            channels=channels or {"stable": {"digits": Offer(version=version)}},
            signing_key=signing_key, now=NOW, expires_after=30 * DAY,
        )
        return self.index()

    def index(self) -> bytes:
        return (self.server.root / "index.json").read_bytes()

    def blob(self, version: str) -> str:
        release = json.loads((self.server.root / f"releases/{version}/release.json").read_bytes())
        [variant] = release["models"]["digits"]["variants"].values()
        return variant["blob"]

    def client(self, **overrides) -> Client:
        """A new client on the same cache: what the app gets after a restart."""
        settings = dict(base_url=self.server.url, cache_dir=self.tmp / "cache", repository=BUNDLE,
                        trusted_keys=[keys.public_key_pem(SIGNING_KEY)], data_key=DATA_KEY,
                        limits=Limits(backoff=0), clock=lambda: NOW + 60)
        return Client(**{**settings, **overrides})


@pytest.fixture
def repo(tmp_path, models):
    with RepositoryServer(tmp_path / "repository") as server:
        yield Repository(tmp_path, server, models)


def assert_installed(client: Client, version: str) -> None:
    """``version`` is the installed model, and its file loads and gives that version's output."""
    installed = client.installed("digits")
    assert installed is not None and installed.version == version
    assert run_model(installed.path) == expected_output(version)


def installed_v1_then_published_v2(repo: Repository, ssl_context=None, **publish_v2) -> Client:
    repo.publish("1.0.0")
    client = repo.client(ssl_context=ssl_context)
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    repo.publish("2.0.0", **publish_v2)
    return client


# --- updating ---------------------------------------------------------------------------

def test_an_update_installs_the_release_then_the_next_one_keeping_the_previous(repo):
    repo.publish("1.0.0")
    first = repo.client().update(DEVICE, "digits")
    assert (first.status, first.installed.version, first.index_version) == (UpdateStatus.INSTALLED, "1.0.0", 1)
    assert_installed(repo.client(), "1.0.0")
    again = repo.client().update(DEVICE, "digits")
    assert again.status is UpdateStatus.CURRENT
    assert len(repo.server.requests_for(repo.blob("1.0.0"))) == 1  # the current model is not downloaded again

    repo.publish("2.0.0")
    second = repo.client().update(DEVICE, "digits")
    assert (second.status, second.installed.version, second.index_version) == (UpdateStatus.INSTALLED, "2.0.0", 2)
    client = repo.client()
    assert_installed(client, "2.0.0")
    previous = client.previous("digits")
    assert previous.version == "1.0.0" and run_model(previous.path) == expected_output("1.0.0")


def test_an_index_naming_an_older_release_rolls_the_device_back(repo):
    client = installed_v1_then_published_v2(repo)
    client.update(DEVICE, "digits")
    repo.publish("2.0.0", channels={"stable": {"digits": Offer(version="1.0.0")}})
    result = client.update(DEVICE, "digits")
    assert (result.status, result.index_version) == (UpdateStatus.INSTALLED, 3)
    assert_installed(client, "1.0.0")
    assert client.previous("digits").version == "2.0.0"


def test_an_unencrypted_release_installs_without_a_data_key(repo):
    repo.publish("1.0.0", encrypt=False)
    client = repo.client(data_key=None)
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert_installed(client, "1.0.0")


# --- refusals: each leaves the installed model current -----------------------------------

def test_a_tampered_blob_is_refused_and_the_next_update_recovers(repo):
    client = installed_v1_then_published_v2(repo)
    blob = repo.blob("2.0.0")
    original = (repo.server.root / blob).read_bytes()
    repo.server.serve(blob, original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(BlobMismatchError):
        client.update(DEVICE, "digits")
    assert_installed(repo.client(), "1.0.0")
    repo.server.clear()
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert_installed(client, "2.0.0")


def test_a_replayed_older_index_is_refused_after_a_restart(repo):
    old_index = repo.publish("1.0.0")
    repo.client().update(DEVICE, "digits")
    repo.publish("2.0.0")
    repo.client().update(DEVICE, "digits")
    repo.server.serve("index.json", old_index)
    with pytest.raises(RollbackError):
        repo.client().update(DEVICE, "digits")
    assert_installed(repo.client(), "2.0.0")


def test_a_different_index_with_the_trusted_version_is_refused(repo):
    client = installed_v1_then_published_v2(repo)
    client.update(DEVICE, "digits")
    forged = read_unverified(repo.index())
    forged["channels"]["stable"]["models"]["digits"]["rollout_basis_points"] = 0  # same index_version, other content
    repo.server.serve("index.json", sign_index(forged, SIGNING_KEY))
    with pytest.raises(RollbackError):
        repo.client().update(DEVICE, "digits")
    assert_installed(client, "2.0.0")


def test_an_expired_index_is_refused(repo):
    installed_v1_then_published_v2(repo)
    with pytest.raises(IndexExpiredError):
        repo.client(clock=lambda: NOW + 31 * DAY).update(DEVICE, "digits")
    assert_installed(repo.client(), "1.0.0")


def _bad_signature(index: bytes) -> bytes:
    envelope = json.loads(index)
    document = json.loads(base64.b64decode(envelope["payload"]))
    document["expires"] = "2099-01-01T00:00:00Z"  # what a freeze attacker would like to change
    envelope["payload"] = base64.b64encode(json.dumps(document).encode()).decode()
    return json.dumps(envelope).encode()


def _two_signatures(index: bytes) -> bytes:
    envelope = json.loads(index)
    return json.dumps({**envelope, "signatures": envelope["signatures"] * 2}).encode()


@pytest.mark.parametrize("forge, error", [
    (lambda index: sign_index(read_unverified(index), keys.generate_signing_key()), UnknownKeyError),
    (_bad_signature, IndexSignatureError),
    (_two_signatures, IndexFormatError),
    (lambda index: b"<html>502 Bad Gateway</html>", IndexFormatError),
    (lambda index: sign_index({**read_unverified(index), "repository": "other"}, SIGNING_KEY), IndexFormatError),
    (lambda index: sign_index({**read_unverified(index), "format_version": 2}, SIGNING_KEY), IndexFormatError),
], ids=["unknown-key", "bad-signature", "two-signatures", "not-json", "other-repository", "format-version-2"])
def test_an_index_that_fails_a_check_is_refused(repo, forge, error):
    client = installed_v1_then_published_v2(repo)
    repo.server.serve("index.json", forge(repo.index()))
    with pytest.raises(error):
        client.update(DEVICE, "digits")
    assert_installed(client, "1.0.0")
    repo.server.clear()  # the refused index was not trusted: the genuine one is still accepted
    assert client.update(DEVICE, "digits").installed.version == "2.0.0"


def test_a_wrong_data_key_is_a_decryption_error(repo):
    installed_v1_then_published_v2(repo)
    with pytest.raises(DecryptionError):
        repo.client(data_key=bytes(32)).update(DEVICE, "digits")
    assert_installed(repo.client(), "1.0.0")


@pytest.mark.parametrize("fault", ["blob-endless", "blob-content-length", "index-endless"])
def test_an_oversized_response_is_refused(repo, fault):
    client = installed_v1_then_published_v2(repo)
    blob = repo.blob("2.0.0")
    if fault == "blob-endless":
        repo.server.endless(blob)
    elif fault == "blob-content-length":
        repo.server.announce_length(blob, (repo.server.root / blob).stat().st_size + 1)
    else:
        repo.server.endless("index.json")  # past the default limit of 8 MiB
    with pytest.raises(OversizedResponseError):
        client.update(DEVICE, "digits")
    assert_installed(client, "1.0.0")


def test_a_small_index_limit_refuses_a_larger_index(repo):
    installed_v1_then_published_v2(repo)
    with pytest.raises(OversizedResponseError):
        repo.client(limits=Limits(max_index_bytes=len(repo.index()) - 1, backoff=0)).update(DEVICE, "digits")
    assert_installed(repo.client(), "1.0.0")


# --- interrupted downloads ---------------------------------------------------------------

def test_a_dropped_download_resumes_with_a_range_request(repo):
    repo.publish("1.0.0")
    blob = repo.blob("1.0.0")
    repo.server.drop_after(blob, 300)
    client = repo.client()
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert [(r.range, r.status) for r in repo.server.requests_for(blob)] == [(None, 200), ("bytes=300-", 206)]
    assert_installed(client, "1.0.0")


def test_a_dropped_download_restarts_when_the_server_ignores_range(repo):
    repo.publish("1.0.0")
    blob = repo.blob("1.0.0")
    repo.server.drop_after(blob, 300)
    repo.server.ignore_range(blob)
    client = repo.client()
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert [(r.range, r.status) for r in repo.server.requests_for(blob)] == [(None, 200), ("bytes=300-", 200)]
    assert_installed(client, "1.0.0")


def test_a_download_that_keeps_failing_is_a_download_error_and_resumes_at_the_next_update(repo):
    client = installed_v1_then_published_v2(repo)
    blob = repo.blob("2.0.0")
    repo.server.drop_after(blob, 200, times=3)
    with pytest.raises(DownloadError):
        client.update(DEVICE, "digits")
    assert len(repo.server.requests_for(blob)) == 3  # three attempts by default
    assert_installed(client, "1.0.0")
    assert repo.client().update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert repo.server.requests_for(blob)[-1].range == "bytes=600-"  # what the three attempts got is kept
    assert_installed(client, "2.0.0")


# --- bucketing ---------------------------------------------------------------------------

def test_bucket_matches_the_spec_test_vectors():
    # SHA-256("modelmake-bucket-v1" || uint32_be(len) || field ...)[0:8] as uint64_be, mod 10000: ports check these.
    assert bucket("rollout", "acme", "digits", "1.0.0", "device-1") == 5041
    assert bucket("arm", "acme", "stable", "digits", "device-1") == 2442
    assert bucket("rollout", "acme-vision", "mobilenet", "1.4.0", "3f2a9c1e-7b4d-4e8a-9c6f-0d1e2f3a4b5c") == 4479
    assert (bucket("ab", "c"), bucket("a", "bc")) == (4242, 3557)  # length prefixes keep field lists apart
    assert bucket("é") == 5429  # UTF-8


DEVICES = [DeviceProfile("android", "x", "34", "5.2", f"device-{i}", frozenset({"tflite"})) for i in range(100_000)]


def offered(offer: Offer) -> dict[str, str | None]:
    decisions = (choose_release(offer, repository="acme", channel="stable", model="digits", device=d) for d in DEVICES)
    return {d.device_id: decision.version for d, decision in zip(DEVICES, decisions, strict=True)}


def test_a_rollout_admits_its_share_of_devices_and_raising_it_only_adds_devices():
    ten = {device for device, version in offered(Offer("2.0.0", 1000, None, (), None)).items() if version}
    assert 9_000 <= len(ten) <= 11_000
    again = {device for device, version in offered(Offer("2.0.0", 1000, None, (), None)).items() if version}
    assert again == ten
    fifty = offered(Offer("2.0.0", 5000, "1.0.0", (), None))
    admitted = {device for device, version in fifty.items() if version == "2.0.0"}
    assert 49_000 <= len(admitted) <= 51_000 and ten <= admitted
    assert set(fifty.values()) == {"1.0.0", "2.0.0"}  # the devices outside get previous
    other_release = {device for device, version in offered(Offer("3.0.0", 1000, None, (), None)).items() if version}
    assert len(other_release & ten) < 2_000  # each release reaches a different 10% first


def test_arms_split_near_their_weights_and_a_device_keeps_its_arm_across_releases():
    arms = (Arm("control", 5000, "1.0.0"), Arm("candidate", 3000, "2.0.0"), Arm("other", 2000, "3.0.0"))
    split = offered(Offer("2.0.0", 10_000, None, arms, None))
    counts = {version: list(split.values()).count(version) for version in ("1.0.0", "2.0.0", "3.0.0")}
    assert abs(counts["1.0.0"] - 50_000) <= 1_000 and abs(counts["2.0.0"] - 30_000) <= 1_000 and abs(counts["3.0.0"] - 20_000) <= 1_000
    next_release = offered(Offer("4.0.0", 10_000, None, arms, None))
    assert next_release == split


def test_an_app_older_than_min_app_version_is_offered_nothing(repo):
    repo.publish("1.0.0", channels={"stable": {"digits": Offer(version="1.0.0", min_app_version="5.10")}})
    old_app = repo.client().update(DEVICE, "digits")  # app 5.2 < 5.10: numbers, not strings
    assert (old_app.status, old_app.installed) == (UpdateStatus.NOT_OFFERED, None)
    new_app = repo.client().update(DeviceProfile("android", "x", "34", "5.10.0", "device-1", {"tflite"}), "digits")
    assert new_app.status is UpdateStatus.INSTALLED


# --- variant choice ----------------------------------------------------------------------

SELECTION_TARGETS = {
    GENERIC: {"platform": "android", "chipsets": [], "min_os_version": None},
    "pixel-8": {"platform": "android", "chipsets": ["Tensor G3"], "min_os_version": "34"},
    "pixel-9": {"platform": "android", "chipsets": ["Tensor G4"], "min_os_version": "35"},
    "apple-a17": {"platform": "ios", "chipsets": ["iPhone16,1"], "min_os_version": "17.0"},
}
SELECTION_FILES = [
    VariantFile(GENERIC, "fp32", "tflite", b"generic"),
    VariantFile("pixel-8", "int8", "tflite", b"pixel-8 int8"),
    VariantFile("pixel-8", "fp32", "onnx", b"pixel-8 onnx"),
    VariantFile("pixel-9", "fp32", "onnx", b"pixel-9 onnx"),
    VariantFile("apple-a17", "fp16", "coreml", b"apple-a17", platform="ios"),
]


@pytest.fixture
def selection_release(repo):
    """A release with a generic target, two chipset targets and an iOS one, as verified by the client."""
    repo.publish("1.0.0", encrypt=False, files=SELECTION_FILES, targets=SELECTION_TARGETS,
                 preferences={"digits.int8.tflite@pixel-8": 0, "digits.fp32.onnx@pixel-8": 1})
    keyring = {public_key_hint(SIGNING_KEY.public_key()): SIGNING_KEY.public_key()}
    return verify_index(repo.index(), keyring, repository=BUNDLE, now=NOW, trusted=None).releases["1.0.0"]


@pytest.mark.parametrize("platform, chipset, os_version, formats, chosen", [
    ("android", "Tensor G3", "34", {"tflite", "onnx"}, "digits.int8.tflite@pixel-8"),  # the chipset's target beats generic
    ("android", "tensor g3", "34", {"tflite"}, "digits.int8.tflite@pixel-8"),  # chipsets compare case-insensitively
    ("android", "Tensor G3", "34", {"onnx"}, "digits.fp32.onnx@pixel-8"),  # down the preference list to a format it runs
    ("android", "Tensor G3", "33", {"tflite", "onnx"}, "digits.fp32.tflite@android-arm64-cpu"),  # below min_os_version
    ("android", "Tensor G4", "35", {"tflite"}, "digits.fp32.tflite@android-arm64-cpu"),  # chipset target has no tflite
    ("android", "Tensor G4", "35.1", {"onnx"}, "digits.fp32.onnx@pixel-9"),
    ("android", "Snapdragon", "30", {"tflite"}, "digits.fp32.tflite@android-arm64-cpu"),  # an unknown chipset
    ("ios", "iPhone16,1", "17.4", {"coreml", "tflite"}, "digits.fp16.coreml@apple-a17"),
    ("ios", "iPhone16,1", "16.7", {"coreml"}, None),  # below min_os_version, and no generic iOS target
    ("android", "Tensor G4", "34", {"onnx"}, None),  # pixel-9 needs OS 35; generic has no onnx
])
def test_the_variant_for_a_device(selection_release, platform, chipset, os_version, formats, chosen):
    device = DeviceProfile(platform, chipset, os_version, "5.2", "device-1", formats)
    if chosen is None:
        with pytest.raises(NoCompatibleVariantError):
            choose_variant(selection_release, "digits", device)
    else:
        assert choose_variant(selection_release, "digits", device).id == chosen


def test_an_update_installs_the_chipset_variant_and_offers_nothing_to_a_device_without_one(repo, selection_release):
    client = repo.client(data_key=None)
    result = client.update(DEVICE, "digits")
    assert (result.status, result.installed.variant_id) == (UpdateStatus.INSTALLED, "digits.int8.tflite@pixel-8")
    assert result.installed.path.read_bytes() == b"pixel-8 int8"
    iphone = DeviceProfile("ios", "iPhone16,1", "16.7", "5.2", "device-1", {"coreml"})
    nothing = repo.client(data_key=None, cache_dir=repo.tmp / "iphone").update(iphone, "digits")
    assert (nothing.status, nothing.installed) == (UpdateStatus.NOT_OFFERED, None)
    assert "apple-a17 needs OS 17.0" in nothing.reason


# --- hostile servers: every one ends in an UpdateError, soon, with the installed model current ---

FAST = dict(timeout=0.3, backoff=0, attempts=2)  # periods of 0.3 s keep these tests to about a second each


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_slow_loris_index_is_cut_off_by_the_minimum_rate(repo, where):
    client = installed_v1_then_published_v2(repo)
    repo.server.trickle("index.json", 0.05, headers=where == "headers")  # 20 bytes/s, each byte well within the timeout
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"below the minimum rate of 1024 bytes/s"):
        repo.client(limits=Limits(**FAST)).update(DEVICE, "digits")
    assert time.monotonic() - started < 3  # two periods of 0.3 s, not 30 KB at 20 bytes/s
    assert len(repo.server.requests_for("index.json")) == 3  # the first update, then two attempts
    assert_installed(client, "1.0.0")


def test_a_download_past_its_deadline_stops_and_the_next_update_resumes_it(repo):
    client = installed_v1_then_published_v2(repo)
    blob = repo.blob("2.0.0")
    repo.server.trickle(blob, 0.002)  # fast enough for any minimum rate of 0 but slower than the deadline allows
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"did not download within the deadline of 0.4 s"):
        repo.client(limits=Limits(**FAST, deadline=0.4, min_rate=0)).update(DEVICE, "digits")
    assert time.monotonic() - started < 2
    assert_installed(client, "1.0.0")
    repo.server.clear()
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    resumed = repo.server.requests_for(blob)[-1]
    assert resumed.status == 206 and resumed.range.startswith("bytes=")  # the bytes it got before the deadline are kept
    assert_installed(client, "2.0.0")


def test_a_server_that_sends_nothing_is_a_download_error_after_the_timeout(repo):
    client = installed_v1_then_published_v2(repo)
    repo.server.trickle("index.json", 5.0, headers=True)  # the first byte, then silence
    with pytest.raises(DownloadError, match=r"the server sent nothing for 0.3 s"):
        repo.client(limits=Limits(**FAST, min_rate=0)).update(DEVICE, "digits")
    assert_installed(client, "1.0.0")


def nested(depth: int):
    return [nested(depth - 1)] if depth else []


@pytest.mark.parametrize("forge, message", [
    (lambda index: b"[" * 100_000 + b"]" * 100_000, "index.json nests arrays and objects more than 32 deep"),
    (lambda index: b'{"payload": ' + b"{" * 50_000, "index.json nests arrays and objects more than 32 deep"),
    (lambda index: sign_index({**read_unverified(index), "extra": nested(40)}, SIGNING_KEY),
     "the signed payload of index.json nests arrays and objects more than 32 deep"),
], ids=["deep-envelope", "deep-unterminated", "deep-signed-payload"])
def test_a_deeply_nested_index_is_an_index_format_error(repo, forge, message):
    client = installed_v1_then_published_v2(repo)
    repo.server.serve("index.json", forge(repo.index()))
    with pytest.raises(IndexFormatError) as refused:
        client.update(DEVICE, "digits")
    assert str(refused.value).startswith(message + ". The installed model, if any, is unchanged")
    assert_installed(client, "1.0.0")


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/index.json", "file:///etc/passwd", "data:,{}"])
def test_a_redirect_away_from_http_is_refused(repo, location):
    client = installed_v1_then_published_v2(repo)
    repo.server.redirect("index.json", location)
    with pytest.raises(DownloadError) as refused:
        client.update(DEVICE, "digits")
    assert str(refused.value).startswith(f"{repo.server.url}index.json redirects to {location}, "
                                         "which is not an http:// or https:// URL.")
    assert len(repo.server.requests_for("index.json")) == 2  # refused at once, not retried
    assert_installed(client, "1.0.0")


def test_a_redirect_to_another_http_url_is_followed_within_the_same_deadline(repo):
    client = installed_v1_then_published_v2(repo)
    blob = repo.blob("2.0.0")
    repo.server.serve("mirror/blob", (repo.server.root / blob).read_bytes())
    repo.server.redirect(blob, f"{repo.server.url}mirror/blob", status=307)
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert_installed(client, "2.0.0")
    repo.server.clear()
    repo.server.redirect("index.json", "index.json")  # a redirect loop
    with pytest.raises(DownloadError):
        client.update(DEVICE, "digits")


@pytest.fixture
def tls_repo(tmp_path, models):
    with RepositoryServer(tmp_path / "repository", tls=True) as server:
        yield Repository(tmp_path, server, models)


def test_an_https_repository_installs_and_its_slow_loris_and_downgrades_are_refused(tls_repo, tmp_path):
    client = installed_v1_then_published_v2(tls_repo, ssl_context=tls_repo.server.client_context)
    blob = tls_repo.blob("2.0.0")
    with RepositoryServer(tmp_path / "repository") as plain:  # the same files over plain http
        tls_repo.server.redirect(blob, f"{plain.url}{blob}")
        with pytest.raises(DownloadError, match=r"redirects to http://127.0.0.1:\d+/blobs/sha256/\w+, from https:// down to plain http://"):
            client.update(DEVICE, "digits")
        assert plain.requests == []
    tls_repo.server.clear()
    tls_repo.server.trickle(blob, 0.05)
    with pytest.raises(DownloadError, match=r"below the minimum rate of 1024 bytes/s"):
        tls_repo.client(limits=Limits(**FAST), ssl_context=tls_repo.server.client_context).update(DEVICE, "digits")
    assert_installed(client, "1.0.0")
    tls_repo.server.clear()
    with pytest.raises(DownloadError, match=r"CERTIFICATE_VERIFY_FAILED"):  # the system does not trust the certificate
        tls_repo.client().update(DEVICE, "digits")
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert_installed(client, "2.0.0")
