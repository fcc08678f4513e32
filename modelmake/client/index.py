"""Verify index.json and parse it into a frozen index (OTA.md, order of checks, steps 2 to 7).

Nothing here touches the network or the disk: ``verify_index`` takes the bytes as fetched,
the keys the app trusts, the clock and the trust state, and either returns an ``Index`` or
raises the error of the first check that failed. The order matters: nothing in the payload
is read before its signature has verified, and nothing is acted on before the rollback check.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.bundle.manifest import ENCRYPTION_SCHEME
from modelmake.bundle.signing import pae
from modelmake.bundle.streaming_aead import associated_data_for

# The formats the publisher writes: one definition for both ends.
from modelmake.repository.index import INDEX_FORMAT_VERSION, INDEX_PAYLOAD_TYPE, parse_timestamp, timestamp
from modelmake.repository.offer import BASIS_POINTS, Arm, Offer  # Arm: the parsed offers hold them

from .errors import IndexExpiredError, IndexFormatError, IndexSignatureError, RollbackError, UnknownKeyError
from .trust import TrustState

MAX_JSON_DEPTH = 32  # nesting of arrays and objects; the index format needs 8
_DOTTED = re.compile(r"\d+(\.\d+)*")
_JSON_STRING = re.compile(rb'"[^"]*"')  # once escaped backslashes and quotes are gone: linear, whatever the input
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_INNERMOST = re.compile(rb"\[\]|\{\}")
_OPENERS = re.compile(rb"[\[{]{%d}" % (MAX_JSON_DEPTH + 1))
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RELATIVE_PATH = re.compile(r"(?!(.*/)?\.\.?(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def dotted(text: str) -> tuple[int, ...]:
    """A version of dotted numbers ("5.2", "34", "17.4.1") as a tuple; ValueError otherwise."""
    if not isinstance(text, str) or not _DOTTED.fullmatch(text):
        raise ValueError(f"{text!r} is not a version of dotted numbers such as 5.2 or 34")
    return tuple(int(part) for part in text.split("."))


def at_least(version: str, minimum: str) -> bool:
    """Dotted numbers compared left to right, missing parts counting as 0 ("5.2" == "5.2.0")."""
    a, b = dotted(version), dotted(minimum)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


# --- the parsed index: plain frozen data ---------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    platform: str
    chipsets: tuple[str, ...]  # empty: a generic target for any device of the platform
    min_os_version: str | None


@dataclass(frozen=True)
class Encryption:
    plaintext_sha256: str
    plaintext_size: int


@dataclass(frozen=True)
class Baseline:
    """A variant's baseline (FORMAT.md, "Baselines") as a blob of the repository."""

    blob: str  # relative to the repository's base URL
    sha256: str
    size: int


@dataclass(frozen=True)
class Variant:
    id: str
    target: str
    platform: str
    format: str
    precision: str
    path: str  # inside the bundle; part of the encryption's associated data
    blob: str  # relative to the repository's base URL
    sha256: str  # of the blob
    size: int
    encryption: Encryption | None
    baseline: Baseline | None = None  # the file's baseline, for telemetry; None in releases without one


@dataclass(frozen=True)
class ReleaseModel:
    targets: Mapping[str, tuple[str, ...]]  # target name -> variant ids, most preferred first
    variants: Mapping[str, Variant]


@dataclass(frozen=True)
class Release:
    bundle: str
    version: str
    targets: Mapping[str, Target]
    models: Mapping[str, ReleaseModel]


@dataclass(frozen=True)
class Index:
    repository: str
    index_version: int
    published: int  # seconds since the epoch, UTC
    expires: int
    channels: Mapping[str, Mapping[str, Offer]]  # channel -> model -> offer
    releases: Mapping[str, Release]
    sha256: str  # of index.json's bytes: what the trust state records

    def offer(self, channel: str, model: str) -> Offer | None:
        return self.channels.get(channel, {}).get(model)


# --- the checks, in order -------------------------------------------------------------------

def verify_index(
    data: bytes,
    trusted_keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    repository: str,
    now: float,
    trusted: TrustState | None,
) -> Index:
    """Steps 2 to 7 of OTA.md on the bytes of index.json; ``trusted_keys`` maps key id -> key."""
    payload_type, payload, keyid, signature = _envelope(data)  # 2
    key = trusted_keys.get(keyid)  # 3: the key id only picks the key; the signature decides
    if key is None:
        raise UnknownKeyError(
            f"index.json is signed by key {keyid}, which is not one of the {len(trusted_keys)} keys this app trusts"
        )
    try:  # 4
        key.verify(signature, pae(payload, payload_type), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise IndexSignatureError(f"the signature on index.json does not verify with trusted key {keyid}") from None
    index = _document(payload, hashlib.sha256(data).hexdigest(), repository)  # 5
    if index.expires <= now:  # 6
        raise IndexExpiredError(
            f"index.json (index version {index.index_version}) expired at {timestamp(index.expires)}, "
            f"before this device's time {timestamp(int(now))}"
        )
    if trusted is not None and (  # 7
        index.index_version < trusted.index_version
        or (index.index_version == trusted.index_version and index.sha256 != trusted.sha256)
    ):
        what = "an older index" if index.index_version < trusted.index_version else "a different index with the same version"
        raise RollbackError(
            f"the server sent {what} (index version {index.index_version}) than the one this device already "
            f"trusts (index version {trusted.index_version})"
        )
    return index


def _parse_json(data: bytes, what: str) -> Any:
    """``json.loads``, after refusing nesting deeper than MAX_JSON_DEPTH (which would exhaust the parser's stack)."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _JSON_STRING.sub(b"", unescaped).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):  # each pass removes the innermost level of every branch
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not removed:
            break
    if _INNERMOST.search(brackets) or _OPENERS.search(brackets):  # deeper pairs, or more unclosed levels
        raise IndexFormatError(f"{what} nests arrays and objects more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(data)
    except ValueError:
        raise IndexFormatError(f"{what} is not JSON") from None


def _envelope(data: bytes) -> tuple[str, bytes, str, bytes]:
    envelope = _parse_json(data, "index.json")
    if not isinstance(envelope, dict):
        raise IndexFormatError("index.json is not a JSON object (a DSSE envelope)")
    payload_type = _field(envelope, "payloadType", str, "the envelope")
    if payload_type != INDEX_PAYLOAD_TYPE:
        raise IndexFormatError(f"index.json has payloadType {payload_type!r}, not {INDEX_PAYLOAD_TYPE!r}")
    signatures = _field(envelope, "signatures", list, "the envelope")
    if len(signatures) != 1:
        raise IndexFormatError(f"index.json has {len(signatures)} signatures; an index has exactly one")
    keyid = _field(signatures[0], "keyid", str, "the signature")
    signature = _base64(_field(signatures[0], "sig", str, "the signature"), "the signature's sig")
    return payload_type, _base64(_field(envelope, "payload", str, "the envelope"), "the payload"), keyid, signature


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IndexFormatError(f"{where} in index.json is not base64") from None


def _document(payload: bytes, sha256: str, repository: str) -> Index:
    document = _parse_json(payload, "the signed payload of index.json")
    if not isinstance(document, dict):
        raise IndexFormatError("the signed payload of index.json is not a JSON object")
    version = _field(document, "format_version", int, "the index")
    if version != INDEX_FORMAT_VERSION:
        raise IndexFormatError(f"the index has format_version {version}; this client reads {INDEX_FORMAT_VERSION}")
    name = _field(document, "repository", str, "the index")
    if name != repository:
        raise IndexFormatError(f"the index is for repository {name!r}, but this app expects {repository!r}")
    releases = {
        version: _release(version, entry, f"releases.{version}")
        for version, entry in _field(document, "releases", dict, "the index").items()
    }
    channels = {}
    for channel, content in _field(document, "channels", dict, "the index").items():
        models = _field(content, "models", dict, f"channels.{channel}")
        channels[channel] = MappingProxyType({
            model: _offer(offer, model, releases, f"channels.{channel}.models.{model}") for model, offer in models.items()
        })
    return Index(
        repository=name,
        index_version=_field(document, "index_version", int, "the index"),
        published=_time(document, "published"),
        expires=_time(document, "expires"),
        channels=MappingProxyType(channels),
        releases=MappingProxyType(releases),
        sha256=sha256,
    )


def _offer(document: Any, model: str, releases: Mapping[str, Release], where: str) -> Offer:
    arms = tuple(
        Arm(*(_field(arm, key, kind, f"{where}.arms") for key, kind in (("name", str), ("basis_points", int), ("version", str))))
        for arm in _field(document, "arms", list, where)
    )
    offer = Offer(
        version=_field(document, "version", str, where),
        rollout_basis_points=_field(document, "rollout_basis_points", int, where),
        previous=_field(document, "previous", str, where, nullable=True),
        arms=arms,
        min_app_version=_field(document, "min_app_version", str, where, nullable=True),
    )
    _require(0 <= offer.rollout_basis_points <= BASIS_POINTS, f"{where}.rollout_basis_points is outside 0..{BASIS_POINTS}")
    _require(not arms or (all(a.basis_points >= 0 for a in arms) and sum(a.basis_points for a in arms) == BASIS_POINTS),
             f"{where}.arms do not add up to {BASIS_POINTS} basis points")
    _require(offer.min_app_version is None or _DOTTED.fullmatch(offer.min_app_version),
             f"{where}.min_app_version is not dotted numbers")
    named = {offer.version, offer.previous, *(a.version for a in arms)}
    for version in (v for v in named if v is not None):
        _require(version in releases and model in releases[version].models,
                 f"{where} names release {version} of {model}, which the index's releases do not hold")
    return offer


def _release(version: str, document: Any, where: str) -> Release:
    _require(_field(document, "version", str, where) == version, f"{where}.version differs from its key")
    bundle = _field(document, "bundle", str, where)
    targets = {}
    for name, target in _field(document, "targets", dict, where).items():
        at = f"{where}.targets.{name}"
        chipsets = _field(target, "chipsets", list, at)
        _require(all(isinstance(c, str) for c in chipsets), f"{at}.chipsets holds a non-string")
        minimum = _field(target, "min_os_version", str, at, nullable=True)
        _require(minimum is None or _DOTTED.fullmatch(minimum), f"{at}.min_os_version is not dotted numbers")
        targets[name] = Target(name, _field(target, "platform", str, at), tuple(chipsets), minimum)
    models = {}
    for name, model in _field(document, "models", dict, where).items():
        at = f"{where}.models.{name}"
        variants = {vid: _variant(vid, v, f"{at}.variants.{vid}") for vid, v in _field(model, "variants", dict, at).items()}
        order = {}
        for target, ids in _field(model, "targets", dict, at).items():
            _require(target in targets, f"{at}.targets names target {target}, which {where}.targets lacks")
            _require(isinstance(ids, list) and all(i in variants and variants[i].target == target for i in ids),
                     f"{at}.targets.{target} names variants that are not this target's")
            order[target] = tuple(ids)
        for vid, variant in variants.items():
            try:  # the associated data is built from the path, so it must be a valid bundle path
                associated_data_for(bundle, version, variant.path)
            except ValueError as error:
                raise IndexFormatError(f"{at}.variants.{vid}.path: {error}") from None
        models[name] = ReleaseModel(MappingProxyType(order), MappingProxyType(variants))
    return Release(bundle, version, MappingProxyType(targets), MappingProxyType(models))


def _variant(vid: str, document: Any, where: str) -> Variant:
    encryption = _field(document, "encryption", dict, where, nullable=True)
    if encryption is not None:
        scheme = _field(encryption, "scheme", str, f"{where}.encryption")
        _require(scheme == ENCRYPTION_SCHEME, f"{where}.encryption.scheme is {scheme!r}; this client decrypts {ENCRYPTION_SCHEME}")
        encryption = Encryption(_sha256(encryption, "plaintext_sha256", f"{where}.encryption"),
                                _size(encryption, "plaintext_size", f"{where}.encryption"))
    variant = Variant(
        id=vid,
        **{key: _field(document, key, str, where) for key in ("target", "platform", "format", "precision", "path", "blob")},
        sha256=_sha256(document, "sha256", where),
        size=_size(document, "size", where),
        encryption=encryption,
        baseline=_baseline(document, where),
    )
    # A relative path of plain names: joined to the base URL, it stays inside the repository.
    _require(_RELATIVE_PATH.fullmatch(variant.blob), f"{where}.blob is not a path inside the repository")
    return variant


def _baseline(document: dict, where: str) -> Baseline | None:
    """A variant's optional baseline blob: absent (or null) in releases published without one."""
    if document.get("baseline") is None:
        return None
    at = f"{where}.baseline"
    baseline = Baseline(_field(document["baseline"], "blob", str, at), _sha256(document["baseline"], "sha256", at),
                        _size(document["baseline"], "size", at))
    _require(_RELATIVE_PATH.fullmatch(baseline.blob), f"{at}.blob is not a path inside the repository")
    return baseline


# --- field readers: every one names the field that is wrong ---------------------------------

def _field(obj: Any, key: str, kind: type, where: str, *, nullable: bool = False) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise IndexFormatError(f"{where} in index.json has no field {key!r}")
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IndexFormatError(f"{where}.{key} in index.json is {type(value).__name__}, not {kind.__name__}")
    return value


def _require(condition: Any, problem: str) -> None:
    if not condition:
        raise IndexFormatError(f"{problem} in index.json")


def _sha256(obj: Any, key: str, where: str) -> str:
    value = _field(obj, key, str, where)
    _require(_SHA256_HEX.fullmatch(value), f"{where}.{key} is not a SHA-256 in lowercase hex")
    return value


def _size(obj: Any, key: str, where: str) -> int:
    value = _field(obj, key, int, where)
    _require(value >= 0, f"{where}.{key} is negative")
    return value


def _time(document: dict, key: str) -> int:
    text = _field(document, key, str, "the index")
    try:
        return parse_timestamp(text)
    except ValueError:
        raise IndexFormatError(f"the index's {key} {text!r} is not a UTC time like 2026-03-01T12:00:00Z") from None
