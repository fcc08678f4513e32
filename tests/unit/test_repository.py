"""Publishing into a download repository: immutable releases, a signed index written last, idempotence, rollback."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.bundle import keys
from modelmake.bundle.signing import pae, public_key_hint
from modelmake.errors import PublishError
from modelmake.repository.index import INDEX_PAYLOAD_TYPE
from modelmake.repository.offer import Offer
from modelmake.repository.publish import publish

NOW = int(time.time())
DAY = 86_400
TARGETS = {"pixel-8": {"platform": "android", "chipsets": ["Tensor G3"], "min_os_version": "34"}}
SIGNING_KEY = keys.generate_signing_key()


def make_bundle(root: Path, version: str, models: dict[str, bytes]) -> tuple[Path, dict[str, Path]]:
    """A bundle directory as the package step leaves it (manifest and files; publishing reads nothing else) and its archive."""
    bundle = root / "bundles" / version
    variants = {}
    for model, content in models.items():
        path = f"files/pixel-8/{model}.fp32.tflite"
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_bytes(content)
        variants[model] = {
            f"{model}.fp32.tflite@pixel-8": {
                "target": "pixel-8", "platform": "android", "format": "tflite", "precision": "fp32",
                "file": path, "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
            }
        }
    manifest = {
        "format_version": 1, "bundle": "acme", "version": version, "signing": "development",
        "targets": {"pixel-8": {"platform": "android", "soc": "Google Tensor G3", "min_os": "Android 14"}},
        "models": {m: {"variants": v} for m, v in variants.items()},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive = root / "bundles" / f"acme-{version}.zip"
    archive.write_bytes(b"archive of " + version.encode())
    return bundle, {"all": archive}


def publish_version(repository: Path, bundle_dir: Path, archives, channels: dict | None = None, now: int = NOW, models=("digits",)):
    version = json.loads((bundle_dir / "manifest.json").read_text())["version"]
    return publish(
        repository,
        bundle_dir=bundle_dir,
        archives=archives,
        preferences={},
        targets=TARGETS,
        channels=channels or {"stable": {m: Offer(version=version) for m in models}},
        signing_key=SIGNING_KEY,
        now=now,
        expires_after=30 * DAY,
    )


def index_document(repository: Path) -> dict:
    """The index's document, after checking its signature as a client would."""
    envelope = json.loads((repository / "index.json").read_bytes())
    assert envelope["payloadType"] == INDEX_PAYLOAD_TYPE
    [signature] = envelope["signatures"]
    assert signature["keyid"] == public_key_hint(SIGNING_KEY.public_key())
    payload = base64.b64decode(envelope["payload"])
    SIGNING_KEY.public_key().verify(base64.b64decode(signature["sig"]), pae(payload, INDEX_PAYLOAD_TYPE), ec.ECDSA(hashes.SHA256()))
    return json.loads(payload)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_repository_holds_blobs_by_digest_the_release_and_a_signed_index(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    result = publish_version(tmp_path / "repo", bundle, archives)
    digest = hashlib.sha256(b"model one").hexdigest()
    assert set(tree(tmp_path / "repo")) == {
        f"blobs/sha256/{digest}", "releases/1.0.0/release.json", "releases/1.0.0/acme-1.0.0.zip", "index.json",
    }
    document = index_document(tmp_path / "repo")
    assert (result.index_version, result.changed, result.new_blobs) == (1, True, 1)
    assert document["index_version"] == 1 and document["repository"] == "acme"
    assert document["expires"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 30 * DAY))
    variant = document["releases"]["1.0.0"]["models"]["digits"]["variants"]["digits.fp32.tflite@pixel-8"]
    assert variant["blob"] == f"blobs/sha256/{digest}" and variant["size"] == len(b"model one")
    assert document["releases"]["1.0.0"]["targets"] == TARGETS
    assert json.loads((tmp_path / "repo/releases/1.0.0/release.json").read_bytes()) == document["releases"]["1.0.0"]


def test_publishing_the_same_bundle_twice_changes_nothing(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    publish_version(tmp_path / "repo", bundle, archives)
    before = tree(tmp_path / "repo")
    again = publish_version(tmp_path / "repo", bundle, archives, now=NOW + DAY)
    assert (again.changed, again.index_version, again.new_blobs) == (False, 1, 0)
    assert tree(tmp_path / "repo") == before


def test_the_same_bundle_and_time_give_byte_identical_repositories(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    publish_version(tmp_path / "first", bundle, archives)
    publish_version(tmp_path / "second", bundle, archives)
    assert tree(tmp_path / "first") == tree(tmp_path / "second")


def test_an_index_past_half_its_lifetime_is_signed_again_with_the_next_version(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    publish_version(tmp_path / "repo", bundle, archives)
    result = publish_version(tmp_path / "repo", bundle, archives, now=NOW + 16 * DAY)
    assert (result.changed, result.index_version) == (True, 2)
    assert index_document(tmp_path / "repo")["published"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 16 * DAY))


def test_a_rollback_offers_the_older_release_under_a_higher_index_version(tmp_path):
    repo = tmp_path / "repo"
    old, old_archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    new, new_archives = make_bundle(tmp_path, "1.1.0", {"digits": b"model two"})
    publish_version(repo, old, old_archives)
    publish_version(repo, new, new_archives)
    assert index_document(repo)["channels"]["stable"]["models"]["digits"]["version"] == "1.1.0"
    result = publish_version(repo, new, new_archives, channels={"stable": {"digits": Offer(version="1.0.0")}})
    document = index_document(repo)
    assert result.index_version == 3
    assert document["channels"]["stable"]["models"]["digits"]["version"] == "1.0.0"
    assert set(document["releases"]) == {"1.0.0"}
    # Both releases' blobs stay: a later index may offer either again.
    assert len(list((repo / "blobs/sha256").iterdir())) == 2


def test_a_staged_rollout_quotes_both_releases(tmp_path):
    repo = tmp_path / "repo"
    old, old_archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    new, new_archives = make_bundle(tmp_path, "1.1.0", {"digits": b"model two"})
    publish_version(repo, old, old_archives)
    offer = Offer(version="1.1.0", rollout_basis_points=1000, previous="1.0.0")
    publish_version(repo, new, new_archives, channels={"stable": {"digits": offer}})
    document = index_document(repo)
    assert document["channels"]["stable"]["models"]["digits"] == offer.document()
    assert set(document["releases"]) == {"1.0.0", "1.1.0"}


def test_a_published_version_never_changes(tmp_path):
    repo = tmp_path / "repo"
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    publish_version(repo, bundle, archives)
    before = tree(repo)
    changed, changed_archives = make_bundle(tmp_path / "rebuilt", "1.0.0", {"digits": b"model one, retrained"})
    with pytest.raises(PublishError, match="release 1.0.0 is already published .* raise bundle.version"):
        publish_version(repo, changed, changed_archives)
    # The new blob may stay (nothing names it); the index and the release are untouched.
    after = tree(repo)
    assert {k: v for k, v in after.items() if not k.startswith("blobs/")} == {k: v for k, v in before.items() if not k.startswith("blobs/")}


def test_a_channel_naming_an_unpublished_version_says_which_exist_and_writes_no_index(tmp_path):
    repo = tmp_path / "repo"
    bundle, archives = make_bundle(tmp_path, "1.1.0", {"digits": b"model two"})
    with pytest.raises(PublishError, match=r"names version 1.0.0, which was never published .* name one of: 1.1.0"):
        publish_version(repo, bundle, archives, channels={"stable": {"digits": Offer(version="1.0.0")}})
    assert not (repo / "index.json").exists()


def test_a_channel_naming_a_model_the_release_lacks_is_refused(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    with pytest.raises(PublishError, match="release 1.0.0 of acme has no model glyphs; it has digits"):
        publish_version(tmp_path / "repo", bundle, archives, models=("digits", "glyphs"))


def test_a_bundle_file_that_differs_from_its_manifest_is_not_published(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    (bundle / "files/pixel-8/digits.fp32.tflite").write_bytes(b"model 1!!")
    with pytest.raises(PublishError, match="does not match the digest its manifest records"):
        publish_version(tmp_path / "repo", bundle, archives)
    assert not (tmp_path / "repo" / "blobs" / "sha256").exists() or not any((tmp_path / "repo" / "blobs" / "sha256").iterdir())


def test_an_index_that_would_already_be_expired_is_refused(tmp_path):
    bundle, archives = make_bundle(tmp_path, "1.0.0", {"digits": b"model one"})
    with pytest.raises(PublishError, match="already past: .* SOURCE_DATE_EPOCH"):
        publish_version(tmp_path / "repo", bundle, archives, now=NOW - 31 * DAY)
    assert not (tmp_path / "repo" / "index.json").exists()
