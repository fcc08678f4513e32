"""What telemetry is compared with: the baselines of bundles whose signature checks out.

A baseline is trusted only from a bundle verified with the workspace's public key (bundle/verify.py):
the repository's release archives (each version's whole bundle), or bundle directories and archives
given on the command line. A file a bundle ships without a baseline is still known (its records count),
but nothing is compared for it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric import ec

from ..bundle.verify import judged_archive, verify_bundle_directory
from ..client.index import dotted
from ..errors import ModelmakeError
from ..repository.publish import RELEASE_FILE

BASELINES = "baselines/"  # the bundle folder of baselines/<artifact id>.json


@dataclass(frozen=True)
class KnownFile:
    """A model file some verified bundle ships, and its baseline if it has one."""

    model: str
    version: str
    file: str
    artifact: str
    target: str
    baseline: Mapping | None


@dataclass(frozen=True)
class Catalog:
    files: Mapping[tuple[str, str, str], KnownFile]  # (model, version, bundle path) -> file
    sources: tuple[str, ...]  # the bundles read, for the report

    def versions(self, model: str) -> list[str]:
        """The versions of ``model`` known, oldest first."""
        return sorted({v for m, v, _ in self.files if m == model}, key=_version_key)

    def models(self) -> list[str]:
        return sorted({m for m, _, _ in self.files})

    def files_of(self, model: str, version: str) -> list[str]:
        return sorted(f for m, v, f in self.files if (m, v) == (model, version))


def _version_key(version: str) -> tuple:
    try:
        return (0, dotted(version))
    except ValueError:
        return (1, version)


def previous_version(catalog: Catalog, model: str, version: str) -> str | None:
    """The version just older than ``version`` among those known, or None."""
    older = [v for v in catalog.versions(model) if _version_key(v) < _version_key(version)]
    return older[-1] if older else None


def load_catalog(bundles: Iterable[Path], public_key: ec.EllipticCurvePublicKey) -> Catalog:
    files: dict[tuple[str, str, str], KnownFile] = {}
    sources = []
    for path in bundles:
        manifest, baselines = read_bundle(Path(path), public_key)
        sources.append(str(path))
        by_file = {b.get("file"): b for b in baselines.values()}
        for model, entry in manifest["models"].items():
            for variant_id, variant in entry["variants"].items():
                # The manifest names each variant's baseline; a bundle without those entries is matched by the file.
                named = variant.get("baseline")
                baseline = baselines.get(named["file"]) if isinstance(named, dict) else by_file.get(variant["file"])
                artifact = baseline.get("artifact", variant_id) if baseline else variant_id
                key = (model, manifest["version"], variant["file"])
                files[key] = KnownFile(model, manifest["version"], variant["file"], str(artifact), variant["target"], baseline)
    return Catalog(MappingProxyType(dict(sorted(files.items()))), tuple(sources))


def read_bundle(path: Path, public_key: ec.EllipticCurvePublicKey) -> tuple[dict, dict[str, dict]]:
    """(manifest, {bundle path: baseline}) of a bundle directory or archive, verified with ``public_key`` first."""
    if path.is_dir():
        manifest = verify_bundle_directory(path, public_key)
        folder = path / BASELINES
        names = sorted(p.relative_to(path).as_posix() for p in folder.glob("*.json")) if folder.is_dir() else []
        return manifest, {name: _parse((path / name).read_bytes(), name, path) for name in names}
    if not path.is_file():
        raise ModelmakeError(f"{path} does not exist: give a bundle directory or a .zip bundle")
    with judged_archive(path, public_key) as (manifest, reader):
        # Every entry the signature covers was hashed and compared before the manifest was returned.
        names = sorted(n for n in reader.entries if n.startswith(BASELINES) and n.endswith(".json"))
        return manifest, {name: _parse(reader.read(name), name, path) for name in names}


def _parse(data: bytes, name: str, bundle: Path) -> dict:
    try:
        value = json.loads(data)
    except ValueError as error:
        raise ModelmakeError(f"{name} in {bundle} is not JSON ({error}): the bundle was built wrongly; rebuild it") from None
    if not isinstance(value, dict):
        raise ModelmakeError(f"{name} in {bundle} is not a baseline object: rebuild the bundle")
    return value


def repository_bundles(repository: Path) -> list[Path]:
    """The whole-bundle archive of every release published to ``repository``."""
    found = []
    for release in sorted((Path(repository) / "releases").glob(f"*/{RELEASE_FILE}")):
        entry = json.loads(release.read_bytes())
        archive = entry.get("archives", {}).get("all")
        if archive and (Path(repository) / archive["path"]).is_file():
            found.append(Path(repository) / archive["path"])
    return found
