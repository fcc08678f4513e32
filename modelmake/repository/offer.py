"""What a channel of the download repository offers of one model: plain data, shared by the plan and the index."""
from __future__ import annotations

from dataclasses import dataclass

BASIS_POINTS = 10_000  # rollout and A/B shares are in hundredths of a percent


@dataclass(frozen=True)
class Arm:
    """One arm of an A/B test: the share of devices (in basis points) that get ``version``."""

    name: str
    basis_points: int
    version: str


@dataclass(frozen=True)
class Offer:
    """What one channel offers of one model (OTA.md, "index.json": an offer)."""

    version: str
    rollout_basis_points: int = BASIS_POINTS
    previous: str | None = None  # what devices outside the rollout get; None: they keep what they have
    arms: tuple[Arm, ...] = ()
    min_app_version: str | None = None

    def versions(self) -> set[str]:
        """Every version this offer can send a device to."""
        return {self.version, *(a.version for a in self.arms)} | ({self.previous} if self.previous else set())

    def document(self) -> dict:
        return {
            "version": self.version,
            "rollout_basis_points": self.rollout_basis_points,
            "previous": self.previous,
            "arms": [{"name": a.name, "basis_points": a.basis_points, "version": a.version} for a in self.arms],
            "min_app_version": self.min_app_version,
        }

    @classmethod
    def from_document(cls, document: dict) -> Offer:
        return cls(**{**document, "arms": tuple(Arm(**arm) for arm in document["arms"])})
