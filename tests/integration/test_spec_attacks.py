"""Hostile specs through `modelmake build`: exit 20 and the corpus's message, no traceback, nothing built, no wait.

The messages themselves are pinned by tests/unit/test_spec_corpus.py; this runs a few of the cases that crashed or hung
a real build (a pipe blocked it forever) through the command line.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from modelmake.errors import SpecError

from tests.support.spec_workspace import make_workspace
from tests.support.workspaces import REPO, subprocess_env
from tests.unit.test_spec_corpus import CORPUS, GENERATED

CASES = ["control-nul", "deep-nesting", "python-tag", "alias-bomb", "huge-unknown-keys", "fifo", "budget-inf", "labels-absolute"]


@pytest.mark.parametrize("name", CASES)
def test_a_hostile_spec_stops_the_build_with_its_message(tmp_path, name):
    workspace = make_workspace(tmp_path / "workspace", spec=None)
    shutil.copyfile(REPO / "dodo.py", workspace / "dodo.py")
    if name in GENERATED:
        GENERATED[name](workspace / "models.yaml")
    else:
        shutil.copyfile(CORPUS / f"{name}.yaml", workspace / "models.yaml")

    run = subprocess.run(
        [sys.executable, "-m", "modelmake.cli", "build"],
        cwd=workspace, env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )

    assert run.returncode == SpecError.exit_code, run.stderr
    assert run.stderr == f"modelmake: {(CORPUS / f'{name}.expected').read_text(encoding='utf-8')}"
    assert run.stdout == ""
    assert not (workspace / "build").exists()
