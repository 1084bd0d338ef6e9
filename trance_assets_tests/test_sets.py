"""Unit tests of evaluation.sets: KDE overlapping area, fd_features, reference_stats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trance_assets.evaluation.metrics import METRICS
from trance_assets.evaluation.sets import fd_features, metric_overlaps, overlapping_area, reference_stats

# ---- overlapping_area ------------------------------------------------------------------------------


def test_overlapping_area_of_identical_samples_is_one() -> None:
    a = np.random.default_rng(0).normal(size=300)
    # the grid reaches 3 bandwidths past the extremes, so almost all of the mass is on it
    assert overlapping_area(a, a) == pytest.approx(1.0, abs=1e-3)


def test_overlapping_area_of_far_apart_samples_is_zero() -> None:
    a = np.random.default_rng(1).normal(size=300)
    assert overlapping_area(a, a + 100.0) == pytest.approx(0.0, abs=1e-9)


def test_overlapping_area_of_two_unit_gaussians_one_apart() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 4000), rng.normal(1, 1, 4000)
    # true OA of N(0,1) and N(1,1) = 2 Φ(-1/2) = 0.6171; the KDEs are a little wider and noisy
    true_oa = 2 * 0.5 * math.erfc(0.5 / math.sqrt(2))
    assert true_oa == pytest.approx(0.6171, abs=1e-4)
    oa = overlapping_area(a, b)
    assert oa == pytest.approx(true_oa, abs=0.03)
    assert overlapping_area(b, a) == pytest.approx(oa, abs=1e-12)  # symmetric


def test_overlapping_area_edge_cases() -> None:
    assert overlapping_area([1.0], [1.0, 2.0]) is None  # n < 2
    assert overlapping_area([1.0, None, float("nan")], [1.0, 2.0]) is None  # undefined values dropped
    assert overlapping_area([], []) is None
    assert overlapping_area([3, 3, 3], [3, 3]) == 1.0  # two equal constants
    assert overlapping_area([3, 3, 3], [4, 4]) == 0.0  # two different constants
    # a constant sample becomes one kernel with the other sample's bandwidth: sitting at the other
    # sample's centre it overlaps much, far away it does not
    spread = np.random.default_rng(3).normal(size=200)
    near = overlapping_area([0.0] * 5, spread)
    far = overlapping_area([50.0] * 5, spread)
    assert 0.2 < near < 1.0 and far == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="grid_points"):
        overlapping_area([1, 2], [1, 2], grid_points=1)


def test_metric_overlaps_per_metric() -> None:
    rows = [{"npvi": float(v), "pitch_range": 1.0} for v in range(10)]
    oas = metric_overlaps(rows, rows)
    assert set(oas) == set(METRICS)
    assert oas["npvi"] == pytest.approx(1.0, abs=1e-3)
    assert oas["pitch_range"] == 1.0  # equal constants
    assert oas["hook_memorability"] is None  # undefined everywhere


# ---- fd_features ---------------------------------------------------------------------------------

CORNERS = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)], dtype=float)


def test_fd_features_of_identical_sets_is_zero() -> None:
    x = np.random.default_rng(4).normal(size=(50, 6))
    assert fd_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_features_of_shifted_sets_is_the_squared_shift() -> None:
    # Y = X + c: Ledoit–Wolf centres the data, so both shrunk covariances are the same Σ and the
    # trace term is Tr(Σ + Σ - 2Σ) = 0 whatever the shrinkage: FD = |c|^2 = 9 + 1 + 4 = 14
    x = np.random.default_rng(5).normal(size=(40, 3))
    assert fd_features(x, x + np.array([3.0, -1.0, 2.0])) == pytest.approx(14.0, abs=1e-8)


def test_fd_features_isotropic_by_hand() -> None:
    # corners of a square: mean 0, MLE covariance I (isotropic, so shrinkage toward mu I changes
    # nothing); 2 * corners + (3, 4): mean (3, 4), covariance 4I.
    # FD = 3^2 + 4^2 + Tr(I + 4I - 2 (4I)^(1/2)) = 25 + Tr(I) = 27
    assert fd_features(CORNERS, 2 * CORNERS + np.array([3.0, 4.0])) == pytest.approx(27.0)
    # 1-D: [0, 2] mean 1 var 1; [3, 7] mean 5 var 4: FD = (5-1)^2 + (1 - 2)^2 = 17
    assert fd_features([[0.0], [2.0]], [[3.0], [7.0]]) == pytest.approx(17.0)


def test_fd_features_uses_ledoit_wolf_shrinkage() -> None:
    # X = (±2, 0), (0, ±1): mean 0, MLE S = diag(2, 0.5), mu = Tr S / 2 = 1.25.
    # Ledoit–Wolf (sklearn): delta = |S - mu I|_F^2 / 2 = (0.75^2 + 0.75^2) / 2 = 0.5625;
    # beta = (Σ_k |x_k|^4 / n - |S|_F^2) / (p n) with Σ_k |x_k|^4 / n = (16 + 16 + 1 + 1) / 4 = 8.5,
    # |S|_F^2 = 4.25 -> beta = (8.5 - 4.25) / 8 = 0.53125 (< delta) -> shrinkage = 0.53125 / 0.5625
    # = 17/18 -> Σx = S / 18 + 17/18 * 1.25 I = diag(31/24, 29/24).
    # Against the corners (Σy = I, mean 0): FD = 31/24 + 29/24 + 2 - 2 (sqrt(31/24) + sqrt(29/24))
    x = np.array([(2, 0), (-2, 0), (0, 1), (0, -1)], dtype=float)
    expected = 60 / 24 + 2 - 2 * (math.sqrt(31 / 24) + math.sqrt(29 / 24))  # 0.02849
    unshrunk = 2.5 + 2 - 2 * (math.sqrt(2) + math.sqrt(0.5))  # 0.2574 with the plain covariance
    assert fd_features(x, CORNERS) == pytest.approx(expected, abs=1e-12)
    assert abs(expected - unshrunk) > 0.2


def test_fd_features_missing_values() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 3)), rng.normal(1.0, 1.0, size=(25, 3))
    base = fd_features(x[:, :2], y[:, :2])
    # a column undefined everywhere in one set is dropped
    x_nan = x.copy()
    x_nan[:, 2] = np.nan
    assert fd_features(x_nan, y) == pytest.approx(base)
    # a column with a single defined value in one set is dropped too
    x_nan[0, 2] = 1.0
    assert fd_features(x_nan, y) == pytest.approx(base)
    # scattered NaNs take their own set's column mean
    x_gap = x.copy()
    x_gap[[1, 4], 0] = np.nan
    x_filled = x.copy()
    x_filled[[1, 4], 0] = np.nanmean(x_gap[:, 0])
    assert fd_features(x_gap, y) == pytest.approx(fd_features(x_filled, y))


def test_fd_features_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same number of columns"):
        fd_features(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        fd_features(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no column"):
        fd_features(np.full((3, 2), np.nan), np.zeros((3, 2)))


# ---- reference_stats -----------------------------------------------------------------------------


def test_reference_stats_format_and_percentiles() -> None:
    rows = [{"npvi": v, "composite": c} for v, c in ((1.0, 0.5), (2.0, 0.7), (3.0, None), (4.0, 0.9), (None, 0.6))]
    q = np.full(12, 1 / 12)
    stats = reference_stats(rows, q, composite_mean=0.8)
    assert set(stats) == {"n_melodies", "metrics", "pitch_class_histogram", "composite_mean"}
    assert set(stats["metrics"]) == set(METRICS)
    assert stats["n_melodies"] == 5 and stats["composite_mean"] == 0.8
    assert stats["pitch_class_histogram"] == pytest.approx([1 / 12] * 12)
    s = stats["metrics"]["npvi"]
    assert set(s) == {"n", "mean", "std", "p10", "p25", "p50", "p75", "p90"}
    # defined values 1 2 3 4: mean 2.5; population std sqrt((2.25 + .25 + .25 + 2.25) / 4) = sqrt 1.25;
    # linear percentiles at rank (n - 1) q = 3q: p10 -> 0.3 -> 1.3, p25 -> 0.75 -> 1.75,
    # p50 -> 2.5, p75 -> 2.25 -> 3.25, p90 -> 2.7 -> 3.7
    assert s["n"] == 4 and s["mean"] == pytest.approx(2.5) and s["std"] == pytest.approx(math.sqrt(1.25))
    assert [s[k] for k in ("p10", "p25", "p50", "p75", "p90")] == pytest.approx([1.3, 1.75, 2.5, 3.25, 3.7])
    empty = stats["metrics"]["hook_memorability"]
    assert empty["n"] == 0 and empty["mean"] is None and empty["p50"] is None
    # the composite mean defaults to the mean of the defined composites: (.5 + .7 + .9 + .6) / 4
    assert reference_stats(rows, q)["composite_mean"] == pytest.approx(0.675)
    json.dumps(stats)  # JSON-ready
    with pytest.raises(ValueError, match="12"):
        reference_stats(rows, [0.5, 0.5])
