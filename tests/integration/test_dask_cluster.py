"""Builds whose model steps run on a Dask cluster: a LocalCluster of worker processes on loopback, started once.

The workspaces' models are ONNX files written with onnx.helper (onnx_workspaces.py), so each build takes
seconds.  The workers keep their files in a directory of their own: the workspace reaches them only
through the store under build/.modelmake/.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.dask_cluster import local_cluster
from tests.support.onnx_workspaces import onnx_workspace, profile
from tests.support.workspaces import copy_workspace, modelmake, subprocess_env

MODEL_BLOCK = """\
mlp:
  description: A two-layer perceptron written with onnx.helper
  source: {onnx: models/mlp.onnx}
  data:
    calibration: CALIBRATION
    evaluation: {file: data/evaluation.npz}
  io:
    input: {layout: NC, scale: 1/16}
  variants: {fp32: {}, int8: {quantize: int8}}
  targets: {phone-a: [fp32, int8], phone-b: [int8]}
"""

# A data recipe that kills the Dask worker running it (and its step process) the first time, leaving a marker that says
# where it ran: a worker lost mid-step, as when a node goes away.
FLAKY_RECIPE = textwrap.dedent(
    """\
    import os
    import signal
    from pathlib import Path

    import numpy as np

    MARKER = Path({marker!r})


    def load_data(split):
        if {always!r} or not MARKER.exists():
            MARKER.write_text(os.getcwd())
            os.kill(os.getppid(), signal.SIGKILL)  # the Dask worker that started this step process
            os.kill(os.getpid(), signal.SIGKILL)
        data = np.load(f"data/{{split}}.npz")  # relative: the worker's scratch directory, where the input was put
        return data["x"], data["y"]
    """
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("dask-workers")) as running:
        yield running


def _workspace(root, calibration: str = "{file: data/calibration.npz}"):
    from tests.support.workspaces import REPO, Workspace, write_signing_key

    root.mkdir(parents=True)
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text(encoding="utf-8"), encoding="utf-8")
    write_signing_key(root / "keys" / "signing.pem")
    return onnx_workspace(
        Workspace(root),
        model_block=MODEL_BLOCK.replace("CALIBRATION", calibration),
        profiles={"phone-a": profile("phone-a"), "phone-b": profile("phone-b")},
    )


def _without_latency(outputs: dict[str, str], workspace) -> dict:
    """Every output's digest; a metrics record by its contents less the latency, which is measured anew by each run."""
    shown: dict = {}
    for path, digest in outputs.items():
        if path.startswith("metrics/"):
            record = json.loads((workspace.build / path).read_text(encoding="utf-8"))
            record["metrics"].pop("latency_ms", None)
            shown[path] = record
        elif not path.startswith("reports/"):  # the report shows the latencies
            shown[path] = digest
    return shown


def test_a_cluster_build_gives_the_bytes_of_a_serial_build_and_the_workers_never_touch_the_workspace(cluster, tmp_path):
    serial = _workspace(tmp_path / "serial")
    on_cluster = copy_workspace(serial.root, tmp_path / "cluster")
    serial.doit()
    built = modelmake("build", cwd=on_cluster.root, env={"MODELMAKE_DASK": cluster.address})
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"model steps run on {cluster.address}" in built.stdout
    assert on_cluster.bundle_bytes() == serial.bundle_bytes()
    assert _without_latency(on_cluster.outputs(), on_cluster) == _without_latency(serial.outputs(), serial)
    # Each model step's log came back with its outputs; nothing half-fetched is left behind.
    assert (on_cluster.build / "logs" / "convert" / "mlp.int8.onnx@phone-b.log").is_file()
    assert on_cluster.leftovers() == []
    assert not any((on_cluster.build / ".modelmake" / "incoming").iterdir())
    # A second build on the cluster finds everything up to date.
    again = modelmake("build", cwd=on_cluster.root, env={"MODELMAKE_DASK": cluster.address})
    assert again.returncode == 0 and ".  convert:" not in again.stdout, again.stdout + again.stderr


def test_a_worker_killed_mid_step_is_replaced_and_the_step_runs_again(cluster, tmp_path):
    marker = tmp_path / "killed-once"
    workspace = _workspace(
        tmp_path / "workspace", calibration="{recipe: recipes/flaky.py, split: calibration, depends: [data/calibration.npz]}"
    )
    workspace.write("recipes/flaky.py", FLAKY_RECIPE.format(marker=str(marker), always=False))
    built = modelmake("build", cwd=workspace.root, env={"MODELMAKE_DASK": cluster.address})
    assert built.returncode == 0, built.stdout + built.stderr
    # The recipe ran (and killed its worker) in the worker's scratch directory, not in the workspace.
    ran_in = marker.read_text()
    assert ran_in.startswith(str(cluster.local_directory)) and not ran_in.startswith(str(workspace.root))
    assert (workspace.build / "data" / "mlp" / "calibration.npz").is_file()
    assert workspace.leftovers() == []


def test_a_step_that_kills_every_worker_fails_its_task_with_what_to_do(cluster, tmp_path):
    workspace = _workspace(
        tmp_path / "workspace", calibration="{recipe: recipes/flaky.py, split: calibration, depends: [data/calibration.npz]}"
    )
    workspace.write("recipes/flaky.py", FLAKY_RECIPE.format(marker=str(tmp_path / "marker"), always=True))
    built = modelmake("build", "--continue", cwd=workspace.root, env={"MODELMAKE_DASK": cluster.address})
    assert built.returncode == 21, built.stdout + built.stderr
    output = " ".join((built.stdout + built.stderr).split())
    assert "data:mlp.calibration: the Dask worker running this step died" in output
    assert "without Dask" in output
    assert not (workspace.build / "data" / "mlp" / "calibration.npz").exists()
    # The steps that did not need the lost data set were built.
    assert (workspace.build / "artifacts" / "phone-a" / "mlp.fp32.onnx").is_file()


def test_an_unreachable_scheduler_is_one_clear_message_and_nothing_is_built(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    built = modelmake("build", "--dask", f"tcp://127.0.0.1:{port}", cwd=workspace, env={"MODELMAKE_DASK_TIMEOUT": "2"})
    assert built.returncode == 25, built.stdout + built.stderr
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in built.stderr
    assert "Traceback" not in built.stderr
    assert not (workspace / "build").exists()


def test_cluster_options_are_taken_out_of_doits_arguments():
    from modelmake.cli import _cluster_options

    assert _cluster_options(["-j", "2", "convert"]) == (["convert"], {"MODELMAKE_DASK_WORKERS": "2"})
    assert _cluster_options(["-j2", "--dask=tcp://h:8786"]) == ([], {"MODELMAKE_DASK_WORKERS": "2", "MODELMAKE_DASK": "tcp://h:8786"})
    assert _cluster_options(["--jobs", "3", "-n", "2"]) == (["-n", "2"], {"MODELMAKE_DASK_WORKERS": "3"})


# --- the runner's cluster branch, in this process --------------------------------------------

STEP_RECIPE = textwrap.dedent(
    """\
    import ctypes

    import numpy as np


    def load_data(split):
        if split == "crash":
            ctypes.string_at(0)  # reads address 0: SIGSEGV, as a broken extension would
        if split == "loop":
            while True:
                pass
        return np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6, dtype=np.int64)
    """
)


@pytest.fixture
def on_cluster(cluster, tmp_path, monkeypatch):
    """This process as a build on ``cluster``: a directory with the recipe as the working directory."""
    from modelmake.distributed import client

    (tmp_path / "recipe.py").write_text(STEP_RECIPE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELMAKE_DASK", cluster.address)
    yield tmp_path
    client.shutdown()


def _data_step(split: str, timeout_minutes: float | None = None, tools: dict | None = None):
    from modelmake.contracts import CacheableTask, DataJob
    from modelmake.plan import Dataset
    from modelmake.steps.runner import run_step

    job = DataJob(Dataset(role="evaluation", path="recipe.py", from_recipe=True, function="load_data", split=split), f"out/{split}.npz")
    hashed = {"tools": tools} if tools else {}
    io = CacheableTask(kind="data", job_type="DataJob", hashed=hashed, file_dep=("recipe.py",), targets=(job.out,))
    return run_step("data.materialize", f"data:m.{split}", job, timeout_minutes=timeout_minutes, cache=io)


def test_a_native_crash_on_a_worker_fails_its_task_and_the_cluster_builds_on(on_cluster):
    from doit.exceptions import TaskFailed

    result = _data_step("crash")
    assert isinstance(result, TaskFailed)
    assert "data:m.crash: the data step crashed (signal 11, SIGSEGV)" in str(result)
    assert not (on_cluster / "out" / "crash.npz").exists()
    assert _data_step("good") is None
    assert (on_cluster / "out" / "good.npz").is_file()


def test_a_worker_with_other_tool_versions_than_the_build_refuses_the_step(on_cluster):
    """The task's key holds the client's versions: a worker with others would write other bytes under it."""
    import numpy as np
    from doit.exceptions import TaskFailed

    result = _data_step("other", tools={"numpy": "1.0.0"})
    assert isinstance(result, TaskFailed)
    assert f"has numpy {np.__version__} (this build has 1.0.0), and would give other bytes than this build's tools" in str(result)
    assert "pip install -c constraints.txt" in str(result)
    assert not (on_cluster / "out" / "other.npz").exists()
    assert _data_step("same", tools={"numpy": np.__version__}) is None


def test_a_step_past_its_timeout_is_stopped_with_its_worker(on_cluster):
    from doit.exceptions import TaskFailed

    result = _data_step("loop", timeout_minutes=0.05)
    assert isinstance(result, TaskFailed)
    assert "ran longer than 0.05 minutes" in str(result) and "timeout_minutes" in str(result)
    assert _data_step("after") is None  # the worker was restarted: the next step runs


# A data recipe whose "kill" split, once told to go, kills the Dask worker running it each time it runs.
KILLER_RECIPE = textwrap.dedent(
    """\
    import os
    import signal
    import time
    from pathlib import Path

    import numpy as np

    RUNNING, GO = Path({running!r}), Path({go!r})


    def load_data(split):
        if split == "kill":
            RUNNING.touch()
            while not GO.exists():
                time.sleep(0.05)
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(6, dtype=np.int64)
    """
)


def _until(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def test_a_step_queued_behind_one_that_kills_its_worker_is_sent_again_and_built(tmp_path, monkeypatch):
    """The scheduler counts a worker's death against the step queued there too: with one worker, the second step is
    queued behind the first when it kills its worker twice, and must still be built."""
    from modelmake.distributed import client

    running, go = tmp_path / "running", tmp_path / "go"
    (tmp_path / "recipe.py").write_text(KILLER_RECIPE.format(running=str(running), go=str(go)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with local_cluster(tmp_path / "dask-workers", workers=1) as cluster, ThreadPoolExecutor(2) as steps:
        monkeypatch.setenv("MODELMAKE_DASK", cluster.address)
        try:
            killer = steps.submit(_data_step, "kill")
            _until(running.exists, "the first step to run")
            bystander = steps.submit(_data_step, "good")
            _until(lambda: any(len(keys) == 2 for keys in client.session().client.processing().values()),
                   "the second step to be queued on the worker")
            go.touch()
            assert "data:m.kill: the Dask worker running this step died 2 times" in str(killer.result(timeout=300))
            assert bystander.result(timeout=300) is None
        finally:
            client.shutdown()
    assert (tmp_path / "out" / "good.npz").is_file()
    assert not (tmp_path / "out" / "kill.npz").exists()


@pytest.mark.slow
def test_the_test_workspace_built_with_two_local_workers_is_byte_identical_to_its_serial_build(built, template, tmp_path):
    """Real recipes that train, converted to every format: `modelmake build -j 2` starts its own LocalCluster."""
    workspace = copy_workspace(template, tmp_path / "workspace")
    run = subprocess.run(
        [sys.executable, "-m", "modelmake.cli", "build", "-j", "2"], cwd=workspace.root, env=subprocess_env(),
        capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "model steps run on a local cluster of 2 worker processes" in run.stdout
    assert workspace.bundle_bytes() == built.bundle
