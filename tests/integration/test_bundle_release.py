"""A release bundle end to end: signatures other tools accept, encryption Tink reads, tamper
detection, reproducible bytes, no key material in build/, and release-key rules.

Builds run `doit` in subprocesses on copies of the session's small workspace
(conftest.py); only the package and report tasks rerun in most of them. The
clean builds that compare bytes across environments are marked slow.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from modelmake import fsutil
from modelmake.bundle import keys, signing, streaming_aead
from modelmake.bundle.archive import ZIP_EPOCH_MIN, extract_archive
from modelmake.errors import SpecError, StepError, TamperedFileError

from tests.support.recipes import WIDE_RECIPE
from tests.support.signing_cli import model_signing_verify
from tests.support.tink_interop import tink_decrypt, tink_streaming_aead
from tests.support.workspaces import BUNDLE, BUNDLE_TASKS, VERSION, Workspace, copy_workspace, modelmake
from tests.support.zips import symlink_entry

SIGNING_LINE = '  signing: {key: "file:keys/signing.pem"}'
EXIT = {"tampered": 9, "file_set": 10, "wrong_key": 11, "format_version": 8, "decryption": 7, "unsafe_archive": 12}

WIDE_MODEL = """\
wide:
  description: A wide layer whose encrypted file spans several segments
  source: {recipe: recipes/wide.py}
  data:
    evaluation: {recipe: recipes/wide.py, split: test}
  io:
    input: {layout: NC, scale: 1/16}
  variants:
    fp32: {}
  targets:
    android-arm64-cpu: [fp32]
"""
WIDE_FILE = "files/android-arm64-cpu/wide.fp32.tflite.enc"


# --- helpers -----------------------------------------------------------------------

def bundle_dir(workspace: Workspace) -> Path:
    return workspace.build / "bundles" / BUNDLE / VERSION


def archives(workspace: Workspace) -> list[Path]:
    return sorted((workspace.build / "bundles" / BUNDLE).glob("*.zip"))


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_bytes())


def variants_of(manifest: dict) -> list[dict]:
    return [v for m in manifest["models"].values() for v in m["variants"].values()]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def public_key_file(private_pem: Path, destination: Path) -> Path:
    keys.write_public_key(destination, keys.load_private_key(private_pem.read_bytes()))
    return destination


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def secret_forms(private_pem: bytes, data_key: bytes | None = None) -> dict[str, bytes]:
    """Every shape in which key material could leak: PEM body and lines, DER, raw scalar, raw and hex data key."""
    key = keys.load_private_key(private_pem)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    body = [line for line in private_pem.splitlines() if line and not line.startswith(b"-----")]
    forms = {
        "private key PEM body": b"".join(body),
        "private key DER": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "private scalar": scalar,
        "private scalar hex": scalar.hex().encode(),
    }
    forms |= {f"private key PEM line {i}": line for i, line in enumerate(body)}
    if data_key is not None:
        forms |= {"data key": data_key, "data key hex": data_key.hex().encode(), "data key HEX": data_key.hex().upper().encode()}
    return forms


def assert_no_key_material(build: Path, forms: dict[str, bytes]) -> None:
    files = [p for p in build.rglob("*") if p.is_file()]
    assert any(p.name.startswith(".doit.db") for p in files), "doit's state should be among the files searched"
    assert any("logs" in p.relative_to(build).parts for p in files), "the logs should be among the files searched"
    for path in files:
        data = path.read_bytes()
        found = [name for name, form in forms.items() if form in data]
        assert found == [], f"{', '.join(found)} found in {path}"


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def public_pem(built, tmp_path_factory) -> Path:
    return public_key_file(built.workspace.root / "keys" / "signing.pem", tmp_path_factory.mktemp("keys") / "signing.pub.pem")


@pytest.fixture(scope="module")
def dev_encrypted(built, tmp_path_factory) -> Workspace:
    """The built workspace with `encryption: {}`: the development data key under keys/dev/."""
    workspace = copy_workspace(built.workspace.root, tmp_path_factory.mktemp("dev-encrypted") / "workspace")
    workspace.edit_spec(SIGNING_LINE, SIGNING_LINE + "\n  encryption: {}")
    run = workspace.doit()
    assert run.executed == BUNDLE_TASKS, run.describe()
    return workspace


@pytest.fixture(scope="module")
def keygen_encrypted(built, tmp_path_factory) -> Workspace:
    """The built workspace encrypted with a `modelmake keygen` data key, plus a model of several segments."""
    workspace = copy_workspace(built.workspace.root, tmp_path_factory.mktemp("keygen-encrypted") / "workspace")
    result = modelmake("keygen", "--out", "keys/release", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    workspace.edit_spec(SIGNING_LINE, SIGNING_LINE + '\n  encryption: {key: "file:keys/release/data.key"}')
    workspace.write("recipes/wide.py", WIDE_RECIPE)
    workspace.add_model(WIDE_MODEL)
    workspace.doit()
    return workspace


def data_key_of(workspace: Workspace) -> bytes:
    path = workspace.root / ("keys/release/data.key" if (workspace.root / "keys/release").exists() else "keys/dev/data.key")
    return keys.load_data_key(path.read_bytes())


# --- signatures: model_signing and modelmake agree ----------------------------------

def test_model_signing_and_modelmake_accept_the_bundle_and_every_slice(built, public_pem, tmp_path):
    directory = bundle_dir(built.workspace)
    result = model_signing_verify(directory, public_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    result = modelmake("verify", directory, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"verified {BUNDLE} {VERSION} (all): 6 files, signing: release\n"

    zips = archives(built.workspace)
    assert [z.name for z in zips] == [f"{BUNDLE}-{VERSION}-android.zip", f"{BUNDLE}-{VERSION}.zip"]
    for zip_path in zips:
        extracted = tmp_path / zip_path.stem
        extract_archive(zip_path, extracted)
        result = model_signing_verify(extracted, public_pem)
        assert result.returncode == 0, f"{zip_path.name}: {result.stdout}{result.stderr}"
        manifest = manifest_of(extracted)
        part = manifest.get("slice", "all")
        assert {v["platform"] for v in variants_of(manifest)} == {"android"}
        result = modelmake("verify", zip_path, "--public-key", public_pem, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"verified {BUNDLE} {VERSION} ({part}): {len(variants_of(manifest))} files, signing: release\n"


def test_a_one_byte_change_anywhere_fails_both_verifiers(built, public_pem, tmp_path):
    original = bundle_dir(built.workspace)
    for victim in files_under(original):
        copy = tmp_path / victim.replace("/", "_") / VERSION
        shutil.copytree(original, copy)
        if victim == "model.sig":
            # A character of the signature value itself, swapped for another base64 character so the file still parses.
            raw = (copy / victim).read_bytes()
            envelope = json.loads(raw)["dsseEnvelope"]
            at = raw.index(envelope["signatures"][0]["sig"].encode()) + 20
            (copy / victim).write_bytes(raw[:at] + (b"B" if raw[at:at + 1] == b"A" else b"A") + raw[at + 1:])
        else:
            flip_byte(copy / victim, (copy / victim).stat().st_size // 2)
        assert model_signing_verify(copy, public_pem).returncode != 0, f"model_signing accepted a change to {victim}"
        result = modelmake("verify", copy, "--public-key", public_pem, cwd=tmp_path)
        if victim == "model.sig":
            assert result.returncode == EXIT["wrong_key"], result.stderr
            assert "model.sig was altered after signing" in result.stderr
        else:
            assert result.returncode == EXIT["tampered"], f"{victim}: {result.stderr}"
            assert f"changed: {victim} " in result.stderr


def test_a_changed_byte_inside_an_archive_is_refused(built, public_pem, tmp_path):
    zip_path = tmp_path / "bundle.zip"
    shutil.copyfile(archives(built.workspace)[-1], zip_path)
    model = (bundle_dir(built.workspace) / "files/pixel-8/digits.fp16.tflite").read_bytes()  # stored once: no other entry has its bytes
    flip_byte(zip_path, zip_path.read_bytes().index(model) + len(model) // 2)
    result = modelmake("verify", zip_path, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == EXIT["unsafe_archive"], result.stderr
    assert "files/pixel-8/digits.fp16.tflite" in result.stderr and "CRC-32" in result.stderr


@pytest.mark.parametrize("change", ["added", "removed"])
def test_an_added_or_removed_file_fails_both_verifiers(built, public_pem, tmp_path, change):
    copy = tmp_path / VERSION
    shutil.copytree(bundle_dir(built.workspace), copy)
    victim = "files/pixel-8/digits.int8.tflite"
    if change == "added":
        victim = "files/pixel-8/digits.int4.tflite"
        (copy / victim).write_bytes(b"TFL3 not signed")
    else:
        (copy / victim).unlink()
    assert model_signing_verify(copy, public_pem).returncode != 0
    result = modelmake("verify", copy, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == EXIT["file_set"], result.stderr
    assert f"{'extra' if change == 'added' else 'missing'}: {victim} " in result.stderr


def test_another_public_key_fails_both_verifiers(built, tmp_path):
    other = tmp_path / "other.pub.pem"
    keys.write_public_key(other, keys.generate_signing_key())
    directory = bundle_dir(built.workspace)
    assert model_signing_verify(directory, other).returncode != 0
    for target in (directory, archives(built.workspace)[0]):
        result = modelmake("verify", target, "--public-key", other, cwd=tmp_path)
        assert result.returncode == EXIT["wrong_key"], result.stderr
        assert "signed by a different key" in result.stderr


def test_an_unknown_format_version_in_a_resigned_bundle(built, public_pem, tmp_path):
    copy = tmp_path / "bundle" / VERSION
    shutil.copytree(bundle_dir(built.workspace), copy)
    manifest = manifest_of(copy) | {"format_version": 2}
    (copy / "manifest.json").write_bytes(fsutil.canonical_json_document(manifest))
    signing.sign_directory(copy, keys.load_private_key((built.workspace.root / "keys" / "signing.pem").read_bytes()))
    assert model_signing_verify(copy, public_pem).returncode == 0  # the signature is fine: only the version is unknown
    result = modelmake("verify", copy, "--public-key", public_pem, cwd=tmp_path)
    assert result.returncode == EXIT["format_version"], result.stderr
    assert "format_version 2" in result.stderr and "upgrade modelmake" in result.stderr


def hostile_copy(source_zip: Path, destination: Path, entry) -> Path:
    """The real archive's entries plus one hostile entry."""
    with zipfile.ZipFile(source_zip) as source, zipfile.ZipFile(destination, "w") as out:
        for info in source.infolist():
            out.writestr(info, source.read(info))
        out.writestr(*entry)
    return destination


@pytest.mark.parametrize(
    "entry, reason",
    [(("../../evil.txt", b"owned"), "has a '..' component"), (symlink_entry("files/passwd", "/etc/passwd"), "is a symbolic link")],
    ids=["zip-slip", "symlink"],
)
def test_an_unsafe_archive_is_rejected_with_nothing_written(built, public_pem, tmp_path, entry, reason):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    zip_path = hostile_copy(archives(built.workspace)[-1], deep / "evil.zip", entry)
    before = sorted(tmp_path.rglob("*"))
    result = modelmake("verify", zip_path, "--public-key", public_pem, cwd=cwd, env={"TMPDIR": str(scratch)})
    assert result.returncode == EXIT["unsafe_archive"], result.stderr
    assert reason in result.stderr and "nothing was extracted" in result.stderr and result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


# --- encryption ----------------------------------------------------------------------

@pytest.mark.parametrize("configuration", ["dev_encrypted", "keygen_encrypted"])
def test_tink_decrypts_every_encrypted_file_to_the_built_artifact(request, public_pem, tmp_path, configuration):
    workspace = request.getfixturevalue(configuration)
    aead = tink_streaming_aead(data_key_of(workspace))
    directory = bundle_dir(workspace)
    manifest = manifest_of(directory)
    variants = variants_of(manifest)
    assert variants and all(v["file"].endswith(".enc") for v in variants)
    assert files_under(directory / "files") == sorted(v["file"][len("files/"):] for v in variants)
    for variant in variants:
        ciphertext = (directory / variant["file"]).read_bytes()
        associated_data = streaming_aead.associated_data_for(manifest["bundle"], manifest["version"], variant["file"])
        plaintext = tink_decrypt(aead, ciphertext, associated_data)
        artifact = workspace.build / "artifacts" / variant["target"] / Path(variant["file"]).name.removesuffix(".enc")
        assert plaintext == artifact.read_bytes(), variant["file"]
        assert hashlib.sha256(plaintext).hexdigest() == variant["encryption"]["plaintext_sha256"]
        assert len(plaintext) == variant["encryption"]["plaintext_size"]
        assert hashlib.sha256(ciphertext).hexdigest() == variant["sha256"] and len(ciphertext) == variant["size"]
    if configuration == "keygen_encrypted":
        assert (directory / WIDE_FILE).stat().st_size > 3 * streaming_aead.CIPHERTEXT_SEGMENT_SIZE
    assert model_signing_verify(directory, public_pem).returncode == 0


@pytest.mark.parametrize("configuration, key", [("dev_encrypted", "keys/dev/data.key"), ("keygen_encrypted", "file:keys/release/data.key")])
def test_modelmake_decrypt_gives_back_the_built_artifacts(request, public_pem, configuration, key):
    workspace = request.getfixturevalue(configuration)
    for source in [bundle_dir(workspace), *archives(workspace)]:
        out = workspace.root / "decrypted" / source.name
        result = modelmake("decrypt", source, "--key", key, "--out", out, "--public-key", public_pem, cwd=workspace.root)
        assert result.returncode == 0, result.stderr
        for name in files_under(out):
            target, file_name = name.split("/")[1:]
            assert (out / name).read_bytes() == (workspace.build / "artifacts" / target / file_name).read_bytes(), name
        assert len(files_under(out)) == len(variants_of(manifest_of(bundle_dir(workspace))))


def swap_segments_1_and_2(data: bytes) -> bytes:
    size = streaming_aead.CIPHERTEXT_SEGMENT_SIZE
    return data[:size] + data[2 * size : 3 * size] + data[size : 2 * size] + data[3 * size :]


TAMPERING = {
    "bit-flip": lambda data: data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x04]) + data[len(data) // 2 + 1 :],
    "truncated": lambda data: data[:-100],
    "truncated-at-a-segment": lambda data: data[: 2 * streaming_aead.CIPHERTEXT_SEGMENT_SIZE],
    "appended": lambda data: data + b"more",
    "swapped-segments": swap_segments_1_and_2,
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_modelmake_decrypt_detects_a_damaged_bundle_file(keygen_encrypted, tmp_path, kind):
    copy = tmp_path / VERSION
    shutil.copytree(bundle_dir(keygen_encrypted), copy)
    (copy / WIDE_FILE).write_bytes(TAMPERING[kind]((copy / WIDE_FILE).read_bytes()))
    out = tmp_path / "out"
    result = modelmake("decrypt", copy, "--key", "keys/release/data.key", "--out", out, "--file", WIDE_FILE, cwd=keygen_encrypted.root)
    assert result.returncode == EXIT["decryption"], result.stderr
    assert WIDE_FILE in result.stderr and "failed authentication" in result.stderr
    assert files_under(out) == []


def test_modelmake_decrypt_with_another_key(keygen_encrypted, tmp_path):
    keys.write_data_key(tmp_path / "other.key", keys.generate_data_key())
    result = modelmake("decrypt", bundle_dir(keygen_encrypted), "--key", "other.key", "--out", "out", cwd=tmp_path)
    assert result.returncode == EXIT["decryption"], result.stderr
    assert "Check --key" in result.stderr
    assert files_under(tmp_path / "out") == []


# --- keys stay out of build/ ---------------------------------------------------------

@pytest.mark.parametrize("configuration", ["dev_encrypted", "keygen_encrypted"])
def test_no_key_material_anywhere_under_build(request, configuration):
    workspace = request.getfixturevalue(configuration)
    forms = secret_forms((workspace.root / "keys" / "signing.pem").read_bytes(), data_key_of(workspace))
    if (workspace.root / "keys" / "dev" / "signing.pem").exists():
        forms |= {f"development {k}": v for k, v in secret_forms((workspace.root / "keys/dev/signing.pem").read_bytes()).items()}
    assert_no_key_material(workspace.build, forms)


# --- release builds ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["MODELMAKE_RELEASE=1", "signing.release"])
def test_a_release_build_without_configured_keys_fails_at_load(fresh_workspace, how):
    if how == "signing.release":
        fresh_workspace.edit_spec(SIGNING_LINE, "  signing: {release: true}\n  encryption: {}")
        env = {}
    else:
        fresh_workspace.edit_spec(SIGNING_LINE, "  encryption: {}")
        env = {"MODELMAKE_RELEASE": "1"}
    run = fresh_workspace.doit(env=env, ok=False)
    assert run.returncode == SpecError.exit_code, run.describe()
    assert "Traceback" not in run.output
    assert "models.yaml" in run.stderr
    assert "a release build needs bundle.signing.key (env:VAR or file:path)" in run.stderr
    assert "run `modelmake keygen`" in run.stderr
    assert "a release build needs bundle.encryption.key" in run.stderr
    assert run.executed == set()
    assert not (fresh_workspace.build / "bundles").exists()
    assert not (fresh_workspace.root / "keys" / "dev").exists()


def test_a_release_build_with_keygen_keys_from_the_environment(built, tmp_path):
    workspace = copy_workspace(built.workspace.root, tmp_path / "workspace")
    result = modelmake("keygen", "--out", "keys/ci", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    # CI holds the private keys in its secret store, not in the checkout.
    vault = tmp_path / "vault"
    vault.mkdir()
    for name in ("signing.pem", "data.key"):
        shutil.move(workspace.root / "keys" / "ci" / name, vault / name)
    workspace.edit_spec(SIGNING_LINE, '  signing: {key: "env:ACME_SIGNING_KEY", release: true}\n  encryption: {key: "env:ACME_DATA_KEY"}')
    env = {
        "MODELMAKE_RELEASE": "1",
        "ACME_SIGNING_KEY": (vault / "signing.pem").read_text(),
        "ACME_DATA_KEY": (vault / "data.key").read_text(),
    }
    run = workspace.doit(env=env)
    assert run.executed == BUNDLE_TASKS, run.describe()
    assert manifest_of(bundle_dir(workspace))["signing"] == "release"
    result = modelmake("verify", archives(workspace)[-1], "--public-key", "keys/ci/signing.pub.pem", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("signing: release\n")
    assert not (workspace.root / "keys" / "dev").exists()
    data_key = keys.load_data_key((vault / "data.key").read_bytes())
    assert_no_key_material(workspace.build, secret_forms((vault / "signing.pem").read_bytes(), data_key))
    assert workspace.doit(env=env).executed == set()


# --- reproducibility -----------------------------------------------------------------

ENVIRONMENTS = (
    ({"TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, 0o022),
    ({"TZ": "Asia/Kathmandu", "LC_ALL": "POSIX", "LANG": "POSIX", "SOURCE_DATE_EPOCH": str(ZIP_EPOCH_MIN)}, 0o077),
)


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_two_clean_builds_in_different_environments_give_identical_bytes(template, tmp_path, encrypted):
    workspaces = [
        copy_workspace(template, tmp_path / "first" / "workspace"),
        copy_workspace(template, tmp_path / "second" / "somewhere" / "else"),
    ]
    data_key = keys.generate_data_key()
    for workspace, (env, umask) in zip(workspaces, ENVIRONMENTS, strict=True):
        if encrypted:
            keys.write_data_key(workspace.root / "keys" / "data.key", data_key)
            workspace.edit_spec(SIGNING_LINE, SIGNING_LINE + '\n  encryption: {key: "file:keys/data.key"}')
        workspace.doit(env=env, umask=umask)
    first, second = (w.bundle_bytes() for w in workspaces)
    assert sorted(first) == sorted(second)
    assert any(name.endswith(".zip") for name in first)
    assert [name for name in first if first[name] != second[name]] == []
    if encrypted:
        assert all(v["file"].endswith(".enc") for v in variants_of(manifest_of(bundle_dir(workspaces[0]))))


# --- the package step's shortcuts stay safe ------------------------------------------

def test_encrypt_file_refuses_a_plaintext_that_is_not_the_recorded_one(tmp_path):
    source = tmp_path / "model.tflite"
    source.write_bytes(b"the model as built" * 1000)
    recorded = hashlib.sha256(b"the model as measured").hexdigest()
    with pytest.raises(StepError, match="is not the file whose SHA-256 was recorded"):
        streaming_aead.encrypt_file(source, tmp_path / "model.enc", bytes(32), b"ad", plaintext_sha256=recorded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_encrypt_file_reports_what_it_wrote_and_a_given_digest_changes_nothing(tmp_path):
    source = tmp_path / "model.tflite"
    source.write_bytes(os.urandom(streaming_aead.FIRST_PLAINTEXT_SEGMENT_SIZE + 12345))
    computed = streaming_aead.encrypt_file(source, tmp_path / "a.enc", bytes(32), b"ad")
    given = streaming_aead.encrypt_file(
        source, tmp_path / "b.enc", bytes(32), b"ad", plaintext_sha256=fsutil.sha256_file(source), durable=False
    )
    assert (tmp_path / "a.enc").read_bytes() == (tmp_path / "b.enc").read_bytes()
    assert computed == given
    assert given.sha256 == fsutil.sha256_file(tmp_path / "b.enc") and given.size == (tmp_path / "b.enc").stat().st_size
    assert given.plaintext_sha256 == fsutil.sha256_file(source) and given.plaintext_size == source.stat().st_size


def test_a_failed_write_while_encrypting_surfaces_and_leaves_nothing(tmp_path, monkeypatch):
    source = tmp_path / "model.tflite"
    source.write_bytes(os.urandom(3 * streaming_aead.CIPHERTEXT_SEGMENT_SIZE))
    real_fdopen = os.fdopen

    class DiskFull(io.RawIOBase):
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            self.handle.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: DiskFull(real_fdopen(fd, mode)))
    threads = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        streaming_aead.encrypt_file(source, tmp_path / "model.enc", bytes(32), b"ad")
    assert threading.active_count() == threads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_signing_with_given_digests_matches_hashing_and_a_wrong_one_fails_verification(tmp_path):
    directory = tmp_path / "bundle"
    (directory / "files").mkdir(parents=True)
    (directory / "files" / "model.bin").write_bytes(os.urandom(5000))
    (directory / "manifest.json").write_bytes(b"{}\n")
    key = keys.generate_signing_key()
    hashed = signing.create_signature(directory, key)
    given = signing.create_signature(directory, key, digests={"files/model.bin": fsutil.sha256_file(directory / "files/model.bin")})
    assert given == hashed
    signing.sign_directory(directory, key, digests={"files/model.bin": "0" * 64, "files/not-there.bin": "1" * 64})
    with pytest.raises(TamperedFileError, match="changed: files/model.bin"):
        signing.verify_directory(directory, key.public_key())
