"""The content-addressed store against a real S3 server (SeaweedFS on loopback) and a local folder."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from modelmake.cache.store import CacheEntryInvalid, CacheStore, CacheUnavailable, file_sha256


def _outputs(root: Path, files: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for relpath, data in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[relpath] = path
    return paths


@pytest.fixture(params=["s3", "file"])
def store_url(request, tmp_path):
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    return request.getfixturevalue("s3_cache")


def test_an_entry_round_trips_byte_for_byte(store_url, tmp_path):
    files = {"build/artifacts/t/model.tflite": b"\x00model" * 5000, "build/artifacts/t/model.tflite.json": b'{"a": 1}\n'}
    store = CacheStore(store_url)
    store.check()
    store.put_entry("k" * 64, _outputs(tmp_path / "a", files), {"duration_seconds": 2.5})

    entry = CacheStore(store_url, write=False).get_entry("k" * 64)
    assert entry is not None and entry.meta["duration_seconds"] == 2.5
    CacheStore(store_url).fetch(entry, tmp_path / "b")
    for relpath, data in files.items():
        assert (tmp_path / "b" / relpath).read_bytes() == data


def test_a_missing_key_is_a_miss(store_url):
    store = CacheStore(store_url)
    store.check()
    assert store.get_entry("0" * 64) is None


def test_a_blob_already_there_is_not_uploaded_again(store_url, tmp_path):
    paths = _outputs(tmp_path, {"build/x": b"same bytes" * 1000})
    store = CacheStore(store_url)
    store.put_entry("a" * 64, paths, {})
    moved = store.bytes_up
    store.put_entry("b" * 64, paths, {})
    assert store.bytes_up - moved < 1000  # only the second entry's record


def test_a_blob_holding_other_bytes_changes_nothing_in_the_workspace(tmp_path):
    url = (tmp_path / "store").as_uri()
    store = CacheStore(url)
    paths = _outputs(tmp_path / "a", {"build/one": b"one" * 100, "build/two": b"two" * 100})
    store.put_entry("c" * 64, paths, {})
    tampered = Path(store.blob_path(file_sha256(paths["build/two"])))
    tampered.write_bytes(b"evil" * 75)
    workspace = tmp_path / "b"
    _outputs(workspace, {"build/one": b"old"})

    with pytest.raises(CacheEntryInvalid, match="other bytes"):
        store.fetch(store.get_entry("c" * 64), workspace)
    assert (workspace / "build/one").read_bytes() == b"old"
    assert not (workspace / "build/two").exists()


def test_an_entry_naming_a_path_outside_the_workspace_is_refused(tmp_path):
    store = CacheStore((tmp_path / "store").as_uri())
    store.check()
    record = {"format": 1, "key": "d" * 64, "files": {"../escape": {"sha256": "0" * 64, "size": 1}}, "meta": {}}
    Path(store.entry_path("d" * 64)).parent.mkdir(parents=True, exist_ok=True)
    Path(store.entry_path("d" * 64)).write_text(json.dumps(record))
    with pytest.raises(CacheEntryInvalid, match="unsafe path"):
        store.get_entry("d" * 64)


def test_many_writers_of_one_key_leave_a_whole_entry_and_readers_never_see_half(s3_cache, tmp_path):
    payloads = [{f"build/out/{i}": bytes([w]) * (20000 + i) for i in range(4)} for w in range(4)]
    seen: list[object] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def write(index: int) -> None:
        try:
            CacheStore(s3_cache).put_entry("e" * 64, _outputs(tmp_path / f"w{index}", payloads[index]), {"writer": index})
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    def read() -> None:
        store = CacheStore(s3_cache, write=False)
        while not done.is_set():
            try:
                entry = store.get_entry("e" * 64)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
                return
            if entry is not None:
                seen.append(entry)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()

    assert not errors
    final = CacheStore(s3_cache).get_entry("e" * 64)
    for entry in [*seen, final]:
        assert set(entry.files) == set(payloads[entry.meta["writer"]])
    workspace = tmp_path / "fetched"
    CacheStore(s3_cache).fetch(final, workspace)
    for relpath, data in payloads[final.meta["writer"]].items():
        assert (workspace / relpath).read_bytes() == data


def test_a_read_only_store_uploads_nothing(s3_cache, tmp_path, seaweed_s3):
    store = CacheStore(s3_cache, write=False)
    store.put_entry("f" * 64, _outputs(tmp_path, {"build/x": b"x" * 100}), {})
    assert store.bytes_up == 0
    assert not seaweed_s3.filesystem().exists(s3_cache.removeprefix("s3://"))


def test_a_server_that_does_not_answer_is_unavailable_within_seconds(monkeypatch, seaweed_s3):
    from tests.support.seaweed import free_ports

    for name, value in seaweed_s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(CacheUnavailable, match="cannot reach"):
        CacheStore(f"s3://{seaweed_s3.bucket}/x", storage_options={"skip_instance_cache": True}).check()


@pytest.mark.parametrize("problem", ["bucket", "credentials"])
def test_a_wrong_bucket_or_wrong_credentials_is_unavailable(problem, s3_cache, monkeypatch, seaweed_s3):
    url = s3_cache
    if problem == "bucket":
        url = "s3://no-such-bucket/x"
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(CacheUnavailable):
        CacheStore(url, storage_options={"skip_instance_cache": True}).check()


def test_a_missing_blob_makes_the_entry_invalid(tmp_path):
    store = CacheStore((tmp_path / "store").as_uri())
    paths = _outputs(tmp_path / "a", {"build/one": b"one" * 100})
    store.put_entry("9" * 64, paths, {})
    Path(store.blob_path(file_sha256(paths["build/one"]))).unlink()
    with pytest.raises(CacheEntryInvalid, match="missing"):
        store.fetch(store.get_entry("9" * 64), tmp_path / "b")
    assert not (tmp_path / "b" / "build/one").exists()


@pytest.mark.parametrize(
    ("spec", "environ", "expected"),
    [
        (None, {}, None),
        (None, {"MODELMAKE_CACHE": "s3://b/p"}, ("s3://b/p", True)),
        (("s3://b/spec", False), {}, ("s3://b/spec", False)),
        (("s3://b/spec", False), {"MODELMAKE_CACHE": "s3://b/env"}, ("s3://b/env", False)),
        (("s3://b/spec", False), {"MODELMAKE_CACHE_WRITE": "1"}, ("s3://b/spec", True)),
        (("s3://b/spec", True), {"MODELMAKE_CACHE_WRITE": "0"}, ("s3://b/spec", False)),
        (("s3://b/spec", True), {"MODELMAKE_CACHE": "off"}, None),
    ],
)
def test_the_environment_overrides_the_spec_s_cache_settings(spec, environ, expected):
    from modelmake.cache.hook import settings_in_force
    from modelmake.plan import CacheSettings

    settings = settings_in_force(CacheSettings(*spec) if spec else None, environ)
    assert (None if settings is None else (settings.url, settings.write)) == expected


def test_modelmake_cache_says_when_no_build_has_used_a_cache(tmp_path, capsys, monkeypatch):
    from modelmake.cli import main

    monkeypatch.delenv("MODELMAKE_CACHE", raising=False)
    assert main(["cache", "--workspace", str(tmp_path)]) == 0
    assert "no build" in capsys.readouterr().out
    assert main(["cache", "--workspace", str(tmp_path), "--json"]) == 0
    assert capsys.readouterr().out.strip() == "null"


def test_the_last_build_s_figures_add_up_over_its_tasks(tmp_path):
    from modelmake.cache.hook import STATS, console_line, last_build

    record = tmp_path / STATS
    record.parent.mkdir(parents=True)
    lines = [
        {"build": "1@x", "url": "s3://b/p", "write": True},
        {"task": "convert:a", "outcome": "hit", "uploaded": False, "bytes_down": 3_000_000, "bytes_up": 0, "saved_seconds": 40.0},
        {"task": "convert:b", "outcome": "miss", "uploaded": True, "bytes_down": 0, "bytes_up": 1000},
        {"task": "evaluate:a", "outcome": "ignored", "uploaded": True, "bytes_down": 10, "bytes_up": 500},
    ]
    record.write_text("\n".join(json.dumps(line) for line in lines) + "\n{half a line")
    summary = last_build(tmp_path)
    assert (summary["tasks"], summary["hits"], summary["misses"], summary["ignored"], summary["uploads"]) == (3, 1, 1, 1, 2)
    assert (summary["bytes_down"], summary["bytes_up"], summary["seconds_saved"]) == (3_000_010, 1500, 40.0)
    assert console_line(summary) == "cache: 1 of 3 tasks from s3://b/p (3.0 MB fetched, 40 s saved, 2 uploaded)"


def _task(settings, **overrides):
    from modelmake.contracts import CacheableTask

    fields = {
        "kind": "convert", "job_type": "ConvertJob", "hashed": {"config": {"precision": "int8"}, "tools": {"x": "1"}, "also": None},
        "file_dep": ("build/in.json",), "targets": ("build/out/model.bin", "build/out/model.json"), "output_dirs": (),
        "settings": settings,
    }
    return CacheableTask(**(fields | overrides))


def _step(outputs: dict[str, bytes], result=None):
    calls = []

    def run():
        calls.append(1)
        for relpath, data in outputs.items():
            Path(relpath).parent.mkdir(parents=True, exist_ok=True)
            Path(relpath).write_bytes(data)
        return result

    return run, calls


@pytest.fixture
def in_workspace(tmp_path, monkeypatch):
    for name in ("MODELMAKE_CACHE", "MODELMAKE_CACHE_WRITE"):
        monkeypatch.delenv(name, raising=False)
    workspace = tmp_path / "workspace"
    (workspace / "build").mkdir(parents=True)
    (workspace / "build/in.json").write_text('{"source": 1}')
    monkeypatch.chdir(workspace)
    return workspace


def test_a_run_is_uploaded_and_a_second_workspace_fetches_it_without_running(in_workspace, tmp_path, monkeypatch):
    from modelmake.cache.hook import last_build, run_cached
    from modelmake.plan import CacheSettings

    settings = CacheSettings((tmp_path / "store").as_uri())
    outputs = {"build/out/model.bin": b"model", "build/out/model.json": b"{}"}
    run, calls = _step(outputs)
    assert run_cached(_task(settings), "convert:m", run) is None and calls == [1]
    assert last_build(in_workspace)["uploads"] == 1

    other = tmp_path / "other"
    (other / "build").mkdir(parents=True)
    (other / "build/in.json").write_text('{"source": 1}')
    monkeypatch.chdir(other)
    run, calls = _step({"build/out/model.bin": b"never"})
    assert run_cached(_task(settings), "convert:m", run) is None and calls == []
    assert {p: (other / p).read_bytes() for p in outputs} == outputs
    assert last_build(other)["hits"] == 1
    # Another input is another key: a miss, and the step runs.
    (other / "build/in.json").write_text('{"source": 2}')
    run, calls = _step(outputs)
    run_cached(_task(settings), "convert:m", run)
    assert calls == [1]


def test_a_recorded_failure_is_never_uploaded(in_workspace, tmp_path):
    from modelmake.cache.hook import last_build, run_cached
    from modelmake.plan import CacheSettings
    from modelmake.steps.runner import RECORDED_FAILURE

    settings = CacheSettings((tmp_path / "store").as_uri())
    run, _ = _step({"build/out/model.json": b'{"not_built": "why"}'}, result={RECORDED_FAILURE: True})
    assert run_cached(_task(settings), "convert:m", run) == {RECORDED_FAILURE: True}
    summary = last_build(in_workspace)
    assert (summary["misses"], summary["uploads"]) == (1, 0)
    assert not list((tmp_path / "store").rglob("*.json"))


def test_an_entry_holding_files_outside_the_task_s_outputs_is_ignored(in_workspace, tmp_path, capsys):
    from modelmake.cache.hook import run_cached, task_key
    from modelmake.plan import CacheSettings

    settings = CacheSettings((tmp_path / "store").as_uri())
    task = _task(settings)
    planted = _outputs(tmp_path / "evil", {
        "build/out/model.bin": b"m", "build/out/model.json": b"{}", "keys/dev/signing.pem": b"attacker's key",
    })
    CacheStore(settings.url).put_entry(task_key(task), planted, {})
    run, calls = _step({"build/out/model.bin": b"m", "build/out/model.json": b"{}"})
    run_cached(task, "convert:m", run)
    assert calls == [1] and not (in_workspace / "keys").exists()
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "convert:m" in warning and "keys/dev/signing.pem" in warning
