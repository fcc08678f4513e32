"""Signing keys (ECDSA P-256) and data keys (AES-256): creating, storing, resolving, loading.

File formats:

* signing private key: PEM PKCS#8, unencrypted, mode 0600 (``-----BEGIN PRIVATE KEY-----``)
* signing public key:  PEM SubjectPublicKeyInfo, mode 0644 (what apps and ``model_signing``
  verify with)
* data key: 64 lowercase hex characters and a newline, mode 0600. Hex rather than raw bytes
  so that the file, ``env:VAR`` values and CI secret stores all hold the same text, and a
  key survives copy and paste.

Spec references (``bundle.signing.key``, ``bundle.encryption.key``) are ``env:VAR`` (the
variable holds the PEM text, or the 64 hex characters), ``file:PATH`` or a plain PATH,
relative to the workspace. No message raised here ever contains key material.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake.errors import KeyMaterialError
from modelmake.layout import DEVELOPMENT_KEYS

DATA_KEY_SIZE = 32
DEVELOPMENT_KEY_DIR = Path(DEVELOPMENT_KEYS)
_KEYGEN_HINT = "run `modelmake keygen` to create one"
_UNKNOWN_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters or more: "C:" is a drive


# --- creating and writing ------------------------------------------------------------

def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_data_key() -> bytes:
    return secrets.token_bytes(DATA_KEY_SIZE)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write the key as PEM PKCS#8; the file is 0600 from the moment it exists."""
    _write_atomically(Path(path), private_key_pem(key), 0o600)


def write_public_key(path: Path, key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    _write_atomically(Path(path), public_key_pem(key), 0o644)


def write_data_key(path: Path, key: bytes) -> None:
    """Write the 32-byte key as 64 hex characters and a newline, mode 0600."""
    if len(key) != DATA_KEY_SIZE:
        raise ValueError(f"a data key is {DATA_KEY_SIZE} bytes, not {len(key)}")
    _write_atomically(Path(path), key.hex().encode("ascii") + b"\n", 0o600)


def _write_atomically(path: Path, data: bytes, mode: int, *, replace: bool = True) -> bool:
    """Write ``data`` to a temporary file beside ``path`` and move it into place.

    The temporary file is created with ``mode`` by os.open, so a secret is never readable
    by others, not even for an instant. With ``replace=False`` an existing file wins
    (hard links never overwrite) and False is returned.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.chmod(tmp, mode)  # a restrictive umask may have taken bits away; never adds any
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)  # already gone after a replace


# --- resolving spec references -------------------------------------------------------

def resolve_key_reference(ref: str, workspace: Path, *, setting: str = "bundle.signing.key") -> bytes:
    """The bytes a spec reference points at: ``env:VAR``, ``file:PATH`` or ``PATH``.

    ``setting`` names the spec field the reference came from, so the error can say
    which one to fix.
    """
    where = f"{setting} ({ref!r})"
    if not ref or not ref.strip():
        raise KeyMaterialError(f"{setting} is empty: set it to env:VARIABLE or a key file path")
    if ref.startswith("env:"):
        return _read_environment(ref[len("env:"):], where, setting)
    if ref.startswith("file:"):
        return _read_key_file(ref[len("file:"):], Path(workspace), where, setting)
    scheme = _UNKNOWN_SCHEME.match(ref)
    if scheme:
        raise KeyMaterialError(
            f"{where}: unknown key source {scheme.group(1)!r}: use env:VARIABLE or file:PATH (or a plain path)"
        )
    return _read_key_file(ref, Path(workspace), where, setting)


def _read_environment(variable: str, where: str, setting: str) -> bytes:
    if not variable:
        raise KeyMaterialError(f"{where}: no variable name after 'env:': write it as env:MODELMAKE_SIGNING_KEY")
    value = os.environ.get(variable)
    if value is None:
        raise KeyMaterialError(
            f"{where}: environment variable {variable} is not set: export it, "
            f"or run `modelmake keygen` and point {setting} at the file"
        )
    if not value.strip():
        raise KeyMaterialError(f"{where}: environment variable {variable} is set but empty: export the key in it")
    return value.encode("utf-8")


def _read_key_file(raw_path: str, workspace: Path, where: str, setting: str) -> bytes:
    if not raw_path:
        raise KeyMaterialError(f"{where}: no path after 'file:': write it as file:keys/signing.pem")
    path = workspace / Path(raw_path).expanduser()  # an absolute path stays absolute
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(
            f"{where}: {path} does not exist: run `modelmake keygen` and point {setting} at the file "
            f"(relative paths are relative to the workspace, {workspace})"
        ) from None
    except IsADirectoryError:
        raise KeyMaterialError(f"{where}: {path} is a directory: point {setting} at the key file inside it") from None
    except PermissionError:
        raise KeyMaterialError(
            f"{where}: {path} cannot be read by this user: fix its owner or permissions (keep it 0600)"
        ) from None


# --- loading -------------------------------------------------------------------------

def load_private_key(data: bytes, *, source: str = "the signing key") -> ec.EllipticCurvePrivateKey:
    """Parse a PEM private key and insist on P-256."""
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise KeyMaterialError(f"{source} holds a public key: signing needs the private key (signing.pem)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "encrypted, and no password given"
        raise KeyMaterialError(
            f"{source} is encrypted with a passphrase: modelmake reads unencrypted PKCS#8 PEM keys; "
            "decrypt it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out signing.pem` and keep that file 0600"
        ) from None
    except ValueError:
        raise KeyMaterialError(f"{source} is not a PEM private key: {_pem_hint(data)}") from None
    _require_p256(key.public_key(), source)
    return cast(ec.EllipticCurvePrivateKey, key)  # its public key is a P-256 key, so it is one too


def load_public_key(data: bytes, *, source: str = "the public key") -> ec.EllipticCurvePublicKey:
    """Parse a PEM SubjectPublicKeyInfo and insist on P-256."""
    if b"PRIVATE KEY-----" in data:
        raise KeyMaterialError(
            f"{source} holds a private key: give the public key (signing.pub.pem) and keep the private one secret"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyMaterialError(f"{source} is not a PEM public key: {_pem_hint(data, public=True)}") from None
    return _require_p256(key, source)


def load_data_key(data: bytes, *, source: str = "the data key") -> bytes:
    """Decode a data key written as 64 hex characters (surrounding whitespace allowed)."""
    text = data.strip()
    if len(text) == 2 * DATA_KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == DATA_KEY_SIZE:
        raise KeyMaterialError(
            f"{source} holds {DATA_KEY_SIZE} raw bytes, but data keys are written as {2 * DATA_KEY_SIZE} "
            "hex characters: convert it with `xxd -p -c 64 KEY`"
        )
    found = "not all of them hex digits" if len(text) == 2 * DATA_KEY_SIZE else "not that many"
    raise KeyMaterialError(
        f"{source} is not a {DATA_KEY_SIZE}-byte key written as {2 * DATA_KEY_SIZE} hex characters "
        f"(found {len(text)} characters, {found}): {_KEYGEN_HINT}, or `openssl rand -hex {DATA_KEY_SIZE}`"
    )


def _pem_hint(data: bytes, public: bool = False) -> str:
    if b"\\n" in data and b"\n" not in data.strip():
        return "the text has literal \\n sequences instead of line breaks: store it with real newlines"
    if b"-----BEGIN" not in data:
        return f"expected a '-----BEGIN {'PUBLIC' if public else 'PRIVATE'} KEY-----' block: {_KEYGEN_HINT}"
    return f"the PEM block is damaged or of an unsupported kind: {_KEYGEN_HINT}"


def _require_p256(public_key: object, source: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__.replace("PublicKey", "").strip("_") or "another kind"
        raise KeyMaterialError(
            f"{source} is not an EC key (it is {kind}): modelmake signs with ECDSA P-256, which Android and "
            f"iOS verify natively: {_KEYGEN_HINT}, or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
        )
    if public_key.curve.name != "secp256r1":
        raise KeyMaterialError(
            f"{source} is an EC key on {public_key.curve.name}: modelmake needs P-256 (secp256r1): {_KEYGEN_HINT}"
        )
    return public_key


# --- development keys ----------------------------------------------------------------

def development_keys(workspace: Path) -> tuple[ec.EllipticCurvePrivateKey, Path, bytes]:
    """(signing key, public key path, data key) under ``<workspace>/keys/dev/``.

    Like Android's debug keystore: created on first use, reused afterwards, never for
    release. Parallel builds may race to create them; the first file to land wins and
    everyone loads that one, so all bundles of a run share one key.
    """
    directory = Path(workspace) / DEVELOPMENT_KEY_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / "signing.pem"
    public_path = directory / "signing.pub.pem"
    data_path = directory / "data.key"
    regenerate = f"delete {directory} to create fresh development keys"

    if not private_path.exists():
        _write_atomically(private_path, private_key_pem(generate_signing_key()), 0o600, replace=False)
    if not data_path.exists():
        _write_atomically(data_path, generate_data_key().hex().encode("ascii") + b"\n", 0o600, replace=False)

    private_key = _load_development(load_private_key, private_path, regenerate)
    data_key = _load_development(load_data_key, data_path, regenerate)
    public_pem = public_key_pem(private_key)
    # Derived from the private key, so rewriting it is harmless; skip it when current
    # to leave its timestamp alone.
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        _write_atomically(public_path, public_pem, 0o644)
    return private_key, public_path, data_key


def _load_development(loader, path: Path, regenerate: str):
    try:
        return loader(path.read_bytes(), source=f"development key {path}")
    except KeyMaterialError as error:
        raise KeyMaterialError(f"{error}; or {regenerate}") from None
