"""A model installed over the air comes with its baseline, verified like the model, for the app's telemetry."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from modelmake.bundle import keys
from modelmake.client import BlobMismatchError, Client, DeviceProfile, Limits, UpdateStatus
from modelmake.client.telemetry import TelemetryContext, TelemetryRecorder
from modelmake.repository.offer import Offer
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
DEVICE = DeviceProfile(platform="android", chipset="Tensor G3", os_version="34", app_version="5.2",
                       device_id="device-1", formats=frozenset({"tflite"}))


def baseline_for(variant_id: str, file: str, version: str) -> dict:
    edges = [i / 20 for i in range(21)]
    return {"format": 1, "artifact": variant_id, "model": "digits", "variant": "fp32", "target": GENERIC, "file": file,
            "measured_on": "artifact", "samples": 4, "budgets": {"max_latency_ms": 5.0}, "inputs": {},
            "outputs": {"y": {"kind": "tensor", "values": {"statistic": "mean", "edges": edges, "counts": [4] + [0] * 19}}},
            "note": version}


class Repository:
    def __init__(self, tmp_path, server):
        self.tmp, self.server, self.models = tmp_path, server, tflite_models()

    def publish(self, version: str, *, with_baseline: bool = True, offer: str | None = None) -> None:
        file = VariantFile(GENERIC, "fp32", "tflite", self.models[version])
        bundle = make_bundle(self.tmp / "bundles", version, [file], encrypt=True)
        if with_baseline:
            manifest = json.loads((bundle / "manifest.json").read_text())
            variant = manifest["models"]["digits"]["variants"][file.id]
            data = json.dumps(baseline_for(file.id, variant["file"], version), sort_keys=True).encode()
            path = f"baselines/{file.id}.json"
            (bundle / "baselines").mkdir(exist_ok=True)
            (bundle / path).write_bytes(data)
            variant["baseline"] = {"file": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            (bundle / "manifest.json").write_text(json.dumps(manifest))
        publish(
            self.server.root, bundle_dir=bundle, archives={"all": next((self.tmp / "bundles").glob(f"*-{version}-*.zip"))},
            preferences={}, targets=TARGETS, channels={"stable": {"digits": Offer(version=offer or version)}},
            signing_key=SIGNING_KEY, now=NOW, expires_after=30 * 86_400,
        )

    def variant(self, version: str) -> dict:
        release = json.loads((self.server.root / f"releases/{version}/release.json").read_bytes())
        [variant] = release["models"]["digits"]["variants"].values()
        return variant

    def client(self) -> Client:
        return Client(base_url=self.server.url, cache_dir=self.tmp / "cache", repository=BUNDLE,
                      trusted_keys=[keys.public_key_pem(SIGNING_KEY)], data_key=DATA_KEY, limits=Limits(backoff=0),
                      clock=lambda: NOW + 60)


@pytest.fixture
def repo(tmp_path):
    with RepositoryServer(tmp_path / "repository") as server:
        yield Repository(tmp_path, server)


def test_the_release_lists_the_baseline_and_the_client_installs_it_beside_the_model(repo):
    repo.publish("1.0.0")
    entry = repo.variant("1.0.0")["baseline"]
    assert entry["path"] == "baselines/digits.fp32.tflite@android-arm64-cpu.json" and entry["blob"].endswith(entry["sha256"])
    assert repo.client().update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    installed = repo.client().installed("digits")  # after a restart too
    assert run_model(installed.path) == expected_output("1.0.0")
    assert hashlib.sha256(installed.baseline.read_bytes()).hexdigest() == entry["sha256"]
    recorder = TelemetryRecorder(installed.baseline, TelemetryContext(device="device-1", version=installed.version,
                                                                      chipset=DEVICE.chipset, app_version="5.2", channel="stable"))
    assert recorder.record()["artifact"] == installed.variant_id


def test_a_release_without_a_baseline_installs_with_none_and_the_previous_keeps_its_own(repo):
    repo.publish("1.0.0")
    client = repo.client()
    client.update(DEVICE, "digits")
    repo.publish("2.0.0", with_baseline=False)
    assert "baseline" not in repo.variant("2.0.0")
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert client.installed("digits").baseline is None
    assert client.previous("digits").baseline.is_file()


def test_a_tampered_baseline_is_refused_and_the_installed_model_stays(repo):
    repo.publish("1.0.0", with_baseline=False)
    client = repo.client()
    client.update(DEVICE, "digits")
    repo.publish("2.0.0")
    blob = repo.variant("2.0.0")["baseline"]["blob"]
    original = (repo.server.root / blob).read_bytes()
    repo.server.serve(blob, original.replace(b'"samples": 4', b'"samples": 5'))
    with pytest.raises(BlobMismatchError):
        client.update(DEVICE, "digits")
    assert repo.client().installed("digits").version == "1.0.0"
    repo.server.clear()
    assert client.update(DEVICE, "digits").status is UpdateStatus.INSTALLED
    assert repo.client().installed("digits").baseline.read_bytes() == original


def test_a_baseline_entry_that_leaves_the_repository_is_an_index_format_error():
    from modelmake.client import IndexFormatError
    from modelmake.client.index import _variant

    variant = {"target": GENERIC, "platform": "android", "format": "tflite", "precision": "fp32", "path": "files/a/m.tflite",
               "blob": "blobs/sha256/" + "a" * 64, "sha256": "a" * 64, "size": 3, "encryption": None}
    good = {"path": "baselines/x.json", "blob": "blobs/sha256/" + "b" * 64, "sha256": "b" * 64, "size": 9}
    assert _variant("x", {**variant, "baseline": good}, "v").baseline.size == 9
    assert _variant("x", variant, "v").baseline is None
    with pytest.raises(IndexFormatError, match=r"v.baseline.blob is not a path inside the repository"):
        _variant("x", {**variant, "baseline": {**good, "blob": "../../etc/passwd"}}, "v")
    with pytest.raises(IndexFormatError, match="v.baseline.sha256"):
        _variant("x", {**variant, "baseline": {**good, "sha256": "nope"}}, "v")
