"""Key files, spec references and the errors a user sees when a key is wrong."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from modelmake.bundle import keys
from modelmake.errors import KeyMaterialError


@pytest.fixture
def permissive_umask():
    """Umask 0, so any mode narrower than 0666 must have been set on purpose."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def pem_body(pem: bytes) -> list[str]:
    """The base64 lines of a PEM block: what must never appear in an error message."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def assert_no_key_material(message: str, *pems: bytes) -> None:
    for pem in pems:
        for line in pem_body(pem):
            assert line[:16] not in message


# --- writing -------------------------------------------------------------------------

def test_key_files_get_their_modes_whatever_the_umask(tmp_path, permissive_umask):
    key = keys.generate_signing_key()
    keys.write_private_key(tmp_path / "signing.pem", key)
    keys.write_public_key(tmp_path / "signing.pub.pem", key)
    keys.write_data_key(tmp_path / "data.key", keys.generate_data_key())
    assert mode_of(tmp_path / "signing.pem") == 0o600
    assert mode_of(tmp_path / "signing.pub.pem") == 0o644
    assert mode_of(tmp_path / "data.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.key", "signing.pem", "signing.pub.pem"]


def test_private_key_round_trips_as_pkcs8(tmp_path):
    key = keys.generate_signing_key()
    keys.write_private_key(tmp_path / "signing.pem", key)
    data = (tmp_path / "signing.pem").read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = keys.load_private_key(data)
    assert loaded.private_numbers() == key.private_numbers()
    keys.write_public_key(tmp_path / "signing.pub.pem", key)
    public = keys.load_public_key((tmp_path / "signing.pub.pem").read_bytes())
    assert public.public_numbers() == key.public_key().public_numbers()


def test_rewriting_a_key_replaces_it_atomically(tmp_path):
    path = tmp_path / "signing.pem"
    first, second = keys.generate_signing_key(), keys.generate_signing_key()
    keys.write_private_key(path, first)
    keys.write_private_key(path, second)
    assert keys.load_private_key(path.read_bytes()).private_numbers() == second.private_numbers()
    assert [p.name for p in tmp_path.iterdir()] == ["signing.pem"]


def test_data_key_is_written_as_hex(tmp_path):
    key = keys.generate_data_key()
    assert len(key) == 32
    keys.write_data_key(tmp_path / "data.key", key)
    assert (tmp_path / "data.key").read_bytes() == key.hex().encode() + b"\n"
    assert keys.load_data_key((tmp_path / "data.key").read_bytes()) == key
    with pytest.raises(ValueError):
        keys.write_data_key(tmp_path / "short.key", b"\0" * 16)


# --- references ----------------------------------------------------------------------

def test_env_reference_reads_the_variable(monkeypatch, tmp_path):
    pem = keys.private_key_pem(keys.generate_signing_key())
    monkeypatch.setenv("MODELMAKE_SIGNING_KEY", pem.decode())
    assert keys.resolve_key_reference("env:MODELMAKE_SIGNING_KEY", tmp_path) == pem
    monkeypatch.setenv("MODELMAKE_DATA_KEY", "ab" * 32)
    data = keys.resolve_key_reference("env:MODELMAKE_DATA_KEY", tmp_path, setting="bundle.encryption.key")
    assert keys.load_data_key(data) == bytes([0xAB]) * 32


def test_unset_env_reference_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.delenv("MODELMAKE_SIGNING_KEY", raising=False)
    with pytest.raises(KeyMaterialError) as raised:
        keys.resolve_key_reference("env:MODELMAKE_SIGNING_KEY", tmp_path)
    assert str(raised.value) == (
        "bundle.signing.key ('env:MODELMAKE_SIGNING_KEY'): environment variable MODELMAKE_SIGNING_KEY "
        "is not set: export it, or run `modelmake keygen` and point bundle.signing.key at the file"
    )


def test_empty_env_reference(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELMAKE_DATA_KEY", "  ")
    with pytest.raises(KeyMaterialError, match="MODELMAKE_DATA_KEY is set but empty"):
        keys.resolve_key_reference("env:MODELMAKE_DATA_KEY", tmp_path, setting="bundle.encryption.key")
    with pytest.raises(KeyMaterialError, match="no variable name after 'env:'"):
        keys.resolve_key_reference("env:", tmp_path)


@pytest.mark.parametrize("ref", ["file:keys/signing.pem", "keys/signing.pem"])
def test_file_references_are_relative_to_the_workspace(tmp_path, ref):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "signing.pem").write_bytes(b"pem")
    assert keys.resolve_key_reference(ref, tmp_path) == b"pem"


def test_absolute_file_reference(tmp_path):
    (tmp_path / "k.pem").write_bytes(b"pem")
    assert keys.resolve_key_reference(f"file:{tmp_path / 'k.pem'}", Path("/nonexistent")) == b"pem"


def test_missing_key_file_says_where_it_looked(tmp_path):
    with pytest.raises(KeyMaterialError) as raised:
        keys.resolve_key_reference("file:keys/model.key", tmp_path, setting="bundle.encryption.key")
    message = str(raised.value)
    assert message.startswith("bundle.encryption.key ('file:keys/model.key'): ")
    assert f"{tmp_path / 'keys' / 'model.key'} does not exist" in message
    assert "run `modelmake keygen` and point bundle.encryption.key at the file" in message
    assert f"relative to the workspace, {tmp_path}" in message


def test_directory_and_unknown_scheme_references(tmp_path):
    (tmp_path / "keys").mkdir()
    with pytest.raises(KeyMaterialError, match="is a directory: point bundle.signing.key at the key file"):
        keys.resolve_key_reference("keys", tmp_path)
    with pytest.raises(KeyMaterialError, match="unknown key source 'vault': use env:VARIABLE or file:PATH"):
        keys.resolve_key_reference("vault:secret/signing", tmp_path)
    with pytest.raises(KeyMaterialError, match="bundle.signing.key is empty"):
        keys.resolve_key_reference("", tmp_path)


def test_unreadable_key_file(tmp_path, monkeypatch):
    (tmp_path / "k.pem").write_bytes(b"pem")

    def refuse(self):  # chmod 0 would not stop a test run as root
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(KeyMaterialError, match="k.pem cannot be read by this user: fix its owner or permissions"):
        keys.resolve_key_reference("k.pem", tmp_path)


# --- loading -------------------------------------------------------------------------

def test_non_p256_private_keys_are_refused_without_leaking_them():
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p384_pem = keys.private_key_pem(ec.generate_private_key(ec.SECP384R1()))
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyMaterialError) as raised:
        keys.load_private_key(rsa_pem, source="env:MODELMAKE_SIGNING_KEY")
    assert str(raised.value).startswith("env:MODELMAKE_SIGNING_KEY is not an EC key (it is RSA): ")
    assert "ECDSA P-256" in str(raised.value)
    assert_no_key_material(str(raised.value), rsa_pem)
    with pytest.raises(KeyMaterialError, match="is an EC key on secp384r1: modelmake needs P-256") as raised:
        keys.load_private_key(p384_pem)
    assert_no_key_material(str(raised.value), p384_pem)
    with pytest.raises(KeyMaterialError, match=r"is not an EC key \(it is Ed25519\)"):
        keys.load_private_key(ed_pem)


def test_private_key_mistakes_get_specific_messages():
    key = keys.generate_signing_key()
    pem = keys.private_key_pem(key)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    cases = {
        encrypted: "is encrypted with a passphrase",
        keys.public_key_pem(key): "holds a public key: signing needs the private key",
        pem.replace(b"\n", b"\\n"): "literal \\n sequences instead of line breaks",
        b"not a key at all": "expected a '-----BEGIN PRIVATE KEY-----' block",
        pem[:80] + pem[-26:]: "the PEM block is damaged",
    }
    for data, expected in cases.items():
        with pytest.raises(KeyMaterialError) as raised:
            keys.load_private_key(data, source="keys/signing.pem")
        message = str(raised.value)
        assert message.startswith("keys/signing.pem ")
        assert expected in message
        assert_no_key_material(message, pem, encrypted)
        # Nothing chained either: a parser's exception could quote the input.
        assert raised.value.__cause__ is None
        assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_public_key_mistakes_get_specific_messages():
    key = keys.generate_signing_key()
    with pytest.raises(KeyMaterialError, match="holds a private key: give the public key") as raised:
        keys.load_public_key(keys.private_key_pem(key), source="pub.pem")
    assert_no_key_material(str(raised.value), keys.private_key_pem(key))
    with pytest.raises(KeyMaterialError, match="is an EC key on secp521r1"):
        keys.load_public_key(keys.public_key_pem(ec.generate_private_key(ec.SECP521R1())))
    with pytest.raises(KeyMaterialError, match="is not a PEM public key"):
        keys.load_public_key(b"garbage")


def test_data_key_formats():
    key = bytes(range(32))
    assert keys.load_data_key(key.hex().encode()) == key
    assert keys.load_data_key(b"  " + key.hex().upper().encode() + b"\r\n") == key
    with pytest.raises(KeyMaterialError) as raised:
        keys.load_data_key(key, source="keys/model.key")
    assert str(raised.value) == (
        "keys/model.key holds 32 raw bytes, but data keys are written as 64 hex characters: "
        "convert it with `xxd -p -c 64 KEY`"
    )
    with pytest.raises(KeyMaterialError) as raised:
        keys.load_data_key(bytes(16).hex().encode() + b"\n", source="env:MODELMAKE_DATA_KEY")
    assert str(raised.value) == (
        "env:MODELMAKE_DATA_KEY is not a 32-byte key written as 64 hex characters (found 32 characters, "
        "not that many): run `modelmake keygen` to create one, or `openssl rand -hex 32`"
    )
    with pytest.raises(KeyMaterialError, match="found 64 characters, not all of them hex digits") as raised:
        keys.load_data_key(b"zz" * 32)
    assert "zz" not in str(raised.value)


# --- development keys ----------------------------------------------------------------

def test_development_keys_are_created_once_and_reused(tmp_path, permissive_umask):
    private_key, public_path, data_key = keys.development_keys(tmp_path)
    directory = tmp_path / "keys" / "dev"
    assert public_path == directory / "signing.pub.pem"
    assert mode_of(directory) == 0o700
    assert mode_of(directory / "signing.pem") == 0o600
    assert mode_of(directory / "data.key") == 0o600
    assert mode_of(public_path) == 0o644
    assert keys.load_public_key(public_path.read_bytes()).public_numbers() == private_key.public_key().public_numbers()
    assert len(data_key) == 32
    stamp = public_path.stat().st_mtime_ns

    again_key, again_path, again_data = keys.development_keys(tmp_path)
    assert again_key.private_numbers() == private_key.private_numbers()
    assert (again_path, again_data) == (public_path, data_key)
    assert public_path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in directory.iterdir()) == ["data.key", "signing.pem", "signing.pub.pem"]


def test_development_keys_restore_a_deleted_public_key(tmp_path):
    private_key, public_path, _ = keys.development_keys(tmp_path)
    public_path.unlink()
    keys.development_keys(tmp_path)
    assert public_path.read_bytes() == keys.public_key_pem(private_key)


def test_damaged_development_key_says_how_to_recover(tmp_path):
    keys.development_keys(tmp_path)
    (tmp_path / "keys" / "dev" / "data.key").write_text("oops\n")
    with pytest.raises(KeyMaterialError) as raised:
        keys.development_keys(tmp_path)
    assert f"development key {tmp_path / 'keys' / 'dev' / 'data.key'} is not a 32-byte key" in str(raised.value)
    assert f"delete {tmp_path / 'keys' / 'dev'} to create fresh development keys" in str(raised.value)


def test_existing_development_key_is_never_overwritten(tmp_path):
    directory = tmp_path / "keys" / "dev"
    directory.mkdir(parents=True)
    mine = keys.generate_signing_key()
    keys.write_private_key(directory / "signing.pem", mine)
    private_key, _, _ = keys.development_keys(tmp_path)
    assert private_key.private_numbers() == mine.private_numbers()
