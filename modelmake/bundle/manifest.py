"""The bundle manifest (format version 1): its version rules and per-platform slicing. FORMAT.md specifies it."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import FormatVersionError, VerificationError

FORMAT_VERSION = 1
# Every format version this modelmake reads; a reader refuses anything else rather than guess.
READABLE_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
PROVENANCE = "provenance.json"
# The one encryption scheme of format version 1 (FORMAT.md, "Encrypted model files").
ENCRYPTION_SCHEME = "AES256_GCM_HKDF_1MB"
# An encrypted file's name in a bundle: the plaintext's name and this suffix (fixed for format version 1).
ENCRYPTED_SUFFIX = ".enc"


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise VerificationError(f"{path} is missing: this is not a modelmake bundle") from None
    except ValueError:
        raise VerificationError(f"{path} is not valid JSON") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in READABLE_FORMAT_VERSIONS:
        readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        raise FormatVersionError(
            f"{path} has format_version {version!r}; this modelmake reads version {readable}: upgrade modelmake to read it"
        )
    return manifest


def platforms(manifest: dict) -> list[str]:
    return sorted({v["platform"] for m in manifest["models"].values() for v in m["variants"].values()})


def slice_for(manifest: dict, platform: str) -> dict:
    """The manifest of a per-platform slice: only that platform's variants, targets and models."""
    models = {}
    for name, model in manifest["models"].items():
        variants = {vid: v for vid, v in model["variants"].items() if v["platform"] == platform}
        if variants:
            models[name] = {**model, "variants": variants}
    targets = {name: t for name, t in manifest["targets"].items() if t["platform"] == platform}
    return {**manifest, "slice": platform, "models": models, "targets": targets}


def files_of(manifest: dict) -> list[str]:
    return sorted(v["file"] for m in manifest["models"].values() for v in m["variants"].values())
