"""The `monitor:` section of models.yaml and a channel's staged rollout, as frozen settings with their defaults."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# What breaks a guardrail, and the actions a rollout may declare for it.
GUARDRAILS = ("drift", "latency", "frame_rate", "failure_rate", "fallback_rate", "accuracy")
HOLD, ROLLBACK = "hold", "rollback"
ACTIONS = (HOLD, ROLLBACK)


@dataclass(frozen=True)
class MonitorSettings:
    """Thresholds and the minimum evidence before any verdict (README: the monitor section)."""

    max_psi: float = 0.25  # population stability index of a distribution against its baseline
    max_js_distance: float | None = None  # Jensen-Shannon distance (base 2, 0..1); None: reported, not judged
    max_feature_shift: float = 0.5  # a feature input's mean, moved by this many baseline standard deviations
    latency_percentile: float = 90  # the percentile compared with the baseline's max_latency_ms
    max_failure_rate: float = 0.01  # failures / inferences
    max_fallback_rate: float = 0.05  # delegate fallbacks / inferences
    # Comparisons (A/B arms, a version against the one it replaces) call a side worse only when the whole interval
    # of the difference is beyond these margins: a real but negligible difference raises no alert.
    max_accuracy_drop: float = 0.01  # of the accuracy proxy, absolute (0.01: one point)
    max_failure_rate_increase: float = 0.002  # absolute (0.002: 0.2 points)
    min_devices: int = 100  # per group: fewer devices give "not enough data"
    min_inferences: int = 1000  # per group, for drift, latency and rates
    min_labelled: int = 200  # per arm or version, for the accuracy proxy
    confidence: float = 0.95  # of the intervals of differences
    max_clock_skew_minutes: float = 10  # a period ending further ahead than this is refused (clock skew)

    def document(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class RolloutPolicy:
    """A staged rollout of one model on one channel: its steps, the evidence it needs, and what a breach does."""

    steps: tuple[int, ...]  # basis points, ascending, the last one 10000
    min_devices: int = 500  # devices on the new version that must have reported before a step is judged
    guardrails: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict.fromkeys(GUARDRAILS, HOLD)))

    def action(self, guardrail: str) -> str:
        return self.guardrails.get(guardrail, HOLD)

    def document(self) -> dict:
        return {"steps": list(self.steps), "min_devices": self.min_devices, "guardrails": dict(self.guardrails)}
