"""`modelmake keygen/verify/inspect/decrypt`: output, and one exit code per failure class.

The bundles here are made in code with the bundle functions (no build), so every
failure class can be produced exactly and checked in milliseconds.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from modelmake import cli, errors, fsutil
from modelmake.bundle import keys, signing, streaming_aead
from modelmake.bundle.archive import write_archive

from tests.support.zips import symlink_entry as symlink

NAME, VERSION = "acme-vision", "1.4.0"
SMALL = bytes(range(256)) * 16  # 4 KiB: one segment when encrypted
# Four segments when encrypted, so that segments 1 and 2 are full-sized and can trade places.
LARGE = (bytes(range(251)) * 16000)[: 3 * streaming_aead.PLAINTEXT_SEGMENT_SIZE + 1000]
VARIANTS = {
    # variant id: (target, platform, precision, plaintext)
    "digits.fp32.tflite@pixel-8": ("pixel-8", "android", "fp32", LARGE),
    "digits.int8.tflite@pixel-8": ("pixel-8", "android", "int8", SMALL),
    "digits.int8.tflite@android-arm64-cpu": ("android-arm64-cpu", "android", "int8", SMALL[::-1]),
}
EXIT = {
    "ok": 0, "error": 1, "usage": 2, "key": 5, "verification": 6, "decryption": 7, "format_version": 8,
    "tampered": 9, "file_set": 10, "wrong_key": 11, "unsafe_archive": 12, "signature_format": 13, "publish": 14,
    "spec": 20, "step": 21, "budget": 22, "busy": 23, "output": 24, "cluster": 25, "alert": 30, "rollout_log": 31, "bug": 70,
}
# doit's own exit codes: a build failure that reached a process as one of these could not be told apart.
DOIT_CODES = {0, 1, 2, 3}


# --- helpers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return keys.generate_signing_key()


@pytest.fixture(scope="module")
def data_key() -> bytes:
    return bytes(range(100, 132))


@pytest.fixture
def public_pem(tmp_path, signing_key) -> Path:
    path = tmp_path / "keys" / "signing.pub.pem"
    path.parent.mkdir(exist_ok=True)
    keys.write_public_key(path, signing_key)
    return path


@pytest.fixture
def data_key_file(tmp_path, data_key) -> Path:
    path = tmp_path / "keys" / "data.key"
    path.parent.mkdir(exist_ok=True)
    keys.write_data_key(path, data_key)
    return path


def make_bundle(root: Path, signing_key, *, data_key: bytes | None = None, slice_name: str | None = None, **manifest_fields) -> Path:
    """A signed bundle directory shaped like the package step's, with the variants above."""
    directory = root / "bundles" / NAME / VERSION
    variants = {}
    for variant_id, (target, platform, precision, plaintext) in VARIANTS.items():
        path = f"files/{target}/digits.{precision}.tflite" + (".enc" if data_key else "")
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        entry: dict = {
            "target": target, "platform": platform, "format": "tflite", "variant": precision, "precision": precision,
            "file": path, "metrics": {"accuracy_drop": "0.001000", "size_kb": "4.000000", "top1": "0.912000"},
        }
        if data_key is None:
            (directory / path).write_bytes(plaintext)
        else:
            source = root / "plain" / variant_id
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(plaintext)
            encrypted = streaming_aead.encrypt_file(
                source, directory / path, data_key, streaming_aead.associated_data_for(NAME, VERSION, path)
            )
            entry["encryption"] = {
                "scheme": "AES256_GCM_HKDF_1MB",
                "associated_data": {"bundle": NAME, "version": VERSION, "path": path},
                "plaintext_sha256": encrypted.plaintext_sha256,
                "plaintext_size": encrypted.plaintext_size,
            }
        entry["sha256"] = fsutil.sha256_file(directory / path)
        entry["size"] = (directory / path).stat().st_size
        variants[variant_id] = entry
    manifest = {
        "format_version": 1, "bundle": NAME, "version": VERSION, "created": "1980-01-01T00:00:00Z",
        "signing": "development",
        "targets": {
            "pixel-8": {"platform": "android", "soc": "Google Tensor G3", "min_os": "Android 14 (API 34)"},
            "android-arm64-cpu": {"platform": "android", "soc": "generic arm64-v8a", "min_os": "Android 8.1 (API 27)"},
        },
        "models": {"digits": {"description": "digits", "variants": variants}},
        "tools": {"modelmake": "0.1.0"},
        **manifest_fields,
    }
    if slice_name:
        manifest["slice"] = slice_name
    write_manifest(directory, manifest, signing_key)
    return directory


def write_manifest(directory: Path, manifest: dict, signing_key) -> None:
    (directory / "manifest.json").write_bytes(fsutil.canonical_json_document(manifest))
    (directory / "provenance.json").write_bytes(fsutil.canonical_json_document({"_type": "https://in-toto.io/Statement/v1"}))
    signing.sign_directory(directory, signing_key)


def archive_of(directory: Path, destination: Path) -> Path:
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    write_archive(destination, files, 315532800)
    return destination


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def bundle(tmp_path, signing_key) -> Path:
    return make_bundle(tmp_path, signing_key)


@pytest.fixture
def encrypted(tmp_path, signing_key, data_key) -> Path:
    return make_bundle(tmp_path, signing_key, data_key=data_key)


# --- exit codes ----------------------------------------------------------------------

def test_every_failure_class_has_its_own_exit_code():
    classes = {
        "key": errors.KeyMaterialError, "verification": errors.VerificationError,
        "decryption": errors.DecryptionError, "format_version": errors.FormatVersionError,
        "tampered": errors.TamperedFileError, "file_set": errors.FileSetError, "wrong_key": errors.WrongKeyError,
        "unsafe_archive": errors.UnsafeArchiveError, "signature_format": errors.SignatureFormatError,
        "publish": errors.PublishError, "step": errors.StepError, "budget": errors.BudgetExceeded,
        "busy": errors.BuildInProgressError, "output": errors.OutputError, "cluster": errors.ClusterUnreachable,
    }
    for name, kind in classes.items():
        assert errors.exit_code_for(kind("x")) == EXIT[name], name
    assert errors.exit_code_for(errors.SpecError(["x"])) == EXIT["spec"]
    assert errors.exit_code_for(RuntimeError("a bug")) == EXIT["bug"]
    assert len(set(EXIT.values())) == len(EXIT)


def test_the_exit_code_table_is_errors_py_and_the_build_codes_stay_clear_of_doits():
    assert dict(errors.exit_codes()).keys() == set(EXIT.values())
    build = {errors.SpecError.exit_code, errors.StepError.exit_code, errors.BudgetExceeded.exit_code, errors.BuildInProgressError.exit_code,
             errors.BUG}
    assert not build & DOIT_CODES
    # Every class with a code of its own is in the table, with its meaning.
    table = dict(errors.exit_codes())
    for kind in (errors.ModelmakeError, *_subclasses(errors.ModelmakeError)):
        assert table[kind.exit_code] == kind.meaning, kind.__name__


def _subclasses(kind: type) -> list[type]:
    direct: list[type] = kind.__subclasses__()
    return [s for c in direct for s in (c, *_subclasses(c))]


def test_the_help_lists_errors_py_exit_codes(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    listed = out[out.index("exit codes:"):].splitlines()[1:]
    rows = [line.strip().split(None, 1) for line in listed if line.strip()]
    assert [(int(code), meaning) for code, meaning in rows] == errors.exit_codes()


def test_a_bug_exits_70_with_its_traceback(capsys, bundle, public_pem, monkeypatch):
    def broken(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr("modelmake.bundle.verify.verify_bundle", broken)
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["bug"]
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_a_missing_option_is_a_usage_error(capsys, bundle):
    with pytest.raises(SystemExit) as raised:
        cli.main(["verify", str(bundle)])
    assert raised.value.code == EXIT["usage"]
    assert "--public-key" in capsys.readouterr().err


# --- keygen --------------------------------------------------------------------------

def key_material(directory: Path) -> list[str]:
    """Every text a leak of the keys in ``directory`` would contain."""
    pem = (directory / "signing.pem").read_text()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    data_hex = (directory / "data.key").read_text().strip()
    return [*body, "".join(body), data_hex, data_hex.upper()]


def test_keygen_writes_the_three_keys_and_prints_spec_lines_but_no_key_material(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0)  # the modes must not depend on a permissive umask
    try:
        code, out, err = run(capsys, "keygen")
    finally:
        os.umask(old)
    assert code == 0, err
    directory = tmp_path / "keys"
    assert stat.S_IMODE((directory / "signing.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "data.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "signing.pub.pem").stat().st_mode) == 0o644
    private = keys.load_private_key((directory / "signing.pem").read_bytes())
    public = keys.load_public_key((directory / "signing.pub.pem").read_bytes())
    assert keys.public_key_pem(private) == keys.public_key_pem(public)
    assert len(keys.load_data_key((directory / "data.key").read_bytes())) == 32
    assert "signing: {key: file:keys/signing.pem}" in out
    assert "encryption: {key: file:keys/data.key}" in out
    assert "--public-key keys/signing.pub.pem" in out
    for secret in key_material(directory):
        assert secret not in out + err


def test_keygen_refuses_to_replace_keys_unless_forced(tmp_path, capsys):
    out_dir = tmp_path / "release-keys"
    assert run(capsys, "keygen", "--out", out_dir)[0] == 0
    before = {name: (out_dir / name).read_bytes() for name in ("signing.pem", "signing.pub.pem", "data.key")}
    code, out, err = run(capsys, "keygen", "--out", out_dir)
    assert code == EXIT["key"]
    assert str(out_dir / "signing.pem") in err and "--force" in err
    assert {name: (out_dir / name).read_bytes() for name in before} == before
    code, _, err = run(capsys, "keygen", "--out", out_dir, "--force")
    assert code == 0, err
    assert all((out_dir / name).read_bytes() != data for name, data in before.items())


def test_keygen_refuses_even_when_only_one_key_exists(tmp_path, capsys):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "data.key").write_text("mine\n")
    code, _, err = run(capsys, "keygen", "--out", tmp_path / "keys")
    assert code == EXIT["key"] and "data.key already exists" in err
    assert not (tmp_path / "keys" / "signing.pem").exists()


# --- verify --------------------------------------------------------------------------

def test_verify_a_directory_and_its_archive(capsys, tmp_path, bundle, public_pem):
    code, out, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert (code, err) == (0, "")
    assert out == f"verified {NAME} {VERSION} (all): 3 files, signing: development\n"
    zip_path = archive_of(bundle, tmp_path / f"{NAME}-{VERSION}.zip")
    code, out, err = run(capsys, "verify", zip_path, "--public-key", public_pem)
    assert (code, err) == (0, "")
    assert out == f"verified {NAME} {VERSION} (all): 3 files, signing: development\n"


def test_verify_names_the_slice_and_the_release_signing(capsys, tmp_path, signing_key, public_pem):
    directory = make_bundle(tmp_path, signing_key, slice_name="android", signing="release")
    code, out, _ = run(capsys, "verify", directory, "--public-key", public_pem)
    assert code == 0
    assert out == f"verified {NAME} {VERSION} (android): 3 files, signing: release\n"


@pytest.mark.parametrize("victim", ["manifest.json", "provenance.json", "files/pixel-8/digits.int8.tflite"])
def test_a_changed_file_is_named_and_exits_tampered(capsys, bundle, public_pem, victim):
    flip_byte(bundle / victim, 10)
    code, out, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["tampered"]
    assert out == ""
    assert f"changed: {victim}" in err


def test_a_changed_byte_in_an_archive_entry_is_refused(capsys, tmp_path, bundle, public_pem):
    zip_path = archive_of(bundle, tmp_path / "bundle.zip")
    data = zip_path.read_bytes()
    flip_byte(zip_path, data.index(SMALL[:64]) + 100)  # inside an entry's data: its CRC-32 no longer matches
    code, _, err = run(capsys, "verify", zip_path, "--public-key", public_pem)
    assert code == EXIT["unsafe_archive"]
    assert "CRC-32" in err


def test_a_missing_file_exits_file_set(capsys, bundle, public_pem):
    (bundle / "files/pixel-8/digits.int8.tflite").unlink()
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["file_set"]
    assert "missing: files/pixel-8/digits.int8.tflite" in err


def test_an_extra_file_exits_file_set(capsys, bundle, public_pem):
    (bundle / "files" / "pixel-8" / "bonus.tflite").write_bytes(b"not signed")
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["file_set"]
    assert "extra: files/pixel-8/bonus.tflite" in err


def test_another_key_exits_wrong_key(capsys, tmp_path, bundle):
    other = tmp_path / "other.pub.pem"
    keys.write_public_key(other, keys.generate_signing_key())
    code, _, err = run(capsys, "verify", bundle, "--public-key", other)
    assert code == EXIT["wrong_key"]
    assert "signed by a different key" in err and "--public-key" in err


def test_an_altered_signature_value_exits_wrong_key(capsys, bundle, public_pem):
    signature = json.loads((bundle / "model.sig").read_bytes())
    der = bytearray(base64.b64decode(signature["dsseEnvelope"]["signatures"][0]["sig"]))
    der[-1] ^= 0x01
    signature["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(der)).decode()
    (bundle / "model.sig").write_bytes(fsutil.canonical_json(signature))
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["wrong_key"]
    assert "altered after signing" in err


@pytest.mark.parametrize(
    "version, expected",
    [
        (2, "has format_version 2; this modelmake reads version 1: upgrade modelmake to read it"),
        (0, "has format_version 0; this modelmake reads version 1: upgrade modelmake"),
        ("1", 'has format_version "1", not an integer; this modelmake reads version 1: it is not a bundle modelmake wrote'),
        (True, "has format_version true, not an integer"),
        (1.0, "has format_version 1.0, not an integer"),
        (None, "has no format_version; this modelmake reads version 1"),
    ],
)
def test_an_unknown_format_version_in_a_validly_signed_bundle(capsys, bundle, signing_key, public_pem, version, expected):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    (bundle / "manifest.json").write_bytes(json.dumps(manifest).encode())  # canonical JSON would write 1.0 as 1
    signing.sign_directory(bundle, signing_key)
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["format_version"]
    assert expected in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda sig: sig.write_text("{not json"), "not valid JSON"),
        (lambda sig: sig.unlink(), "model.sig is missing"),
        (lambda sig: sig.write_bytes(sig.read_bytes().replace(b"bundle.v0.3+json", b"bundle.v9.9+json")), "mediaType"),
        (lambda sig: sig.write_bytes(sig.read_bytes().replace(b'"payload":"', b'"payload":"!')), "not base64"),
    ],
    ids=["not-json", "missing", "media-type", "base64"],
)
def test_a_malformed_signature_exits_signature_format(capsys, bundle, public_pem, damage, expected):
    damage(bundle / "model.sig")
    code, _, err = run(capsys, "verify", bundle, "--public-key", public_pem)
    assert code == EXIT["signature_format"]
    assert expected in err


def hostile_archive(path: Path, bundle: Path, extra: tuple[zipfile.ZipInfo | str, bytes]) -> Path:
    """The bundle's real, signed entries plus one hostile entry."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in files_under(bundle):
            zf.writestr(name, (bundle / name).read_bytes())
        zf.writestr(*extra)
    return path


@pytest.mark.parametrize(
    "entry, expected",
    [(("../../evil.txt", b"owned"), "'..' component"), (symlink("files/link", "/etc/passwd"), "is a symbolic link")],
    ids=["zip-slip", "symlink"],
)
def test_an_unsafe_archive_is_refused_with_nothing_written(capsys, tmp_path, bundle, public_pem, monkeypatch, entry, expected):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # so that the new TMPDIR is read
    zip_path = hostile_archive(tmp_path / "evil.zip", bundle, entry)
    before = sorted(p for p in tmp_path.rglob("*"))
    code, out, err = run(capsys, "verify", zip_path, "--public-key", public_pem)
    assert code == EXIT["unsafe_archive"]
    assert out == "" and expected in err and "nothing was extracted" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert list(scratch.iterdir()) == []


def test_not_a_zip_at_all(capsys, tmp_path, public_pem):
    fake = tmp_path / "bundle.zip"
    fake.write_bytes(b"PK\x03\x04 but not really")
    code, _, err = run(capsys, "verify", fake, "--public-key", public_pem)
    assert code == EXIT["unsafe_archive"]
    assert "not a readable zip archive" in err


def test_a_path_that_is_not_there(capsys, tmp_path, public_pem):
    code, _, err = run(capsys, "verify", tmp_path / "nowhere", "--public-key", public_pem)
    assert code == EXIT["verification"]
    assert "does not exist" in err


def test_a_directory_without_a_manifest(capsys, tmp_path, signing_key, public_pem):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "model.tflite").write_bytes(SMALL)
    signing.sign_directory(tmp_path / "plain", signing_key)
    code, _, err = run(capsys, "verify", tmp_path / "plain", "--public-key", public_pem)
    assert code == EXIT["verification"]
    assert "manifest.json is missing" in err


@pytest.mark.parametrize("problem", ["missing", "private", "garbage"])
def test_public_key_problems_exit_key(capsys, tmp_path, bundle, signing_key, problem):
    path = tmp_path / "given.pem"
    if problem == "private":
        keys.write_private_key(path, signing_key)
    elif problem == "garbage":
        path.write_text("hello\n")
    code, _, err = run(capsys, "verify", bundle, "--public-key", path)
    assert code == EXIT["key"]
    assert str(path) in err
    if problem == "private":
        assert "holds a private key" in err
        for secret in key_material_of(path):
            assert secret not in err


def key_material_of(pem_path: Path) -> list[str]:
    return [line for line in pem_path.read_text().splitlines() if line and not line.startswith("-----")]


# --- inspect -------------------------------------------------------------------------

def test_inspect_shows_the_table_and_says_the_signature_was_not_checked(capsys, bundle):
    code, out, err = run(capsys, "inspect", bundle)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["bundle", NAME, VERSION, "(all", "platforms)"]
    assert "development, not verified: pass --public-key" in out
    header = next(line for line in lines if line.startswith("MODEL"))
    assert header.split() == ["MODEL", "VARIANT", "TARGET", "PLATFORM", "FORMAT", "PRECISION", "SIZE", "METRICS", "ENCRYPTION", "FILE"]
    row = next(line for line in lines if "files/pixel-8/digits.fp32.tflite" in line)
    assert row.split()[:6] == ["digits", "fp32", "pixel-8", "android", "tflite", "fp32"]
    assert "3.0 MiB" in row and "top1 0.912000 drop 0.001000" in row and row.split()[-2] == "-"
    assert "target    pixel-8: android, Google Tensor G3, Android 14 (API 34)" in out


def test_inspect_verifies_only_with_a_public_key(capsys, tmp_path, encrypted, public_pem):
    zip_path = archive_of(encrypted, tmp_path / "bundle.zip")
    code, out, err = run(capsys, "inspect", zip_path, "--public-key", public_pem)
    assert (code, err) == (0, "")
    assert f"development, verified with --public-key {public_pem}" in out
    assert "3 model files" in out and "3 encrypted" in out
    assert all("AES256_GCM_HKDF_1MB" in line for line in out.splitlines() if line.startswith("digits "))
    flip_byte(encrypted / "files/pixel-8/digits.int8.tflite.enc", 50)
    code, _, err = run(capsys, "inspect", encrypted, "--public-key", public_pem)
    assert code == EXIT["tampered"] and "changed: files/pixel-8/digits.int8.tflite.enc" in err
    assert run(capsys, "inspect", encrypted)[0] == 0  # without a key nothing is checked, as it says


def test_inspect_refuses_an_unknown_format_version(capsys, bundle, signing_key):
    manifest = json.loads((bundle / "manifest.json").read_bytes()) | {"format_version": 2}
    write_manifest(bundle, manifest, signing_key)
    code, _, err = run(capsys, "inspect", bundle)
    assert code == EXIT["format_version"]


# --- decrypt -------------------------------------------------------------------------

def plaintexts() -> dict[str, bytes]:
    return {f"files/{target}/digits.{precision}.tflite": data for target, _, precision, data in VARIANTS.values()}


def test_decrypt_writes_every_plaintext_into_the_default_directory(capsys, tmp_path, encrypted, data_key_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "decrypt", encrypted, "--key", "keys/data.key")  # relative to the current directory
    assert (code, err) == (0, "")
    out_dir = tmp_path / f"{NAME}-{VERSION}-decrypted"
    assert {name: (out_dir / name).read_bytes() for name in files_under(out_dir)} == plaintexts()
    assert f"decrypted 3 files of {NAME} {VERSION} into {NAME}-{VERSION}-decrypted" in out
    assert stat.S_IMODE((out_dir / "files/pixel-8/digits.int8.tflite").stat().st_mode) == 0o600


@pytest.mark.parametrize("reference", ["env", "file", "path"])
def test_decrypt_key_references(capsys, tmp_path, encrypted, data_key_file, monkeypatch, reference):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACME_DATA_KEY", data_key_file.read_text())
    ref = {"env": "env:ACME_DATA_KEY", "file": "file:keys/data.key", "path": str(data_key_file)}[reference]
    code, _, err = run(capsys, "decrypt", encrypted, "--key", ref, "--out", tmp_path / "out", "--file", "files/pixel-8/digits.int8.tflite")
    assert (code, err) == (0, "")
    assert files_under(tmp_path / "out") == ["files/pixel-8/digits.int8.tflite"]


def test_decrypt_an_archive_after_verifying_it(capsys, tmp_path, encrypted, data_key_file, public_pem):
    zip_path = archive_of(encrypted, tmp_path / "bundle.zip")
    code, _, err = run(capsys, "decrypt", zip_path, "--key", data_key_file, "--out", tmp_path / "out", "--public-key", public_pem)
    assert (code, err) == (0, "")
    assert {name: (tmp_path / "out" / name).read_bytes() for name in files_under(tmp_path / "out")} == plaintexts()


def test_decrypt_verifies_first_when_given_a_public_key(capsys, tmp_path, encrypted, data_key_file, public_pem):
    flip_byte(encrypted / "files/pixel-8/digits.int8.tflite.enc", 60)
    code, _, err = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--out", tmp_path / "out", "--public-key", public_pem)
    assert code == EXIT["tampered"]
    assert not (tmp_path / "out").exists()


def test_decrypt_with_the_wrong_key_writes_nothing(capsys, tmp_path, encrypted):
    wrong = tmp_path / "wrong.key"
    keys.write_data_key(wrong, bytes(32))
    code, out, err = run(capsys, "decrypt", encrypted, "--key", wrong, "--out", tmp_path / "out")
    assert code == EXIT["decryption"]
    assert "failed authentication" in err and "Check --key" in err
    assert out == "" and not (tmp_path / "out").exists()  # not even an empty directory


LARGE_FILE = "files/pixel-8/digits.fp32.tflite.enc"
SEGMENT = streaming_aead.CIPHERTEXT_SEGMENT_SIZE


def swap_segments_1_and_2(data: bytes) -> bytes:
    one, two = data[SEGMENT : 2 * SEGMENT], data[2 * SEGMENT : 3 * SEGMENT]
    return data[:SEGMENT] + two + one + data[3 * SEGMENT :]


TAMPERING = {
    "bit-flip": lambda data: data[:5000] + bytes([data[5000] ^ 0x80]) + data[5001:],
    "header": lambda data: data[:10] + bytes([data[10] ^ 0x01]) + data[11:],
    "truncated": lambda data: data[:-1],
    "truncated-at-segment": lambda data: data[: 3 * SEGMENT],
    "appended": lambda data: data + b"\0" * 17,
    "appended-segment": lambda data: data + data[SEGMENT : 2 * SEGMENT],
    "swapped-segments": swap_segments_1_and_2,
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_a_damaged_stream_exits_decryption_and_writes_nothing(capsys, tmp_path, encrypted, data_key_file, kind):
    path = encrypted / LARGE_FILE
    original = path.read_bytes()
    assert len(original) > 3 * SEGMENT  # four segments
    path.write_bytes(TAMPERING[kind](original))
    code, out, err = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--out", tmp_path / "out")
    assert code == EXIT["decryption"], err
    assert LARGE_FILE in err
    assert out == "" and not (tmp_path / "out").exists()  # not even an empty directory


def test_a_plaintext_that_does_not_match_the_manifest(capsys, tmp_path, encrypted, signing_key, data_key_file):
    manifest = json.loads((encrypted / "manifest.json").read_bytes())
    variant = manifest["models"]["digits"]["variants"]["digits.int8.tflite@pixel-8"]
    variant["encryption"]["plaintext_sha256"] = "0" * 64
    write_manifest(encrypted, manifest, signing_key)
    code, _, err = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--out", tmp_path / "out")
    assert code == EXIT["decryption"]
    assert "does not match manifest.json" in err and "files/pixel-8/digits.int8.tflite.enc" in err
    assert not (tmp_path / "out").exists()


def test_a_file_moved_to_another_path_does_not_decrypt(capsys, tmp_path, encrypted, signing_key, data_key_file):
    """The path is bound into the associated data: a file copied over another fails even with the right key."""
    a, b = encrypted / "files/pixel-8/digits.int8.tflite.enc", encrypted / "files/android-arm64-cpu/digits.int8.tflite.enc"
    b.write_bytes(a.read_bytes())
    victim = "files/android-arm64-cpu/digits.int8.tflite.enc"
    code, _, _ = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--out", tmp_path / "out", "--file", victim)
    assert code == EXIT["decryption"]


def test_decrypt_refuses_a_manifest_path_that_climbs_out(capsys, tmp_path, encrypted, signing_key, data_key_file):
    manifest = json.loads((encrypted / "manifest.json").read_bytes())
    manifest["models"]["digits"]["variants"]["digits.int8.tflite@pixel-8"]["file"] = "../../../escaped.tflite.enc"
    write_manifest(encrypted, manifest, signing_key)
    code, _, err = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--out", tmp_path / "a" / "b" / "out")
    assert code == EXIT["verification"]
    assert "'../../../escaped.tflite.enc' has a '..' component that could climb out of the destination" in err
    assert not list(tmp_path.rglob("escaped*"))


def test_decrypt_a_bundle_without_encrypted_files(capsys, tmp_path, bundle, data_key_file):
    code, _, err = run(capsys, "decrypt", bundle, "--key", data_key_file, "--out", tmp_path / "out")
    assert code == EXIT["error"]
    assert "has no encrypted files" in err


def test_decrypt_an_unknown_file(capsys, tmp_path, encrypted, data_key_file):
    code, _, err = run(capsys, "decrypt", encrypted, "--key", data_key_file, "--file", "files/nope.tflite")
    assert code == EXIT["error"]
    assert "--file files/nope.tflite is not an encrypted file" in err and LARGE_FILE in err


@pytest.mark.parametrize("problem", ["unset-env", "signing-key", "missing-file"])
def test_decrypt_key_problems_exit_key_without_showing_the_key(capsys, tmp_path, encrypted, signing_key, monkeypatch, problem):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ACME_DATA_KEY", raising=False)
    pem = tmp_path / "signing.pem"
    keys.write_private_key(pem, signing_key)
    ref = {"unset-env": "env:ACME_DATA_KEY", "signing-key": "file:signing.pem", "missing-file": "keys/absent.key"}[problem]
    code, _, err = run(capsys, "decrypt", encrypted, "--key", ref)
    assert code == EXIT["key"]
    assert "--key" in err
    for secret in key_material_of(pem):
        assert secret not in err


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    # `modelmake ... | head`: the reader is gone before everything is printed (here before anything is).
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "modelmake.cli", "keygen", "--out", str(tmp_path / "keys")], stdout=write, stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert result.returncode == 0 and result.stderr == ""
    assert (tmp_path / "keys" / "signing.pem").exists()
