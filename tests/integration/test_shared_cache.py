"""Builds sharing a remote cache on a real S3 server (SeaweedFS on loopback, tests/support/seaweed.py).

The workspaces are ONNX perceptrons (onnx_workspaces.py): a build takes
seconds, with source, data, reference, convert and evaluate tasks to cache.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.onnx_workspaces import onnx_workspace, profile
from tests.support.seaweed import free_ports
from tests.support.workspaces import Workspace, copy_workspace, modelmake

ARTIFACT = "build/artifacts/cpu-board/mlp.int8.onnx"
CONVERT = "convert:mlp.int8.onnx@cpu-board"
CACHEABLE = ("source:", "data:", "reference:", "convert:", "evaluate:")
MODEL_BLOCK = """\
mlp:
  description: A two-layer perceptron written with onnx.helper
  source: {onnx: models/mlp.onnx}
  data:
    calibration: {file: data/calibration.npz}
    evaluation: {file: data/evaluation.npz}
  io:
    input: {layout: NC, scale: 1/16}
  variants: {fp32: {}, int8: {quantize: int8}}
  targets: {cpu-board: [fp32, int8]}
"""


@dataclass(frozen=True)
class Filled:
    """A workspace built once with an empty cache, which filled it; ``pristine`` is its unbuilt copy for clones."""

    workspace: Workspace
    pristine: Path
    env: dict
    built: frozenset


@pytest.fixture(scope="module")
def filled(template, seaweed_s3, tmp_path_factory) -> Filled:
    root = tmp_path_factory.mktemp("filled")
    workspace = onnx_workspace(
        copy_workspace(template, root / "workspace"), model_block=MODEL_BLOCK, profiles={"cpu-board": profile("cpu-board")}
    )
    shutil.copytree(workspace.root, root / "pristine", symlinks=True)
    env = seaweed_s3.environment() | {"MODELMAKE_CACHE": seaweed_s3.fresh_url()}
    run = workspace.doit(env=env)
    built = _cacheable(run.executed)
    assert built, run.describe()
    assert _summary(workspace)["uploads"] == len(built)
    return Filled(workspace, root / "pristine", env, frozenset(built))


def _clone(filled: Filled, tmp_path, name: str = "clone") -> Workspace:
    return copy_workspace(filled.pristine, tmp_path / name)


def _copy_of_cache(filled: Filled, seaweed_s3) -> str:
    """A copy of the filled cache under a new prefix, for a test that damages it."""
    url = seaweed_s3.fresh_url()
    fs = seaweed_s3.filesystem()
    source = filled.env["MODELMAKE_CACHE"].removeprefix("s3://")
    for path in fs.find(source):
        fs.copy(path, url.removeprefix("s3://") + path[len(source):])
    return url


def _cacheable(tasks) -> set[str]:
    return {task for task in tasks if task.startswith(CACHEABLE)}


def _summary(workspace: Workspace) -> dict:
    result = modelmake("cache", "--json", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "warning:" in line and "cache" in line]


def test_a_clone_fetches_what_another_built_and_packages_the_same_bytes(filled, tmp_path):
    clone = _clone(filled, tmp_path)
    # Two doit processes: the figures of both land in the one record of this build.
    result = modelmake("build", "-n", "2", cwd=clone.root, env=filled.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not _warnings(result.stdout + result.stderr)
    for task in filled.built:
        assert f"{task}: from the cache" in result.stdout
    summary = _summary(clone)
    assert (summary["hits"], summary["misses"], summary["tasks"]) == (len(filled.built), 0, len(filled.built))
    assert summary["bytes_down"] > 0 and summary["seconds_saved"] >= 0
    # The build console's one line: "cache: N of N tasks from <url> (... fetched, ... saved)".
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("cache: ")]
    assert line.startswith(f"cache: {len(filled.built)} of {len(filled.built)} tasks from {filled.env['MODELMAKE_CACHE']} (")
    assert clone.bundle_bytes() == filled.workspace.bundle_bytes()
    assert clone.outputs() == filled.workspace.outputs()
    # What came from the cache is up to date for doit, as if built here.
    assert not _cacheable(clone.doit(env=filled.env).executed)
    assert "cache: 0 of 0" not in modelmake("cache", cwd=clone.root).stdout


# A missing blob takes the same path as a wrong one (the store's tests check both): the second build is slow only.
@pytest.mark.parametrize("damage", ["corrupt", pytest.param("partial", marks=pytest.mark.slow)])
def test_a_damaged_entry_is_ignored_with_one_warning_and_the_task_runs(damage, filled, tmp_path, seaweed_s3):
    url = _copy_of_cache(filled, seaweed_s3)
    digest = hashlib.sha256((filled.workspace.root / ARTIFACT).read_bytes()).hexdigest()
    blob = f"{url.removeprefix('s3://')}/v1/blobs/{digest[:2]}/{digest}"
    fs = seaweed_s3.filesystem()
    if damage == "corrupt":
        fs.pipe_file(blob, b"not the model")
    else:
        fs.rm_file(blob)

    clone = _clone(filled, tmp_path)
    run = clone.doit(env=filled.env | {"MODELMAKE_CACHE": url})
    (warning,) = _warnings(run.output)
    assert CONVERT in warning and "ignored" in warning and "running the task" in warning
    assert CONVERT in run.executed and "Traceback" not in run.output
    summary = _summary(clone)
    assert (summary["ignored"], summary["hits"]) == (1, len(filled.built) - 1)
    assert clone.bundle_bytes() == filled.workspace.bundle_bytes()


def test_a_read_only_build_fetches_but_uploads_nothing(filled, tmp_path, seaweed_s3):
    url = _copy_of_cache(filled, seaweed_s3)
    fs = seaweed_s3.filesystem()
    entries = f"{url.removeprefix('s3://')}/v1/entries"
    # Without the conversion's entry, the conversion runs, and a writer would upload it.
    before = fs.find(entries)
    digests = [path for path in before if json.loads(fs.cat_file(path))["meta"]["task"] == CONVERT]
    fs.rm_file(digests[0])

    clone = _clone(filled, tmp_path)
    run = clone.doit(env=filled.env | {"MODELMAKE_CACHE": url, "MODELMAKE_CACHE_WRITE": "0"})
    assert CONVERT in run.executed
    summary = _summary(clone)
    assert (summary["uploads"], summary["bytes_up"], summary["write"]) == (0, 0, False)
    assert summary["hits"] == len(filled.built) - 1
    assert sorted(fs.find(entries)) == sorted(set(before) - {digests[0]})


def test_an_unreachable_cache_warns_once_per_build_and_the_build_succeeds(filled, tmp_path, seaweed_s3):
    dead = filled.env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_ports(1)[0]}"}
    clone = _clone(filled, tmp_path)
    run = clone.doit("-n", "2", env=dead)
    warnings = _warnings(run.output)
    assert len(warnings) == 1, run.describe()
    assert "cannot be used" in warnings[0] and "runs without it" in warnings[0]
    assert "Traceback" not in run.output
    assert clone.bundle_bytes() == filled.workspace.bundle_bytes()
    assert _summary(clone)["unavailable"]


@pytest.mark.slow  # the store's tests check wrong credentials and buckets in a second; this is the whole build
def test_wrong_credentials_warn_once_and_the_build_runs_here(filled, tmp_path):
    clone = _clone(filled, tmp_path)
    run = clone.doit(env=filled.env | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    assert len(_warnings(run.output)) == 1, run.describe()
    assert "Traceback" not in run.output and filled.built <= run.executed


def test_a_cache_section_in_models_yaml_changes_no_task(filled, tmp_path, seaweed_s3):
    built = copy_workspace(filled.workspace.root, tmp_path / "built")
    built.write("models.yaml", built.spec() + f"cache: {{url: {seaweed_s3.fresh_url()}, write: false}}\n")
    assert not built.doit(env=seaweed_s3.environment()).executed


def test_credentials_in_the_cache_section_are_refused_with_where_to_put_them(filled, tmp_path):
    clone = _clone(filled, tmp_path)
    clone.write("models.yaml", clone.spec() + "cache:\n  url: s3://bucket/prefix\n  secret_key: hunter2\n")
    run = clone.doit(ok=False)
    assert "models.yaml" in run.output and "secret_key" in run.output and "AWS_SECRET_ACCESS_KEY" in run.output


@pytest.mark.slow
def test_a_build_split_across_clones_fetches_each_part_once_and_gives_the_same_archives(template, tmp_path, seaweed_s3):
    """A CI matrix in small: one clone builds one target's tasks, a second the rest, a third only packages."""
    env = seaweed_s3.environment() | {"MODELMAKE_CACHE": seaweed_s3.fresh_url()}
    first = copy_workspace(template, tmp_path / "first")
    part = first.doit("evaluate:*@pixel-8", env=env)
    built_first = _cacheable(part.executed)
    assert any(task.startswith("convert:") for task in built_first) and not any("android-arm64-cpu" in t for t in built_first)

    second = copy_workspace(template, tmp_path / "second")
    rest = second.doit(env=env)
    summary = _summary(second)
    assert summary["hits"] == len(built_first) and summary["ignored"] == 0
    # doit runs every task's action; what the first clone built comes from the cache, nothing else does.
    assert summary["misses"] == len(_cacheable(rest.executed) - built_first)
    for task in built_first:
        assert f"{task}: from the cache" in rest.stdout
    for relative, digest in first.outputs().items():
        if relative.startswith(("artifacts/", "metrics/", "sources/", "data/", "reference/")):
            assert second.outputs()[relative] == digest, relative

    third = copy_workspace(template, tmp_path / "third")
    result = modelmake("build", cwd=third.root, env=env | {"MODELMAKE_CACHE_WRITE": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _summary(third)["misses"] == 0
    assert third.bundle_bytes() == second.bundle_bytes()
    archives = [name for name in third.bundle_bytes() if name.endswith(".zip")]
    assert archives
