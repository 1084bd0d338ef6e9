"""Set-level comparison of melody sets (EVALUATION.md): overlapping area of per-metric KDEs, the
`fd_features` Fréchet distance of Gaussian fits, and the reference corpus's `reference_stats.json`.

Choices fixed here:

- **overlapping_area**: NaN / None / infinite values are dropped first; a sample with fewer than 2
  values gives None. Each sample gets scipy's `gaussian_kde` (Scott's rule); the common grid runs
  from the smallest value of both samples minus 3 bandwidths to the largest plus 3 bandwidths (the
  larger of the two kernel standard deviations), `grid_points` evenly spaced points; OA is the
  trapezoid integral of min(f, g), clipped to [0, 1]. A constant sample has no KDE of its own: it
  becomes one Gaussian kernel at its value with the *other* sample's bandwidth; two constant
  samples give 1.0 when their values are equal and 0.0 otherwise.
- **fd_features**: ‖μx − μy‖² + Tr(Σx + Σy − 2 (Σx Σy)^{1/2}), Σ by Ledoit–Wolf shrinkage
  (`sklearn.covariance.LedoitWolf`, centred data, the MLE covariance shrunk toward μ·I). A column
  with fewer than 2 defined values in either set is dropped (e.g. `self_similarity_16` on 16-bar
  melodies: undefined everywhere); the remaining NaNs are imputed with that set's own column mean
  (so each set's mean is the mean over its defined values). Tr((ΣxΣy)^{1/2}) is computed as
  Tr((Σx^{1/2} Σy Σx^{1/2})^{1/2}) with symmetric eigendecompositions; the result is floored at 0.
- **reference_stats**: statistics over the defined values of each metric; std is the population
  standard deviation (ddof = 0); percentiles by numpy's default linear interpolation.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .metrics import METRICS

PERCENTILES = (10, 25, 50, 75, 90)


def _finite(values) -> np.ndarray:
    out = np.array([np.nan if v is None else v for v in values], dtype=np.float64).ravel()
    return out[np.isfinite(out)]


def _gauss(grid: np.ndarray, center: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((grid - center) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def overlapping_area(a: Iterable, b: Iterable, grid_points: int = 512) -> float | None:
    """∫ min(KDE(a), KDE(b)) on one common grid, in [0, 1]; None when a sample has < 2 values.

    See the module docstring for the grid and for constant samples.
    """
    from scipy.stats import gaussian_kde

    if grid_points < 2:
        raise ValueError(f"grid_points must be >= 2, got {grid_points}")
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    const_a, const_b = bool(np.ptp(a) == 0), bool(np.ptp(b) == 0)
    if const_a and const_b:
        return 1.0 if a[0] == b[0] else 0.0
    kde_a = None if const_a else gaussian_kde(a)
    kde_b = None if const_b else gaussian_kde(b)
    bw = {k: float(np.sqrt(kde.covariance[0, 0])) for k, kde in (("a", kde_a), ("b", kde_b)) if kde is not None}
    h = max(bw.values())
    grid = np.linspace(min(a.min(), b.min()) - 3 * h, max(a.max(), b.max()) + 3 * h, grid_points)
    fa = _gauss(grid, a[0], bw["b"]) if const_a else kde_a(grid)
    fb = _gauss(grid, b[0], bw["a"]) if const_b else kde_b(grid)
    oa = float(np.trapezoid(np.minimum(fa, fb), grid))
    return min(1.0, max(0.0, oa))


def metric_overlaps(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping], metrics: Sequence[str] = METRICS) -> dict[str, float | None]:
    """`overlapping_area` per metric between two lists of scored rows (`score_many` output)."""
    return {m: overlapping_area([r.get(m) for r in rows_a], [r.get(m) for r in rows_b]) for m in metrics}


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _impute(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    x = x[:, keep].copy()
    col_mean = np.nanmean(x, axis=0)
    rows, cols = np.nonzero(np.isnan(x))
    x[rows, cols] = col_mean[cols]
    return x


def fd_features(X, Y) -> float:
    """Fréchet distance between Gaussian fits (Ledoit–Wolf covariances) of two feature sets.

    X: (n, d), Y: (m, d), rows = melodies (`metrics.feature_vector`), NaN = undefined. Columns with
    fewer than 2 defined values in either set are dropped; other NaNs take their set's column mean.
    Raises ValueError on mismatched shapes, fewer than 2 rows, or no usable column.
    """
    from sklearn.covariance import LedoitWolf

    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"fd_features needs two 2-D arrays with the same number of columns, got {X.shape} and {Y.shape}")
    if len(X) < 2 or len(Y) < 2:
        raise ValueError(f"fd_features needs at least 2 rows in each set, got {len(X)} and {len(Y)}")
    X = np.where(np.isinf(X), np.nan, X)
    Y = np.where(np.isinf(Y), np.nan, Y)
    keep = (np.sum(~np.isnan(X), axis=0) >= 2) & (np.sum(~np.isnan(Y), axis=0) >= 2)
    if not keep.any():
        raise ValueError("fd_features: no column has at least 2 defined values in both sets")
    X, Y = _impute(X, keep), _impute(Y, keep)
    mu_x, mu_y = X.mean(axis=0), Y.mean(axis=0)
    sx = LedoitWolf().fit(X).covariance_
    sy = LedoitWolf().fit(Y).covariance_
    root_x = _psd_sqrt(sx)
    inner = root_x @ sy @ root_x
    tr_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None))))
    fd = float(np.sum((mu_x - mu_y) ** 2) + np.trace(sx) + np.trace(sy) - 2.0 * tr_sqrt)
    return max(0.0, fd)


def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"n": 0, "mean": None, "std": None, **{f"p{q}": None for q in PERCENTILES}}
    pct = np.percentile(values, PERCENTILES)
    return {
        "n": int(len(values)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        **{f"p{q}": float(v) for q, v in zip(PERCENTILES, pct)},
    }


def reference_stats(scored_rows: Sequence[Mapping], pc_distribution, composite_mean: float | None = None) -> dict:
    """`reference_stats.json` content (JSON-ready: plain floats and lists).

    {"n_melodies", "metrics": {metric: {n, mean, std, p10, p25, p50, p75, p90}} for every metric in
    `METRICS` (over its defined values; all None when it has none), "pitch_class_histogram": Q (12
    floats), "composite_mean"}. `composite_mean` defaults to the mean of the rows' defined
    `composite` values (None when there is none).
    """
    q = np.asarray(pc_distribution, dtype=np.float64)
    if q.shape != (12,):
        raise ValueError(f"pc_distribution must have 12 bins, got shape {q.shape}")
    if composite_mean is None:
        comp = _finite([r.get("composite") for r in scored_rows])
        composite_mean = float(comp.mean()) if len(comp) else None
    return {
        "n_melodies": len(scored_rows),
        "metrics": {m: _stats(_finite([r.get(m) for r in scored_rows])) for m in METRICS},
        "pitch_class_histogram": [float(x) for x in q],
        "composite_mean": None if composite_mean is None else float(composite_mean),
    }
