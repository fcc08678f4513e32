"""manifest.json and model.sig are judged before use: size, depth, duplicate keys, types and paths, each with its code."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelmake import cli, fsutil
from modelmake.bundle import keys, signing
from modelmake.bundle.manifest import MAX_MANIFEST_BYTES, parse_manifest
from modelmake.bundle.untrusted_json import MAX_DEPTH
from modelmake.errors import FormatVersionError, VerificationError

from tests.support.archive_attacks import MODEL_PATH, make_bundle, nested


@pytest.fixture(scope="module")
def signing_key():
    return keys.generate_signing_key()


@pytest.fixture
def public_pem(tmp_path, signing_key) -> Path:
    path = tmp_path / "signing.pub.pem"
    keys.write_public_key(path, signing_key)
    return path


def run(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_bytes())


def variant(manifest: dict) -> dict:
    return manifest["models"]["digits"]["variants"]["digits.int8.tflite@pixel-8"]


@pytest.mark.parametrize(
    "file, reason",
    [
        ("../../etc/hostname", "'../../etc/hostname' has a '..' component that could climb out of the destination"),
        ("/etc/hostname", "'/etc/hostname' is an absolute path"),
        ("files\\model.tflite", "'files\\\\model.tflite' contains a backslash (a path separator on Windows)"),
        ("model.sig", "'model.sig' names one of the bundle's own files"),
    ],
)
def test_a_signed_manifest_naming_a_path_outside_the_bundle_exits_6_before_reading_it(
    capsys, tmp_path, signing_key, public_pem, file, reason
):
    directory = make_bundle(tmp_path, signing_key)
    manifest = manifest_of(directory)
    variant(manifest)["file"] = file
    (directory / "manifest.json").write_bytes(fsutil.canonical_json_document(manifest))
    signing.sign_directory(directory, signing_key)
    # Reading the file would have given exit code 9 (its digest differs): 6 says it was refused first.
    for command in (["verify", directory, "--public-key", public_pem], ["inspect", directory]):
        code, err = run(capsys, *command)
        where = directory / "manifest.json"
        expected = f"{where} is malformed: models.digits.variants.'digits.int8.tflite@pixel-8'.file {reason}; modelmake did not write it"
        assert (code, err) == (6, f"modelmake {command[0]}: {expected}\n")


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: m.update(models=[]), "models is not an object"),
        (lambda m: variant(m).update(size="512"), "'digits.int8.tflite@pixel-8'.size is not an integer from 0 to 2^63 - 1"),
        (lambda m: variant(m).update(size=True), "'digits.int8.tflite@pixel-8'.size is not an integer from 0 to 2^63 - 1"),
        (lambda m: variant(m).update(size=1 << 64), "'digits.int8.tflite@pixel-8'.size is not an integer from 0 to 2^63 - 1"),
        (lambda m: variant(m).pop("file"), "'digits.int8.tflite@pixel-8'.file is missing"),
        (lambda m: variant(m).update(sha256="A" * 64), "'digits.int8.tflite@pixel-8'.sha256 is not 64 lowercase hexadecimal"),
        (lambda m: variant(m).update(encryption=[]), "'digits.int8.tflite@pixel-8'.encryption is not an object"),
        (lambda m: m["targets"].update({"pixel-8": "Pixel 8"}), "targets.pixel-8 is not an object"),
        (lambda m: m["models"]["digits"].update(variants=[]), "models.digits is not an object with an object of variants"),
        (lambda m: m.update(bundle="../../elsewhere"), "bundle '../../elsewhere' is not a plain name (it names a directory)"),
        (lambda m: m.update(version="1.0/../.."), "version '1.0/../..' is not a plain name"),
        (lambda m: m.update(slice=".."), "slice '..' is not a plain name"),
    ],
)
def test_a_malformed_manifest_is_refused_with_the_field_that_is_wrong(change, problem):
    manifest = json.loads(fsutil.canonical_json(_manifest()))
    change(manifest)
    with pytest.raises(VerificationError) as raised:
        parse_manifest(json.dumps(manifest).encode(), "manifest.json")
    assert str(raised.value).startswith("manifest.json is malformed: ")
    assert problem in str(raised.value) and type(raised.value) is VerificationError


def _manifest() -> dict:
    return {
        "format_version": 1, "bundle": "b", "version": "1.0.0", "targets": {"pixel-8": {"platform": "android"}},
        "models": {"digits": {"variants": {"digits.int8.tflite@pixel-8": {
            "target": "pixel-8", "platform": "android", "format": "tflite", "precision": "int8", "file": MODEL_PATH,
            "sha256": "0" * 64, "size": 512,
        }}}},
    }


@pytest.mark.parametrize(
    "raw, message",
    [
        (json.dumps({"a": nested(MAX_DEPTH)}).encode(), f"manifest.json is nested deeper than {MAX_DEPTH} levels"),
        (b"[" * 100_000 + b"]" * 100_000, f"manifest.json is nested deeper than {MAX_DEPTH} levels"),
        (b'{"format_version":1,"format_version":2}', "manifest.json has the key 'format_version' twice in one object"),
        (b'{"format_version":NaN}', "manifest.json is not valid JSON"),
        (b"\xff\xfe{}", "manifest.json is not UTF-8"),
    ],
    ids=["too-deep", "very-deep", "duplicate-key", "nan", "not-utf8"],
)
def test_a_manifest_that_is_not_plain_json_is_refused(raw, message):
    with pytest.raises(VerificationError, match="^" + message.replace("(", r"\(") + "$"):
        parse_manifest(raw, "manifest.json")


def test_the_deepest_manifest_allowed_is_read():
    manifest = _manifest() | {"tools": {"deep": nested(MAX_DEPTH - 2)}}  # the top level and "tools" are two levels
    assert parse_manifest(json.dumps(manifest).encode(), "manifest.json") == manifest


@pytest.mark.parametrize("version", [True, 1.0, "1", None, [1]])
def test_only_the_integer_1_is_format_version_1(version):
    with pytest.raises(FormatVersionError):
        parse_manifest(json.dumps(_manifest() | {"format_version": version}).encode(), "manifest.json")


def test_a_manifest_over_the_size_limit_is_refused_unread(capsys, tmp_path, signing_key):
    directory = make_bundle(tmp_path, signing_key)
    with open(directory / "manifest.json", "r+b") as manifest:
        manifest.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no 16 MiB written
    code, err = run(capsys, "inspect", directory)
    assert (code, err) == (6, f"modelmake inspect: {directory / 'manifest.json'} is larger than the limit of {MAX_MANIFEST_BYTES} bytes\n")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, f"is not an OMS signature: the signature file is nested deeper than {MAX_DEPTH} levels"),
        (None, f"is not a valid OMS signature: it is larger than the limit of {signing.MAX_SIGNATURE_BYTES} bytes"),
    ],
    ids=["deep", "too-large"],
)
def test_a_hostile_signature_file_exits_13(capsys, tmp_path, signing_key, public_pem, content, message):
    directory = make_bundle(tmp_path, signing_key)
    signature = directory / "model.sig"
    if content is None:
        with open(signature, "r+b") as file:
            file.truncate(signing.MAX_SIGNATURE_BYTES + 1)
    else:
        signature.write_bytes(content)
    code, err = run(capsys, "verify", directory, "--public-key", public_pem)
    assert (code, err) == (13, f"modelmake verify: {signature} {message}\n")


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_fifo_in_place_of_a_document_is_refused_at_once(capsys, tmp_path, signing_key, public_pem, command):
    directory = make_bundle(tmp_path, signing_key)
    name = "model.sig" if command == "verify" else "manifest.json"
    (directory / name).unlink()
    os.mkfifo(directory / name)  # reading it would wait for a writer forever
    code, err = run(capsys, command, directory, "--public-key", public_pem) if command == "verify" else run(capsys, command, directory)
    expected = {
        "verify": (13, f"{directory / name} is not a valid OMS signature: it is not a regular file"),
        "inspect": (6, f"{directory / name} is not a regular file"),
    }[command]
    assert (code, err) == (expected[0], f"modelmake {command}: {expected[1]}\n")
