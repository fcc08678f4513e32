"""Hostile and damaged bundle archives: each is judged before anything is extracted, with its documented exit code.

The attacks come from tests/support/archive_attacks.py; tests/corpus/archives/cases.json
pins each one's exit code and exact message for `modelmake verify` (with the key) and
`modelmake inspect` (without it).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from modelmake import cli
from modelmake.bundle import keys
from modelmake.bundle.verify import opened_bundle
from modelmake.errors import ModelmakeError

from tests.support import archive_attacks
from tests.support.archive_attacks import ATTACKS, genuine_archive, ignorable_bits

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "archives" / "cases.json"
CASES = json.loads(CORPUS.read_text(encoding="utf-8"))
# FORMAT.md's table: the codes a bundle that is not right may get from verify, inspect and decrypt.
DOCUMENTED = {6, 7, 8, 9, 10, 11, 12, 13}
ONE_MEGABYTE = 1 << 20


@pytest.fixture(scope="module")
def signing_key():
    return keys.generate_signing_key()


@pytest.fixture
def public_pem(tmp_path, signing_key) -> Path:
    path = tmp_path / "keys" / "signing.pub.pem"
    path.parent.mkdir()
    keys.write_public_key(path, signing_key)
    return path


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """A fresh, empty TMPDIR: whatever a command extracts lands here."""
    directory = tmp_path / "tmpdir"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr("tempfile.tempdir", None)  # so that the new TMPDIR is read
    return directory


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def attacked(tmp_path: Path, signing_key, attack: str) -> Path:
    directory, archive = genuine_archive(tmp_path / "work", signing_key)
    hostile = tmp_path / f"{attack}.zip"
    hostile.write_bytes(ATTACKS[attack](archive.read_bytes(), directory))
    return hostile


def bytes_written_by_this_process() -> int:
    """Every byte this process has handed to write() so far, to any file (Linux: /proc/self/io)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"])


# --- the corpus ----------------------------------------------------------------------

def test_every_attack_has_a_case_and_every_case_an_attack():
    assert sorted(case["attack"] for case in CASES) == sorted(ATTACKS)


@pytest.mark.parametrize("case", CASES, ids=[case["attack"] for case in CASES])
def test_each_attack_gets_its_exit_code_and_message_and_nothing_is_written(capsys, tmp_path, signing_key, public_pem, scratch, case):
    hostile = attacked(tmp_path, signing_key, case["attack"])
    before = sorted(tmp_path.rglob("*"))
    expected = {"verify": {"exit": case["exit"], "message": case["message"]}, "inspect": case.get("inspect", case)}
    for command, key in (("verify", ["--public-key", public_pem]), ("inspect", [])):
        code, out, err = run(capsys, command, hostile, *key)
        assert code == expected[command]["exit"], err
        if code:
            message = expected[command]["message"].replace("{archive}", str(hostile))
            assert err == f"modelmake {command}: {message}\n"
            assert out == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted anywhere, not even into TMPDIR


# --- bombs and overlaps: judged before a byte is written -------------------------------

@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="measures writes through Linux's /proc/self/io")
@pytest.mark.parametrize("attack", ["deflate-bomb-2gib", "deflate-bomb-declared-small", "overlap-bomb"])
def test_bombs_and_overlaps_are_refused_with_at_most_a_megabyte_written(capsys, tmp_path, signing_key, public_pem, scratch, attack):
    hostile = attacked(tmp_path, signing_key, attack)
    data_key = tmp_path / "keys" / "data.key"
    keys.write_data_key(data_key, bytes(range(32)))
    commands = [
        ["verify", hostile, "--public-key", public_pem],
        ["inspect", hostile],
        ["inspect", hostile, "--public-key", public_pem],
        ["decrypt", hostile, "--key", data_key, "--out", tmp_path / "out"],
        ["decrypt", hostile, "--key", data_key, "--out", tmp_path / "out", "--public-key", public_pem],
    ]
    for argv in commands:
        written = bytes_written_by_this_process()
        code, _, err = run(capsys, *argv)
        assert bytes_written_by_this_process() - written <= ONE_MEGABYTE, argv
        assert code != 0 or argv[0] == "inspect", err
        assert "Traceback" not in err
        assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_a_full_tmpdir_is_a_one_line_error(tmp_path, signing_key, scratch):
    _, archive = genuine_archive(tmp_path / "work", signing_key)
    data_key = tmp_path / "data.key"
    keys.write_data_key(data_key, bytes(range(32)))

    def small_files_only():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))  # what a full disk looks like to this process

    result = subprocess.run(
        [sys.executable, "-m", "modelmake.cli", "decrypt", str(archive), "--key", str(data_key), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, preexec_fn=small_files_only, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TMPDIR": str(scratch)},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmake decrypt: cannot extract 'files/pixel-8/digits.int8.tflite' from ")
    assert lines[0].endswith(": File too large; make room there or choose another place")
    assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


# --- every byte flipped ------------------------------------------------------------------

def contents(path: Path, public_key) -> tuple[dict, dict[str, bytes]]:
    """What verifying and extracting the archive gives: the manifest and the extracted files."""
    with opened_bundle(path, public_key, extract=True) as bundle:
        assert bundle.directory is not None
        files = {p.relative_to(bundle.directory).as_posix(): p.read_bytes() for p in bundle.directory.rglob("*") if p.is_file()}
        return bundle.manifest, files


@pytest.mark.parametrize("mask", [0xFF, 0x01], ids=["all-bits", "low-bit"])
def test_every_single_byte_flip_is_refused_with_a_documented_code_or_harmless(tmp_path, signing_key, scratch, capsys, mask):
    _, archive = genuine_archive(tmp_path / "work", signing_key)
    public_key = signing_key.public_key()
    data = archive.read_bytes()
    original = contents(archive, public_key)
    assert original[1] == {archive_attacks.MODEL_PATH: archive_attacks.MODEL}

    refused: Counter[int] = Counter()
    harmless = []
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(data)
    descriptor = os.open(flipped, os.O_WRONLY)
    try:
        for offset in range(len(data)):
            os.pwrite(descriptor, bytes([data[offset] ^ mask]), offset)  # in place: one flip at a time
            try:
                result = contents(flipped, public_key)
            except ModelmakeError as error:
                assert error.exit_code in DOCUMENTED and "\n" not in str(error), (offset, str(error))
                refused[error.exit_code] += 1
            else:
                assert result == original, offset  # a flip that passes must change nothing that is extracted
                harmless.append(offset)
            os.pwrite(descriptor, data[offset : offset + 1], offset)
    finally:
        os.close(descriptor)

    # Harmless flips are only in the fields a reader ignores: versions, attributes.
    ignorable = ignorable_bits(data)
    assert [offset for offset in harmless if mask & ~ignorable.get(offset, 0)] == []
    assert sum(refused.values()) + len(harmless) == len(data)
    assert list(scratch.iterdir()) == []
    with capsys.disabled():
        print(f"\n{len(data)} bytes flipped (XOR {mask:#04x}): {sum(refused.values())} refused {dict(sorted(refused.items()))}, "
              f"{len(harmless)} harmless (the files extracted are identical)")
