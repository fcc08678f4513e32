"""Fixtures: one workspace built once per session, and copies of it for tests that change it.

The workspace has two recipes trained for a few epochs from fixed seeds and
two targets; a test that changes it works on a copy of the built tree, so it
reruns only the few tasks it is about.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.recipes import DIGITS_RECIPE, GLYPHS_RECIPE
from tests.support.workspaces import (
    MODELS_YAML,
    REPO,
    TARGET_PROFILES,
    BuiltWorkspace,
    Workspace,
    copy_workspace,
    write_signing_key,
)


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """An unbuilt workspace: dodo.py, models.yaml, two recipes, labels, two target profiles and one signing key shared by every copy."""
    root = tmp_path_factory.mktemp("template") / "workspace"
    root.mkdir()
    shutil.copyfile(REPO / "dodo.py", root / "dodo.py")
    (root / "models.yaml").write_text(MODELS_YAML, encoding="utf-8")
    (root / "recipes").mkdir()
    (root / "recipes" / "digits.py").write_text(DIGITS_RECIPE, encoding="utf-8")
    (root / "recipes" / "glyphs.py").write_text(GLYPHS_RECIPE, encoding="utf-8")
    (root / "recipes" / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)), encoding="utf-8")
    for name, profile in TARGET_PROFILES.items():
        (root / "targets").mkdir(exist_ok=True)
        (root / "targets" / f"{name}.yaml").write_text(profile, encoding="utf-8")
    write_signing_key(root / "keys" / "signing.pem")
    return root


@pytest.fixture(scope="session")
def built(template, tmp_path_factory) -> BuiltWorkspace:
    """The template built once from scratch with `doit`; tests read it and never change it."""
    workspace = copy_workspace(template, tmp_path_factory.mktemp("built") / "workspace")
    run = workspace.doit()
    return BuiltWorkspace(workspace, run, workspace.bundle_bytes())


@pytest.fixture
def fresh_workspace(template, tmp_path) -> Workspace:
    """A copy of the unbuilt template."""
    return copy_workspace(template, tmp_path / "workspace")


@pytest.fixture
def built_workspace(built, tmp_path) -> Workspace:
    """A copy of the built workspace, for a test that changes it."""
    return copy_workspace(built.workspace.root, tmp_path / "workspace")
