"""Streaming encryption of model files, byte-compatible with Tink's AES256_GCM_HKDF_1MB.

The ciphertext is exactly what Tink's ``AesGcmHkdfStreaming`` produces for a key of type
AES256_GCM_HKDF_1MB (HKDF-SHA256, derived key size 32, ciphertext segment size 1 MiB), so
an app decrypts it with Tink's ``StreamingAead`` or with plain AES-GCM (FORMAT.md):

    header   = 0x28 || salt (32 bytes) || nonce_prefix (7 bytes)          40 bytes
    file_key = HKDF-SHA256(ikm=key, salt=salt, info=associated_data, L=32)
    segment i = AES-256-GCM(file_key, nonce_prefix || uint32_be(i) || last, plaintext_i)
                with empty GCM associated data; last = 0x01 on the final segment, else 0x00

Plaintext segments are 1048560 bytes (1048520 for segment 0, which shares its 1 MiB with
the header); the final segment may be shorter, full-sized, or (only for an empty file) empty.

Why the salt and nonce prefix are derived rather than random
------------------------------------------------------------
Tink draws them at random; here they are

    derivation_key   = HKDF-SHA256(ikm=key, no salt, info="modelmake-header-key-v1", L=32)
    salt || prefix   = HKDF-Expand-SHA256(derivation_key,
                           "modelmake-header-v1" || SHA-256(plaintext) || associated_data, L=39)

so that rebuilding the same file gives the same bytes. This is safe because:

* The AES key is never the data key: every file is encrypted under a fresh ``file_key``
  derived from (key, salt, associated data), and within a file each segment's nonce is
  distinct (its index and last flag), so a (key, nonce) pair repeats only if the salt and
  associated data repeat.
* The salt is a keyed PRF of the plaintext digest and the associated data, which binds the
  bundle name, version and file path (``associated_data_for``). The same (file_key, nonce)
  therefore recurs only for exactly the same plaintext at the same place, where it gives
  exactly the same ciphertext. GCM's nonce-reuse failure needs two *different* plaintexts
  under one nonce, which cannot happen. What leaks is that a file is unchanged between two
  builds of the same bundle version: deterministic-encryption leakage, which is the
  reproducibility we want.
* The PRF is keyed with a key of its own (HKDF with a distinct label, so it is independent
  of the data key and of every ``file_key``), so the header reveals nothing about the
  plaintext and nobody without the key can test a guess of the model against it, as they
  could with an unkeyed hash.
* ``encrypt_file`` re-hashes the plaintext while encrypting and discards the output if it
  differs from the digest the salt was derived from (its own first pass, or the digest the
  caller recorded when it built the file), so a salt is never used for a plaintext other
  than the one it was derived from.
"""
from __future__ import annotations

import hashlib
import io
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from modelmake.errors import DecryptionError, KeyMaterialError, StepError
from modelmake.fsutil import atomic_output

KEY_SIZE = 32
SALT_SIZE = 32  # Tink: the salt is as long as the derived key
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
HEADER_SIZE = 1 + SALT_SIZE + NONCE_PREFIX_SIZE  # 40
CIPHERTEXT_SEGMENT_SIZE = 1 << 20
PLAINTEXT_SEGMENT_SIZE = CIPHERTEXT_SEGMENT_SIZE - TAG_SIZE  # 1048560
FIRST_PLAINTEXT_SEGMENT_SIZE = PLAINTEXT_SEGMENT_SIZE - HEADER_SIZE  # 1048520
FIRST_CIPHERTEXT_SEGMENT_SIZE = CIPHERTEXT_SEGMENT_SIZE - HEADER_SIZE  # 1048536
MAX_SEGMENTS = 1 << 32  # the segment index is a 32-bit counter in the nonce

HEADER_KEY_INFO = b"modelmake-header-key-v1"
HEADER_LABEL = b"modelmake-header-v1"
ASSOCIATED_DATA_LABEL = b"modelmake-file-v1"

_AUTH_FAILED = (
    "failed authentication: the file was changed, truncated or reordered, "
    "or the key or associated data is wrong"
)


def associated_data_for(bundle_name: str, version: str, path: str) -> bytes:
    """The associated data that binds an encrypted file to its place in a bundle.

    ``b"modelmake-file-v1"`` followed by, for each of bundle name, version and path in
    that order, the field's length in bytes as a 4-byte big-endian integer and its UTF-8
    bytes. ``path`` is the file's path inside the bundle as manifest.json spells it:
    relative, ``/``-separated, with no empty, ``.`` or ``..`` components.
    """
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise ValueError(f"{path!r} is not a bundle-relative POSIX path like 'files/digits/model.tflite'")
    out = bytearray(ASSOCIATED_DATA_LABEL)
    for field in (bundle_name, version, path):
        data = field.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


@dataclass(frozen=True)
class EncryptedFile:
    """What ``encrypt_file`` measured on the way, so that callers need not read either file again."""

    plaintext_sha256: str
    plaintext_size: int
    sha256: str  # of the encrypted file
    size: int
    crc32: int  # of the encrypted file, as a zip archive records it


def encrypt_file(
    src: Path,
    dst: Path,
    key: bytes,
    associated_data: bytes,
    *,
    plaintext_sha256: str | None = None,
    durable: bool = True,
) -> EncryptedFile:
    """Encrypt ``src`` into ``dst``; the same inputs always give the same bytes.

    ``plaintext_sha256`` (hex) is the digest of ``src`` when the caller already has it (a
    build records one for every artifact it makes); it spares a first pass over ``src``
    and is checked against the plaintext actually encrypted. ``durable=False`` skips the
    fsync, for a caller that stages a whole directory and settles its durability itself.
    """
    _check_key(key)
    src, dst = Path(src), Path(dst)
    if plaintext_sha256 is None:
        digest = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(CIPHERTEXT_SEGMENT_SIZE), b""):
                digest.update(chunk)
        expected = digest.digest()
    else:
        expected = _digest_bytes(plaintext_sha256)
    salt, prefix = _derive_header(key, expected, associated_data)
    plaintext_digest = hashlib.sha256()
    # The ciphertext is not secret, so it gets ordinary permissions, not mkstemp's 0600.
    with atomic_output(dst, permissions=0o644, durable=durable) as out, open(src, "rb") as f:
        measured = _MeasuringWriter(out)
        # A pipeline of three threads: this one reads and encrypts, one hashes the plaintext, one
        # measures and writes the ciphertext. Hashing, CRC-32 and writing release the GIL, so the
        # stages run in parallel and a large file takes about as long as its slowest stage.
        hash_plaintext = _Stage("encrypt-hash-plaintext", plaintext_digest.update)
        write_ciphertext = _Stage("encrypt-write", measured.write)
        with hash_plaintext, write_ciphertext:
            _encrypt_stream(f, write_ciphertext.put, hash_plaintext.put, key, associated_data, salt, prefix, str(src))
        rehash = plaintext_digest.digest()
        if rehash != expected:
            if plaintext_sha256 is None:
                raise StepError(
                    f"{src} changed while it was being encrypted, so nothing was written to {dst}; "
                    "run the build again once whatever is writing that file has finished"
                )
            raise StepError(
                f"{src} is not the file whose SHA-256 was recorded ({plaintext_sha256}): it changed after it was "
                f"built or while it was being encrypted, so nothing was written to {dst}; rebuild it and run the build again"
            )
    return EncryptedFile(
        rehash.hex(), plaintext_size(measured.size), measured.digest.hexdigest(), measured.size, measured.crc32
    )


def plaintext_size(ciphertext_size: int) -> int:
    """The plaintext size of an encrypted file of ``ciphertext_size`` bytes (FORMAT.md)."""
    segments = -(-(ciphertext_size) // CIPHERTEXT_SEGMENT_SIZE)
    return ciphertext_size - HEADER_SIZE - TAG_SIZE * segments


class _MeasuringWriter:
    """Hashes, checksums and counts what passes through, so the ciphertext is never read back."""

    def __init__(self, out: BinaryIO):
        self.out, self.digest, self.crc32, self.size = out, hashlib.sha256(), 0, 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)
        return self.out.write(data)


class _Stage:
    """Calls ``consume`` on a thread of its own with each item ``put``, in order.

    At most ``depth`` items wait, so memory stays bounded whatever the file size. An error
    in ``consume`` is raised in the producer at its next ``put`` or when the ``with`` block
    ends; the thread always runs until then (taking and dropping items after a failure),
    so the producer never blocks on a full queue and the thread never outlives the block.
    """

    def __init__(self, name: str, consume: Callable[[bytes], object], depth: int = 2):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> _Stage:
        self._thread.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and kind is None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after a failure, keep draining so that the producer never blocks
                try:
                    self._consume(item)
                except BaseException as error:
                    self._error = error

    def put(self, item: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)


def _digest_bytes(hex_digest: str) -> bytes:
    try:
        digest = bytes.fromhex(hex_digest)
    except (TypeError, ValueError):
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(f"plaintext_sha256 must be a SHA-256 digest in hex, not {hex_digest!r}")
    return digest


def decrypt_file(src: Path, dst: Path, key: bytes, associated_data: bytes) -> None:
    """Decrypt ``src`` into ``dst``; ``dst`` appears only if every segment authenticated."""
    _check_key(key)
    src, dst = Path(src), Path(dst)
    with open(src, "rb") as f, atomic_output(dst, permissions=0o600) as out:
        _decrypt_stream(f, out, key, associated_data, str(src))


def encrypt_bytes(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
    """``encrypt_file`` for a plaintext held in memory."""
    _check_key(key)
    salt, prefix = _derive_header(key, hashlib.sha256(plaintext).digest(), associated_data)
    out = io.BytesIO()
    # Nothing to re-hash: the plaintext in memory is the one just hashed and cannot change.
    _encrypt_stream(
        io.BytesIO(plaintext), out.write, lambda chunk: None, key, associated_data, salt, prefix, "the plaintext"
    )
    return out.getvalue()


def decrypt_bytes(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
    """``decrypt_file`` for a ciphertext held in memory."""
    _check_key(key)
    out = io.BytesIO()
    _decrypt_stream(io.BytesIO(ciphertext), out, key, associated_data, "the ciphertext")
    return out.getvalue()


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        got = f"{len(key)} bytes" if isinstance(key, (bytes, bytearray)) else f"a {type(key).__name__}"
        raise KeyMaterialError(
            f"the data key must be {KEY_SIZE} raw bytes (AES-256, Tink AES256_GCM_HKDF_1MB), got {got}; "
            "if the key file holds hex or base64, decode it first"
        )


def _derive_header(key: bytes, plaintext_digest: bytes, associated_data: bytes) -> tuple[bytes, bytes]:
    derivation_key = HKDF(hashes.SHA256(), KEY_SIZE, salt=None, info=HEADER_KEY_INFO).derive(key)
    info = HEADER_LABEL + plaintext_digest + associated_data
    material = HKDFExpand(hashes.SHA256(), SALT_SIZE + NONCE_PREFIX_SIZE, info).derive(derivation_key)
    return material[:SALT_SIZE], material[SALT_SIZE:]


def _segment_cipher(key: bytes, salt: bytes, associated_data: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), KEY_SIZE, salt=salt, info=associated_data).derive(key))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I?", index, last)


def _read_full(f: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of file (a raw read may return less)."""
    data = f.read(size)
    while 0 < len(data) < size and (more := f.read(size - len(data))):
        data += more
    return data


def _encrypt_stream(
    src: BinaryIO,
    write_ciphertext: Callable[[bytes], object],
    see_plaintext: Callable[[bytes], object],
    key: bytes,
    associated_data: bytes,
    salt: bytes,
    prefix: bytes,
    name: str,
) -> None:
    """Pass the header and then each segment to ``write_ciphertext``, each plaintext chunk read to ``see_plaintext``."""
    aes = _segment_cipher(key, salt, associated_data)
    write_ciphertext(bytes([HEADER_SIZE]) + salt + prefix)
    want = FIRST_PLAINTEXT_SEGMENT_SIZE
    chunk = _read_full(src, want)
    index = 0
    while True:
        see_plaintext(chunk)
        # A segment is the last one when nothing follows it, so a plaintext that ends on a
        # segment boundary ends with a full segment flagged last, as Tink writes it.
        following = _read_full(src, PLAINTEXT_SEGMENT_SIZE) if len(chunk) == want else b""
        last = not following
        if index >= MAX_SEGMENTS:
            raise StepError(f"{name} is too large to encrypt: the format allows at most 2^32 segments (about 4 PiB)")
        write_ciphertext(aes.encrypt(_nonce(prefix, index, last), chunk, None))
        if last:
            return
        chunk, want, index = following, PLAINTEXT_SEGMENT_SIZE, index + 1


def _decrypt_stream(src: BinaryIO, out: BinaryIO, key: bytes, associated_data: bytes, name: str) -> None:
    header = _read_full(src, HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise DecryptionError(
            f"{name} is {len(header)} bytes, shorter than the {HEADER_SIZE}-byte header: "
            "it was truncated or is not an encrypted model file"
        )
    if header[0] != HEADER_SIZE:
        raise DecryptionError(
            f"{name} does not start with an AES256_GCM_HKDF_1MB header (first byte {header[0]}, "
            f"expected {HEADER_SIZE}): it is not an encrypted model file, or it was damaged"
        )
    aes = _segment_cipher(key, header[1 : 1 + SALT_SIZE], associated_data)
    prefix = header[1 + SALT_SIZE :]
    want = FIRST_CIPHERTEXT_SEGMENT_SIZE
    segment = _read_full(src, want)
    index = 0
    while True:
        following = _read_full(src, CIPHERTEXT_SEGMENT_SIZE) if len(segment) == want else b""
        last = not following
        if index >= MAX_SEGMENTS:
            raise DecryptionError(f"{name} has more than 2^32 segments, more than the format allows")
        if len(segment) < TAG_SIZE:
            raise DecryptionError(
                f"segment {index} of {name} is shorter than its {TAG_SIZE}-byte tag: the file was truncated"
            )
        try:
            plaintext = aes.decrypt(_nonce(prefix, index, last), segment, None)
        except InvalidTag:
            raise DecryptionError(f"segment {index} of {name} {_AUTH_FAILED}") from None
        out.write(plaintext)
        if last:
            return
        segment, want, index = following, CIPHERTEXT_SEGMENT_SIZE, index + 1
