"""The bundle's and the repository's JSON documents, byte for byte against tests/golden/.

The session's workspace (conftest.py: two recipes trained from fixed seeds) is
packaged and published again with the public test signing key and a fixed
SOURCE_DATE_EPOCH, so that every byte of manifest.json, provenance.json,
release.json and index.json (whose signature is deterministic) is fixed.
A change to any of them is a change to FORMAT.md or OTA.md's documents: when
it is intended, regenerate the files with `pytest tests/integration/test_golden.py
--regenerate-golden` and review the diff.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.workspaces import BUNDLE, VERSION, Workspace, copy_workspace, write_signing_key

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TEST_SIGNING_KEY = Path(__file__).resolve().parents[1] / "vectors" / "signing" / "test-signing-key.pem.txt"
# 2100-01-01T00:00:00Z: the bundle's creation time and the index's signing time. Publishing refuses an index
# that has already expired, so the time is in the future (and within the zip format's years, up to 2107).
SOURCE_DATE_EPOCH = 4102444800


@pytest.fixture(scope="module")
def published(built, tmp_path_factory) -> Workspace:
    """A copy of the built workspace, packaged and published with the test key at SOURCE_DATE_EPOCH."""
    workspace = copy_workspace(built.workspace.root, tmp_path_factory.mktemp("golden") / "workspace")
    write_signing_key(workspace.root / "keys" / "signing.pem", TEST_SIGNING_KEY.read_bytes())
    # Only the bundle depends on the key: without its outputs, doit packages again and reruns nothing else.
    shutil.rmtree(workspace.build / "bundles")
    workspace.doit("publish", env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)})
    return workspace


def documents(workspace: Workspace) -> dict[str, Path]:
    bundle = workspace.build / "bundles" / BUNDLE / VERSION
    repository = workspace.build / "repository"
    return {
        "manifest.json": bundle / "manifest.json",
        "provenance.json": bundle / "provenance.json",
        "release.json": repository / "releases" / VERSION / "release.json",
        "index.json": repository / "index.json",
    }


@pytest.mark.parametrize("name", ["manifest.json", "provenance.json", "release.json", "index.json"])
def test_document_matches_its_golden_file(published, request, name):
    produced = documents(published)[name].read_bytes()
    golden = GOLDEN / name
    if request.config.getoption("--regenerate-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(produced)
        return
    assert golden.is_file(), f"no {golden}: run pytest {__file__} --regenerate-golden"
    assert produced == golden.read_bytes(), (
        f"{name} differs from {golden}; if the change is intended, rerun with --regenerate-golden and review the diff\n"
        f"--- produced\n{produced.decode(errors='replace')}"
    )
