"""A build killed at any moment leaves no partial output, and the next build gives the same bytes as a clean one."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.workspaces import subprocess_env


def _kill_when(workspace, ready, what, timeout=300):
    """Start `doit`, wait until ``ready()`` is true, then SIGKILL doit and everything it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "doit"],
        cwd=workspace.root,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"doit finished (exit {process.returncode}) before {what}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _convert_log(workspace):
    logs = workspace.build / "logs" / "convert"
    return logs.is_dir() and any(logs.glob("*.log"))


def _source_export_under_way(workspace):
    return any((workspace.build / "sources").glob("*/.saved_model.*.partial"))


@pytest.mark.parametrize(
    "moment, ready",
    [("a conversion", _convert_log), ("a source model's export", _source_export_under_way)],
    ids=["during-convert", "during-source-export"],
)
def test_rebuild_after_sigkill_gives_the_clean_build_bytes(built, fresh_workspace, moment, ready):
    _kill_when(fresh_workspace, lambda: ready(fresh_workspace), moment)
    assert not (fresh_workspace.build / "bundles").exists(), "the build was not interrupted"
    if moment == "a source model's export":
        # the kill left the half-written export behind; the next build must clear it
        assert fresh_workspace.leftovers(), "expected the interrupted export's staging directory"

    fresh_workspace.doit()
    assert fresh_workspace.leftovers() == []
    assert fresh_workspace.bundle_bytes() == built.bundle
