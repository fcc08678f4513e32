"""Hostile bundle archives, generated from a small signed bundle: the corpus that tests/corpus/archives/ names.

Every attack is a function from the bytes of a genuine bundle archive (and its
directory) to the bytes of a hostile one; ``ATTACKS`` maps the names that
``tests/corpus/archives/cases.json`` uses to them. A new attack is a function here and
a line there, with the exit code and message it must get.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from modelmake import fsutil
from modelmake.bundle import signing
from modelmake.bundle.archive import ZIP_EPOCH_MIN, write_archive

NAME, VERSION = "acme-vision", "1.4.0"
MODEL_PATH = "files/pixel-8/digits.int8.tflite"
MODEL = bytes(range(256)) * 2  # 512 bytes: the archive stays a few KB, so that every byte of it can be flipped


def make_bundle(root: Path, signing_key: ec.EllipticCurvePrivateKey, manifest_changes: dict | None = None) -> Path:
    """A signed bundle directory with one model file, shaped like the package step's (no build needed)."""
    directory = root / NAME / VERSION
    (directory / MODEL_PATH).parent.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_PATH).write_bytes(MODEL)
    variant = {
        "target": "pixel-8", "platform": "android", "format": "tflite", "variant": "int8", "precision": "int8",
        "file": MODEL_PATH, "sha256": hashlib.sha256(MODEL).hexdigest(), "size": len(MODEL),
        "metrics": {"top1": "0.912000"},
    }
    manifest: dict[str, Any] = {
        "format_version": 1, "bundle": NAME, "version": VERSION, "created": "1980-01-01T00:00:00Z",
        "signing": "development",
        "targets": {"pixel-8": {"platform": "android", "soc": "Google Tensor G3", "min_os": "Android 14 (API 34)"}},
        "models": {"digits": {"description": "digits", "variants": {"digits.int8.tflite@pixel-8": variant}}},
        "tools": {"modelmake": "0.1.0"},
    }
    manifest.update(manifest_changes or {})
    (directory / "manifest.json").write_bytes(fsutil.canonical_json_document(manifest))
    (directory / "provenance.json").write_bytes(fsutil.canonical_json_document({"_type": "https://in-toto.io/Statement/v1"}))
    signing.sign_directory(directory, signing_key)
    return directory


def archive_of(directory: Path, destination: Path) -> Path:
    """The bundle directory as modelmake archives it."""
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    write_archive(destination, files, ZIP_EPOCH_MIN)
    return destination


# --- building archives by hand ---------------------------------------------------------

class Member(NamedTuple):
    """One entry to write: its name, the bytes stored, and what the headers declare."""

    name: bytes
    stored: bytes
    size: int
    crc32: int
    method: int = 0
    external_attr: int = (stat.S_IFREG | 0o644) << 16


def stored(name: str, data: bytes) -> Member:
    return Member(name.encode(), data, len(data), zlib.crc32(data))


def local_header(member: Member) -> bytes:
    return struct.pack(
        "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, member.method, 0, 33, member.crc32, len(member.stored), member.size,
        len(member.name), 0,
    ) + member.name


def central_record(member: Member, offset: int) -> bytes:
    return struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, member.method, 0, 33, member.crc32, len(member.stored),
        member.size, len(member.name), 0, 0, 0, 0, member.external_attr, offset,
    ) + member.name


def end_record(count: int, directory_size: int, directory_offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, directory_size, directory_offset, 0)


def zip_of(members: list[Member], offsets: list[int] | None = None) -> bytes:
    """Entries laid end to end, then a central directory whose offsets are ``offsets`` when given (to make overlaps)."""
    body, actual = b"", []
    for member in members:
        actual.append(len(body))
        body += local_header(member) + member.stored
    directory = b"".join(central_record(m, o) for m, o in zip(members, offsets or actual, strict=True))
    return body + directory + end_record(len(members), len(directory), len(body))


def genuine_members(directory: Path) -> list[Member]:
    return [stored(p.relative_to(directory).as_posix(), p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()]


# --- the attacks ------------------------------------------------------------------------
# Each takes the genuine archive's bytes and its bundle directory.

Attack = Callable[[bytes, Path], bytes]


def with_member(member: Member) -> Attack:
    return lambda _, directory: zip_of([*genuine_members(directory), member])


def zip_slip(name: str) -> Attack:
    return with_member(stored(name, b"owned"))


def symlink(name: str, target: str) -> Attack:
    link = stored(name, target.encode())
    return with_member(link._replace(external_attr=(stat.S_IFLNK | 0o777) << 16))


def replaced(name: str, data: bytes) -> Attack:
    """The genuine entries with ``name``'s bytes replaced (and a CRC-32 that matches them)."""

    def attack(_: bytes, directory: Path) -> bytes:
        return zip_of([m if m.name != name.encode() else stored(name, data) for m in genuine_members(directory)])

    return attack


@functools.cache
def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built in milliseconds from one flushed 1 MiB block."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # After a full flush the compressor starts afresh, so the next MiB of zeros compresses to the same bytes.
    piece = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(size, block)
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    return piece * whole + tail


@functools.cache
def zeros_crc32(size: int) -> int:
    crc, block = 0, bytes(1 << 20)
    for _ in range(size >> 20):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(size & ((1 << 20) - 1)), crc)


def deflate_bomb(size: int, *, declared: int | None = None, name: str = "files/pixel-8/bomb.bin") -> Attack:
    """The genuine entries plus one small deflated entry that expands to ``size`` zero bytes (declaring ``declared``)."""

    def attack(data: bytes, directory: Path) -> bytes:
        bomb = Member(name.encode(), zeros_deflated(size), size if declared is None else declared, zeros_crc32(size), method=8)
        return with_member(bomb)(data, directory)

    return attack


def overlap_bomb(copies: int, size: int) -> Attack:
    """One deflated kernel of ``size`` zero bytes that ``copies`` central records all point at (a quoted-overlap bomb)."""

    def attack(_: bytes, directory: Path) -> bytes:
        kernel = Member(b"files/kernel.bin", zeros_deflated(size), size, zeros_crc32(size), method=8)
        members = [kernel._replace(name=f"files/copy-{i:04}.bin".encode()) for i in range(copies)]
        body = local_header(members[0]) + kernel.stored
        records = b"".join(central_record(member, 0) for member in members)
        return body + records + end_record(copies, len(records), len(body))

    return attack


def cut(offset: int, length: int) -> Attack:
    """``length`` bytes removed at ``offset`` (negative: counted from the end)."""

    def attack(data: bytes, _: Path) -> bytes:
        start = offset if offset >= 0 else len(data) + offset
        return data[:start] + data[start + length :]

    return attack


def cut_middle(length: int) -> Attack:
    return lambda data, _: data[: len(data) // 2] + data[len(data) // 2 + length :]


def appended(extra: bytes) -> Attack:
    return lambda data, _: data + extra


def prepended(extra: bytes) -> Attack:
    return lambda data, _: extra + data


def end_record_field(field: int, delta: int) -> Attack:
    """One field of the end of central directory record (struct "<4s4H2LH", by index) changed by ``delta``."""

    def attack(data: bytes, _: Path) -> bytes:
        fields = list(struct.unpack("<4s4H2LH", data[-22:]))
        fields[field] += delta
        return data[:-22] + struct.pack("<4s4H2LH", *fields)

    return attack


def central_byte(entry: str, field_offset: int, value: int) -> Attack:
    """A byte of ``entry``'s central directory record set to ``value`` (offsets as in APPNOTE 4.3.12)."""

    def attack(data: bytes, _: Path) -> bytes:
        at = central_record_offsets(data)[entry] + field_offset
        return data[:at] + bytes([value]) + data[at + 1 :]

    return attack


def local_byte(entry: str, field_offset: int, value: int) -> Attack:
    """A byte of ``entry``'s local header set to ``value`` (offsets as in APPNOTE 4.3.7)."""

    def attack(data: bytes, _: Path) -> bytes:
        at = local_header_offsets(data)[entry] + field_offset
        return data[:at] + bytes([value]) + data[at + 1 :]

    return attack


def manifest_signed(changes: dict) -> Attack:
    """A genuinely signed bundle whose manifest carries ``changes``: what a key holder, or a bug, could sign."""

    def attack(_: bytes, directory: Path) -> bytes:
        root = directory.parent.parent / "resigned"
        resigned = make_bundle(root, _SIGNING_KEYS[directory], changes)
        return zip_of(genuine_members(resigned))

    return attack


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def signature_replaced(signature: bytes) -> Attack:
    """The genuine entries with model.sig's bytes replaced."""

    def attack(_: bytes, directory: Path) -> bytes:
        return zip_of([m if m.name != b"model.sig" else stored("model.sig", signature) for m in genuine_members(directory)])

    return attack


def signed_payload(payload: bytes) -> Attack:
    """The genuine entries with a model.sig that the bundle's own key made over ``payload``: signed, but not a statement."""

    def attack(data: bytes, directory: Path) -> bytes:
        key = _SIGNING_KEYS[directory]
        envelope = {
            "mediaType": signing.BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": signing.public_key_hint(key.public_key())}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(payload).decode(), "payloadType": signing.PAYLOAD_TYPE,
                "signatures": [{"keyid": "", "sig": base64.b64encode(key.sign(signing.pae(payload), ec.ECDSA(hashes.SHA256()))).decode()}],
            },
        }
        return signature_replaced(fsutil.canonical_json(envelope))(data, directory)

    return attack


# The key each genuine bundle was signed with, so that manifest_signed can sign a variant of it.
_SIGNING_KEYS: dict[Path, ec.EllipticCurvePrivateKey] = {}


def genuine_archive(root: Path, signing_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """(bundle directory, its archive) under ``root``."""
    directory = make_bundle(root / "genuine", signing_key)
    _SIGNING_KEYS[directory] = signing_key
    return directory, archive_of(directory, root / f"{NAME}-{VERSION}.zip")


# --- where things are -------------------------------------------------------------------

def central_record_offsets(data: bytes) -> dict[str, int]:
    """Each entry's central directory record offset, by name (for an archive without zip64 records)."""
    _, _, _, _, count, _, directory_offset, _ = struct.unpack("<4s4H2LH", data[-22:])
    offsets, position = {}, directory_offset
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<3H", data, position + 28)
        offsets[data[position + 46 : position + 46 + name_length].decode()] = position
        position += 46 + name_length + extra_length + comment_length
    return offsets


def local_header_offsets(data: bytes) -> dict[str, int]:
    directory = central_record_offsets(data)
    return {name: struct.unpack_from("<L", data, at + 42)[0] for name, at in directory.items()}


# The bits a reader may ignore without reading other bytes: in a central directory record
# the version made by (4, 5), the version needed (6, while it stays at most 4.5), the
# internal attributes (36, 37), and the external attributes' MS-DOS attributes and Unix
# permission bits (38..40, and the low half of 41, whose high half is the file type); in a
# local header the version needed (4). A flip anywhere else must be refused.
IGNORABLE_CENTRAL_BITS = {4: 0xFF, 5: 0xFF, 6: 0xFF, 36: 0xFF, 37: 0xFF, 38: 0xFF, 39: 0xFF, 40: 0xFF, 41: 0x0F}
IGNORABLE_LOCAL_BITS = {4: 0xFF}


def ignorable_bits(data: bytes) -> dict[int, int]:
    """Offset -> the bits of that byte a reader may ignore."""
    bits = {at + field: mask for at in central_record_offsets(data).values() for field, mask in IGNORABLE_CENTRAL_BITS.items()}
    bits |= {at + field: mask for at in local_header_offsets(data).values() for field, mask in IGNORABLE_LOCAL_BITS.items()}
    return bits


# --- the named attacks that cases.json uses ----------------------------------------------

ATTACKS: dict[str, Attack] = {
    "zip-slip-dotdot": zip_slip("../../evil.txt"),
    "zip-slip-nested-dotdot": zip_slip("files/../../evil.txt"),
    "zip-slip-absolute": zip_slip("/tmp/evil.txt"),
    "zip-slip-drive": zip_slip("C:/evil.txt"),
    "zip-slip-backslash": zip_slip("files\\..\\..\\evil.txt"),
    "zip-slip-control": zip_slip("files/\x1b[2Jevil.txt"),
    "name-too-long": zip_slip("files/" + "a" * 5000),
    "name-not-utf8": with_member(Member(b"files/\xff.bin", b"x", 1, zlib.crc32(b"x"))),
    "symlink-out": symlink("files/link", "/etc/passwd"),
    "symlink-over-model": symlink("files/pixel-8/digits.int8.tflite.link", "../../../../etc/hostname"),
    "deflate-bomb-2gib": deflate_bomb(2 << 30),
    "deflate-bomb-declared-small": deflate_bomb(2 << 30, declared=100),
    "overlap-bomb": overlap_bomb(100, 2 << 20),
    "model-replaced-by-larger": replaced(MODEL_PATH, MODEL * 4),
    "model-replaced-same-size": replaced(MODEL_PATH, MODEL[::-1]),
    "provenance-replaced-by-larger-than-limit": replaced("provenance.json", b" " * (16 << 20) + b"{}"),
    "cut-first-100": cut(0, 100),
    "cut-middle-100": cut_middle(100),
    "cut-last-byte": cut(-1, 1),
    "prepended-100": prepended(b"\0" * 100),
    "appended-junk": appended(b"junk"),
    "directory-offset-plus-1": end_record_field(6, 1),
    "directory-offset-minus-1": end_record_field(6, -1),
    "entry-count-minus-1": end_record_field(4, -1),
    "version-needed-flipped": central_byte("manifest.json", 6, 20 ^ 0xFF),
    "local-version-needed-flipped": local_byte("manifest.json", 4, 20 ^ 0xFF),
    "local-crc-differs": local_byte("manifest.json", 14, 0),
    "local-name-differs": local_byte("model.sig", 30, ord("M")),
    "manifest-file-climbs-out": manifest_signed({"models": {"digits": {"variants": {"v": {
        "target": "pixel-8", "platform": "android", "format": "tflite", "precision": "int8",
        "file": "../../etc/hostname", "sha256": "0" * 64, "size": 1}}}}}),
    "manifest-file-absolute": manifest_signed({"models": {"digits": {"variants": {"v": {
        "target": "pixel-8", "platform": "android", "format": "tflite", "precision": "int8",
        "file": "/etc/hostname", "sha256": "0" * 64, "size": 1}}}}}),
    "manifest-format-version-true": manifest_signed({"format_version": True}),
    "manifest-models-a-list": manifest_signed({"models": []}),
    "manifest-deeply-nested": manifest_signed({"tools": {"modelmake": "0.1.0", "deep": nested(100)}}),
    "signature-deeply-nested": signature_replaced(b"[" * 100_000 + b"]" * 100_000),
    "signed-statement-deeply-nested": signed_payload(b"[" * 100_000 + b"]" * 100_000),
    "signed-statement-resources-an-object": signed_payload(
        b'{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://model_signing/signature/v1.0",'
        b'"predicate":{"serialization":{"method":"files","hash_type":"sha256"},"resources":{"a":1}},"subject":[]}'
    ),
    "signature-hint-an-object": signature_replaced(
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":{"a":1}}},'
        b'"dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}}'
    ),
}
