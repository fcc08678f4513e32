"""The monitor's figures: PSI, Jensen-Shannon distance, percentiles from histograms, Wilson and Newcombe intervals."""
from __future__ import annotations

import numpy as np
import pytest

from modelmake.monitor.stats import difference, js_distance, percentiles, psi, wilson


def test_the_same_distribution_has_no_drift_and_disjoint_ones_the_most():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0)
    assert js_distance([10, 20, 30], [1, 2, 3]) == pytest.approx(0)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1)
    assert psi([50, 50], [10, 90]) == pytest.approx(0.4 * np.log(0.9 / 0.5) + 0.4 * np.log(0.5 / 0.1))
    assert psi([50, 50], [10, 90]) > 0.25 > psi([50, 50], [45, 55])


def test_percentiles_merge_histograms_with_different_edges():
    uniform = {(0.0, 10.0): np.array([100])}
    assert percentiles(uniform, [50, 90]) == pytest.approx({50: 5.0, 90: 9.0})
    split = {(0.0, 5.0, 10.0): np.array([50, 50]), (0.0, 10.0): np.array([100])}
    assert percentiles(split, [50])[50] == pytest.approx(5.0)
    assert percentiles({(0.0, 1.0): np.array([0])}, [50]) is None


def test_wilson_interval_of_none_in_ten():
    interval = wilson(0, 10)
    assert interval.estimate == 0 and interval.low == pytest.approx(0, abs=1e-12) and interval.high == pytest.approx(0.2775, abs=1e-4)


def test_newcombe_interval_of_a_difference_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17, 873-890, example (a), method 10: 56/70 against 48/80 is 0.2 (0.0524, 0.3339).
    interval = difference(48, 80, 56, 70)
    assert interval.estimate == pytest.approx(0.2)
    assert (interval.low, interval.high) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
