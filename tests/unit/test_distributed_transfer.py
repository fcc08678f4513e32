"""What a step on a cluster uploads, and how its outputs reach the workspace: all of them, verified, or none."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelmake import distributed
from modelmake.cache.store import CacheEntryInvalid, CacheStore
from modelmake.distributed import transfer
from modelmake.errors import ModelmakeError


@dataclass(frozen=True)
class _Evaluation:
    artifact: str


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_source_record_brings_its_model_directory_and_an_evaluation_its_artifact(tmp_path):
    _write(tmp_path, "build/sources/m/source.json", "{}")
    _write(tmp_path, "build/sources/m/saved_model/saved_model.pb", "graph")
    _write(tmp_path, "build/sources/m/saved_model/variables/variables.index", "index")
    _write(tmp_path, "build/sources/m/saved_model/.variables.abcd1234.partial", "a killed write")
    _write(tmp_path, "build/artifacts/t/m.fp32.onnx", "model")
    files = transfer.input_files(
        tmp_path, _Evaluation("build/artifacts/t/m.fp32.onnx"), ["build/sources/m/source.json", "build/data/m/evaluation.npz"]
    )
    assert files == [
        "build/sources/m/source.json",
        "build/sources/m/saved_model/saved_model.pb",
        "build/sources/m/saved_model/variables/variables.index",
        "build/data/m/evaluation.npz",
        "build/artifacts/t/m.fp32.onnx",
    ]
    # A failed conversion leaves no artifact: the evaluation still runs (and records why), with nothing to upload for it.
    assert "build/artifacts/t/m.int8.onnx" not in transfer.input_files(tmp_path, _Evaluation("build/artifacts/t/m.int8.onnx"), [])


def test_a_fine_tuned_record_brings_its_model_and_an_export_record_the_files_it_names(tmp_path):
    _write(tmp_path, "build/trained/m/sparse50/source.json", "{}")
    _write(tmp_path, "build/trained/m/sparse50/saved_model/saved_model.pb", "graph")
    _write(tmp_path, "build/exports/m/onnx-opset17.onnx", "model")
    _write(tmp_path, "build/exports/m/onnx-opset17.prepared-batch-1.onnx", "prepared")
    _write(tmp_path, "build/exports/m/onnx-opset18.onnx", "another opset's export, not read")
    _write(tmp_path, "build/exports/m/onnx-opset17.onnx.json", json.dumps({
        "model": "build/exports/m/onnx-opset17.onnx",
        "prepared": {"batch-1": {"file": "build/exports/m/onnx-opset17.prepared-batch-1.onnx", "sha256": "0" * 64}},
    }))
    files = transfer.input_files(tmp_path, object(), ["build/trained/m/sparse50/source.json", "build/exports/m/onnx-opset17.onnx.json"])
    assert files == [
        "build/trained/m/sparse50/source.json",
        "build/trained/m/sparse50/saved_model/saved_model.pb",
        "build/exports/m/onnx-opset17.onnx.json",
        "build/exports/m/onnx-opset17.onnx",
        "build/exports/m/onnx-opset17.prepared-batch-1.onnx",
    ]


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "build/../../outside"])
def test_a_path_outside_the_workspace_is_refused(path):
    with pytest.raises(ValueError):
        transfer.relative(path)


def _store_with(tmp_path: Path, files: dict[str, str]) -> tuple[CacheStore, dict[str, str]]:
    store = CacheStore((tmp_path / "store").as_uri())
    scratch = tmp_path / "worker"
    return store, {relative: store.put_blob(_write(scratch, relative, text)) for relative, text in files.items()}


def test_outputs_replace_the_model_directory_whole_and_the_record_comes_last(tmp_path):
    workspace = tmp_path / "workspace"
    _write(workspace, "build/sources/m/saved_model/stale.txt", "from an earlier export")
    store, outputs = _store_with(tmp_path, {
        "build/sources/m/source.json": "record", "build/sources/m/saved_model/saved_model.pb": "graph", "build/logs/source/m.log": "log",
    })
    transfer.deliver(store, outputs, workspace, targets=["build/sources/m/source.json"], clean_dirs=["build/sources/m"])
    assert (workspace / "build/sources/m/source.json").read_text() == "record"
    assert (workspace / "build/sources/m/saved_model/saved_model.pb").read_text() == "graph"
    assert not (workspace / "build/sources/m/saved_model/stale.txt").exists()  # as a local export replaces the directory
    assert (workspace / "build/logs/source/m.log").read_text() == "log"
    assert not any((workspace / transfer.INCOMING).iterdir())


def test_a_missing_or_altered_blob_changes_nothing_in_the_workspace(tmp_path):
    workspace = tmp_path / "workspace"
    _write(workspace, "build/artifacts/t/m.onnx", "old model")
    _write(workspace, "build/artifacts/t/m.onnx.json", "old record")
    store, outputs = _store_with(tmp_path, {"build/artifacts/t/m.onnx": "new model", "build/artifacts/t/m.onnx.json": "new record"})
    Path(store.blob_path(outputs["build/artifacts/t/m.onnx.json"])).write_text("tampered")
    with pytest.raises(CacheEntryInvalid):
        transfer.deliver(store, outputs, workspace, targets=list(outputs), clean_dirs=[])
    assert (workspace / "build/artifacts/t/m.onnx").read_text() == "old model"
    assert (workspace / "build/artifacts/t/m.onnx.json").read_text() == "old record"
    assert not any((workspace / transfer.INCOMING).iterdir())


def test_settings_come_from_the_environment_and_a_bad_number_names_its_variable():
    assert distributed.settings({}) is None
    local = distributed.settings({"MODELMAKE_DASK_WORKERS": "2"})
    assert local is not None and local.address is None and local.workers == 2 and local.store is None
    remote = distributed.settings({"MODELMAKE_DASK": "tcp://h:8786", "MODELMAKE_CACHE": "s3://b/p"})
    assert remote is not None and remote.address == "tcp://h:8786" and remote.store == "s3://b/p"
    with pytest.raises(ModelmakeError, match="MODELMAKE_DASK_WORKERS='two'"):
        distributed.settings({"MODELMAKE_DASK_WORKERS": "two"})


class _ClusterOf:
    """What Session.check_store asks of a Dask client: each worker's answer to a function run there."""

    def __init__(self, answers: dict[str, bool]):
        self.answers = answers

    def run(self, function, *args):
        return {worker: answer and function(*args) for worker, answer in self.answers.items()}


def _session(tmp_path: Path, answers: dict[str, bool], *, address: str | None = "tcp://10.1.2.3:8786", store: str | None = None):
    from modelmake.distributed import client

    session = object.__new__(client.Session)
    session.settings = distributed.ClusterSettings(address=address, workers=2, store=store)
    session.client = _ClusterOf(answers)
    return session


def test_a_cluster_whose_workers_cannot_see_the_workspace_store_is_refused_before_anything_runs(tmp_path):
    from modelmake.errors import ClusterUnreachable

    with pytest.raises(ClusterUnreachable) as refused:
        _session(tmp_path, {"tcp://10.1.2.4:40000": True, "tcp://10.1.2.5:40000": False}).check_store(tmp_path)
    store = (tmp_path / distributed.TRANSFER_STORE).as_uri()
    assert str(refused.value).startswith(f"the Dask workers tcp://10.1.2.5:40000 cannot see {store}, where each step's files travel")
    assert "Set MODELMAKE_CACHE (or MODELMAKE_DASK_STORE) to object storage" in str(refused.value)
    # Workers on this machine see it; a LocalCluster's always do.
    _session(tmp_path, {"tcp://127.0.0.1:40000": True}).check_store(tmp_path)
    _session(tmp_path, {"w": False}, address=None).check_store(tmp_path)
