"""Figures and alerts per model version x chipset x arm, and the comparisons between arms and versions.

Every verdict needs its evidence: a group with fewer devices or inferences than ``monitor:`` asks
for says "not enough data" and raises no alert; a comparison with too few labelled inferences or
inferences on either side says so too. Rates are compared with intervals (Wilson for one rate,
Newcombe's hybrid score interval for a difference); a rate breaks its limit only when the whole
interval is above it, and one side of a comparison is worse only when the whole interval of the
difference is beyond the margin ``monitor:`` allows (better: the whole interval on the good side of zero).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import overload

import numpy as np

from .baselines import Catalog, previous_version
from .settings import MonitorSettings
from .stats import difference, js_distance, percentiles, psi, wilson
from .telemetry import GroupKey, Intake, Tally

NOT_ENOUGH = "not enough data"
OK, ALERT = "ok", "alert"


@dataclass(frozen=True)
class Alert:
    guardrail: str  # drift, latency, frame_rate, failure_rate, fallback_rate, accuracy
    where: str  # the group or comparison it concerns
    chipset: str | None
    message: str

    def document(self) -> dict:
        return {"guardrail": self.guardrail, "where": self.where, "chipset": self.chipset, "message": self.message}


@overload
def _round(value: float) -> float: ...
@overload
def _round(value: None) -> None: ...
def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def analyse(intake: Intake, catalog: Catalog, settings: MonitorSettings) -> dict:
    """The report document (JSON-ready): intake, groups, comparisons and alerts."""
    alerts: list[Alert] = []
    groups = [group_figures(key, tally, settings, alerts) for key, tally in sorted(intake.groups.items(), key=lambda i: _order(i[0]))]
    comparisons = arm_comparisons(intake.groups, settings, alerts) + version_comparisons(intake.groups, catalog, settings, alerts)
    return {
        "format": 1,
        "settings": settings.document(),
        "bundles": list(catalog.sources),
        "intake": {
            "lines": intake.lines,
            "counted": intake.accepted,
            "left_out": dict(intake.rejected),
            "messages": {k: list(v) for k, v in intake.messages.items() if v},
        },
        "groups": groups,
        "comparisons": comparisons,
        "alerts": [a.document() for a in alerts],
    }


def _order(key: GroupKey) -> tuple:
    return (key.model, key.channel, key.version, key.chipset, key.arm or "", key.artifact)


def group_figures(key: GroupKey, tally: Tally, settings: MonitorSettings, alerts: list[Alert]) -> dict:
    baseline = tally.known.baseline or {}
    budgets = baseline.get("budgets") or {}
    where = key.label()
    devices = len(tally.devices)
    enough = devices >= settings.min_devices and tally.inferences >= settings.min_inferences
    found: list[Alert] = []

    def alert(guardrail: str, message: str) -> None:
        found.append(Alert(guardrail, where, key.chipset, message))

    q = settings.latency_percentile
    measured = percentiles(tally.latency, sorted({50.0, 90.0, 99.0, float(q)})) or {}
    latency = {f"p{p:g}": _round(v) for p, v in measured.items()}
    max_latency = budgets.get("max_latency_ms")
    if enough and max_latency is not None and measured and measured[float(q)] > max_latency:
        alert("latency", f"p{q:g} latency {measured[float(q)]:.4g} ms is over the budget of {max_latency:g} ms")

    fps = tally.frame_count / tally.frame_seconds if tally.frame_seconds > 0 else None
    min_fps = budgets.get("min_fps")
    if enough and min_fps is not None and fps is not None and fps < min_fps:
        alert("frame_rate", f"frame rate {fps:.4g} fps is under the budget of {min_fps:g} fps")

    rates = {}
    for name, count, limit in (
        ("failure_rate", tally.failures, settings.max_failure_rate),
        ("fallback_rate", tally.fallbacks, settings.max_fallback_rate),
    ):
        interval = wilson(count, tally.inferences, settings.confidence)
        rates[name] = {"count": count, **{k: _round(v) for k, v in interval.document().items()}, "limit": limit}
        if enough and interval.low > limit:
            alert(name, f"{name.replace('_', ' ')} {interval.estimate:.3%} (interval {interval.low:.3%} to {interval.high:.3%}) "
                        f"is over the limit of {limit:.3%}")

    drift = []
    for path, observed in sorted(tally.histograms.items()):
        expected = _baseline_counts(baseline, path)
        if expected is None or len(expected) != len(observed):
            continue
        psi_value, js_value = _round(psi(expected, observed)), _round(js_distance(expected, observed))
        entry: dict[str, object] = {"distribution": path, "psi": psi_value, "js_distance": js_value}
        broken = [f"PSI {psi_value:.3g} > {settings.max_psi:g}"] if psi_value > settings.max_psi else []
        if settings.max_js_distance is not None and js_value > settings.max_js_distance:
            broken.append(f"JS distance {js_value:.3g} > {settings.max_js_distance:g}")
        entry["verdict"] = NOT_ENOUGH if not enough else ALERT if broken else OK
        if enough and broken:
            alert("drift", f"{path} drifted from its baseline: {', '.join(broken)}")
        drift.append(entry)
    for name, count in sorted(tally.feature_counts.items()):
        spec = (baseline.get("inputs") or {}).get(name.split(".", 1)[1]) or {}
        if count <= 0 or "mean" not in spec or "std" not in spec or name not in tally.features:
            continue
        sums, _ = tally.features[name]
        mean, base_mean = sums / count, np.asarray(spec["mean"], dtype=np.float64)
        std = np.maximum(np.asarray(spec["std"], dtype=np.float64), 1e-12)
        shift = float(np.max(np.abs(mean - base_mean) / std)) if len(mean) == len(base_mean) and len(mean) else None
        if shift is None:
            continue
        verdict = NOT_ENOUGH if not enough else ALERT if shift > settings.max_feature_shift else OK
        if verdict == ALERT:
            alert("drift", f"{name}: a feature's mean moved {shift:.3g} baseline standard deviations "
                           f"(limit {settings.max_feature_shift:g})")
        drift.append({"distribution": name, "feature_shift": _round(shift), "verdict": verdict})

    accuracy = None
    if tally.labelled:
        interval = wilson(tally.correct, tally.labelled, settings.confidence)
        accuracy = {"labelled": tally.labelled, "correct": tally.correct, **{k: _round(v) for k, v in interval.document().items()}}
    alerts.extend(found)
    status = NOT_ENOUGH if not enough else ALERT if found else OK
    return {
        "model": key.model, "version": key.version, "artifact": key.artifact, "chipset": key.chipset,
        "channel": key.channel, "arm": key.arm,
        "records": tally.records, "devices": devices, "inferences": tally.inferences,
        "status": status,
        "evidence": None if enough else (
            f"{NOT_ENOUGH}: {devices} devices and {tally.inferences} inferences; "
            f"a verdict needs {settings.min_devices} devices and {settings.min_inferences} inferences"
        ),
        "latency_ms": latency, "max_latency_ms": max_latency,
        "fps": _round(fps), "min_fps": min_fps,
        "peak_memory_mb": _round(tally.peak_memory_mb),
        "rates": rates, "drift": drift, "accuracy_proxy": accuracy,
        "alerts": [a.message for a in found],
    }


def _baseline_counts(baseline: Mapping, path: str) -> list | None:
    section, name, part = path.split(".", 2)
    entry = ((baseline.get(section) or {}).get(name) or {}).get(part)
    return entry.get("counts") if isinstance(entry, dict) else None


@dataclass
class Totals:
    """Counts of several groups added up: one side of a comparison."""

    devices: set
    inferences: int = 0
    failures: int = 0
    labelled: int = 0
    correct: int = 0

    def add(self, tally: Tally) -> None:
        self.devices |= tally.devices
        self.inferences += tally.inferences
        self.failures += tally.failures
        self.labelled += tally.labelled
        self.correct += tally.correct


def compare(label: str, chipset: str | None, base_name: str, base: Totals, new_name: str, new: Totals,
             settings: MonitorSettings, alerts: list[Alert]) -> dict:
    """``new`` against ``base``: accuracy proxy and failure rate, each a difference (new - base) with its interval."""
    figures: dict[str, dict[str, object]] = {}
    for name, hits, trials, minimum, worse_if, margin in (
        ("accuracy_proxy", "correct", "labelled", settings.min_labelled, "lower", settings.max_accuracy_drop),
        ("failure_rate", "failures", "inferences", settings.min_inferences, "higher", settings.max_failure_rate_increase),
    ):
        a_trials, b_trials = getattr(base, trials), getattr(new, trials)
        if min(a_trials, b_trials) < minimum:
            figures[name] = {"verdict": NOT_ENOUGH, "evidence": f"{NOT_ENOUGH}: {a_trials} and {b_trials} {trials}; "
                                                                 f"a verdict needs {minimum} on each side"}
            continue
        interval = difference(getattr(base, hits), a_trials, getattr(new, hits), b_trials, settings.confidence)
        if worse_if == "higher":
            verdict = "worse" if interval.low > margin else "better" if interval.high < 0 else "no significant difference"
        else:
            verdict = "worse" if interval.high < -margin else "better" if interval.low > 0 else "no significant difference"
        figures[name] = {
            base_name: _round(getattr(base, hits) / a_trials), new_name: _round(getattr(new, hits) / b_trials), "margin": margin,
            "difference": {k: _round(v) for k, v in interval.document().items()}, "verdict": verdict,
        }
        if verdict == "worse":
            guardrail = "accuracy" if name == "accuracy_proxy" else "failure_rate"
            alerts.append(Alert(guardrail, label, chipset, (
                f"{new_name} {name.replace('_', ' ')} is worse than {base_name}: difference {interval.estimate:+.3%} "
                f"({settings.confidence:.0%} interval {interval.low:+.3%} to {interval.high:+.3%}, beyond the margin of {margin:.3%})"
            )))
    return {"what": label, "chipset": chipset, "base": base_name, "new": new_name,
            "devices": {base_name: len(base.devices), new_name: len(new.devices)}, **figures}


def arm_comparisons(groups: Mapping[GroupKey, Tally], settings: MonitorSettings, alerts: list[Alert]) -> list[dict]:
    """Each A/B arm against the control arm (named "control", else the first by name), over every chipset."""
    arms: dict[tuple[str, str], dict[str, Totals]] = {}
    for key, tally in groups.items():
        if key.arm is not None:
            arms.setdefault((key.model, key.channel), {}).setdefault(key.arm, Totals(set())).add(tally)
    out = []
    for (model, channel), by_arm in sorted(arms.items()):
        if len(by_arm) < 2:
            continue
        control = "control" if "control" in by_arm else sorted(by_arm)[0]
        for arm in sorted(by_arm):
            if arm != control:
                out.append(compare(f"{model} on {channel}: arm {arm} vs arm {control}", None, control, by_arm[control],
                                    arm, by_arm[arm], settings, alerts))
    return out


def version_comparisons(groups: Mapping[GroupKey, Tally], catalog: Catalog, settings: MonitorSettings,
                        alerts: list[Alert]) -> list[dict]:
    """Each version against the one it replaces (the next older known version), on the same channel, over every chipset."""
    versions: dict[tuple[str, str], dict[str, Totals]] = {}
    for key, tally in groups.items():
        if key.arm is None:
            versions.setdefault((key.model, key.channel), {}).setdefault(key.version, Totals(set())).add(tally)
    out = []
    for (model, channel), by_version in sorted(versions.items()):
        for version in sorted(by_version):
            older = previous_version(catalog, model, version)
            if older in by_version:
                out.append(compare(f"{model} on {channel}: {version} vs {older}", None, older, by_version[older],
                                    version, by_version[version], settings, alerts))
    return out
