"""`doit publish`: the download repository from a built workspace, idempotent, never cleaned, optionally part of `doit`."""
from __future__ import annotations

import base64
import json

from tests.support.workspaces import BUNDLE

PUBLISH_TASK = f"publish:{BUNDLE}"


def repository_files(workspace) -> dict[str, bytes]:
    root = workspace.build / "repository"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def index_document(workspace) -> dict:
    envelope = json.loads((workspace.build / "repository" / "index.json").read_bytes())
    return json.loads(base64.b64decode(envelope["payload"]))


def test_publish_lays_out_the_built_bundle_and_a_second_publish_changes_nothing(built_workspace):
    run = built_workspace.doit("publish")
    assert run.executed == {PUBLISH_TASK}, run.describe()
    published = repository_files(built_workspace)
    document = index_document(built_workspace)
    manifest = json.loads((built_workspace.build / "bundles" / BUNDLE / "0.3.0" / "manifest.json").read_bytes())
    shipped = {v["sha256"] for m in manifest["models"].values() for v in m["variants"].values()}
    shipped |= {v["baseline"]["sha256"] for m in manifest["models"].values() for v in m["variants"].values()}  # and baselines
    assert {name.removeprefix("blobs/sha256/") for name in published if name.startswith("blobs/")} == shipped
    assert document["index_version"] == 1
    assert set(document["channels"]["stable"]["models"]) == set(manifest["models"])

    again = built_workspace.doit("publish")
    assert again.executed == set() and PUBLISH_TASK in again.up_to_date, again.describe()
    forced = built_workspace.doit("--always-execute", "publish")
    assert "already offers this (index version 1); nothing written" in forced.output, forced.describe()
    assert repository_files(built_workspace) == published


def test_doit_clean_never_removes_the_repository(built_workspace):
    built_workspace.doit("publish")
    published = repository_files(built_workspace)
    built_workspace.doit("clean", PUBLISH_TASK)
    assert repository_files(built_workspace) == published


def test_a_spec_can_make_the_default_build_end_with_publish(built_workspace):
    assert built_workspace.doit().executed == set()
    with open(built_workspace.root / "models.yaml", "a", encoding="utf-8") as spec:
        spec.write("publish: {on_build: true, channels: {beta: {rollout: 25}}}\n")
    run = built_workspace.doit()
    # The publish section is not bundle content: the bundle is published as it was built.
    assert run.executed == {PUBLISH_TASK}, run.describe()
    assert index_document(built_workspace)["channels"]["beta"]["models"]["digits"]["rollout_basis_points"] == 2500
