"""fsutil.atomic_output / atomic_directory: a failed or killed write never leaves a partial file under the final name."""
import signal
import subprocess
import sys
import textwrap

import pytest

from modelmake import fsutil


class Boom(Exception):
    pass


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_atomic_output_replaces_the_file_on_success(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with fsutil.atomic_output(path) as handle:
        handle.write(b"new contents")
    assert path.read_bytes() == b"new contents"
    assert _names(tmp_path) == ["model.tflite"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_exception_mid_write_keeps_the_previous_file_and_leaves_no_partial(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(Boom):
        with fsutil.atomic_output(path) as handle:
            handle.write(b"half of the new")
            raise Boom()
    assert path.read_bytes() == b"previous"
    assert _names(tmp_path) == ["model.tflite"]


def test_exception_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with fsutil.atomic_output(tmp_path / "sub" / "metrics.json") as handle:
            handle.write(b"{")
            raise Boom()
    assert _names(tmp_path / "sub") == []


def test_atomic_directory_replaces_the_whole_directory_on_success(tmp_path):
    path = tmp_path / "saved_model"
    path.mkdir()
    (path / "stale.pb").write_bytes(b"old")
    with fsutil.atomic_directory(path) as staging:
        (staging / "saved_model.pb").write_bytes(b"new")
    assert _names(path) == ["saved_model.pb"]
    assert _names(tmp_path) == ["saved_model"]


def test_exception_mid_directory_write_keeps_the_previous_directory(tmp_path):
    path = tmp_path / "saved_model"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"previous")
    with pytest.raises(Boom):
        with fsutil.atomic_directory(path) as staging:
            (staging / "saved_model.pb").write_bytes(b"half")
            raise Boom()
    assert (path / "saved_model.pb").read_bytes() == b"previous"
    assert _names(tmp_path) == ["saved_model"]


KILLED_WRITER = textwrap.dedent(
    """\
    import os, signal, sys
    from modelmake import fsutil
    target, kind = sys.argv[1], sys.argv[2]
    if kind == "file":
        with fsutil.atomic_output(target) as handle:
            handle.write(b"half of the new")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        with fsutil.atomic_directory(target) as staging:
            (staging / "saved_model.pb").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_killed_write_keeps_the_previous_output_and_the_next_write_clears_its_leftovers(tmp_path, kind):
    path = tmp_path / ("model.tflite" if kind == "file" else "saved_model")
    if kind == "file":
        path.write_bytes(b"previous")
    else:
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"previous")
    # a sibling's own temporary must survive: model.tflite.json is written by the same step, by another writer
    sibling_partial = tmp_path / f".{path.name}.json.abcd1234.partial"
    sibling_partial.write_bytes(b"")

    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), kind])
    assert result.returncode == -signal.SIGKILL
    previous = path.read_bytes() if kind == "file" else (path / "saved_model.pb").read_bytes()
    assert previous == b"previous"
    leftovers = [name for name in _names(tmp_path) if name.endswith(".partial") and name != sibling_partial.name]
    assert len(leftovers) == 1, _names(tmp_path)

    if kind == "file":
        fsutil.write_bytes(path, b"rebuilt")
        assert path.read_bytes() == b"rebuilt"
    else:
        with fsutil.atomic_directory(path) as staging:
            (staging / "saved_model.pb").write_bytes(b"rebuilt")
        assert (path / "saved_model.pb").read_bytes() == b"rebuilt"
    assert _names(tmp_path) == sorted([path.name, sibling_partial.name])
