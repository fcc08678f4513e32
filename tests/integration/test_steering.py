"""Steering a published release: rollouts and rollbacks are publish settings, never a new bundle.

One workspace publishes 0.3.0, then 0.4.0 to 10% of devices; the rollout is
raised to 50% and 100%, then the channel is rolled back to 0.3.0, each by one
edit of models.yaml and one `doit publish`.  Forty devices with the reference
client follow every step over loopback HTTP, and the bundle's bytes never
change.  Changing what a published version holds is refused before anything
is written.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from modelmake import errors
from modelmake.bundle import keys
from modelmake.client import Client, UpdateStatus
from modelmake.client.offer import DeviceProfile, choose_release
from modelmake.repository.offer import Offer

from tests.support.ota_server import RepositoryServer
from tests.support.workspaces import BUNDLE, Workspace, modelmake, tree_digest

PUBLISH_TASK = f"publish:{BUNDLE}"
OLD, NEW = "0.3.0", "0.4.0"
DEVICES = [DeviceProfile("android", "any", "34", "5.2", f"device-{i}", frozenset({"tflite"})) for i in range(40)]


def set_channel(workspace: Workspace, stable: str) -> None:
    """Replace the publish section (the last one in models.yaml) with one stable channel."""
    spec = workspace.spec().split("\npublish:")[0].rstrip("\n")
    (workspace.root / "models.yaml").write_text(f"{spec}\npublish:\n  channels:\n    stable: {stable}\n", encoding="utf-8")


def rollout(percent: int) -> dict[str, str | None]:
    """What each device should install: the client's own decision rule for this offer."""
    offer = Offer(NEW, percent * 100, OLD)
    return {d.device_id: choose_release(offer, repository=BUNDLE, channel="stable", model="digits", device=d).version for d in DEVICES}


class Fleet:
    """Forty devices, each with its own client and model cache, following the workspace's repository."""

    def __init__(self, workspace: Workspace, server: RepositoryServer, tmp: Path):
        trusted = keys.public_key_pem(keys.load_private_key((workspace.root / "keys" / "signing.pem").read_bytes()))
        self.clients = {
            d.device_id: Client(base_url=server.url, cache_dir=tmp / d.device_id, repository=BUNDLE, trusted_keys=[trusted])
            for d in DEVICES
        }

    def update(self) -> dict[str, str | None]:
        installed = {}
        for device in DEVICES:
            client = self.clients[device.device_id]
            result = client.update(device, "digits")
            assert result.status in (UpdateStatus.INSTALLED, UpdateStatus.CURRENT), result
            model = client.installed("digits")
            installed[device.device_id] = model.version if model else None
        return installed


def publish(workspace: Workspace, *, packages: bool = False) -> None:
    run = workspace.doit("publish")
    expected = {PUBLISH_TASK} | ({f"package:{BUNDLE}"} if packages else set())
    assert run.executed == expected, run.describe()


@pytest.mark.slow
def test_a_rollout_is_raised_and_rolled_back_without_a_new_bundle_and_devices_follow(built_workspace, tmp_path):
    workspace = built_workspace
    set_channel(workspace, "{}")
    publish(workspace)
    workspace.edit_spec(f'version: "{OLD}"', f'version: "{NEW}"')
    set_channel(workspace, f"{{rollout: 10, previous: {OLD}}}")
    publish(workspace, packages=True)
    bundles = tree_digest(workspace.build / "bundles")

    with RepositoryServer(workspace.build / "repository") as server:
        fleet = Fleet(workspace, server, tmp_path / "devices")
        ten = fleet.update()
        assert ten == rollout(10) and set(ten.values()) == {OLD, NEW}, ten
        for percent in (50, 100):
            set_channel(workspace, f"{{rollout: {percent}, previous: {OLD}}}")
            publish(workspace)
            installed = fleet.update()
            assert installed == rollout(percent), installed
            assert {d for d, v in ten.items() if v == NEW} <= {d for d, v in installed.items() if v == NEW}
        assert set(installed.values()) == {NEW}

        # Rolling the channel back is one more publish setting: every device returns to the older release.
        set_channel(workspace, f"{{version: {OLD}}}")
        publish(workspace)
        assert set(fleet.update().values()) == {OLD}
    assert tree_digest(workspace.build / "bundles") == bundles, "steering a release repackaged or re-signed the bundle"


@pytest.mark.slow
def test_a_published_version_is_never_repackaged_with_other_bytes(built_workspace):
    workspace = built_workspace
    set_channel(workspace, "{}")
    publish(workspace)
    # Comments and publish settings are not bundle content: nothing is repackaged.
    workspace.edit_spec("models:\n", "# reviewed for the spring release\nmodels:\n")
    set_channel(workspace, "{rollout: 20}")
    publish(workspace)

    before = tree_digest(workspace.build)
    workspace.edit_spec("description: A dense network", "description: A denser network")
    run = modelmake("build", cwd=workspace.root)
    assert run.returncode == errors.PublishError.exit_code, run.stdout + run.stderr
    output = run.stdout + run.stderr
    assert f"{BUNDLE} {OLD} is already published in build/repository, and this build makes other bytes" in output, output
    assert "Raise bundle.version to ship this change" in output
    after = tree_digest(workspace.build)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert not {p for p in changed if p.startswith(("bundles/", "repository/"))}, sorted(changed)
