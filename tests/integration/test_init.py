"""`modelmake init DIR` gives a workspace that builds as it stands."""
import subprocess
import sys

import pytest

from tests.support.workspaces import Workspace, subprocess_env


@pytest.mark.slow
def test_init_creates_a_workspace_that_builds_a_bundle(tmp_path):
    target = tmp_path / "starter"
    result = subprocess.run(
        [sys.executable, "-m", "modelmake.cli", "init", str(target)], env=subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert {"dodo.py", "models.yaml"} <= {p.name for p in target.iterdir()}

    workspace = Workspace(target)
    run = workspace.doit()
    assert any(task.startswith("package:") for task in run.executed), run.describe()
    manifests = list((workspace.build / "bundles").glob("*/*/manifest.json"))
    assert len(manifests) == 1, run.describe()
    assert workspace.doit().executed == set()


def test_init_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    result = subprocess.run(
        [sys.executable, "-m", "modelmake.cli", "init", str(tmp_path)], env=subprocess_env(), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "--force" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
