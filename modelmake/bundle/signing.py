"""Sign and verify a bundle directory in the OpenSSF Model Signing (OMS) format.

The signature file (``model.sig``) is what ``model_signing sign key`` would write for
the same directory, so ``model_signing verify key`` accepts it; FORMAT.md ("Signatures
and archives") specifies it byte by byte. In short:

    manifest  = [{name, algorithm: "sha256", digest}] for every file, sorted by path
    statement = in-toto Statement v1, predicateType https://model_signing/signature/v1.0,
                subject = {name: <directory name>, digest: {sha256: SHA-256(d1 || d2 || ...)}}
    envelope  = DSSE over the statement; signature = DER ECDSA P-256/SHA-256 of PAE(statement)
    model.sig = Sigstore bundle v0.3 JSON holding the envelope and a public key hint

Two choices make the file reproducible where model_signing's own signer is not: the
ECDSA nonce is derived from the key and message (RFC 6979) instead of drawn at random,
and every JSON document is canonical (sorted keys, no whitespace, UTF-8), including the
ignore list that model_signing emits in set order.
"""
from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.errors import (
    FileSetError,
    SignatureFormatError,
    StepError,
    TamperedFileError,
    VerificationError,
    WrongKeyError,
)
from modelmake.fsutil import atomic_output, canonical_json, sha256_file

from .manifest import is_sha256_hex
from .untrusted_json import JSONProblem, parse, read_limited

SIGNATURE_NAME = "model.sig"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# model_signing leaves these out of every signature unless told otherwise; so must we,
# or its verifier would report them as extra files.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")

# The largest model.sig read: about 200 bytes a file, so room for the archive reader's 10 000 entries twice over.
MAX_SIGNATURE_BYTES = 4 << 20

_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


# --- hashing -------------------------------------------------------------------------

# SHA-256 of a file as lowercase hex, read in fixed-size chunks (constant memory).
hash_file = sha256_file


def ignored_paths(signature_name: str = SIGNATURE_NAME) -> list[str]:
    """The paths a signature leaves out, as recorded in it: git files and the signature."""
    return sorted({*GIT_PATHS, signature_name})


def hash_directory(
    directory: Path, *, ignore: list[str] | None = None, known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Map every covered file's POSIX path (relative to ``directory``) to its SHA-256.

    Entries come in manifest order. Symbolic links and special files are refused, as
    model_signing refuses them: a link could point anywhere, so its target is not
    something the signature can vouch for. ``known`` holds digests the caller took while
    writing files (name -> hex); those files are not read again. The file set always
    comes from the directory itself.
    """
    files, refused = _walk(Path(directory), ignore if ignore is not None else ignored_paths())
    if refused:
        raise StepError(f"cannot sign {directory}: {'; '.join(refused)}")
    known = known or {}
    return {name: known.get(name) or hash_file(Path(directory, name)) for name in files}


def _manifest_order(name: str) -> tuple[str, ...]:
    # model_signing sorts PurePosixPath objects, which compare component by component;
    # sorting the plain strings would put "a-c" before "a/b" and change the root digest.
    return tuple(name.split("/"))


def _walk(directory: Path, ignore: list[str]) -> tuple[list[str], list[str]]:
    """(covered file names in manifest order, reasons for refusing some entries)."""
    files: list[str] = []
    refused: list[str] = []

    def visit(folder: Path, prefix: tuple[str, ...]) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                parts = (*prefix, entry.name)
                name = "/".join(parts)
                if is_ignored(name, ignore):
                    continue
                if entry.is_symlink():
                    refused.append(f"{name} is a symbolic link")
                elif entry.is_dir(follow_symlinks=False):
                    visit(Path(entry.path), parts)
                elif not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                    refused.append(f"{name} is not a regular file")
                elif not _is_utf8(name):
                    refused.append(f"{name!r} is not a UTF-8 file name")
                else:
                    files.append(name)

    visit(directory, ())
    files.sort(key=_manifest_order)
    return files, refused


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


# --- serialization -------------------------------------------------------------------

def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that get signed."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def public_key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """model_signing's key identifier: SHA-256 (hex) of the PEM SubjectPublicKeyInfo text."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _root_digest(manifest: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for hex_digest in manifest.values():
        digest.update(bytes.fromhex(hex_digest))
    return digest.hexdigest()


def _statement(model_name: str, manifest: dict[str, str], ignore: list[str]) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": _root_digest(manifest)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": ignore,
            },
            "resources": [
                {"name": name, "algorithm": "sha256", "digest": digest} for name, digest in manifest.items()
            ],
        },
    }


# --- signing -------------------------------------------------------------------------

def create_signature(
    directory: Path,
    private_key: ec.EllipticCurvePrivateKey,
    *,
    signature_name: str = SIGNATURE_NAME,
    subject_name: str | None = None,
    digests: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of the signature file for ``directory``, without writing anything.

    The subject name defaults to the directory's name, as model_signing records it;
    verifiers ignore it, but it is part of the signed bytes, so a build that signs a
    staging directory passes the final name to stay reproducible. ``digests`` are
    SHA-256 digests the caller took while writing some of the files (name -> hex), so
    that large files are not read once more: a wrong one gives a signature that fails
    verification, never one that passes for other bytes.
    """
    directory = Path(directory)
    _check_signature_name(signature_name)
    _check_p256(private_key.public_key())
    ignore = ignored_paths(signature_name)
    manifest = hash_directory(directory, ignore=ignore, known=digests)
    payload = canonical_json(_statement(subject_name or directory.resolve().name, manifest, ignore))
    signature = private_key.sign(pae(payload), _ECDSA)
    return canonical_json(
        {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "publicKey": {"hint": public_key_hint(private_key.public_key())},
                "tlogEntries": [],
            },
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode("ascii"),
                "payloadType": PAYLOAD_TYPE,
                "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
            },
        }
    )


def sign_directory(
    directory: Path,
    private_key: ec.EllipticCurvePrivateKey,
    signature_name: str = SIGNATURE_NAME,
    *,
    subject_name: str | None = None,
    digests: Mapping[str, str] | None = None,
) -> Path:
    """Write ``<directory>/<signature_name>`` atomically and return its path (see create_signature)."""
    directory = Path(directory)
    data = create_signature(
        directory, private_key, signature_name=signature_name, subject_name=subject_name, digests=digests
    )
    target = directory / signature_name
    # The temporary file goes beside the directory, not into it: one left behind by a
    # killed build would otherwise be signed as part of the bundle next time.
    with atomic_output(target, scratch=directory.resolve().parent) as out:
        out.write(data)
    return target


def _check_signature_name(signature_name: str) -> None:
    # The name is recorded in the signed ignore list, so it must be a plain file name.
    if not signature_name or "/" in signature_name or "\\" in signature_name or signature_name in (".", ".."):
        raise ValueError(f"signature_name must be a plain file name like 'model.sig', not {signature_name!r}")


def _check_p256(public_key: ec.EllipticCurvePublicKey) -> None:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise ValueError("modelmake signs and verifies with ECDSA P-256 keys only (see modelmake.bundle.keys)")


# --- verification --------------------------------------------------------------------

def verify_directory(
    directory: Path, public_key: ec.EllipticCurvePublicKey, signature_name: str = SIGNATURE_NAME
) -> list[str]:
    """Check ``directory`` against its signature; return the verified file names (see verify_directory_digests)."""
    return list(verify_directory_digests(directory, public_key, signature_name))


def verify_directory_digests(
    directory: Path, public_key: ec.EllipticCurvePublicKey, signature_name: str = SIGNATURE_NAME
) -> dict[str, str]:
    """Check ``directory`` against its signature; return the verified files' SHA-256 digests by name.

    Checks, in order: the signature file parses, it was made with ``public_key``, and
    the files on disk are exactly the signed ones with the signed digests. Each failure
    is a ``VerificationError`` that names the offending file.
    """
    directory = Path(directory)
    _check_signature_name(signature_name)
    signature_path = directory / signature_name
    signed, ignore = verify_signature(read_signature_file(signature_path), public_key, signature_path, signature_name)
    names, refused = _walk(directory, ignore)
    if refused:
        raise VerificationError(f"{directory} does not match {signature_name}: {'; '.join(refused)}")
    actual = {name: hash_file(directory / name) for name in names}
    check_files(signed, actual, directory, signature_name)
    return actual


def read_signature_file(signature_path: Path) -> bytes:
    """The bytes of a signature file, refusing one larger than MAX_SIGNATURE_BYTES without reading it all."""
    try:
        return read_limited(signature_path, MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise SignatureFormatError(
            f"{signature_path} is missing: the bundle is unsigned or its signature was removed"
        ) from None
    except JSONProblem as problem:
        _fail(signature_path, f"it {problem}")
    except OSError as error:
        _fail(signature_path, f"it cannot be read ({error.strerror or error})")


def verify_signature(
    raw: bytes, public_key: ec.EllipticCurvePublicKey, where: Path | str, signature_name: str = SIGNATURE_NAME
) -> tuple[dict[str, str], list[str]]:
    """Check the bytes of a signature file made with ``public_key``; return (signed name -> SHA-256, ignored paths).

    ``where`` names the signature file in messages.
    """
    _check_p256(public_key)
    payload = _read_envelope(raw, where, public_key, signature_name)
    statement = _parse_json(payload, where, "the signed statement")
    signed, signed_ignore = _signed_manifest(statement, where)
    return signed, sorted({*ignored_paths(signature_name), *signed_ignore})


def is_ignored(name: str, ignore: list[str]) -> bool:
    """Whether a signature leaves the file ``name`` out: it is, or is below, one of the ignored paths."""
    parts = tuple(name.split("/"))
    return any(parts[: len(p)] == p for p in (tuple(PurePosixPath(i).parts) for i in ignore))


def check_files(signed: dict[str, str], actual: dict[str, str], where: Path | str, signature_name: str = SIGNATURE_NAME) -> None:
    """Refuse any difference between the signed files and the ``actual`` ones (name -> SHA-256)."""
    problems = _differences(signed, actual)
    if problems:
        # A changed file is the graver finding; it decides the error (and exit code) when both occur.
        kind = TamperedFileError if any("changed:" in p for p in problems) else FileSetError
        raise kind(f"{where} does not match {signature_name}:\n" + "\n".join(problems))


def _read_envelope(
    raw: bytes, signature_path: Path | str, public_key: ec.EllipticCurvePublicKey, signature_name: str
) -> bytes:
    """Check the signature file's outer layers and signature; return the signed payload."""
    bundle = _parse_json(raw, signature_path, "the signature file")
    _expect(bundle.get("mediaType") == BUNDLE_MEDIA_TYPE, signature_path, f"mediaType is not {BUNDLE_MEDIA_TYPE}")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        _fail(signature_path, "it has no dsseEnvelope")
    _expect(envelope.get("payloadType") == PAYLOAD_TYPE, signature_path, f"payloadType is not {PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if not (isinstance(signatures, list) and len(signatures) == 1 and isinstance(signatures[0], dict)):
        _fail(signature_path, "dsseEnvelope.signatures must hold exactly one signature")
    payload = _base64(envelope.get("payload"), signature_path, "dsseEnvelope.payload")
    signature = _base64(signatures[0].get("sig"), signature_path, "dsseEnvelope.signatures[0].sig")

    # The hint lets us tell "wrong key" from "altered file" before trying the signature.
    material = bundle.get("verificationMaterial")
    key_info = material.get("publicKey") if isinstance(material, dict) else None
    hint = key_info.get("hint") if isinstance(key_info, dict) else None
    _expect(hint is None or isinstance(hint, str), signature_path, "verificationMaterial.publicKey.hint is not a string")
    given = public_key_hint(public_key)
    if hint and hint != given:
        named = hint[:16] if hint.isalnum() else repr(hint[:16])  # it is not signed: print it, never obey it
        raise WrongKeyError(
            f"{signature_path} was signed by a different key: check --public-key "
            f"(the signature names key {named}..., the given public key is {given[:16]}...)"
        )
    try:
        public_key.verify(signature, pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WrongKeyError(
            f"{signature_path}: the signature does not match this public key: it was signed by a "
            f"different key (check --public-key), or {signature_name} was altered after signing"
        ) from None
    return payload


def _signed_manifest(statement: Any, signature_path: Path | str) -> tuple[dict[str, str], list[str]]:
    """(signed name -> digest, signed ignore list) from a verified in-toto statement."""
    def field(value: Any, key: str, kind: type, where: str) -> Any:
        item = value.get(key) if isinstance(value, dict) else None
        _expect(isinstance(item, kind), signature_path, f"the signed statement has no valid {where}")
        return item

    _expect(field(statement, "_type", str, "_type") == STATEMENT_TYPE, signature_path, "_type is not in-toto v1")
    _expect(
        field(statement, "predicateType", str, "predicateType") == PREDICATE_TYPE,
        signature_path,
        f"predicateType is not {PREDICATE_TYPE}",
    )
    predicate = field(statement, "predicate", dict, "predicate")
    serialization_args = field(predicate, "serialization", dict, "predicate.serialization")
    _expect(
        serialization_args.get("method") == "files" and serialization_args.get("hash_type") == "sha256",
        signature_path,
        "it was made with a serialization other than files/sha256, which modelmake does not verify",
    )
    signed_ignore = serialization_args.get("ignore_paths", [])
    _expect(
        isinstance(signed_ignore, list) and all(isinstance(p, str) for p in signed_ignore),
        signature_path,
        "predicate.serialization.ignore_paths is not a list of paths",
    )

    signed: dict[str, str] = {}
    for resource in field(predicate, "resources", list, "predicate.resources"):
        name = field(resource, "name", str, "resource name")
        digest = field(resource, "digest", str, f"digest for {name}")
        _expect(field(resource, "algorithm", str, f"algorithm for {name}") == "sha256", signature_path,
                f"{name} is not hashed with sha256")
        _expect(name not in signed, signature_path, f"it lists {name} twice")
        _expect(is_sha256_hex(digest), signature_path, f"the digest for {name} is not SHA-256 hex")
        signed[name] = digest

    subjects = field(statement, "subject", list, "subject")
    _expect(len(subjects) == 1, signature_path, "it must have exactly one subject")
    root = field(field(subjects[0], "digest", dict, "subject digest"), "sha256", str, "subject sha256 digest")
    _expect(root == _root_digest(signed), signature_path, "its subject digest does not match its resources")
    # Ignore entries that could reach outside the directory, as model_signing does.
    safe_ignore = [p for p in signed_ignore if p and not PurePosixPath(p).is_absolute() and ".." not in p.split("/")]
    return signed, safe_ignore


def _differences(signed: dict[str, str], actual: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(signed.keys() | actual.keys(), key=_manifest_order):
        if name not in actual:
            problems.append(f"  missing: {name} (signed, but not in the bundle)")
        elif name not in signed:
            problems.append(f"  extra: {name} (in the bundle, but not covered by the signature)")
        elif signed[name] != actual[name]:
            problems.append(f"  changed: {name} (its SHA-256 differs from the signed one)")
    return problems


def _parse_json(raw: bytes, signature_path: Path | str, what: str) -> dict[str, Any]:
    try:
        value = parse(raw)
    except JSONProblem as problem:
        raise SignatureFormatError(f"{signature_path} is not an OMS signature: {what} {problem}") from None
    _expect(isinstance(value, dict), signature_path, f"{what} is not a JSON object")
    return value


def _base64(value: Any, signature_path: Path | str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (TypeError, ValueError):
        raise SignatureFormatError(f"{signature_path} is not an OMS signature: {where} is not base64") from None


def _expect(condition: bool, signature_path: Path | str, reason: str) -> None:
    if not condition:
        _fail(signature_path, reason)


def _fail(signature_path: Path | str, reason: str) -> NoReturn:
    raise SignatureFormatError(f"{signature_path} is not a valid OMS signature: {reason}")
