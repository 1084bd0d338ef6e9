"""The statistics of the evaluation (docs/EVALUATION.md, "Statistics"): plain functions over lists.

* **Paired** (configurations on the same prompt set; the outputs for prompt i are a pair):
  `wilcoxon_signed_rank` (two-sided; zero differences dropped, the 'wilcox' method), effect size
  `matched_pairs_rank_biserial`, and `paired_comparisons`, which runs every metric x unordered pair of
  configurations and applies `holm` across ALL of those tests together.
* **Independent** (a configuration against the reference corpus): `mann_whitney_u` (two-sided) and
  `cliffs_delta`; `reference_comparisons` runs every configuration x metric.
* **Listening**: `binomial_one_sided`, P(X >= wins) under Binomial(n, p).

Missing values: a value that is None or NaN (a metric that could not be computed for an output) is
dropped - for paired tests the whole pair goes, for independent samples just the value. A test with
nothing left to test returns None for its p-value (and statistic); `holm` passes None through.

Directions: differences are `a - b` (first configuration minus second); a positive rank-biserial r or
Cliff's delta means the first argument tends to be larger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from scipy import stats as _st

ALPHA = 0.05

Value = float | int | None


# ---- helpers ----------------------------------------------------------------------------------


def _as_float_array(values: Sequence[Value]) -> np.ndarray:
    """float64 array with None -> NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _finite(values: Sequence[Value]) -> np.ndarray:
    x = _as_float_array(values)
    return x[~np.isnan(x)]


def _complete_pairs(a: Sequence[Value], b: Sequence[Value]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a[i], b[i]) where neither value is None/NaN. Raises ValueError on unequal lengths."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    x, y = _as_float_array(a), _as_float_array(b)
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _is_missing(p) -> bool:
    return p is None or (isinstance(p, float) and math.isnan(p))


# ---- paired tests -----------------------------------------------------------------------------


def wilcoxon_signed_rank(a: Sequence[Value], b: Sequence[Value]) -> tuple[float | None, float | None, int]:
    """Two-sided Wilcoxon signed-rank test of the paired samples a, b: (statistic, p_value, n_used).

    `n_used` is the number of complete pairs (neither value None/NaN). Zero differences are dropped
    ('wilcox'); when every difference is zero the result is (0.0, 1.0, n_used). With no complete pair
    it is (None, None, 0). The statistic is scipy's two-sided one, min(R+, R-).
    """
    x, y = _complete_pairs(a, b)
    n = int(x.size)
    if n < 1:
        return None, None, 0
    if not np.any(x - y != 0):
        return 0.0, 1.0, n
    res = _st.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    p = float(res.pvalue)
    return float(res.statistic), (1.0 if math.isnan(p) else min(p, 1.0)), n


def matched_pairs_rank_biserial(a: Sequence[Value], b: Sequence[Value]) -> float | None:
    """Matched-pairs rank-biserial correlation r = (R+ - R-) / (R+ + R-), in -1..1.

    Ranks are those of |a - b| over the non-zero differences (average ranks for ties); R+ sums the
    ranks of positive differences (a > b). None when there is no complete pair; 0.0 when every
    difference is zero (no effect).
    """
    x, y = _complete_pairs(a, b)
    if x.size == 0:
        return None
    d = x - y
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = _st.rankdata(np.abs(d), method="average")
    r_plus = float(ranks[d > 0].sum())
    r_minus = float(ranks[d < 0].sum())
    return (r_plus - r_minus) / (r_plus + r_minus)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m non-missing p-values sorted ascending p(1) <= ... <= p(m), the adjusted value of p(k)
    is min(1, max_{j<=k} (m - j + 1) * p(j)) (step-down, so monotone in the sorted order). Entries
    that are None (or NaN) are passed through unchanged and do not count towards m.
    """
    out: list[float | None] = list(pvalues)
    idx = [i for i, p in enumerate(pvalues) if not _is_missing(p)]
    m = len(idx)
    order = sorted(idx, key=lambda i: float(pvalues[i]))  # stable: ties keep input order
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, (m - k) * float(pvalues[i]))
        out[i] = min(1.0, running)
    return out


# ---- independent samples ----------------------------------------------------------------------


def mann_whitney_u(a: Sequence[Value], b: Sequence[Value]) -> tuple[float | None, float | None]:
    """Two-sided Mann-Whitney U test: (U of the first sample, p). (None, None) if a sample is empty."""
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return None, None
    res = _st.mannwhitneyu(x, y, alternative="two-sided")
    p = float(res.pvalue)
    return float(res.statistic), (1.0 if math.isnan(p) else min(p, 1.0))


def cliffs_delta(a: Sequence[Value], b: Sequence[Value]) -> float | None:
    """Cliff's delta = (#(a_i > b_j) - #(a_i < b_j)) / (n * m), in -1..1; None if a sample is empty.

    Vectorised without the n x m matrix: with b sorted, #(b < a_i) and #(b > a_i) come from two
    `searchsorted` calls, so large reference corpora cost O((n + m) log m).
    """
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return None
    ys = np.sort(y)
    below = np.searchsorted(ys, x, side="left")  # b_j < a_i
    above = ys.size - np.searchsorted(ys, x, side="right")  # b_j > a_i
    return float((below.sum() - above.sum()) / (x.size * ys.size))


# ---- listening --------------------------------------------------------------------------------


def binomial_one_sided(wins: int, n: int, p: float = 0.5) -> float:
    """P(X >= wins) for X ~ Binomial(n, p): the one-sided test of H1 "the win rate is above p".

    n = 0 gives 1.0 (no evidence). Raises ValueError unless 0 <= wins <= n and 0 <= p <= 1.
    """
    wins, n = int(wins), int(n)
    if n < 0 or not 0 <= wins <= n:
        raise ValueError(f"need 0 <= wins <= n, got wins={wins}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in 0..1, got {p}")
    if n == 0:
        return 1.0
    return float(_st.binomtest(wins, n, p, alternative="greater").pvalue)


# ---- tables -----------------------------------------------------------------------------------


def _metric_names(tables: Sequence[Mapping[str, Sequence[Value]]]) -> list[str]:
    """Metric names in order of first appearance across the tables."""
    seen: dict[str, None] = {}
    for t in tables:
        for name in t:
            seen.setdefault(name, None)
    return list(seen)


def paired_comparisons(values: Mapping[str, Mapping[str, Sequence[Value]]], alpha: float = ALPHA) -> list[dict]:
    """Every metric x unordered pair of configurations, Holm-adjusted across all of those tests.

    `values[config][metric]` is a list with one value per prompt (index i = prompt i in every
    configuration, so lists of one metric must have equal lengths; None/NaN = not computed, and the
    pair is dropped). Configuration pairs follow the order of `values` (a before b), metrics their
    first appearance; a metric a configuration lacks counts as all-missing (n = 0, p None).

    One dict per test: metric, a, b (the two configuration names), n (complete pairs), n_nonzero
    (pairs with a non-zero difference, the ones Wilcoxon ranks), median_difference (median of a - b), W, p,
    rank_biserial (positive: a tends higher), p_holm (Holm over every row of the result), and
    significant (p_holm < alpha; False when p is None).
    """
    configs = list(values)
    metrics = _metric_names([values[c] for c in configs])
    rows: list[dict] = []
    for metric in metrics:
        for ca, cb in combinations(configs, 2):
            a = values[ca].get(metric)
            b = values[cb].get(metric)
            if a is None and b is None:
                a = b = []
            elif a is None:
                a = [None] * len(b)
            elif b is None:
                b = [None] * len(a)
            if len(a) != len(b):
                raise ValueError(
                    f"metric {metric!r}: {ca!r} has {len(a)} values and {cb!r} has {len(b)}; "
                    "paired comparisons need one value per prompt in every configuration"
                )
            x, y = _complete_pairs(a, b)
            d = x - y
            w, p, n = wilcoxon_signed_rank(a, b)
            rows.append(
                {
                    "metric": metric,
                    "a": ca,
                    "b": cb,
                    "n": n,
                    "n_nonzero": int(np.count_nonzero(d)),
                    "median_difference": float(np.median(d)) if d.size else None,
                    "W": w,
                    "p": p,
                    "rank_biserial": matched_pairs_rank_biserial(a, b),
                }
            )
    return _with_holm(rows, alpha)


def _with_holm(rows: list[dict], alpha: float) -> list[dict]:
    """Add `p_holm` (Holm across every row) and `significant` (p_holm < alpha) to test rows."""
    adjusted = holm([r["p"] for r in rows])
    for r, ph in zip(rows, adjusted):
        r["p_holm"] = ph
        r["significant"] = ph is not None and ph < alpha
    return rows


def reference_comparisons(
    values: Mapping[str, Mapping[str, Sequence[Value]]],
    reference: Mapping[str, Sequence[Value]],
    alpha: float = ALPHA,
) -> list[dict]:
    """Each configuration x metric against the reference corpus (independent samples).

    Metrics: those of the configuration, in its order (a metric missing from `reference` gives
    m = 0 and None results). One dict per test: configuration, metric, n (the configuration's finite values),
    m (the reference's), median (configuration), median_reference, U (of the configuration), p
    (two-sided Mann-Whitney), cliffs_delta (positive: the configuration tends higher), and - an
    addition for convenience - p_holm (Holm across all rows) and significant (p_holm < alpha).
    """
    rows: list[dict] = []
    for config, table in values.items():
        for metric, vals in table.items():
            ref = reference.get(metric, [])
            x, y = _finite(vals), _finite(ref)
            u, p = mann_whitney_u(x, y)
            rows.append(
                {
                    "configuration": config,
                    "metric": metric,
                    "n": int(x.size),
                    "m": int(y.size),
                    "median": float(np.median(x)) if x.size else None,
                    "median_reference": float(np.median(y)) if y.size else None,
                    "U": u,
                    "p": p,
                    "cliffs_delta": cliffs_delta(x, y),
                }
            )
    return _with_holm(rows, alpha)
