"""The figures the monitor computes from histograms and counts; plain numpy, no state."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

# A bin empty on one side would make PSI infinite: proportions are floored at this (a common choice).
_FLOOR = 1e-4


def proportions(counts: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else np.full(len(array), 1.0 / max(len(array), 1))


def psi(expected: npt.ArrayLike, observed: npt.ArrayLike) -> float:
    """Population stability index of ``observed`` against ``expected`` (same bins): sum (o - e) ln(o / e)."""
    e = np.maximum(proportions(expected), _FLOOR)
    o = np.maximum(proportions(observed), _FLOOR)
    return float(np.sum((o - e) * np.log(o / e)))


def js_distance(expected: npt.ArrayLike, observed: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, from 0 for the same distribution to 1 for disjoint ones)."""
    p, q = proportions(expected), proportions(observed)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def percentiles(histograms: Mapping[tuple[float, ...], np.ndarray], qs: Sequence[float]) -> dict[float, float] | None:
    """Percentiles (0..100) of the values counted in histograms, each keyed by its edges; values are spread evenly within a bin.

    Histograms with different edges are merged through their cumulative counts at the union of
    all edges. None when nothing was counted.
    """
    histograms = {edges: counts for edges, counts in histograms.items() if counts.sum() > 0}
    if not histograms:
        return None
    grid = np.unique(np.concatenate([np.asarray(edges, dtype=np.float64) for edges in histograms]))
    cumulative = np.zeros(len(grid))
    for edges, counts in histograms.items():
        cumulative += np.interp(grid, np.asarray(edges, dtype=np.float64), np.concatenate([[0.0], np.cumsum(counts)]))
    total = cumulative[-1]
    return {q: float(np.interp(total * q / 100, cumulative, grid)) for q in qs}


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def document(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a proportion."""
    if trials <= 0:
        return Interval(math.nan, 0.0, 1.0)
    z, p = _z(confidence), successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def difference(successes_a: int, trials_a: int, successes_b: int, trials_b: int, confidence: float = 0.95) -> Interval:
    """Newcombe's hybrid score interval of p_b - p_a (method 10): from the two Wilson intervals."""
    a, b = wilson(successes_a, trials_a, confidence), wilson(successes_b, trials_b, confidence)
    d = b.estimate - a.estimate
    low = d - math.sqrt((b.estimate - b.low) ** 2 + (a.high - a.estimate) ** 2)
    high = d + math.sqrt((b.high - b.estimate) ** 2 + (a.estimate - a.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))
