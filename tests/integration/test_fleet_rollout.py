"""Guarded rollouts on simulated fleets of 10 000 devices, each following the signed index with the reference client.

A small repository (tests/support/fleet.py: signed bundles with baselines around placeholder model
files, no model built) publishes 1.0.0 to every device, then 2.0.0 to 5% of them. Each period, every
device takes what the index offers it by the client's own rules and reports a day of telemetry through
the client's recorder; ``rollout.advance`` reads it, decides, publishes and logs. Every index the
tests reach is verified as a client that followed all the earlier ones would (signature, expiry, an
index version that never goes back); in the rollback case real clients over loopback HTTP install the
new release and then the old one again. Each test simulates several fleet periods: slow.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from modelmake.client import Client, UpdateStatus
from modelmake.errors import RolloutLogError
from modelmake.monitor.analysis import analyse
from modelmake.monitor.baselines import load_catalog, repository_bundles
from modelmake.monitor.rollout import advance
from modelmake.monitor.settings import HOLD, ROLLBACK, MonitorSettings, RolloutPolicy
from modelmake.monitor.telemetry import read_telemetry
from modelmake.repository.offer import Arm, Offer
from modelmake.repository.rollouts import LOG_FILE, read_log

from tests.support import fleet as F
from tests.support.ota_server import RepositoryServer

pytestmark = pytest.mark.slow

NOW = int(time.time())
DEVICES = 10_000
OLD, NEW = "1.0.0", "2.0.0"
STEPS = (500, 2500, 5000, 10_000)
SETTINGS = MonitorSettings(min_devices=50, min_inferences=5_000, min_labelled=500)


def policy(**guardrails) -> RolloutPolicy:
    return RolloutPolicy(steps=STEPS, min_devices=300, guardrails={**dict.fromkeys(("drift", "latency", "frame_rate",
                                                                                     "failure_rate", "fallback_rate",
                                                                                     "accuracy"), HOLD), **guardrails})


def staged_repository(tmp_path: Path) -> Path:
    repository = tmp_path / "repository"
    F.publish_release(repository, tmp_path, OLD, {"stable": {F.MODEL: Offer(OLD)}}, NOW - 2 * F.DAY)
    F.publish_release(repository, tmp_path, NEW, {"stable": {F.MODEL: Offer(NEW, STEPS[0], OLD)}}, NOW - F.DAY)
    return repository


def period(repository: Path, fleet: F.Fleet, behave, rollout: RolloutPolicy, tmp_path: Path, number: int):
    """One day: devices follow the index, report, and the rollout decides; returns (placement, decision log entry)."""
    placed = fleet.follow(repository, NOW + number)
    telemetry = fleet.report(placed, behave, tmp_path / f"telemetry-{number}.jsonl", now=NOW + number, period=number)
    catalog = load_catalog(repository_bundles(repository), F.PUBLIC_KEY)
    intake = read_telemetry([telemetry], catalog, now=NOW + number)
    assert intake.accepted == sum(1 for v, _, _ in placed.values() if v) and not any(intake.rejected.values())
    [entry] = advance(repository, bundle=F.BUNDLE, policies={"stable": {F.MODEL: rollout}}, intake=intake, settings=SETTINGS,
                      signing_key=F.SIGNING_KEY, now=NOW + number, expires_after=30 * F.DAY,
                      telemetry=[{"path": telemetry.name}])
    return placed, entry


def versions(placed: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for version, _, _ in placed.values():
        counts[version] = counts.get(version, 0) + 1
    return counts


def test_a_healthy_rollout_advances_step_by_step_to_every_device(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    actions = []
    for number in range(4):
        placed, entry = period(repository, fleet, F.healthy, policy(), tmp_path, number)
        actions.append((entry["action"], entry["to_percent"]))
        share = versions(placed).get(NEW, 0) / DEVICES
        assert abs(share - entry["from_percent"] / 100) < 0.03, (share, entry)
    assert actions == [("advance", 25), ("advance", 50), ("advance", 100), ("none", 100)]
    assert versions(fleet.follow(repository, NOW + 10)) == {NEW: DEVICES}
    log = read_log(repository)
    assert [e["sequence"] for e in log] == [1, 2, 3, 4]
    assert log[0]["evidence"]["devices"] >= 300 and log[0]["index_version"] == 3 and log[-1]["index_version"] == 5


def dimmed(device, version, arm) -> F.Behaviour:
    return F.Behaviour(brightness=F.DIM)


def test_dimmed_inputs_raise_a_drift_alert_and_hold_the_rollout(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    before = (repository / "index.json").read_bytes()
    placed, entry = period(repository, fleet, dimmed, policy(), tmp_path, 0)
    assert (entry["action"], entry["to_percent"], entry["published"]) == ("hold", 5, False)
    assert any("inputs.image.brightness drifted" in reason for reason in entry["reasons"])
    assert not any("contrast" in reason for reason in entry["reasons"])
    assert (repository / "index.json").read_bytes() == before  # the signed index in force stays the client's
    assert versions(fleet.follow(repository, NOW + 1)) == versions(placed)


def slow_snapdragon(device, version, arm) -> F.Behaviour:
    return F.Behaviour(latency_median_ms=45.0) if (device.chipset, version) == ("SM8650", NEW) else F.Behaviour()


def test_a_chipset_over_its_latency_budget_rolls_every_device_back_when_so_declared(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    with RepositoryServer(repository) as server:
        # A few real clients, over HTTP, beside the simulated fleet: some inside the 5%, one outside.
        placed = fleet.follow(repository, NOW)
        inside = [d for d in fleet.devices if placed[d.device_id][0] == NEW][:3]
        outside = next(d for d in fleet.devices if placed[d.device_id][0] == OLD)
        clients = {d.device_id: Client(base_url=server.url, cache_dir=tmp_path / "phones" / d.device_id, repository=F.BUNDLE,
                                       trusted_keys=[F.PUBLIC_KEY]) for d in [*inside, outside]}
        installed = {d.device_id: install(clients[d.device_id], d) for d in [*inside, outside]}
        assert installed == {**{d.device_id: NEW for d in inside}, outside.device_id: OLD}

        fleet.trusted = None
        placed, entry = period(repository, fleet, slow_snapdragon, policy(latency=ROLLBACK, frame_rate=ROLLBACK), tmp_path, 0)
        assert versions(placed)[NEW] > 300
        assert (entry["action"], entry["offered_version"], entry["to_percent"], entry["published"]) == ("rollback", OLD, 100, True)
        assert entry["evidence"]["breaking"] == {"SM8650": ["frame_rate", "latency"]}
        assert versions(fleet.follow(repository, NOW + 1)) == {OLD: DEVICES}
        assert {d.device_id: install(clients[d.device_id], d) for d in [*inside, outside]} == dict.fromkeys(installed, OLD)


def install(client: Client, device) -> str:
    result = client.update(device, F.MODEL)
    assert result.status in (UpdateStatus.INSTALLED, UpdateStatus.CURRENT), result
    installed = client.installed(F.MODEL)
    assert installed is not None
    return installed.version


def test_a_chipset_over_its_latency_budget_holds_the_rollout_when_so_declared(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    placed, entry = period(repository, fleet, slow_snapdragon, policy(), tmp_path, 0)
    assert (entry["action"], entry["to_percent"]) == ("hold", 5)
    assert entry["evidence"]["breaking"] == {"SM8650": ["frame_rate", "latency"]}
    assert entry["reasons"][-1].startswith("held for every chipset")
    assert versions(fleet.follow(repository, NOW + 1)) == versions(placed)


def test_too_few_devices_on_the_new_version_give_no_decision(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    placed, entry = period(repository, fleet, F.healthy, replace(policy(), min_devices=2000), tmp_path, 0)
    assert entry["action"] == "none" and entry["published"] is False
    assert entry["reasons"][0].startswith(f"not enough data: {versions(placed)[NEW]} devices on {NEW} reported on stable")


def worse_candidate(device, version, arm) -> F.Behaviour:
    return F.Behaviour(accuracy=0.85 if arm == "candidate" else 0.90)


def test_an_arm_with_a_worse_accuracy_proxy_is_detected_with_its_interval(tmp_path):
    repository = tmp_path / "repository"
    F.publish_release(repository, tmp_path, OLD, {"stable": {F.MODEL: Offer(OLD)}}, NOW - 2 * F.DAY)
    arms = (Arm("control", 5000, OLD), Arm("candidate", 5000, NEW))
    F.publish_release(repository, tmp_path, NEW, {"stable": {F.MODEL: Offer(NEW, 10_000, None, arms)}}, NOW - F.DAY)
    fleet = F.Fleet(DEVICES)
    telemetry = fleet.report(fleet.follow(repository, NOW), worse_candidate, tmp_path / "t.jsonl", now=NOW)
    catalog = load_catalog(repository_bundles(repository), F.PUBLIC_KEY)
    report = analyse(read_telemetry([telemetry], catalog, now=NOW), catalog, SETTINGS)
    [comparison] = [c for c in report["comparisons"] if "arm" in c["what"]]
    accuracy = comparison["accuracy_proxy"]
    assert accuracy["verdict"] == "worse"
    assert accuracy["difference"]["low"] < -0.05 < accuracy["difference"]["high"] < 0  # the true difference lies within
    assert [a["guardrail"] for a in report["alerts"]] == ["accuracy"]
    assert comparison["failure_rate"]["verdict"] == "no significant difference"


def test_the_decision_log_refuses_to_be_written_on_a_rewritten_history(tmp_path):
    repository, fleet = staged_repository(tmp_path), F.Fleet(DEVICES)
    period(repository, fleet, F.healthy, policy(), tmp_path, 0)
    log = repository / LOG_FILE
    entry = json.loads(log.read_text())
    log.write_text(json.dumps({**entry, "action": "hold"}, sort_keys=True, separators=(",", ":")) + "\n")
    with pytest.raises(RolloutLogError, match=r"rollouts.jsonl:1: its signature does not verify"):
        period(repository, fleet, F.healthy, policy(), tmp_path, 1)
