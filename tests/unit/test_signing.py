"""The bundle signature: model_signing accepts what we sign, and both verifiers catch tampering."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake import fsutil
from modelmake.bundle import keys, signing
from modelmake.errors import StepError, VerificationError

from tests.support.signing_cli import model_signing_verify as model_signing_verify_cli

model_signing = pytest.importorskip("model_signing")

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "signing"
# model_signing reports a mismatched manifest as ValueError and a bad signature as
# cryptography's InvalidSignature.
MODEL_SIGNING_REJECTS = (ValueError, InvalidSignature)


# --- helpers -------------------------------------------------------------------------

def make_bundle(root: Path) -> Path:
    directory = root / "bundle"
    (directory / "files" / "digits" / "pixel-8").mkdir(parents=True)
    (directory / "manifest.json").write_text('{"name":"acme-vision","version":"1.4.0"}\n')
    (directory / "files" / "digits" / "pixel-8" / "model.tflite").write_bytes(bytes(range(256)) * 4)
    (directory / "files" / "labels.txt").write_text("zero\none\ntwo\n")
    (directory / "files-extra").write_bytes(b"sorts between 'files' and its children as a string")
    return directory


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return keys.generate_signing_key()


@pytest.fixture
def public_pem(tmp_path: Path, signing_key) -> Path:
    path = tmp_path / "pub.pem"
    keys.write_public_key(path, signing_key)
    return path


@pytest.fixture
def bundle(tmp_path: Path, signing_key) -> Path:
    directory = make_bundle(tmp_path)
    signing.sign_directory(directory, signing_key)
    return directory


def model_signing_verify(directory: Path, public_pem: Path, signature: Path | None = None) -> None:
    """model_signing's own verifier, through its public Python API."""
    signature = signature or directory / "model.sig"
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_pem).verify(directory, signature)


def statement_of(signature_file: Path) -> dict:
    envelope = json.loads(signature_file.read_bytes())["dsseEnvelope"]
    return json.loads(base64.b64decode(envelope["payload"]))


# --- model_signing accepts what we sign ----------------------------------------------

def test_model_signing_python_api_and_cli_accept_an_untouched_bundle(bundle, signing_key, public_pem):
    model_signing_verify(bundle, public_pem)
    result = model_signing_verify_cli(bundle, public_pem)
    assert result.returncode == 0, result.stderr
    assert "Verification succeeded" in result.stdout
    assert signing.verify_directory(bundle, signing_key.public_key()) == [
        "files/digits/pixel-8/model.tflite",
        "files/labels.txt",
        "files-extra",
        "manifest.json",
    ]


def test_model_signing_cli_rejects_a_changed_bundle(bundle, public_pem):
    (bundle / "files" / "labels.txt").write_text("zero\none\nthree\n")
    result = model_signing_verify_cli(bundle, public_pem)
    assert result.returncode != 0
    assert "files/labels.txt" in result.stderr


def test_our_manifest_is_the_one_model_signing_computes(tmp_path, signing_key):
    """Same resources, same order, same root digest as model_signing's own signer."""
    ours = make_bundle(tmp_path / "ours")
    theirs = make_bundle(tmp_path / "theirs")
    signing.sign_directory(ours, signing_key)
    key_file = tmp_path / "signing.pem"
    keys.write_private_key(key_file, signing_key)
    (
        model_signing.signing.Config()
        .use_elliptic_key_signer(private_key=key_file)
        .set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"]))
        .sign(theirs, theirs / "model.sig")
    )
    our_statement, their_statement = statement_of(ours / "model.sig"), statement_of(theirs / "model.sig")
    assert our_statement["subject"] == their_statement["subject"]
    assert our_statement["predicate"]["resources"] == their_statement["predicate"]["resources"]
    assert sorted(their_statement["predicate"]["serialization"]["ignore_paths"]) == (
        our_statement["predicate"]["serialization"]["ignore_paths"]
    )
    # ... and we verify a signature model_signing made (random nonce, indented JSON).
    assert signing.verify_directory(theirs, signing_key.public_key())


# --- tampering -----------------------------------------------------------------------

def change_one_byte(directory: Path) -> str:
    target = directory / "files" / "digits" / "pixel-8" / "model.tflite"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    return "changed: files/digits/pixel-8/model.tflite"


def add_a_file(directory: Path) -> str:
    (directory / "files" / "digits" / "extra.bin").write_bytes(b"not signed")
    return "extra: files/digits/extra.bin"


def add_a_file_at_the_top(directory: Path) -> str:
    (directory / "README").write_text("not signed")
    return "extra: README"


def remove_a_file(directory: Path) -> str:
    (directory / "files" / "labels.txt").unlink()
    return "missing: files/labels.txt"


@pytest.mark.parametrize("tamper", [change_one_byte, add_a_file, add_a_file_at_the_top, remove_a_file])
def test_both_verifiers_reject_a_tampered_bundle(bundle, signing_key, public_pem, tamper):
    expected = tamper(bundle)
    with pytest.raises(MODEL_SIGNING_REJECTS):
        model_signing_verify(bundle, public_pem)
    with pytest.raises(VerificationError) as raised:
        signing.verify_directory(bundle, signing_key.public_key())
    assert expected in str(raised.value)
    assert "does not match model.sig" in str(raised.value)


def test_every_problem_is_listed_at_once(bundle, signing_key):
    change_one_byte(bundle)
    add_a_file(bundle)
    remove_a_file(bundle)
    with pytest.raises(VerificationError) as raised:
        signing.verify_directory(bundle, signing_key.public_key())
    message = str(raised.value)
    assert "changed: files/digits/pixel-8/model.tflite" in message
    assert "extra: files/digits/extra.bin" in message
    assert "missing: files/labels.txt" in message


def test_a_different_key_is_rejected_by_both(bundle, tmp_path):
    other = keys.generate_signing_key()
    other_pem = tmp_path / "other.pem"
    keys.write_public_key(other_pem, other)
    with pytest.raises(MODEL_SIGNING_REJECTS):
        model_signing_verify(bundle, other_pem)
    with pytest.raises(VerificationError, match="signed by a different key: check --public-key"):
        signing.verify_directory(bundle, other.public_key())


def test_a_different_key_is_named_even_without_the_hint(bundle):
    document = json.loads((bundle / "model.sig").read_bytes())
    del document["verificationMaterial"]["publicKey"]["hint"]
    (bundle / "model.sig").write_text(json.dumps(document))
    with pytest.raises(VerificationError, match="signed by a\\s+different key \\(check --public-key\\)"):
        signing.verify_directory(bundle, keys.generate_signing_key().public_key())


def test_an_altered_signed_statement_is_rejected(bundle, signing_key, public_pem):
    document = json.loads((bundle / "model.sig").read_bytes())
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"].pop()  # drop manifest.json from what is "signed"
    digests = b"".join(bytes.fromhex(r["digest"]) for r in statement["predicate"]["resources"])
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(digests).hexdigest()
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (bundle / "model.sig").write_text(json.dumps(document))
    with pytest.raises(MODEL_SIGNING_REJECTS):
        model_signing_verify(bundle, public_pem)
    with pytest.raises(VerificationError, match="model.sig was altered after signing"):
        signing.verify_directory(bundle, signing_key.public_key())


def test_a_missing_or_garbled_signature_is_reported(bundle, signing_key):
    (bundle / "model.sig").write_text("{not json")
    with pytest.raises(VerificationError, match="not valid JSON"):
        signing.verify_directory(bundle, signing_key.public_key())
    (bundle / "model.sig").unlink()
    with pytest.raises(VerificationError, match="model.sig is missing"):
        signing.verify_directory(bundle, signing_key.public_key())


def test_git_files_and_the_signature_are_not_covered(bundle, signing_key, public_pem):
    (bundle / ".git").mkdir()
    (bundle / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (bundle / ".gitignore").write_text("*.tmp\n")
    model_signing_verify(bundle, public_pem)
    assert "model.sig" not in signing.verify_directory(bundle, signing_key.public_key())


def test_symbolic_links_are_refused(tmp_path, signing_key):
    directory = make_bundle(tmp_path)
    (directory / "link").symlink_to(directory / "manifest.json")
    with pytest.raises(StepError, match="link is a symbolic link"):
        signing.sign_directory(directory, signing_key)
    (directory / "link").unlink()
    signing.sign_directory(directory, signing_key)
    (directory / "link").symlink_to("/etc/hostname")
    with pytest.raises(VerificationError, match="link is a symbolic link"):
        signing.verify_directory(directory, signing_key.public_key())


# --- reproducibility and format details ----------------------------------------------

def test_signing_twice_gives_identical_bytes(tmp_path, signing_key):
    first = make_bundle(tmp_path / "one")
    second = make_bundle(tmp_path / "elsewhere" / "two")  # same directory name, other parent
    a = signing.sign_directory(first, signing_key).read_bytes()
    b = signing.sign_directory(first, signing_key).read_bytes()
    c = signing.sign_directory(second, signing_key).read_bytes()
    assert a == b == c
    assert a == fsutil.canonical_json(json.loads(a))
    assert not [p.name for p in first.parent.rglob("*.tmp")]
    assert (first / "model.sig").stat().st_mode & 0o777 == 0o644


def test_signature_file_layout(bundle, signing_key):
    raw = (bundle / "model.sig").read_bytes()
    document = json.loads(raw)
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(keys.public_key_pem(signing_key)).hexdigest()},
        "tlogEntries": [],
    }
    envelope = document["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    assert payload == fsutil.canonical_json(json.loads(payload))
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    assert signature[0] == 0x30  # DER SEQUENCE
    expected_pae = b"DSSEv1 28 application/vnd.in-toto+json %d " % len(payload) + payload
    assert signing.pae(payload) == expected_pae
    signing_key.public_key().verify(signature, expected_pae, ec.ECDSA(hashes.SHA256()))
    statement = json.loads(payload)
    assert statement["predicate"]["serialization"] == {
        "allow_symlinks": False,
        "hash_type": "sha256",
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore", "model.sig"],
        "method": "files",
    }
    assert statement["subject"][0]["name"] == "bundle"


def test_manifest_order_compares_path_components():
    # As model_signing orders PurePosixPath: "files/..." before "files-extra".
    manifest = {"files-extra": "", "files/z": "", "files/a/b": "", "a": ""}
    assert sorted(manifest, key=signing._manifest_order) == ["a", "files/a/b", "files/z", "files-extra"]


def test_hash_file_streams_across_chunks(tmp_path):
    data = bytes(range(256)) * (9 * 1024) + b"tail"  # a little over two 1 MiB chunks
    (tmp_path / "big").write_bytes(data)
    assert signing.hash_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_only_p256_keys_sign():
    with pytest.raises(ValueError, match="P-256"):
        signing.create_signature(Path("."), ec.generate_private_key(ec.SECP384R1()))


# --- the committed test vector -------------------------------------------------------

def test_vector_signature_is_reproduced_byte_for_byte_and_verifies():
    private_key = keys.load_private_key((VECTORS / "test-signing-key.pem.txt").read_bytes())
    public_key = keys.load_public_key((VECTORS / "public.pem.txt").read_bytes())
    assert keys.public_key_pem(private_key) == keys.public_key_pem(public_key)
    bundle = VECTORS / "bundle"
    assert signing.create_signature(bundle, private_key) == (bundle / "model.sig").read_bytes()
    assert signing.verify_directory(bundle, public_key) == ["files/digits.bin", "files/labels.txt", "manifest.json"]
    model_signing_verify(bundle, VECTORS / "public.pem.txt")


def test_vector_copy_still_verifies_with_model_signing_verify_cli(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(VECTORS / "bundle", copy)
    result = model_signing_verify_cli(copy, VECTORS / "public.pem.txt")
    assert result.returncode == 0, result.stderr
    private_key = serialization.load_pem_private_key((VECTORS / "test-signing-key.pem.txt").read_bytes(), None)
    assert signing.sign_directory(copy, private_key).read_bytes() == (VECTORS / "bundle" / "model.sig").read_bytes()
