"""`modelmake monitor` and `modelmake rollout advance` on a small fleet (2 000 devices): reports, exit codes, the log."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelmake import cli, errors
from modelmake.bundle import keys
from modelmake.bundle.signing import public_key_hint
from modelmake.client.index import verify_index
from modelmake.repository.offer import Arm, Offer
from modelmake.repository.rollouts import LOG_FILE, read_log, steered

from tests.support import fleet as F
from tests.support.spec_workspace import VALID_SPEC, edit, make_workspace

NOW = int(time.time())
OLD, NEW = "1.0.0", "2.0.0"


def repository_with(tmp_path: Path, offer: Offer) -> Path:
    repository = tmp_path / "repository"
    F.publish_release(repository, tmp_path, OLD, {"stable": {F.MODEL: Offer(OLD)}}, NOW - 2 * F.DAY)
    F.publish_release(repository, tmp_path, NEW, {"stable": {F.MODEL: offer}}, NOW - F.DAY)
    return repository


def public_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pub.pem"
    path.write_bytes(keys.public_key_pem(F.SIGNING_KEY))
    return path


def telemetry(tmp_path: Path, repository: Path, behave, devices: int = 2000) -> Path:
    fleet = F.Fleet(devices)
    return fleet.report(fleet.follow(repository, NOW), behave, tmp_path / "telemetry.jsonl", now=NOW)


def test_monitor_writes_its_reports_and_exits_0_without_an_alert(tmp_path, capsys):
    repository = repository_with(tmp_path, Offer(NEW, 5000, OLD))
    lines = telemetry(tmp_path, repository, F.healthy)
    with open(lines, "a") as out:
        out.write("{broken\n")
    code = cli.main(["monitor", str(lines), "--repository", str(repository), "--public-key", str(public_key_file(tmp_path)),
                     "--out", str(tmp_path / "report"), "--workspace", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "2000 of 2001 records counted (left out: 1 malformed)" in out
    assert f"left out (malformed): {lines}:2001: not JSON" in err
    document = json.loads((tmp_path / "report" / "monitor.json").read_text())
    assert document["alerts"] == [] and {g["version"] for g in document["groups"]} == {OLD, NEW}
    html = (tmp_path / "report" / "monitor.html").read_text()
    assert "No alert" in html and "http" not in html.replace("http-equiv", "")


def test_monitor_exits_with_the_alert_code_when_an_arm_is_worse(tmp_path, capsys):
    arms = (Arm("control", 5000, OLD), Arm("candidate", 5000, NEW))
    repository = repository_with(tmp_path, Offer(NEW, 10_000, None, arms))
    lines = telemetry(tmp_path, repository, lambda d, v, arm: F.Behaviour(accuracy=0.7 if arm == "candidate" else 0.9))
    code = cli.main(["monitor", str(lines), "--repository", str(repository), "--public-key", str(public_key_file(tmp_path)),
                     "--out", str(tmp_path / "report"), "--workspace", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == errors.AlertRaised.exit_code == 30
    assert "ALERT accuracy: digits on stable: arm candidate vs arm control: candidate accuracy proxy is worse than control" in out
    assert "alerts</h2>" in (tmp_path / "report" / "monitor.html").read_text()


def test_monitor_refuses_bundles_signed_with_another_key(tmp_path, capsys):
    repository = repository_with(tmp_path, Offer(NEW, 5000, OLD))
    other = tmp_path / "other.pub.pem"
    other.write_bytes(keys.public_key_pem(keys.generate_signing_key()))
    lines = tmp_path / "empty.jsonl"
    lines.write_text("")
    code = cli.main(["monitor", str(lines), "--repository", str(repository), "--public-key", str(other), "--workspace", str(tmp_path)])
    assert code == errors.WrongKeyError.exit_code, capsys.readouterr()


STAGED = """\
monitor: {min_devices: 20, min_inferences: 2000, min_labelled: 100}
publish:
  repository: repository
  channels:
    stable:
      previous: 1.0.0
      rollout: {steps: [5, 50, 100], min_devices: 50, guardrails: {latency: rollback}}
"""


def workspace(tmp_path: Path) -> Path:
    signed = 'version: "2.0.0"\n  signing: {key: file:keys/signing.pem}'
    spec = edit(VALID_SPEC, ("name: acme-vision", "name: acme"), ('version: "1.4.0"', signed))
    root = make_workspace(tmp_path / "workspace", spec + STAGED)
    (root / "keys").mkdir()
    keys.write_private_key(root / "keys" / "signing.pem", F.SIGNING_KEY)
    repository_with(root, Offer(NEW, 500, OLD))
    return root


def test_rollout_advance_publishes_the_next_step_and_logs_the_decision(tmp_path, capsys):
    root = workspace(tmp_path)
    lines = telemetry(tmp_path, root / "repository", F.healthy)
    code = cli.main(["rollout", "advance", "--telemetry", str(lines), "--workspace", str(root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stable/digits 2.0.0: advance, 5% -> 2.0.0 at 50% (index version 3, decision 1 in rollouts.jsonl)" in out
    index = verify_index((root / "repository" / "index.json").read_bytes(), {public_key_hint(F.PUBLIC_KEY): F.PUBLIC_KEY},
                         repository=F.BUNDLE, now=NOW, trusted=None)
    assert index.offer("stable", F.MODEL).rollout_basis_points == 5000
    [entry] = read_log(root / "repository", F.PUBLIC_KEY)
    assert entry["telemetry"][0]["path"] == str(lines) and entry["evidence"]["devices"] >= 50
    # doit publish, run again on the same release, offers what the decision left, not the spec's first step.
    again = steered(root / "repository", {"stable": {F.MODEL: Offer(NEW, 500, OLD)}}, F.PUBLIC_KEY)
    assert again["stable"][F.MODEL].rollout_basis_points == 5000


def test_rollout_advance_rolls_back_on_a_slow_chipset_and_exits_with_the_alert_code(tmp_path, capsys):
    root = workspace(tmp_path)
    slow = lambda d, v, arm: F.Behaviour(latency_median_ms=45.0) if (d.chipset, v) == ("SM8650", NEW) else F.Behaviour()  # noqa: E731
    lines = telemetry(tmp_path, root / "repository", slow, devices=4000)
    code = cli.main(["rollout", "advance", "--telemetry", str(lines), "--workspace", str(root)])
    out = capsys.readouterr().out
    assert code == 30, out
    assert "stable/digits 2.0.0: rollback, 5% -> 1.0.0 at 100%" in out and "latency (SM8650, action rollback)" in out
    fleet = F.Fleet(4000)
    assert {version for version, _, _ in fleet.follow(root / "repository", NOW).values()} == {OLD}
    assert (root / "repository" / LOG_FILE).is_file()


def test_monitor_in_a_workspace_reads_its_built_bundle_when_nothing_is_published(tmp_path, capsys):
    import shutil

    root = workspace(tmp_path)
    shutil.rmtree(root / "repository")
    bundle, _ = F.make_bundle(tmp_path / "made", NEW)
    shutil.copytree(bundle, root / "build" / "bundles" / F.BUNDLE / NEW)
    device = F.Fleet(1).devices[0]
    line = F.record(np.random.default_rng(0), device, NEW, None, F.model_path("pixel-8"), F.Behaviour(), "stable",
                    datetime.fromtimestamp(NOW - 3600, UTC), datetime.fromtimestamp(NOW - 60, UTC))
    (tmp_path / "one.jsonl").write_text(json.dumps(line) + "\n")
    code = cli.main(["monitor", str(tmp_path / "one.jsonl"), "--workspace", str(root), "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0 and "1 of 1 records counted; 1 groups" in out
    [group] = json.loads((tmp_path / "report" / "monitor.json").read_text())["groups"]
    assert group["status"] == "not enough data" and group["evidence"].startswith("not enough data: 1 devices")
