"""Reproducible archives, and the hardened reader refusing hostile ones before writing a byte."""
from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from modelmake.bundle import archive
from modelmake.errors import VerificationError

from tests.support.zips import symlink_entry

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z
CONTENTS = {
    "manifest.json": b'{"name":"acme-vision"}\n',
    "files/digits/model.tflite": bytes(range(256)) * 64,
    "files/labels.txt": "zéro\none\n".encode(),
    "files/é-unicode.bin": b"\x00" * 10,
    "files-extra": b"x",
}


def make_sources(root: Path, *, reverse: bool = False, mtime: int = 0, mode: int = 0o644) -> dict[str, Path]:
    """The same contents under ``root``, written in either order with chosen mtimes and modes."""
    files = {}
    for index, (name, data) in enumerate(sorted(CONTENTS.items(), reverse=reverse)):
        path = root / f"src-{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        path.chmod(mode)
        files[name] = path
    return dict(sorted(files.items(), reverse=not reverse))


# --- writing -------------------------------------------------------------------------

def test_same_inputs_give_identical_bytes_across_directories_umasks_and_time_zones(tmp_path):
    first = tmp_path / "a" / "bundle.zip"
    first.parent.mkdir()
    archive.write_archive(first, make_sources(tmp_path / "a" / "src"), EPOCH)

    second = tmp_path / "somewhere" / "else" / "bundle.zip"
    second.parent.mkdir(parents=True)
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from modelmake.bundle import archive\n"
        "os.umask(0o077)\n"
        "files = {k: Path(v) for k, v in zip(sys.argv[3::2], sys.argv[4::2])}\n"
        "archive.write_archive(Path(sys.argv[1]), files, int(sys.argv[2]))\n"
    )
    sources = make_sources(tmp_path / "somewhere" / "src", reverse=True, mtime=1_000_000_000, mode=0o755)
    argv = [str(second), str(EPOCH)] + [str(x) for pair in sources.items() for x in pair]
    env = dict(os.environ, TZ="Pacific/Chatham", LC_ALL="C")
    subprocess.run([sys.executable, "-c", script, *argv], env=env, check=True, timeout=60)

    assert first.read_bytes() == second.read_bytes()


def test_same_bytes_when_the_time_zone_changes_in_process(tmp_path):
    sources = make_sources(tmp_path / "src")
    outputs = []
    saved = os.environ.get("TZ")
    try:
        for zone in ("UTC", "America/St_Johns", "Asia/Kathmandu"):
            os.environ["TZ"] = zone
            time.tzset()
            out = tmp_path / f"{zone.replace('/', '-')}.zip"
            archive.write_archive(out, sources, EPOCH)
            outputs.append(out.read_bytes())
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert outputs[0] == outputs[1] == outputs[2]


def test_entries_are_sorted_stored_and_stamped(tmp_path):
    out = tmp_path / "bundle.zip"
    archive.write_archive(out, make_sources(tmp_path / "src"), EPOCH)
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == sorted(CONTENTS, key=lambda n: n.encode())
        assert zf.comment == b""
        for info in infos:
            assert info.date_time == time.gmtime(EPOCH)[:6]
            assert info.external_attr == (stat.S_IFREG | 0o644) << 16
            assert info.create_system == 3
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.extra == b"" and info.comment == b""
            assert zf.read(info) == CONTENTS[info.filename]
    assert (out.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "src"]


def test_epochs_before_1980_are_clamped(tmp_path):
    out = tmp_path / "old.zip"
    archive.write_archive(out, {"a": make_sources(tmp_path / "src")["manifest.json"]}, 0)
    with zipfile.ZipFile(out) as zf:
        assert zf.infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("name", ["../evil", "/abs", "a\\b", "C:/x", "dir/", "a//b", "./a", ""])
def test_the_writer_refuses_names_the_reader_would_refuse(tmp_path, name):
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot archive these names"):
        archive.write_archive(tmp_path / "out.zip", {name: source}, EPOCH)
    assert not (tmp_path / "out.zip").exists()


# --- writing: the same bytes zipfile writes ------------------------------------------

def write_with_zipfile(dst: Path, files: dict[str, Path], epoch: int) -> None:
    """The writer modelmake used before it wrote zip headers itself: every entry through zipfile."""
    date_time = time.gmtime(epoch)[:6]
    with zipfile.ZipFile(dst, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(files, key=lambda n: n.encode()):
            info = zipfile.ZipInfo(name, date_time)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = files[name].stat().st_size
            with open(files[name], "rb") as src, zf.open(info, "w") as out:
                out.write(src.read())


def test_the_writer_writes_what_zipfile_writes(tmp_path):
    sources = make_sources(tmp_path / "src")
    (tmp_path / "empty").write_bytes(b"")
    sources["files/empty.bin"] = tmp_path / "empty"
    assert any(not name.isascii() for name in sources)
    write_with_zipfile(tmp_path / "zipfile.zip", sources, EPOCH)

    archive.write_archive(tmp_path / "computed.zip", sources, EPOCH)
    crcs = {name: zlib.crc32(path.read_bytes()) for name, path in sources.items() if name.startswith("files/")}
    archive.write_archive(tmp_path / "given.zip", sources, EPOCH, crc32=crcs)

    expected = (tmp_path / "zipfile.zip").read_bytes()
    assert (tmp_path / "computed.zip").read_bytes() == expected
    assert (tmp_path / "given.zip").read_bytes() == expected


def test_more_than_65535_entries_get_zipfiles_zip64_end_records(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    sources = {f"f{i:05}": tmp_path / "empty" for i in range(archive.ZIP64_COUNT_LIMIT + 1)}
    write_with_zipfile(tmp_path / "zipfile.zip", sources, EPOCH)
    archive.write_archive(tmp_path / "ours.zip", sources, EPOCH)
    ours = (tmp_path / "ours.zip").read_bytes()
    assert b"PK\x06\x06" in ours[-100:]  # the zip64 end record
    assert ours == (tmp_path / "zipfile.zip").read_bytes()
    with archive.ArchiveReader(tmp_path / "ours.zip", max_entries=len(sources)) as reader:
        assert list(reader.entries) == list(sources)


@pytest.mark.parametrize("copy_file_range", ["fails with EXDEV", "missing"])
def test_without_copy_file_range_the_bytes_are_the_same(tmp_path, monkeypatch, copy_file_range):
    sources = make_sources(tmp_path / "src")
    archive.write_archive(tmp_path / "kernel.zip", sources, EPOCH)
    if copy_file_range == "missing":
        monkeypatch.delattr(os, "copy_file_range")
    else:
        def cross_device(*args):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", cross_device)
    archive.write_archive(tmp_path / "python.zip", sources, EPOCH)
    assert (tmp_path / "python.zip").read_bytes() == (tmp_path / "kernel.zip").read_bytes()


def zipfile_header(name: str, size: int, crc: int, zip64: bool) -> bytes:
    info = zipfile.ZipInfo(name, time.gmtime(EPOCH)[:6])
    info.file_size = info.compress_size = size
    info.CRC = crc
    return info.FileHeader(zip64=zip64)


@pytest.mark.parametrize("size", [0, 1000, archive.ZIP64_LIMIT, archive.ZIP64_LIMIT + 1, 5 << 30])
@pytest.mark.parametrize("name", ["files/model.bin", "files/modèle.bin"])
def test_local_headers_match_zipfiles_and_use_zip64_exactly_when_the_size_needs_it(name, size):
    dos_time = archive._dos_time(time.gmtime(EPOCH))
    ours = archive._local_header(archive._Entry(name, size, 0x12345678, 0, dos_time))
    assert ours == zipfile_header(name, size, 0x12345678, zip64=size > (1 << 31) - 1)


def test_zip64_sizes_and_offsets_are_read_back_by_zipfile(tmp_path):
    """Lay out a 5 GiB archive in a sparse file (the entries' data are holes) and let zipfile read it."""
    dos_time = archive._dos_time(time.gmtime(EPOCH))
    big, small = 5 << 30, 10
    first = archive._Entry("big.bin", big, 0x12345678, 0, dos_time)
    second_offset = len(archive._local_header(first)) + big
    second = archive._Entry("after-big.bin", small, zlib.crc32(bytes(small)), second_offset, dos_time)
    start = second_offset + len(archive._local_header(second)) + small
    directory = archive._central_header(first) + archive._central_header(second)
    with open(tmp_path / "sparse.zip", "wb") as f:
        for entry in (first, second):
            f.seek(entry.offset)
            f.write(archive._local_header(entry))
        f.seek(start)
        f.write(directory + archive._end_records(2, start, len(directory)))

    with zipfile.ZipFile(tmp_path / "sparse.zip") as zf:
        big_info, small_info = zf.infolist()
        assert (big_info.filename, big_info.file_size, big_info.compress_size) == ("big.bin", big, big)
        assert (big_info.header_offset, big_info.CRC) == (0, 0x12345678)
        assert (small_info.filename, small_info.file_size, small_info.header_offset) == ("after-big.bin", small, second_offset)
        assert big_info.create_version == big_info.extract_version == 45
        assert small_info.create_version == small_info.extract_version == 45  # its offset needs zip64
        assert zf.read("after-big.bin") == bytes(small)  # found through its zip64 offset, CRC checked

    with archive.ArchiveReader(tmp_path / "sparse.zip") as reader:
        assert [(e.name, e.size, e.header_offset) for e in reader.entries.values()] == [
            ("big.bin", big, 0), ("after-big.bin", small, second_offset)
        ]
        assert reader.read("after-big.bin") == bytes(small)


def test_a_given_crc_is_used_as_given(tmp_path):
    sources = make_sources(tmp_path / "src")
    wrong = zlib.crc32(CONTENTS["files/labels.txt"]) ^ 1
    out = tmp_path / "bundle.zip"
    archive.write_archive(out, sources, EPOCH, crc32={"files/labels.txt": wrong})
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("files/labels.txt").CRC == wrong
        assert zf.testzip() == "files/labels.txt"
    with pytest.raises(VerificationError, match="'files/labels.txt' is corrupt"):
        archive.extract_archive(out, tmp_path / "extracted")


def test_a_crc_for_a_name_not_archived_is_refused(tmp_path):
    sources = make_sources(tmp_path / "src")
    with pytest.raises(ValueError, match="'files/other.bin': has a CRC-32 but is not among the files"):
        archive.write_archive(tmp_path / "bundle.zip", sources, EPOCH, crc32={"files/other.bin": 0})
    assert not (tmp_path / "bundle.zip").exists()


# --- reading: the happy path ---------------------------------------------------------

def test_round_trip(tmp_path):
    out = tmp_path / "bundle.zip"
    archive.write_archive(out, make_sources(tmp_path / "src"), EPOCH)
    dest = tmp_path / "extracted"
    assert archive.extract_archive(out, dest) == sorted(CONTENTS)
    for name, data in CONTENTS.items():
        assert (dest / name).read_bytes() == data
    # Extracting again replaces the directory as a whole.
    (dest / "stale").write_text("left over")
    archive.extract_archive(out, dest)
    assert not (dest / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "extracted", "src"]


# --- reading: hostile archives -------------------------------------------------------

def craft(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we add on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def assert_rejected(tmp_path: Path, zip_path: Path, expected: str, **limits) -> None:
    """Rejected with ``expected`` in the message, and nothing at all written beside the archive."""
    dest = tmp_path / "out" / "dest"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(VerificationError) as raised:
        archive.extract_archive(zip_path, dest, **limits)
    assert expected in str(raised.value)
    assert not dest.exists()
    leftovers = sorted(set(tmp_path.rglob("*")) - set(before))
    assert leftovers in ([], [tmp_path / "out"])  # dest's parent may have been created, but stays empty


HOSTILE_NAMES = [
    ("../evil", "'../evil' has a '..' component"),
    ("files/../../evil", "has a '..' component"),
    ("/etc/evil", "'/etc/evil' is an absolute path"),
    ("C:/Windows/evil", "'C:/Windows/evil' starts with a drive letter"),
    ("C:evil", "starts with a drive letter"),
    ("files\\..\\..\\evil", "contains a backslash"),
    ("files/", "is a directory entry"),
    ("files//evil", "has an empty or '.' component"),
    ("./evil", "has an empty or '.' component"),
    ("evil\0.txt", "contains a NUL byte"),  # zipfile cannot write this name; patched in below
]


@pytest.mark.parametrize("name, expected", HOSTILE_NAMES)
def test_hostile_names_are_rejected(tmp_path, name, expected):
    stand_in = name.replace("\0", "#")
    zip_path = craft(tmp_path / "evil.zip", [("good.txt", b"fine"), (stand_in, b"payload")])
    if stand_in != name:
        zip_path.write_bytes(zip_path.read_bytes().replace(stand_in.encode(), name.encode()))
    assert_rejected(tmp_path, zip_path, expected)


def test_symlink_entry_is_rejected(tmp_path):
    zip_path = craft(tmp_path / "evil.zip", [("a.txt", b"ok"), symlink_entry("link", b"/etc/passwd")])
    assert_rejected(tmp_path, zip_path, "entry 'link' is a symbolic link")


def test_other_file_types_are_rejected(tmp_path):
    info = zipfile.ZipInfo("fifo")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert_rejected(tmp_path, craft(tmp_path / "evil.zip", [(info, b"")]), "'fifo' is not a regular file")


def test_duplicate_entries_are_rejected(tmp_path):
    zip_path = craft(tmp_path / "evil.zip", [("model.bin", b"first"), ("model.bin", b"second")])
    assert_rejected(tmp_path, zip_path, "entry 'model.bin' appears twice")


def test_names_differing_only_by_case_are_rejected(tmp_path):
    zip_path = craft(tmp_path / "evil.zip", [("Model.bin", b"first"), ("model.bin", b"second")])
    assert_rejected(tmp_path, zip_path, "'model.bin' differs from 'Model.bin' only by letter case")


def test_a_file_that_is_also_a_directory_is_rejected(tmp_path):
    zip_path = craft(tmp_path / "evil.zip", [("files", b"a file"), ("files/model.bin", b"inside")])
    assert_rejected(tmp_path, zip_path, "'files/model.bin' needs 'files' to be a directory")


def test_too_many_entries(tmp_path):
    zip_path = craft(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(4)])
    assert_rejected(tmp_path, zip_path, "has 4 entries, more than the limit of 3", max_entries=3)


def test_too_many_declared_bytes(tmp_path):
    zip_path = craft(tmp_path / "big.zip", [("a", b"x" * 600), ("b", b"x" * 600)])
    assert_rejected(tmp_path, zip_path, "entry 'b' takes the declared total size past the limit of 1000 bytes",
                    max_total_bytes=1000)


def patch_declared_size(zip_path: Path, size: int) -> None:
    """Rewrite the uncompressed size of the first entry in its local and central headers."""
    data = bytearray(zip_path.read_bytes())
    assert data[:4] == b"PK\x03\x04"
    struct.pack_into("<I", data, 22, size)  # local file header: uncompressed size
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)  # central directory: uncompressed size
    zip_path.write_bytes(bytes(data))


def test_deflated_entry_larger_than_declared_is_stopped(tmp_path):
    zip_path = craft(tmp_path / "bomb.zip", [("bomb.bin", b"\0" * 200_000)], compression=zipfile.ZIP_DEFLATED)
    patch_declared_size(zip_path, 100)
    assert_rejected(tmp_path, zip_path, "entry 'bomb.bin' yields more bytes than its declared size of 100")


def test_stored_entry_larger_than_declared_is_rejected_up_front(tmp_path):
    zip_path = craft(tmp_path / "lie.zip", [("model.bin", b"x" * 1000)])
    patch_declared_size(zip_path, 10)
    assert_rejected(tmp_path, zip_path, "'model.bin' holds 1000 bytes of stored data but declares 10")


def test_corrupt_entry_leaves_nothing_behind(tmp_path):
    zip_path = craft(tmp_path / "rot.zip", [("a.bin", b"a" * 100), ("b.bin", b"b" * 100)])
    data = bytearray(zip_path.read_bytes())
    data[data.rfind(b"b" * 100)] = ord("c")  # flip a byte in the second entry: bad CRC
    zip_path.write_bytes(bytes(data))
    assert_rejected(tmp_path, zip_path, "entry 'b.bin' is corrupt (its CRC-32 does not match its data)")


def test_a_failed_extraction_leaves_an_existing_destination_alone(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("previous build")
    zip_path = craft(tmp_path / "evil.zip", [("../evil", b"x")])
    with pytest.raises(VerificationError):
        archive.extract_archive(zip_path, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.zip"]


def test_not_a_zip_at_all(tmp_path):
    (tmp_path / "bundle.zip").write_bytes(b"this is not a zip archive")
    assert_rejected(tmp_path, tmp_path / "bundle.zip", "is not a readable zip archive")
    assert_rejected(tmp_path, tmp_path / "missing.zip", "missing.zip does not exist")
