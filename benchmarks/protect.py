"""(d) protect + sign + package of a 1 GiB model file against the raw cryptography it needs.

The baseline is the least any implementation must do: one streamed pass that
hashes the plaintext (SHA-256), encrypts it (AES-256-GCM) and hashes the
ciphertext (SHA-256), 1 MiB at a time, writing nothing. Our path is what the
package step does to a model file, called as the package step calls it:
streaming_aead.encrypt_file (given the plaintext digest the convert step
recorded, which it verifies while encrypting), signing.sign_directory over a
bundle directory holding the result (given the ciphertext digest measured
while writing it), and archive.write_archive of that directory (given the
ciphertext's CRC-32, also measured while writing it). So our path does the
baseline's work plus the ciphertext's CRC-32 and writing the encrypted file
and the archive (2 GiB); encrypt_file spreads its hashing and writing over
three threads, and the archive copies the encrypted file inside the kernel
(copy_file_range). Each side runs in its own process, so each wall time
includes interpreter start-up, and the peak RSS is that of our process alone
(os.wait4). Targets: <= 1.5x the baseline, < 150 MB peak RSS.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from ._timing import REPOSITORY, report

NAME = "protect"
NAMES = (NAME,)
SIZE = 1 << 30
CHUNK = 1 << 20
TARGET_RATIO = 1.5
TARGET_RSS_MB = 150
REPEAT = 2  # best of two: single runs of disk-bound work vary by a second or more

RAW = textwrap.dedent(
    """
    import hashlib, struct, sys
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aes = AESGCM(bytes(range(32)))
    plain, cipher = hashlib.sha256(), hashlib.sha256()
    with open(sys.argv[1], "rb") as f:
        for index, chunk in enumerate(iter(lambda: f.read(1 << 20), b"")):
            plain.update(chunk)
            cipher.update(aes.encrypt(bytes(8) + struct.pack(">I", index), chunk, None))
    print(plain.hexdigest(), cipher.hexdigest())
    """
)

OURS = textwrap.dedent(
    r"""
    import json, sys
    from pathlib import Path
    from modelmake.bundle import keys
    from modelmake.bundle.archive import write_archive
    from modelmake.bundle.signing import sign_directory
    from modelmake.bundle.streaming_aead import associated_data_for, encrypt_file

    source, work, recorded = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    bundle = work / "bench" / "1.0.0"
    path = "files/bench-target/model.tflite.enc"
    (bundle / path).parent.mkdir(parents=True)
    encrypted = encrypt_file(
        source, bundle / path, bytes(range(32)), associated_data_for("bench", "1.0.0", path),
        plaintext_sha256=recorded, durable=False,
    )
    manifest = {"bundle": "bench", "format_version": 1, "version": "1.0.0", "files": {path: encrypted.sha256}}
    (bundle / "manifest.json").write_text(json.dumps(manifest, sort_keys=True) + "\n")
    sign_directory(bundle, keys.generate_signing_key(), subject_name="bench-1.0.0", digests={path: encrypted.sha256})
    files = {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
    write_archive(work / "bench" / "bench-1.0.0.zip", files, 315532800, crc32={path: encrypted.crc32})
    """
)


def generate(path: Path, size: int) -> str:
    """Deterministic pseudo-random bytes at memory speed (AES-CTR keystream under a fixed key).

    Returns their SHA-256, as the convert step records it for every artifact it writes.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    stream = Cipher(algorithms.AES(b"modelmake bench!" * 2), modes.CTR(bytes(16))).encryptor()
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for length in [CHUNK] * (size // CHUNK) + [size % CHUNK]:
            data = stream.update(bytes(length))
            digest.update(data)
            out.write(data)
    return digest.hexdigest()


def timed(command: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one child process; a failure stops the benchmark."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives this child's own peak RSS; RUSAGE_CHILDREN would mix in every child waited for so far.
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr, _ = process.communicate()  # the child has exited: this only reads what it left in the pipe
    if process.returncode != 0:
        raise SystemExit(f"benchmark command failed ({process.returncode}): {' '.join(command)}\n{stderr.decode(errors='replace')[-3000:]}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def _remove_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()


def main(names) -> list[str]:
    if NAME not in names:
        return []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-protect-") as directory:
        scratch = Path(directory)
        model = scratch / "model.tflite"
        recorded = generate(model, SIZE)
        raw_times, our_times, our_rss = [], [], []
        for attempt in range(REPEAT):
            # Each run starts from the same state: the model in the page cache, nothing waiting to be written.
            os.sync()
            raw_times.append(timed([sys.executable, "-c", RAW, str(model)], REPOSITORY)[0])
            work = scratch / f"ours-{attempt}"
            work.mkdir()
            elapsed, rss = timed([sys.executable, "-c", OURS, str(model), str(work), recorded], REPOSITORY)
            our_times.append(elapsed)
            our_rss.append(rss)
            _remove_tree(work)
    ours, raw, peak = min(our_times), min(raw_times), max(our_rss) / 1e6
    line = report("protect+sign+package 1 GiB", ours, raw, "raw", f"target <= {TARGET_RATIO}x", ours <= TARGET_RATIO * raw)
    verdict = "PASS" if peak < TARGET_RSS_MB else "FAIL"
    return [f"{line}; peak RSS {peak:.0f} MB (target < {TARGET_RSS_MB} MB) {verdict}"]
