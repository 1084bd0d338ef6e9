"""The evaluation statistics against scipy on the same data and against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from trance_assets.evaluation.stats import (
    binomial_one_sided,
    cliffs_delta,
    holm,
    mann_whitney_u,
    matched_pairs_rank_biserial,
    paired_comparisons,
    reference_comparisons,
    wilcoxon_signed_rank,
)

A = [0.61, 0.72, 0.55, 0.80, 0.67, 0.74, 0.59, 0.70, 0.66, 0.77, 0.63, 0.71]
B = [0.58, 0.65, 0.57, 0.71, 0.60, 0.69, 0.59, 0.62, 0.64, 0.70, 0.66, 0.63]


# ---- Wilcoxon ---------------------------------------------------------------------------------


def test_wilcoxon_matches_scipy():
    w, p, n = wilcoxon_signed_rank(A, B)
    ref = st.wilcoxon(A, B, zero_method="wilcox", alternative="two-sided")
    assert n == len(A)
    assert w == pytest.approx(float(ref.statistic))
    assert p == pytest.approx(float(ref.pvalue))
    assert p < 0.05  # A is mostly higher


def test_wilcoxon_drops_missing_pairs_and_zero_differences():
    a = A + [None, 0.5, float("nan")]
    b = B + [0.4, None, 0.3]
    w, p, n = wilcoxon_signed_rank(a, b)
    assert n == len(A)  # the three incomplete pairs are gone
    assert (w, p) == pytest.approx(wilcoxon_signed_rank(A, B)[:2])
    # a zero difference (pair 7: 0.59 vs 0.59) is dropped by 'wilcox': same as scipy without that pair
    keep = [i for i in range(len(A)) if A[i] != B[i]]
    ref = st.wilcoxon([A[i] for i in keep], [B[i] for i in keep])
    assert p == pytest.approx(float(ref.pvalue)) and w == pytest.approx(float(ref.statistic))


def test_wilcoxon_degenerate_cases():
    assert wilcoxon_signed_rank([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == (0.0, 1.0, 3)
    assert wilcoxon_signed_rank([None, 1.0], [2.0, None]) == (None, None, 0)
    assert wilcoxon_signed_rank([], []) == (None, None, 0)
    with pytest.raises(ValueError, match="same length"):
        wilcoxon_signed_rank([1.0, 2.0], [1.0])


# ---- rank-biserial ----------------------------------------------------------------------------


def test_rank_biserial_hand_case():
    # d = a - b = [1, -2, 3, 0, 4]; zero dropped; |d| = 1,2,3,4 -> ranks 1,2,3,4
    # R+ = 1 + 3 + 4 = 8, R- = 2 -> r = (8 - 2) / 10 = 0.6
    a = [2, 1, 5, 7, 9]
    b = [1, 3, 2, 7, 5]
    assert matched_pairs_rank_biserial(a, b) == pytest.approx(0.6)
    assert matched_pairs_rank_biserial(b, a) == pytest.approx(-0.6)


def test_rank_biserial_ties_use_average_ranks():
    # d = [1, -1, 2]: |d| ranks 1.5, 1.5, 3 -> R+ = 4.5, R- = 1.5 -> r = 3 / 6 = 0.5
    assert matched_pairs_rank_biserial([1, 0, 2], [0, 1, 0]) == pytest.approx(0.5)


def test_rank_biserial_extremes_and_missing():
    assert matched_pairs_rank_biserial([2, 3, 4], [1, 1, 1]) == 1.0
    assert matched_pairs_rank_biserial([1, 1], [1, 1]) == 0.0
    assert matched_pairs_rank_biserial([None], [1.0]) is None


# ---- Holm -------------------------------------------------------------------------------------


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_passes_none_and_is_monotone():
    out = holm([0.5, None, 0.2, 0.9])
    # m = 3: 0.2*3 = 0.6, 0.5*2 = 1.0, 0.9*1 -> max(1.0, 0.9) = 1.0
    assert out[1] is None
    assert out == [pytest.approx(1.0), None, pytest.approx(0.6), pytest.approx(1.0)]
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0, 0.2, 30))
    adj = holm(p)
    order = np.argsort(p)
    assert all(np.diff(np.asarray(adj)[order]) >= 0)
    assert all(a >= q for a, q in zip(adj, p)) and max(adj) <= 1.0
    assert holm([]) == []


# ---- Mann-Whitney and Cliff's delta -----------------------------------------------------------


def test_mann_whitney_matches_scipy():
    x = [3.1, 2.4, 5.6, 4.4, 3.9, 4.8, 2.2]
    y = [1.9, 2.8, 2.1, 3.0, 1.5, 2.6, 3.3, 2.0, 2.5]
    u, p = mann_whitney_u(x, y)
    ref = st.mannwhitneyu(x, y, alternative="two-sided")
    assert u == pytest.approx(float(ref.statistic)) and p == pytest.approx(float(ref.pvalue))
    # U of the first sample: U1 + U2 = n * m
    u2, p2 = mann_whitney_u(y, x)
    assert u + u2 == pytest.approx(len(x) * len(y)) and p2 == pytest.approx(p)
    assert mann_whitney_u(x + [None, float("nan")], y) == pytest.approx((u, p))
    assert mann_whitney_u([], y) == (None, None)


def test_cliffs_delta_hand_cases():
    # a=[1,2,3] vs b=[2,2,2]: greater 3 (the 3s), less 3 (the 1s) -> 0
    assert cliffs_delta([1, 2, 3], [2, 2, 2]) == 0.0
    # a=[3,4] vs b=[1,3,5]: 3>1, 4>1, 4>3 -> 3 greater; 3<5, 4<5 -> 2 less; tie 3=3 -> (3-2)/6
    assert cliffs_delta([3, 4], [1, 3, 5]) == pytest.approx(1 / 6)
    assert cliffs_delta([5, 6], [1, 2]) == 1.0 and cliffs_delta([1, 2], [5, 6]) == -1.0
    assert cliffs_delta([None], [1.0]) is None


def test_cliffs_delta_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 10, 40).astype(float)
    b = rng.integers(0, 10, 55).astype(float)
    brute = np.sign(a[:, None] - b[None, :]).sum() / (a.size * b.size)
    assert cliffs_delta(list(a), list(b)) == pytest.approx(brute)


# ---- binomial ---------------------------------------------------------------------------------


def test_binomial_hand_case():
    # P(X >= 8), X ~ Bin(10, 0.5) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = (45 + 10 + 1) / 1024
    assert binomial_one_sided(8, 10) == pytest.approx(56 / 1024)
    assert binomial_one_sided(0, 10) == pytest.approx(1.0)
    assert binomial_one_sided(10, 10) == pytest.approx(1 / 1024)
    assert binomial_one_sided(2, 3, p=0.2) == pytest.approx(3 * 0.2**2 * 0.8 + 0.2**3)
    assert binomial_one_sided(0, 0) == 1.0
    with pytest.raises(ValueError):
        binomial_one_sided(11, 10)


# ---- tables -----------------------------------------------------------------------------------


def _three_configs():
    rng = np.random.default_rng(7)
    n = 20
    base = rng.normal(0.5, 0.1, n)
    return {
        "rules": {"pitch_entropy": list(base), "chord_tone_ratio": list(base * 0.8)},
        "model": {"pitch_entropy": list(base + 0.05 + rng.normal(0, 0.01, n)), "chord_tone_ratio": list(base * 0.8 + rng.normal(0, 0.05, n))},
        "random": {"pitch_entropy": list(base - 0.2 + rng.normal(0, 0.02, n)), "chord_tone_ratio": [None] * 3 + list(rng.uniform(0, 1, n - 3))},
    }


def test_paired_comparisons_three_configs_two_metrics():
    values = _three_configs()
    rows = paired_comparisons(values)
    assert len(rows) == 3 * 2
    pairs = [(r["metric"], r["a"], r["b"]) for r in rows]
    assert pairs == [
        ("pitch_entropy", "rules", "model"),
        ("pitch_entropy", "rules", "random"),
        ("pitch_entropy", "model", "random"),
        ("chord_tone_ratio", "rules", "model"),
        ("chord_tone_ratio", "rules", "random"),
        ("chord_tone_ratio", "model", "random"),
    ]
    # each row is the plain per-pair test ...
    for r in rows:
        a, b = values[r["a"]][r["metric"]], values[r["b"]][r["metric"]]
        w, p, n = wilcoxon_signed_rank(a, b)
        assert (r["W"], r["p"], r["n"]) == (w, p, n)
        assert r["rank_biserial"] == matched_pairs_rank_biserial(a, b)
        d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
        assert r["median_difference"] == pytest.approx(float(np.median(d)))
    # ... and Holm runs across all six tests, not per metric
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p"] for r in rows]))
    assert all(r["significant"] == (r["p_holm"] < 0.05) for r in rows)
    by = {(r["metric"], r["a"], r["b"]): r for r in rows}
    assert by[("pitch_entropy", "rules", "model")]["rank_biserial"] == -1.0  # model is always higher
    assert by[("pitch_entropy", "rules", "model")]["significant"]
    assert by[("chord_tone_ratio", "rules", "random")]["n"] == 17  # three missing values dropped


def test_paired_comparisons_missing_metric_and_length_mismatch():
    rows = paired_comparisons({"a": {"m": [1.0, 2.0, 3.0]}, "b": {"m": [0.0, 1.0, 1.0], "x": [1.0, 2.0, 3.0]}})
    assert len(rows) == 2
    x = next(r for r in rows if r["metric"] == "x")
    assert x["n"] == 0 and x["p"] is None and x["p_holm"] is None and x["significant"] is False
    m = next(r for r in rows if r["metric"] == "m")
    assert m["p_holm"] == m["p"]  # the only test with a p-value: m = 1
    with pytest.raises(ValueError, match="one value per prompt"):
        paired_comparisons({"a": {"m": [1.0, 2.0]}, "b": {"m": [1.0]}})


def test_reference_comparisons():
    rng = np.random.default_rng(3)
    ref = {"pitch_entropy": list(rng.normal(0.6, 0.1, 80)), "chord_tone_ratio": list(rng.uniform(0, 1, 80))}
    values = {
        "model": {"pitch_entropy": list(rng.normal(0.6, 0.1, 30)), "chord_tone_ratio": list(rng.uniform(0, 1, 30))},
        "random": {"pitch_entropy": list(rng.normal(0.3, 0.1, 30)) + [None], "chord_tone_ratio": list(rng.uniform(0, 1, 30))},
    }
    rows = reference_comparisons(values, ref)
    assert [(r["configuration"], r["metric"]) for r in rows] == [
        ("model", "pitch_entropy"),
        ("model", "chord_tone_ratio"),
        ("random", "pitch_entropy"),
        ("random", "chord_tone_ratio"),
    ]
    for r in rows:
        vals = [v for v in values[r["configuration"]][r["metric"]] if v is not None]
        ref_u = st.mannwhitneyu(vals, ref[r["metric"]], alternative="two-sided")
        assert r["U"] == pytest.approx(float(ref_u.statistic)) and r["p"] == pytest.approx(float(ref_u.pvalue))
        assert r["cliffs_delta"] == pytest.approx(cliffs_delta(vals, ref[r["metric"]]))
        assert (r["n"], r["m"]) == (30, 80)
    rnd = rows[2]
    assert rnd["cliffs_delta"] < -0.8 and rnd["p"] < 1e-6
    missing = reference_comparisons({"c": {"new_metric": [1.0, 2.0]}}, ref)[0]
    assert missing["m"] == 0 and missing["U"] is None and missing["p"] is None and missing["cliffs_delta"] is None
    assert not math.isnan(rows[0]["p_holm"])
