"""Publish a built bundle into a static download repository (OTA.md specifies the layout).

    <repository>/
      blobs/sha256/<digest>               every model file as the bundle stores it, and each one's baseline; never changes
      releases/<version>/release.json     what a release holds, as the index quotes it; never changes
      releases/<version>/<bundle>-<version>[-<platform>].zip   the bundle and its platform slices
      index.json                          the signed index: the only file ever replaced

Everything but the index is immutable and written before it, each file to a temporary
name first, so a client (or a CDN) sees either the old index with everything it names, or
the new one with everything it names. Publishing what is already there changes nothing.
"""
from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .. import fsutil
from ..bundle.manifest import baselines_of, read_manifest
from ..errors import PublishError
from ..formats import FORMATS
from .index import INDEX_FILE, INDEX_FORMAT_VERSION, parse_timestamp, read_unverified, sign_index, timestamp
from .offer import Offer

BLOB_DIR = "blobs/sha256"
RELEASE_FILE = "release.json"
# An index that is unchanged and still has more than this share of its lifetime ahead is left as it is.
_REFRESH_AFTER = 0.5


@dataclass(frozen=True)
class PublishResult:
    index_version: int
    changed: bool  # False when the repository already held exactly this
    new_blobs: int


def release_dir(version: str) -> str:
    return f"releases/{version}"


def publish(
    repository: Path,
    *,
    bundle_dir: Path,
    archives: Mapping[str, Path],
    preferences: Mapping[str, int],
    targets: Mapping[str, dict],
    channels: Mapping[str, Mapping[str, Offer]],
    signing_key: ec.EllipticCurvePrivateKey,
    now: int,
    expires_after: int,
) -> PublishResult:
    """Add the bundle in ``bundle_dir`` to ``repository`` and sign an index offering ``channels``.

    ``archives`` maps "all" and each platform to the bundle's archives; ``preferences`` gives
    each variant id its position in its target's list in the spec (lower is preferred);
    ``targets`` gives each target's device match (platform, chipsets, min_os_version).
    """
    repository, bundle_dir = Path(repository), Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    release = _release_entry(manifest, archives, preferences, targets)
    variants = [v for m in release["models"].values() for v in m["variants"].values()]
    new_blobs = sum(_store_blob(repository, bundle_dir / v["path"], v["sha256"]) for v in variants)
    new_blobs += sum(_store_blob(repository, bundle_dir / path, digest) for path, digest in sorted(baselines_of(manifest).items()))
    folder = repository / release_dir(manifest["version"])
    for key, archive in sorted(archives.items()):
        _store_immutable(folder / Path(archive).name, Path(archive), release["archives"][key]["sha256"], manifest["version"])
    entry = fsutil.canonical_json_document(release)
    _store_immutable(folder / RELEASE_FILE, entry, hashlib.sha256(entry).hexdigest(), manifest["version"])

    releases = _offered_releases(repository, manifest["bundle"], channels)
    document = {
        "format_version": INDEX_FORMAT_VERSION,
        "repository": manifest["bundle"],
        "channels": {c: {"models": {m: entry.document() for m, entry in sorted(models.items())}} for c, models in sorted(channels.items())},
        "releases": releases,
    }
    index_path = repository / INDEX_FILE
    previous = read_unverified(index_path.read_bytes()) if index_path.exists() else None
    if previous is not None and _same_offer(previous, document) and not _needs_refresh(previous, now):
        return PublishResult(previous["index_version"], changed=False, new_blobs=new_blobs)
    if now + expires_after <= time.time():
        raise PublishError(
            f"the index would expire at {timestamp(now + expires_after)}, which is already past: its signing time "
            f"{timestamp(now)} comes from SOURCE_DATE_EPOCH; unset SOURCE_DATE_EPOCH to publish, or raise publish.expires_after_days"
        )
    document |= {
        "index_version": (previous["index_version"] + 1) if previous else 1,
        "published": timestamp(now),
        "expires": timestamp(now + expires_after),
    }
    with fsutil.atomic_output(index_path) as out:
        out.write(sign_index(document, signing_key))
    return PublishResult(document["index_version"], changed=True, new_blobs=new_blobs)


def _release_entry(manifest: dict, archives: Mapping[str, Path], preferences: Mapping[str, int], targets: Mapping[str, dict]) -> dict:
    version = manifest["version"]
    models: dict[str, dict] = {}
    for name, model in sorted(manifest["models"].items()):
        variants = {
            vid: {
                "target": v["target"],
                "platform": v["platform"],
                "format": v["format"],
                "precision": v["precision"],
                "path": v["file"],
                "blob": f"{BLOB_DIR}/{v['sha256']}",
                "sha256": v["sha256"],
                "size": v["size"],
                "encryption": v.get("encryption"),
                # The file a device's telemetry is binned by (FORMAT.md, "Baselines"); absent in bundles without one.
                **({"baseline": _baseline_blob(v["baseline"])} if "baseline" in v else {}),
            }
            for vid, v in model["variants"].items()
        }
        order: dict[str, list[str]] = {}
        for vid, v in sorted(variants.items(), key=lambda item: (preferences.get(item[0], 0), _format_rank(item[1]["format"]), item[0])):
            order.setdefault(v["target"], []).append(vid)
        models[name] = {"targets": order, "variants": variants}
    shipped = {v["target"] for m in models.values() for v in m["variants"].values()}
    return {
        "bundle": manifest["bundle"],
        "version": version,
        "signing": manifest["signing"],
        "archives": {
            key: {
                "path": f"{release_dir(version)}/{Path(path).name}",
                "sha256": fsutil.sha256_file(path),
                "size": Path(path).stat().st_size,
            }
            for key, path in sorted(archives.items())
        },
        "targets": {name: dict(targets[name]) for name in sorted(shipped)},
        "models": models,
    }


def _baseline_blob(baseline: dict) -> dict:
    return {"path": baseline["file"], "blob": f"{BLOB_DIR}/{baseline['sha256']}", "sha256": baseline["sha256"], "size": baseline["size"]}


def _format_rank(format_name: str) -> int:
    """Among a target's formats at one preference, a client tries them in the registry's order."""
    return FORMATS.index(format_name) if format_name in FORMATS else len(FORMATS)


def _store_blob(repository: Path, source: Path, digest: str) -> bool:
    """Copy ``source`` to its content address unless it is there; True when it was added."""
    destination = repository / BLOB_DIR / digest
    if destination.exists():
        if destination.stat().st_size != source.stat().st_size:
            raise PublishError(
                f"{destination} is not the file its name says (its size differs from {source}): "
                "the repository was damaged; delete that blob and publish again"
            )
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest_now = hashlib.sha256()
    with open(source, "rb") as src, fsutil.atomic_output(destination) as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest_now.update(chunk)
            out.write(chunk)
        if digest_now.hexdigest() != digest:
            raise PublishError(
                f"{source} does not match the digest its manifest records: rebuild the bundle (doit package) and publish again"
            )
    return True


def _store_immutable(destination: Path, content: Path | bytes, sha256: str, version: str) -> None:
    """Write a release file (from a file or bytes, whose digest the caller has) once; a second publish must bring the same bytes."""
    if destination.exists():
        if fsutil.sha256_file(destination) != sha256:
            raise PublishError(
                f"release {version} is already published in {destination.parent.parent.parent} with different content "
                f"({destination.name} differs): a published version never changes; raise bundle.version and build again"
            )
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_output(destination) as out:
        if isinstance(content, bytes):
            out.write(content)
        else:
            with open(content, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)


def _offered_releases(repository: Path, bundle: str, channels: Mapping[str, Mapping[str, Offer]]) -> dict:
    """The release entries the channels name, read back from the repository, so a rollback can name any published version."""
    releases: dict[str, dict] = {}
    for channel, models in sorted(channels.items()):
        for model, entry in sorted(models.items()):
            for version in sorted(entry.versions()):
                if version not in releases:
                    path = repository / release_dir(version) / RELEASE_FILE
                    if not path.is_file():
                        published = ", ".join(_published(repository)) or "none yet"
                        raise PublishError(
                            f"publish.channels.{channel}: model {model} names version {version}, which was never published "
                            f"to {repository}; publish that version first, or name one of: {published}"
                        )
                    releases[version] = fsutil.read_json(path)
                if model not in releases[version]["models"]:
                    raise PublishError(
                        f"publish.channels.{channel}: release {version} of {bundle} has no model {model}; "
                        f"it has {', '.join(sorted(releases[version]['models'])) or 'no models'}"
                    )
    return releases


def _published(repository: Path) -> list[str]:
    folder = repository / "releases"
    return sorted(p.name for p in folder.iterdir() if (p / RELEASE_FILE).is_file()) if folder.is_dir() else []


_VOLATILE = ("index_version", "published", "expires")


def _same_offer(previous: dict, document: dict) -> bool:
    return {k: v for k, v in previous.items() if k not in _VOLATILE} == document


def _needs_refresh(previous: dict, now: int) -> bool:
    published, expires = parse_timestamp(previous["published"]), parse_timestamp(previous["expires"])
    return now >= published + (expires - published) * _REFRESH_AFTER


def publish_index(
    repository: Path,
    *,
    bundle: str,
    channels: Mapping[str, Mapping[str, Offer]],
    signing_key: ec.EllipticCurvePrivateKey,
    now: int,
    expires_after: int,
) -> PublishResult:
    """Sign a new index offering ``channels`` from releases already in ``repository``, as ``publish`` does after storing one.

    Steering a rollout (``modelmake rollout advance``) changes only what the channels offer: nothing
    is stored, and an index that already offers exactly this is left as it is (unless due for a refresh).
    """
    repository = Path(repository)
    document = {
        "format_version": INDEX_FORMAT_VERSION,
        "repository": bundle,
        "channels": {c: {"models": {m: entry.document() for m, entry in sorted(models.items())}} for c, models in sorted(channels.items())},
        "releases": _offered_releases(repository, bundle, channels),
    }
    index_path = repository / INDEX_FILE
    previous = read_unverified(index_path.read_bytes()) if index_path.exists() else None
    if previous is not None and _same_offer(previous, document) and not _needs_refresh(previous, now):
        return PublishResult(previous["index_version"], changed=False, new_blobs=0)
    if now + expires_after <= time.time():
        raise PublishError(f"the index would expire at {timestamp(now + expires_after)}, which is already past: check the clock")
    index_version: int = (previous["index_version"] + 1) if previous else 1
    document |= {
        "index_version": index_version,
        "published": timestamp(now),
        "expires": timestamp(now + expires_after),
    }
    with fsutil.atomic_output(index_path) as out:
        out.write(sign_index(document, signing_key))
    return PublishResult(index_version, changed=True, new_blobs=0)
