"""Streaming encryption: Tink compatibility, tamper detection, determinism, atomic outputs."""
from __future__ import annotations

import errno
import hashlib
import random
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelmake.bundle import streaming_aead as sa
from modelmake.errors import DecryptionError, KeyMaterialError, StepError

from tests.support.tink_interop import tink_decrypt, tink_encrypt, tink_streaming_aead

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AD = sa.associated_data_for("acme-vision", "1.4.0", "files/digits/pixel-8/model.tflite")
FIRST = sa.FIRST_PLAINTEXT_SEGMENT_SIZE  # 1048520
SEG = sa.PLAINTEXT_SEGMENT_SIZE  # 1048560
VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "encryption"

SIZES = [0, 1, FIRST - 1, FIRST, FIRST + 1, FIRST + SEG - 1, FIRST + SEG, FIRST + SEG + 1, 3 * 2**20 + 5]


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def expected_ciphertext_size(n: int) -> int:
    # Tink's AesGcmHkdfStreaming.expectedCiphertextSize with a 40-byte offset.
    full, rest = divmod(n + sa.HEADER_SIZE, SEG)
    return full * sa.CIPHERTEXT_SEGMENT_SIZE + (rest + sa.TAG_SIZE if rest else 0)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".partial")))


@pytest.fixture(scope="module")
def tink_aead():
    return tink_streaming_aead(KEY)


@pytest.fixture(scope="module")
def four_segments():
    """A plaintext of three full segments and a short fourth, and its ciphertext."""
    plaintext = data(FIRST + 2 * SEG + 1000, seed=4)
    return plaintext, sa.encrypt_bytes(plaintext, KEY, AD)


# -- round trips and Tink compatibility ----------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_tink_reads_ours(size, tink_aead):
    plaintext = data(size, seed=size)
    ciphertext = sa.encrypt_bytes(plaintext, KEY, AD)
    assert len(ciphertext) == expected_ciphertext_size(size)
    assert ciphertext[0] == 40
    assert sa.decrypt_bytes(ciphertext, KEY, AD) == plaintext
    assert tink_decrypt(tink_aead, ciphertext, AD) == plaintext


@pytest.mark.parametrize("size", [0, 1, FIRST, FIRST + SEG, FIRST + SEG + 1])
def test_we_read_tinks_ciphertext(size, tink_aead):
    plaintext = data(size, seed=size)
    ciphertext = tink_encrypt(tink_aead, plaintext, AD)
    assert len(ciphertext) == expected_ciphertext_size(size)
    assert sa.decrypt_bytes(ciphertext, KEY, AD) == plaintext


def test_file_round_trip_matches_in_memory(tmp_path, four_segments):
    plaintext, ciphertext = four_segments
    (tmp_path / "model.tflite").write_bytes(plaintext)
    sa.encrypt_file(tmp_path / "model.tflite", tmp_path / "model.tflite.enc", KEY, AD)
    assert (tmp_path / "model.tflite.enc").read_bytes() == ciphertext
    sa.decrypt_file(tmp_path / "model.tflite.enc", tmp_path / "out.tflite", KEY, AD)
    assert (tmp_path / "out.tflite").read_bytes() == plaintext
    assert leftovers(tmp_path) == []


def test_file_round_trip_of_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    sa.encrypt_file(tmp_path / "empty", tmp_path / "empty.enc", KEY, AD)
    assert (tmp_path / "empty.enc").stat().st_size == 56
    sa.decrypt_file(tmp_path / "empty.enc", tmp_path / "out", KEY, AD)
    assert (tmp_path / "out").read_bytes() == b""


def _peak_round_trip(tmp_path, mebibytes: int) -> int:
    src = tmp_path / f"big{mebibytes}"
    with open(src, "wb") as f:
        for i in range(mebibytes):
            f.write(data(2**20, seed=i))
    tracemalloc.start()
    try:
        sa.encrypt_file(src, tmp_path / f"{src.name}.enc", KEY, AD)
        sa.decrypt_file(tmp_path / f"{src.name}.enc", tmp_path / f"{src.name}.out", KEY, AD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hashlib.sha256((tmp_path / f"{src.name}.out").read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    return peak


@pytest.mark.parametrize("mebibytes", [12, 96])
def test_memory_stays_within_a_bound_that_does_not_depend_on_the_file_size(tmp_path, mebibytes):
    # A few segments in flight, never the file: the segment being encrypted and the one read
    # ahead, and in each of the two pipeline stages the one being worked on and two waiting.
    # The bound holds however the threads interleave; the larger file is eight times it.
    peak = _peak_round_trip(tmp_path, mebibytes)
    assert peak < 12 * 2**20, f"peak {peak} bytes for a {mebibytes} MiB file"


@pytest.mark.parametrize("size", [0, FIRST + 2 * SEG + 1000])
def test_encrypt_file_reports_what_it_wrote(tmp_path, size):
    plaintext = data(size, seed=size)
    (tmp_path / "model.tflite").write_bytes(plaintext)
    result = sa.encrypt_file(tmp_path / "model.tflite", tmp_path / "model.tflite.enc", KEY, AD)
    written = (tmp_path / "model.tflite.enc").read_bytes()
    assert written == sa.encrypt_bytes(plaintext, KEY, AD)
    assert result == sa.EncryptedFile(
        plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
        plaintext_size=size,
        sha256=hashlib.sha256(written).hexdigest(),
        size=len(written),
        crc32=zlib.crc32(written),
    )


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("encrypt-")]


def encrypt_in_time(src: Path, dst: Path) -> BaseException | None:
    """encrypt_file's exception, if any; a pipeline that blocks fails the test rather than hanging it."""
    outcome: list[BaseException | None] = []

    def run():
        try:
            sa.encrypt_file(src, dst, KEY, AD)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=run)
    caller.start()
    caller.join(timeout=60)
    assert outcome, "encrypt_file blocked"
    return outcome[0]


@pytest.mark.parametrize("failing_write", [2, 9], ids=["early, while segments keep coming", "the last one"])
def test_a_failed_write_surfaces_and_leaves_no_file_and_no_thread(tmp_path, monkeypatch, failing_write):
    src = tmp_path / "model.tflite"
    src.write_bytes(data(FIRST + 7 * SEG))  # a header and eight segments: nine writes
    writes = []
    real_write = sa._MeasuringWriter.write

    def write_until_the_disk_fills(self, chunk):
        writes.append(len(chunk))
        if len(writes) == failing_write:
            # Let the producer fill the queue and block on it first: a stage that stopped
            # taking items after its failure would leave it blocked for ever.
            time.sleep(0.5)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, chunk)

    monkeypatch.setattr(sa._MeasuringWriter, "write", write_until_the_disk_fills)
    error = encrypt_in_time(src, tmp_path / "model.tflite.enc")
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
    assert pipeline_threads() == []


def test_a_failed_read_stops_the_pipeline(tmp_path, monkeypatch):
    src = tmp_path / "model.tflite"
    src.write_bytes(data(FIRST + 2 * SEG + 1000))
    reads = []
    real_read = sa._read_full

    def read_until_the_disk_fails(f, size):
        reads.append(size)
        if len(reads) == 3:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(f, size)

    monkeypatch.setattr(sa, "_read_full", read_until_the_disk_fails)
    error = encrypt_in_time(src, tmp_path / "model.tflite.enc")
    assert isinstance(error, OSError) and error.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
    assert pipeline_threads() == []


# -- tampering -------------------------------------------------------------------------

HEADER = sa.HEADER_SIZE
SEG1 = HEADER + sa.FIRST_CIPHERTEXT_SEGMENT_SIZE  # offset of segment 1
CT = sa.CIPHERTEXT_SEGMENT_SIZE


def flip(ct: bytes, at: int) -> bytes:
    return ct[:at] + bytes([ct[at] ^ 0x01]) + ct[at + 1 :]


def swap_segments_1_and_2(ct: bytes) -> bytes:
    s1, s2 = ct[SEG1 : SEG1 + CT], ct[SEG1 + CT : SEG1 + 2 * CT]
    return ct[:SEG1] + s2 + s1 + ct[SEG1 + 2 * CT :]


TAMPERING = {
    "bit flip in header length": (lambda ct: flip(ct, 0), "header"),
    "bit flip in salt": (lambda ct: flip(ct, 5), "segment 0 of"),
    "bit flip in nonce prefix": (lambda ct: flip(ct, 39), "segment 0 of"),
    "bit flip in segment 0": (lambda ct: flip(ct, 1000), "segment 0 of"),
    "bit flip in segment 2": (lambda ct: flip(ct, SEG1 + CT + 7), "segment 2 of"),
    "bit flip in last tag": (lambda ct: flip(ct, len(ct) - 1), "segment 3 of"),
    "last segment dropped": (lambda ct: ct[: SEG1 + 2 * CT], "segment 2 of"),
    "truncated mid-segment": (lambda ct: ct[: SEG1 + CT + 12345], "segment 2 of"),
    "last byte dropped": (lambda ct: ct[:-1], "segment 3 of"),
    "truncated inside last tag": (lambda ct: ct[:-10], "segment 3 of"),
    "last segment shorter than a tag": (lambda ct: ct[: SEG1 + 2 * CT + 10], "segment 3 of"),
    "truncated to the header": (lambda ct: ct[:HEADER], "segment 0 of"),
    "truncated inside the header": (lambda ct: ct[:20], "header"),
    "one byte appended": (lambda ct: ct + b"\x00", "segment 3 of"),
    "a segment appended": (lambda ct: ct + ct[SEG1 : SEG1 + CT], "segment 3 of"),
    "segments 1 and 2 swapped": (swap_segments_1_and_2, "segment 1 of"),
    "segment 2 duplicated over 1": (lambda ct: ct[:SEG1] + ct[SEG1 + CT : SEG1 + 2 * CT] * 2 + ct[SEG1 + 2 * CT :], "segment 1 of"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_detected_and_leaves_no_file(case, tmp_path, four_segments):
    change, where = TAMPERING[case]
    src = tmp_path / "model.tflite.enc"
    src.write_bytes(change(four_segments[1]))
    with pytest.raises(DecryptionError) as excinfo:
        sa.decrypt_file(src, tmp_path / "model.tflite", KEY, AD)
    assert where in str(excinfo.value)
    assert str(src) in str(excinfo.value)
    assert not (tmp_path / "model.tflite").exists()
    assert leftovers(tmp_path) == []


def test_last_segment_flag_is_authenticated(four_segments):
    # Cutting the file at a segment boundary leaves only whole, valid segments; the
    # last-segment flag in the nonce is what makes this fail.
    _, ciphertext = four_segments
    with pytest.raises(DecryptionError, match="segment 2 of the ciphertext failed authentication"):
        sa.decrypt_bytes(ciphertext[: SEG1 + 2 * CT], KEY, AD)


@pytest.mark.parametrize(
    "key, ad",
    [(OTHER_KEY, AD), (KEY, sa.associated_data_for("acme-vision", "1.4.1", "files/digits/pixel-8/model.tflite"))],
    ids=["wrong key", "wrong associated data"],
)
def test_wrong_key_or_associated_data(key, ad, tmp_path):
    src = tmp_path / "model.tflite.enc"
    src.write_bytes(sa.encrypt_bytes(b"weights" * 100, KEY, AD))
    with pytest.raises(DecryptionError, match=r"segment 0 of .*key or associated data is wrong"):
        sa.decrypt_file(src, tmp_path / "model.tflite", key, ad)
    assert not (tmp_path / "model.tflite").exists()
    assert leftovers(tmp_path) == []


def test_failed_decryption_leaves_existing_dst_untouched(tmp_path, four_segments):
    src = tmp_path / "model.tflite.enc"
    src.write_bytes(four_segments[1][:-1])
    dst = tmp_path / "model.tflite"
    dst.write_bytes(b"the previous good model")
    with pytest.raises(DecryptionError):
        sa.decrypt_file(src, dst, KEY, AD)
    assert dst.read_bytes() == b"the previous good model"
    assert leftovers(tmp_path) == []


def test_tink_also_rejects_a_swap(tink_aead, four_segments):
    import tink

    with pytest.raises(tink.TinkError):
        tink_decrypt(tink_aead, swap_segments_1_and_2(four_segments[1]), AD)


# -- determinism -----------------------------------------------------------------------


def test_same_inputs_give_same_bytes(tmp_path):
    src = tmp_path / "model.tflite"
    src.write_bytes(data(5000))
    sa.encrypt_file(src, tmp_path / "a.enc", KEY, AD)
    sa.encrypt_file(src, tmp_path / "b.enc", KEY, AD)
    assert (tmp_path / "a.enc").read_bytes() == (tmp_path / "b.enc").read_bytes()


def test_different_path_version_key_or_content_give_different_headers():
    plaintext = data(5000)
    base = sa.encrypt_bytes(plaintext, KEY, AD)
    others = [
        sa.encrypt_bytes(plaintext, KEY, sa.associated_data_for("acme-vision", "1.4.0", "files/digits/ios/model.tflite")),
        sa.encrypt_bytes(plaintext, KEY, sa.associated_data_for("acme-vision", "1.4.1", "files/digits/pixel-8/model.tflite")),
        sa.encrypt_bytes(plaintext, OTHER_KEY, AD),
        sa.encrypt_bytes(flip(plaintext, 4999), KEY, AD),
    ]
    headers = {ct[:HEADER] for ct in [base, *others]}
    assert len(headers) == 5
    assert all(ct[HEADER:] != base[HEADER:] for ct in others)


def test_source_changing_during_encryption_writes_nothing(tmp_path, monkeypatch):
    src = tmp_path / "model.tflite"
    src.write_bytes(data(5000))
    real = sa._encrypt_stream

    def change_then_encrypt(*args):
        src.write_bytes(data(5000, seed=1))  # same inode, so the open handle sees it
        return real(*args)

    monkeypatch.setattr(sa, "_encrypt_stream", change_then_encrypt)
    with pytest.raises(StepError, match="changed while it was being encrypted"):
        sa.encrypt_file(src, tmp_path / "model.tflite.enc", KEY, AD)
    assert not (tmp_path / "model.tflite.enc").exists()
    assert leftovers(tmp_path) == []


# -- keys and associated data ------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"", bytes(16), bytes(31), bytes(33), "00" * 32])
def test_key_must_be_32_raw_bytes(bad, tmp_path):
    with pytest.raises(KeyMaterialError, match="32 raw bytes"):
        sa.encrypt_bytes(b"x", bad, AD)
    with pytest.raises(KeyMaterialError):
        sa.decrypt_file(tmp_path / "missing.enc", tmp_path / "out", bad, AD)


def test_associated_data_encoding():
    assert sa.associated_data_for("b", "1.0", "files/m.onnx") == (
        b"modelmake-file-v1" b"\x00\x00\x00\x01b" b"\x00\x00\x00\x031.0" b"\x00\x00\x00\x0cfiles/m.onnx"
    )
    # Length prefixes keep field boundaries unambiguous.
    assert sa.associated_data_for("ab", "c", "d") != sa.associated_data_for("a", "bc", "d")
    assert sa.associated_data_for("é", "1", "f").count("é".encode()) == 1


@pytest.mark.parametrize("path", ["", "/abs/model.tflite", "files//m", "./files/m", "files/../m", "files\\m", "files/"])
def test_associated_data_rejects_non_canonical_paths(path):
    with pytest.raises(ValueError):
        sa.associated_data_for("b", "1", path)


# -- the published vector ----------------------------------------------------------------


def test_vector_is_reproduced_byte_for_byte(tink_aead):
    key = bytes.fromhex((VECTOR / "key.hex").read_text())
    ad = bytes.fromhex((VECTOR / "associated_data.hex").read_text())
    plaintext = (VECTOR / "plaintext.bin").read_bytes()
    ciphertext = (VECTOR / "ciphertext.bin").read_bytes()
    assert ad == AD and key == KEY
    assert sa.encrypt_bytes(plaintext, key, ad) == ciphertext
    assert sa.decrypt_bytes(ciphertext, key, ad) == plaintext
    assert tink_decrypt(tink_aead, ciphertext, ad) == plaintext


def test_vector_readme_values_and_plain_aes_gcm_decryption():
    """Decrypt the vector the way FORMAT.md ("Encrypted model files") tells a non-Tink platform to."""
    key = bytes.fromhex((VECTOR / "key.hex").read_text())
    ad = bytes.fromhex((VECTOR / "associated_data.hex").read_text())
    ciphertext = (VECTOR / "ciphertext.bin").read_bytes()
    readme = (VECTOR / "README.md").read_text()
    assert ciphertext[0] == 40
    salt, prefix = ciphertext[1:33], ciphertext[33:40]
    file_key = HKDF(hashes.SHA256(), 32, salt=salt, info=ad).derive(key)
    nonce = prefix + (0).to_bytes(4, "big") + b"\x01"
    plaintext = AESGCM(file_key).decrypt(nonce, ciphertext[40:], None)
    assert plaintext == (VECTOR / "plaintext.bin").read_bytes()
    for value in (salt, prefix, file_key, nonce, ad, hashlib.sha256(ciphertext).digest(), hashlib.sha256(plaintext).digest()):
        assert value.hex() in readme


# -- wider Tink interop ----------------------------------------------------------------------


def test_tink_interop_at_many_sizes(tink_aead):
    rng = random.Random(7)
    sizes = [FIRST + k * SEG + d for k in range(4) for d in (-1, 0, 1)] + [rng.randrange(8 * 2**20) for _ in range(4)]
    for size in sizes:
        plaintext = data(size, seed=size)
        ours = sa.encrypt_bytes(plaintext, KEY, AD)
        assert tink_decrypt(tink_aead, ours, AD) == plaintext, size
        assert sa.decrypt_bytes(tink_encrypt(tink_aead, plaintext, AD), KEY, AD) == plaintext, size
