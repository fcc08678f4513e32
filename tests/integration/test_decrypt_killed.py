"""A killed `modelmake decrypt` leaves no plaintext under --out that a later run does not remove.

Runs are real processes killed with SIGKILL at points spread over a whole decryption,
from before the first file is written to the moves into place (about 10 s in all: the
processes' start-up dominates). What a killed run
leaves is only its staging directory; the next run removes it first, and then --out
holds exactly that run's files.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmake import fsutil
from modelmake.bundle import keys, streaming_aead
from modelmake.staging import STAGING_PREFIX

from tests.support.workspaces import subprocess_env

NAME, VERSION = "acme-vision", "1.4.0"
FILES = 6
PLAINTEXT_SIZE = 2 << 20  # 6 x 2 MiB: each file takes long enough to be killed in the middle of
KILLS = 10


def make_encrypted_bundle(root: Path, data_key: bytes) -> Path:
    """A bundle directory of FILES encrypted model files and a manifest naming them (unsigned: decrypt needs no signature)."""
    directory = root / "bundle"
    variants = {}
    for number in range(FILES):
        path = f"files/target-{number}/model.fp32.tflite.enc"
        plaintext = root / "plain" / f"{number}.tflite"
        plaintext.parent.mkdir(parents=True, exist_ok=True)
        plaintext.write_bytes(bytes([number]) * PLAINTEXT_SIZE)
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        measured = streaming_aead.encrypt_file(plaintext, directory / path, data_key,
                                               streaming_aead.associated_data_for(NAME, VERSION, path))
        variants[f"model.fp32.tflite@target-{number}"] = {
            "target": f"target-{number}", "platform": "android", "format": "tflite", "precision": "fp32", "file": path,
            "sha256": fsutil.sha256_file(directory / path), "size": (directory / path).stat().st_size,
            "encryption": {"scheme": "AES256_GCM_HKDF_1MB", "associated_data": {"bundle": NAME, "version": VERSION, "path": path},
                           "plaintext_sha256": measured.plaintext_sha256, "plaintext_size": measured.plaintext_size},
        }
    manifest = {"format_version": 1, "bundle": NAME, "version": VERSION, "targets": {}, "models": {"model": {"variants": variants}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def everything_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def staging_files(out: Path) -> int:
    """Files in staging directories under ``out``: plaintext that is complete, or being written (.partial)."""
    staging = [out / name for name in (os.listdir(out) if out.is_dir() else ()) if name.startswith(STAGING_PREFIX)]
    return sum(len(files) for directory in staging for _, _, files in os.walk(directory))  # walk: a run may move them


def test_killed_decryptions_leave_no_plaintext_after_the_next_run(tmp_path):
    data_key = bytes(range(32))
    bundle = make_encrypted_bundle(tmp_path, data_key)
    key = tmp_path / "data.key"
    keys.write_data_key(key, data_key)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modelmake.cli", "decrypt", str(bundle), "--key", str(key), "--out", str(out)]

    def run_until(files_in_staging: int) -> subprocess.Popen:
        """Start a decryption; return once its staging directory holds that many files (finished or being written)."""
        process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started = time.monotonic()
        while staging_files(out) < files_in_staging and process.poll() is None:
            assert time.monotonic() - started < 60, "decrypt never got there"
            time.sleep(0.001)
        return process

    # A complete run into a fresh directory gives what every later run must leave, and nothing else.
    reference = run_until(FILES + 1)
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    expected = everything_under(out)
    contents = {name: (out / name).read_bytes() for name in expected if (out / name).is_file()}
    assert len(contents) == FILES

    left_behind = []
    for kill in range(KILLS):
        for name in sorted(expected, reverse=True):  # each killed run starts from an empty --out
            (out / name).unlink() if (out / name).is_file() else (out / name).rmdir()
        # From before the first file is written to the last one, and on into the moves into place.
        process = run_until(kill * FILES // KILLS + 1)
        time.sleep(0.005 * (kill % 2))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL, f"run {kill} ended before its kill"
        left_behind.append(staging_files(out))
        # The next run into the same --out removes what the killed one left, and writes only its own files.
        again = subprocess.run(command, env=subprocess_env(), capture_output=True, timeout=120)
        assert again.returncode == 0, again.stderr.decode()
        assert everything_under(out) == expected
        assert {name: (out / name).read_bytes() for name in contents} == contents
    print(f"staging files left by each kill: {left_behind}")
    assert sum(1 for count in left_behind if count) >= KILLS // 2, left_behind  # the kills did land mid-decryption


def test_a_failed_decryption_into_a_new_directory_leaves_no_directory(tmp_path):
    bundle = make_encrypted_bundle(tmp_path, bytes(range(32)))
    wrong = tmp_path / "wrong.key"
    keys.write_data_key(wrong, bytes(32))
    out = tmp_path / "a" / "b" / "out"
    result = subprocess.run([sys.executable, "-m", "modelmake.cli", "decrypt", str(bundle), "--key", str(wrong), "--out", str(out)],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 7, result.stderr
    assert not (tmp_path / "a").exists()


def test_stale_staging_is_removed_but_a_live_runs_staging_is_kept(tmp_path):
    import fcntl

    from modelmake.staging import remove_stale_staging, staged_files

    out = tmp_path / "out"
    stale = out / f"{STAGING_PREFIX}abcd1234.partial"
    (stale / "files").mkdir(parents=True)
    (stale / "files" / "model.tflite").write_bytes(b"plaintext of a killed run")
    lookalike = out / f"{STAGING_PREFIX}mine.partial"  # not a name this module makes
    lookalike.mkdir()
    with staged_files(out) as staging:
        (staging / "model.tflite").write_bytes(b"this run's")
        assert not stale.exists() and lookalike.exists()
        assert remove_stale_staging(out) == []  # another run's clean-up leaves this live one alone
        assert staging.exists()
        fd = os.open(staging, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert everything_under(out) == {"model.tflite", lookalike.name}


def test_a_failed_decryption_leaves_the_previous_outputs_and_other_files_as_they_were(tmp_path, capsys):
    from modelmake import cli

    data_key = bytes(range(32))
    bundle = make_encrypted_bundle(tmp_path, data_key)
    key = tmp_path / "data.key"
    keys.write_data_key(key, data_key)
    out = tmp_path / "out"
    assert cli.main(["decrypt", str(bundle), "--key", str(key), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("the user's own file")
    before = {name: (out / name).read_bytes() for name in everything_under(out) if (out / name).is_file()}
    damaged = bundle / f"files/target-{FILES - 1}/model.fp32.tflite.enc"  # the last file: the others are decrypted first
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 1
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli.main(["decrypt", str(bundle), "--key", str(key), "--out", str(out)]) == 7
    assert capsys.readouterr().err.startswith(f"modelmake decrypt: files/target-{FILES - 1}/model.fp32.tflite.enc: ")
    assert {name: (out / name).read_bytes() for name in everything_under(out) if (out / name).is_file()} == before
    assert not [name for name in everything_under(out) if name.startswith(STAGING_PREFIX)]
