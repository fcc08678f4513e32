"""Guarded rollouts: advance, hold or roll back a staged rollout on telemetry, and publish the next signed index.

For each channel and model under a staged rollout (``rollout: {steps: ...}`` in models.yaml), the
evidence is the telemetry of the version being rolled out on that channel: the monitor's alerts for
each of its groups (drift, latency and frame-rate budgets, failure and fallback rates), and its
failure rate and accuracy proxy against the version it replaces (the offer's ``previous``).

* Fewer devices on the new version than the rollout's ``min_devices``: no decision ("not enough data").
* A guardrail broken whose declared action is ``rollback``: every device is offered ``previous``.
* Otherwise a guardrail broken (``hold``): the rollout stays at its step.
* Otherwise: the next step.

The index a client reads has one offer per channel and model, with no chipset in it: a hold holds
the rollout for every chipset, and a rollback rolls back every device. The decision log names the
chipsets whose figures broke a guardrail. Holding one chipset alone would need a per-chipset offer
in the index, which today's clients do not read.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ..bundle.signing import public_key_hint
from ..client.index import verify_index
from ..errors import RolloutLogError
from ..repository.index import INDEX_FILE
from ..repository.offer import BASIS_POINTS, Offer
from ..repository.publish import publish_index
from ..repository.rollouts import append_decision, read_log
from .analysis import Alert, Totals, compare, group_figures
from .settings import HOLD, ROLLBACK, MonitorSettings, RolloutPolicy
from .telemetry import Intake

ADVANCE, NONE = "advance", "none"


@dataclass(frozen=True)
class RolloutDecision:
    channel: str
    model: str
    version: str
    previous: str | None
    action: str  # advance, hold, rollback, none
    before: Offer
    after: Offer
    reasons: tuple[str, ...]
    evidence: Mapping

    def document(self) -> dict:
        return {
            "channel": self.channel, "model": self.model, "version": self.version, "previous": self.previous,
            "action": self.action,
            "from_percent": self.before.rollout_basis_points / 100, "to_percent": self.after.rollout_basis_points / 100,
            "offered_version": self.after.version,
            "reasons": list(self.reasons), "evidence": dict(self.evidence), "offer": self.after.document(),
        }


def decide(channel: str, model: str, policy: RolloutPolicy, offer: Offer, intake: Intake, settings: MonitorSettings) -> RolloutDecision:
    version, previous = offer.version, offer.previous

    def decision(action: str, after: Offer, reasons: list[str], evidence: dict | None = None) -> RolloutDecision:
        return RolloutDecision(channel, model, version, previous, action, offer, after, tuple(reasons), evidence or {})

    if offer.rollout_basis_points >= BASIS_POINTS and previous is None:
        return decision(NONE, offer, [f"nothing is being rolled out: {version} is offered to every device"])
    groups = {k: t for k, t in intake.groups.items() if (k.model, k.channel, k.version) == (model, channel, version)}
    new, old = Totals(set()), Totals(set())
    for key, tally in intake.groups.items():
        if (key.model, key.channel) == (model, channel):
            if key.version == version:
                new.add(tally)
            elif key.version == previous:
                old.add(tally)
    evidence: dict = {"devices": len(new.devices), "inferences": new.inferences, "min_devices": policy.min_devices}
    if len(new.devices) < policy.min_devices:
        return decision(NONE, offer, [
            f"not enough data: {len(new.devices)} devices on {version} reported on {channel}; "
            f"the rollout needs {policy.min_devices} before it decides"
        ], evidence)
    alerts: list[Alert] = []
    ordered = sorted(groups.items(), key=lambda item: (item[0].chipset, item[0].arm or ""))
    evidence["groups"] = [_brief(group_figures(key, tally, settings, alerts)) for key, tally in ordered]
    if previous is not None:
        evidence["against_previous"] = compare(f"{model} on {channel}: {version} vs {previous}", None, previous, old,
                                                version, new, settings, alerts)
    breaking: dict[str, set[str]] = {}
    for alert in alerts:
        breaking.setdefault(alert.chipset or "every chipset", set()).add(alert.guardrail)
    evidence["breaking"] = {chipset: sorted(g) for chipset, g in sorted(breaking.items())}
    reasons = [f"{a.guardrail} ({a.chipset or 'all chipsets'}, action {policy.action(a.guardrail)}): {a.message}" for a in alerts]
    actions = {policy.action(a.guardrail) for a in alerts}
    if ROLLBACK in actions:
        if previous is None:
            return decision(HOLD, offer, reasons + ["no previous version to roll back to: held instead"], evidence)
        back = Offer(version=previous, rollout_basis_points=BASIS_POINTS, previous=None, arms=(), min_app_version=offer.min_app_version)
        return decision(ROLLBACK, back, reasons, evidence)
    if HOLD in actions:
        if set(breaking) - {"every chipset"}:
            reasons.append("held for every chipset: the signed index has one offer per channel and model, not one per chipset")
        return decision(HOLD, offer, reasons, evidence)
    later = [s for s in policy.steps if s > offer.rollout_basis_points]
    if not later:
        return decision(NONE, offer, [f"the rollout of {version} is complete"], evidence)
    step = later[0]
    after = replace(offer, rollout_basis_points=step)
    return decision(ADVANCE, after, [f"every guardrail holds over {len(new.devices)} devices: {step / 100:g}% next"], evidence)


def _brief(figures: dict) -> dict:
    """A group's figures as the decision log keeps them."""
    return {
        "chipset": figures["chipset"], "arm": figures["arm"], "devices": figures["devices"], "inferences": figures["inferences"],
        "status": figures["status"], "latency_ms": figures["latency_ms"], "max_latency_ms": figures["max_latency_ms"],
        "fps": figures["fps"], "min_fps": figures["min_fps"],
        "failure_rate": figures["rates"]["failure_rate"]["estimate"], "fallback_rate": figures["rates"]["fallback_rate"]["estimate"],
        "max_psi": max((d.get("psi") or 0 for d in figures["drift"]), default=None), "alerts": figures["alerts"],
    }


def advance(
    repository: Path,
    *,
    bundle: str,
    policies: Mapping[str, Mapping[str, RolloutPolicy]],
    intake: Intake,
    settings: MonitorSettings,
    signing_key: ec.EllipticCurvePrivateKey,
    now: int,
    expires_after: int,
    telemetry: list[dict],
) -> list[dict]:
    """Decide every staged rollout, publish the index that follows, and log each decision; return the log entries."""
    repository = Path(repository)
    public = signing_key.public_key()
    index = verify_index((repository / INDEX_FILE).read_bytes(), {public_key_hint(public): public},
                         repository=bundle, now=now, trusted=None)
    entries = read_log(repository, public)
    if entries and entries[-1]["index_version"] > index.index_version:
        raise RolloutLogError(
            f"{repository}: the decision log's last decision left index version {entries[-1]['index_version']} in force, "
            f"but the index is at version {index.index_version}: sync the whole repository (index and log) before deciding"
        )
    decisions = []
    channels = {c: dict(models) for c, models in index.channels.items()}
    for channel, models in sorted(policies.items()):
        for model, policy in sorted(models.items()):
            offer = channels.get(channel, {}).get(model)
            if offer is None:
                continue
            made = decide(channel, model, policy, offer, intake, settings)
            channels[channel][model] = made.after
            decisions.append(made)
    result = publish_index(repository, bundle=bundle, channels=channels, signing_key=signing_key, now=now, expires_after=expires_after)
    data = (repository / INDEX_FILE).read_bytes()
    logged = []
    for made in decisions:
        logged.append(append_decision(repository, {
            **made.document(), "time": now, "index_version": result.index_version,
            "index_sha256": hashlib.sha256(data).hexdigest(), "published": result.changed, "telemetry": telemetry,
            "intake": {"lines": intake.lines, "counted": intake.accepted, "left_out": dict(intake.rejected)},
        }, signing_key))
    return logged
