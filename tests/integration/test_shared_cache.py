"""Builds sharing a remote cache on a real S3 server (SeaweedFS on loopback, tests/support/seaweed.py).

The workspaces are ONNX perceptrons (onnx_workspaces.py): a build takes
seconds, with source, data, reference, convert and evaluate tasks to cache.
"""
from __future__ import annotations

import json
import shutil

import pytest

from tests.support.onnx_workspaces import onnx_workspace, profile
from tests.support.seaweed import free_ports
from tests.support.workspaces import Workspace, copy_workspace, modelmake

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


@pytest.fixture
def cache_env(seaweed_s3):
    """The environment of builds that share one fresh cache on the S3 server."""
    return seaweed_s3.environment() | {"MODELMAKE_CACHE": seaweed_s3.fresh_url()}


@pytest.fixture
def unbuilt(fresh_workspace, tmp_path) -> Workspace:
    """An ONNX workspace, not yet built, with a pristine copy of it kept aside for clones."""
    workspace = onnx_workspace(fresh_workspace, model_block=MODEL_BLOCK, profiles={"cpu-board": profile("cpu-board")})
    shutil.copytree(workspace.root, tmp_path / "pristine", symlinks=True)
    return workspace


def _clone(tmp_path, name: str) -> Workspace:
    return copy_workspace(tmp_path / "pristine", tmp_path / name)


def _cacheable(tasks) -> set[str]:
    return {task for task in tasks if task.startswith(CACHEABLE)}


def _summary(workspace: Workspace) -> dict:
    result = modelmake("cache", "--json", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _warnings(run) -> list[str]:
    return [line for line in run.output.splitlines() if "warning:" in line and "cache" in line]


def test_a_clone_fetches_what_another_built_and_packages_the_same_bytes(unbuilt, tmp_path, cache_env):
    first = unbuilt.doit(env=cache_env)
    built = _cacheable(first.executed)
    assert built, first.describe()
    assert _summary(unbuilt)["uploads"] == len(built)

    clone = _clone(tmp_path, "clone")
    second = clone.doit(env=cache_env)
    assert not _warnings(second), second.describe()
    summary = _summary(clone)
    assert (summary["hits"], summary["misses"], summary["tasks"]) == (len(built), 0, len(built))
    assert summary["bytes_down"] > 0 and summary["seconds_saved"] >= 0
    for task in built:
        assert f"{task}: from the cache" in second.stdout
    assert clone.bundle_bytes() == unbuilt.bundle_bytes()
    assert {k: v for k, v in clone.outputs().items()} == unbuilt.outputs()
    # What came from the cache is up to date for doit, as if built here.
    assert not _cacheable(clone.doit(env=cache_env).executed)


def test_the_build_console_says_how_many_tasks_came_from_the_cache(unbuilt, tmp_path, cache_env):
    unbuilt.doit(env=cache_env)
    result = modelmake("build", cwd=_clone(tmp_path, "clone").root, env=cache_env)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("cache: ")]
    assert line.startswith("cache: ") and f"tasks from {cache_env['MODELMAKE_CACHE']}" in line
    hits = int(line.split()[1])
    assert hits > 0 and line.split()[3] == str(hits)  # "cache: N of N tasks from ..."


@pytest.mark.parametrize("damage", ["corrupt", "partial"])
def test_a_damaged_entry_is_ignored_with_one_warning_and_the_task_runs(damage, unbuilt, tmp_path, cache_env, seaweed_s3):
    unbuilt.doit(env=cache_env)
    artifact = "build/artifacts/cpu-board/mlp.int8.onnx"
    fs = seaweed_s3.filesystem()
    prefix = cache_env["MODELMAKE_CACHE"].removeprefix("s3://")
    import hashlib

    digest = hashlib.sha256((unbuilt.root / artifact).read_bytes()).hexdigest()
    blob = f"{prefix}/v1/blobs/{digest[:2]}/{digest}"
    if damage == "corrupt":
        fs.pipe_file(blob, b"not the model")
    else:
        fs.rm_file(blob)

    clone = _clone(tmp_path, "clone")
    run = clone.doit(env=cache_env)
    (warning,) = _warnings(run)
    assert "convert:mlp.int8.onnx@cpu-board" in warning and "ignored" in warning and "running the task" in warning
    assert "convert:mlp.int8.onnx@cpu-board" in run.executed and "Traceback" not in run.output
    assert _summary(clone)["ignored"] == 1
    assert clone.bundle_bytes() == unbuilt.bundle_bytes()


def test_a_read_only_build_fetches_but_uploads_nothing(unbuilt, tmp_path, cache_env, seaweed_s3):
    run = unbuilt.doit(env=cache_env | {"MODELMAKE_CACHE_WRITE": "0"})
    assert _cacheable(run.executed)
    summary = _summary(unbuilt)
    assert summary["uploads"] == 0 and summary["bytes_up"] == 0 and summary["write"] is False
    assert not seaweed_s3.filesystem().exists(cache_env["MODELMAKE_CACHE"].removeprefix("s3://"))


def test_an_unreachable_cache_warns_once_per_build_and_the_build_succeeds(unbuilt, seaweed_s3):
    dead = seaweed_s3.environment() | {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_ports(1)[0]}", "MODELMAKE_CACHE": seaweed_s3.fresh_url(),
    }
    run = unbuilt.doit("-n", "2", env=dead)
    warnings = _warnings(run)
    assert len(warnings) == 1, run.describe()
    assert "cannot be used" in warnings[0] and "runs without it" in warnings[0]
    assert "Traceback" not in run.output
    assert (unbuilt.build / "bundles").is_dir()
    assert _summary(unbuilt)["unavailable"]


@pytest.mark.parametrize("problem", ["credentials", "bucket"])
def test_wrong_credentials_or_bucket_warn_once_and_build_locally(problem, unbuilt, seaweed_s3):
    env = seaweed_s3.environment() | {"MODELMAKE_CACHE": seaweed_s3.fresh_url()}
    if problem == "credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    else:
        env["MODELMAKE_CACHE"] = "s3://no-such-bucket/prefix"
    run = unbuilt.doit(env=env)
    assert len(_warnings(run)) == 1, run.describe()
    assert "Traceback" not in run.output


def test_the_cache_section_of_models_yaml_changes_no_task_and_the_environment_overrides_it(unbuilt, tmp_path, seaweed_s3):
    unbuilt.doit()
    spec = unbuilt.spec()
    unbuilt.write("models.yaml", spec + f"cache: {{url: {seaweed_s3.fresh_url()}, write: false}}\n")
    assert not unbuilt.doit(env=seaweed_s3.environment()).executed - {"report:formats"}  # nothing is out of date
    # The spec's cache reads only; MODELMAKE_CACHE_WRITE=1 lets this build upload.
    clone = _clone(tmp_path, "clone")
    url = seaweed_s3.fresh_url()
    clone.write("models.yaml", spec + f"cache: {{url: {url}, write: false}}\n")
    clone.doit(env=seaweed_s3.environment() | {"MODELMAKE_CACHE_WRITE": "1"})
    assert _summary(clone)["uploads"] > 0


def test_credentials_in_the_cache_section_are_refused_with_where_to_put_them(unbuilt):
    unbuilt.write("models.yaml", unbuilt.spec() + "cache:\n  url: s3://bucket/prefix\n  secret_key: hunter2\n")
    run = unbuilt.doit(ok=False)
    assert "models.yaml" in run.output and "secret_key" in run.output and "AWS_SECRET_ACCESS_KEY" in run.output
