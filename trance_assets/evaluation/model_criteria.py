"""The phase-2 success criteria of the trained models, measured as plain, JSON-able rows.

A *criterion row* is ``{"criterion": str, "value": float | None, "threshold": str, "passed": bool,
"detail": str}``. A criterion that cannot be measured (too few points, no defined metric value, an
empty set) is never an exception: its value is None, it has ``passed`` False and the detail says why.

Criteria (each function documents its exact definition):

- training curves (`loss_criteria`): the validation loss decreases, plateaus, and stays close to the
  training loss;
- generation (`generation_criteria`): the fine-tuned model beats the base one on chord-tone ratio
  (by at least 10 percentage points) and on 8-bar self-similarity, and its pitch-class histogram
  looks minor (`pc_minor_likeness`);
- MusicVAE (`vae_reconstruction`, `vae_interpolation`, `vae_variations_in_key`): held-out
  reconstruction accuracy, no garbage among interpolation intermediates (every one passes the
  corpus quality filter), and latent-noise variations that stay in key.

Comparisons against a threshold allow a float slack of 1e-12, so a value that equals its threshold
on paper (0.06 / 3.0 against 0.02) is not failed by rounding.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..corpus.card import pitch_class_distribution
from ..generation.models import events_to_notes
from ..models.musicvae import NUM_SPECIAL_CLASSES, classes_to_events
from ..music.analysis import _KK_MAJOR, _KK_MINOR, scale_compliance
from ..music.melody import Melody
from ..music.quality import QualityThresholds, check_melody
from ..music.theory import parse_key
from .metrics import score_many

__all__ = [
    "GENERATION_METRICS",
    "criteria_table",
    "criterion",
    "generation_criteria",
    "loss_criteria",
    "pc_minor_likeness",
    "vae_interpolation",
    "vae_interpolation_row",
    "vae_reconstruction",
    "vae_reconstruction_row",
    "vae_variations_in_key",
    "vae_variations_row",
]

_SLACK = 1e-12  # float slack in threshold comparisons
STEPS_PER_BAR = 16  # 16th-note steps per 4/4 bar (the models' event grid)
RECONSTRUCT_BATCH = 64

GENERATION_METRICS: tuple[str, ...] = (
    "chord_tone_ratio",
    "self_similarity_8",
    "minor_adherence",
    "composite",
    "pitch_entropy",
)


# ---- rows ----------------------------------------------------------------------------------------


def criterion(name: str, value: float | None, threshold: str, passed: bool, detail: str = "") -> dict:
    """One criterion row; an unmeasurable value (None or NaN) always has ``passed`` False."""
    if value is not None:
        value = float(value)
        if math.isnan(value):
            value = None
    return {
        "criterion": name,
        "value": value,
        "threshold": threshold,
        "passed": bool(passed) and value is not None,
        "detail": detail,
    }


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


# ---- 1. training curves --------------------------------------------------------------------------


def _curve_points(curve: Iterable[Sequence]) -> list[tuple[float, float | None, float | None]]:
    pts = []
    for row in curve:
        step, train, val = row[0], row[1], row[2]
        pts.append((float(step), None if train is None else float(train), None if val is None else float(val)))
    pts.sort(key=lambda p: p[0])
    return pts


def loss_criteria(
    curve: Iterable[Sequence],
    *,
    stopped_early: bool,
    plateau_window: int = 3,
    plateau_tolerance: float = 0.02,
    max_gap_ratio: float = 0.25,
) -> list[dict]:
    """Three rows about a training curve of ``(step, train_loss or None, val_loss)`` rows.

    Rows are sorted by step; rows whose validation loss is None are left out of the validation rows.

    - "validation loss decreases": (v0 − min v) / v0, v0 the first validation loss (step 0); passed
      when > 0. Needs >= 2 validation points and v0 > 0.
    - "validation loss plateaus": over the last ``plateau_window + 1`` validation losses (all of
      them when fewer and training stopped early), (max − min) / max; passed when training stopped
      early or the value is <= ``plateau_tolerance``. Needs ``plateau_window + 1`` points (2 when
      stopped early) and max > 0.
    - "train/validation gap": val − train at the last row that has a training loss (and a
      validation loss); passed when <= ``max_gap_ratio`` × |val| (a negative gap passes).
    """
    if plateau_window < 1:
        raise ValueError(f"plateau_window must be >= 1, got {plateau_window}")
    pts = _curve_points(curve)
    vals = [v for _, _, v in pts if v is not None]
    rows = []

    # decrease
    name = "validation loss decreases"
    threshold = "(first − best) / first > 0"
    if len(vals) < 2:
        rows.append(criterion(name, None, threshold, False, f"needs >= 2 validation points, got {len(vals)}"))
    elif vals[0] <= 0:
        rows.append(criterion(name, None, threshold, False, f"first validation loss is {vals[0]:g}, not > 0"))
    else:
        best = min(vals)
        dec = (vals[0] - best) / vals[0]
        rows.append(criterion(name, dec, threshold, dec > 0, f"first {vals[0]:.4g} → best {best:.4g} over {len(vals)} evaluations"))

    # plateau
    name = "validation loss plateaus"
    need = plateau_window + 1
    threshold = f"stopped early, or (max − min) / max <= {plateau_tolerance:g} over the last {need} evaluations"
    window = vals[-need:]
    if len(vals) < need and not (stopped_early and len(vals) >= 2):
        why = f"needs >= {need} validation points, got {len(vals)}"
        if stopped_early:
            why = f"stopped early, but needs >= 2 validation points, got {len(vals)}"
        rows.append(criterion(name, None, threshold, False, why))
    elif max(window) <= 0:
        rows.append(criterion(name, None, threshold, False, f"largest validation loss in the window is {max(window):g}, not > 0"))
    else:
        change = (max(window) - min(window)) / max(window)
        flat = change <= plateau_tolerance + _SLACK
        if stopped_early:
            detail = f"early stopping fired; relative change {change:.4g} over the last {len(window)} evaluations"
        elif flat:
            detail = f"relative change {change:.4g} <= {plateau_tolerance:g} over the last {len(window)} evaluations"
        else:
            detail = f"relative change {change:.4g} > {plateau_tolerance:g} over the last {len(window)} evaluations, and no early stop"
        rows.append(criterion(name, change, threshold, stopped_early or flat, detail))

    # gap
    name = "train/validation gap"
    threshold = f"gap <= {max_gap_ratio * 100:g}% of the validation loss"
    paired = [(s, t, v) for s, t, v in pts if t is not None and v is not None]
    if not paired:
        rows.append(criterion(name, None, threshold, False, "no evaluation with both a training and a validation loss"))
    else:
        step, train, val = paired[-1]
        gap = val - train
        limit = max_gap_ratio * abs(val)
        rows.append(
            criterion(name, gap, threshold, gap <= limit + _SLACK, f"step {step:g}: val {val:.4g} − train {train:.4g}; limit {limit:.4g}")
        )
    return rows


# ---- 2. pitch-class histogram against the minor / major profiles ---------------------------------


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den <= 1e-15:
        return None
    return float(np.dot(a, b) / den)


def pc_minor_likeness(melodies: Sequence[Melody]) -> dict:
    """Does the pooled pitch-class histogram look minor rather than major?

    P = `corpus.card.pitch_class_distribution` of all notes (duration-weighted; rotated so that the
    relative minor tonic of each melody's key is 0). r_minor = Pearson(P, KK minor profile, tonic at
    0); r_major = Pearson(P, KK major profile rolled by 3: the relative major's tonic sits at 3 in
    this frame). ``minor_like`` = r_minor > r_major. Without notes P is uniform, the correlations are
    undefined (None) and ``minor_like`` is False.
    """
    melodies = list(melodies)
    p = pitch_class_distribution(
        [m.key for m in melodies],
        [[n.pitch for n in m.notes] for m in melodies],
        [[n.duration for n in m.notes] for m in melodies],
    )
    has_notes = any(m.notes for m in melodies)
    r_minor = _pearson(p, _KK_MINOR) if has_notes else None
    r_major = _pearson(p, np.roll(_KK_MAJOR, 3)) if has_notes else None
    return {
        "histogram": [float(x) for x in p],
        "r_minor": r_minor,
        "r_major": r_major,
        "minor_like": bool(r_minor is not None and r_major is not None and r_minor > r_major),
    }


# ---- 3. base vs fine-tuned generations -----------------------------------------------------------


def _means(scored: Sequence[Mapping]) -> dict:
    out = {}
    for name in GENERATION_METRICS:
        vals = [float(r[name]) for r in scored if r.get(name) is not None and not math.isnan(float(r[name]))]
        out[name] = float(np.mean(vals)) if vals else None
    return out


def _diff_row(name: str, threshold: str, metric: str, base: Mapping, tuned: Mapping, ok) -> dict:
    b, t = base[metric], tuned[metric]
    if b is None or t is None:
        missing = " and ".join(side for side, v in (("base", b), ("fine-tuned", t)) if v is None)
        return criterion(name, None, threshold, False, f"no defined {metric} for {missing}")
    d = t - b
    return criterion(name, d, threshold, ok(d), f"base {b:.4g} → fine-tuned {t:.4g}")


def generation_criteria(
    base_melodies: Sequence[Melody],
    tuned_melodies: Sequence[Melody],
    *,
    min_chord_tone_gain: float = 0.10,
) -> dict:
    """Base vs fine-tuned generations for the same prompts.

    Both sets are scored with `metrics.score_many`; ``base`` / ``tuned`` hold the mean of each of
    `GENERATION_METRICS` over the melodies where it is defined (None when it is nowhere defined), and
    ``n_base`` / ``n_tuned`` the set sizes. ``rows``:

    - chord-tone ratio: tuned mean − base mean >= ``min_chord_tone_gain`` (0.10 = 10 pp);
    - the fine-tuned pitch-class histogram resembles minor (`pc_minor_likeness`; value r_minor);
    - 8-bar self-similarity: tuned mean − base mean > 0 (needs melodies of >= 16 bars).
    """
    base_melodies, tuned_melodies = list(base_melodies), list(tuned_melodies)
    base = _means(score_many(base_melodies))
    tuned = _means(score_many(tuned_melodies))
    pp = min_chord_tone_gain * 100
    rows = [
        _diff_row(
            f"chord-tone ratio: fine-tuned >= base + {pp:g} pp",
            f"difference >= {min_chord_tone_gain:g}",
            "chord_tone_ratio",
            base,
            tuned,
            lambda d: d >= min_chord_tone_gain - _SLACK,
        )
    ]
    like = pc_minor_likeness(tuned_melodies)
    name = "pitch-class histogram resembles minor (fine-tuned)"
    threshold = "r_minor > r_major (Krumhansl–Kessler profiles)"
    if like["r_minor"] is None or like["r_major"] is None:
        rows.append(criterion(name, None, threshold, False, "no fine-tuned notes (or a flat histogram): correlation undefined"))
    else:
        detail = f"r_minor {like['r_minor']:.4f}, r_major {like['r_major']:.4f}"
        rows.append(criterion(name, like["r_minor"], threshold, like["minor_like"], detail))
    rows.append(
        _diff_row("8-bar self-similarity increases", "difference > 0", "self_similarity_8", base, tuned, lambda d: d > 0)
    )
    return {"base": base, "tuned": tuned, "n_base": len(base_melodies), "n_tuned": len(tuned_melodies), "rows": rows}


# ---- 4-6. MusicVAE -------------------------------------------------------------------------------


def _classes_to_melody(classes, *, key: str, bpm: float, steps: int, transpose: int = 0) -> Melody:
    notes = events_to_notes(classes_to_events(classes), transpose=transpose)
    return Melody(notes=tuple(notes), bpm=float(bpm), key=key, chords=(), bars=steps // STEPS_PER_BAR)


def vae_reconstruction(model, x: np.ndarray) -> dict:
    """Greedy reconstruction (encoder mean → argmax decode) of held-out class rows ``x`` [N, steps].

    ``accuracy``: share of all steps reconstructed exactly; ``note_on_accuracy``: the same over the
    steps whose input class is a note-on (class >= 2; None without any); ``melodies_exact``: share of
    rows reconstructed exactly. All None when N == 0.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.size == 0:
        return {"n": 0, "accuracy": None, "note_on_accuracy": None, "melodies_exact": None}
    if x.ndim != 2:
        raise ValueError(f"x must be [N, steps] classes, got shape {x.shape}")
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), RECONSTRUCT_BATCH):
            rec = model.reconstruct(torch.as_tensor(x[i : i + RECONSTRUCT_BATCH]))
            parts.append(rec.detach().cpu().numpy().astype(np.int64))
    rec = np.concatenate(parts, axis=0)
    same = rec == x
    on = x >= NUM_SPECIAL_CLASSES
    return {
        "n": int(len(x)),
        "accuracy": float(same.mean()),
        "note_on_accuracy": float(same[on].mean()) if on.any() else None,
        "melodies_exact": float(same.all(axis=1).mean()),
    }


def vae_reconstruction_row(result: Mapping, min_accuracy: float = 0.5) -> dict:
    name = "VAE reconstruction accuracy (held-out)"
    threshold = f"step accuracy >= {min_accuracy:g}"
    acc = result.get("accuracy")
    if acc is None:
        return criterion(name, None, threshold, False, f"no held-out melodies (n = {result.get('n', 0)})")
    detail = (
        f"n {result.get('n')}; note-on accuracy {_fmt(result.get('note_on_accuracy'))}; "
        f"melodies exact {_fmt(result.get('melodies_exact'))}"
    )
    return criterion(name, acc, threshold, acc >= min_accuracy - _SLACK, detail)


def vae_interpolation(
    model,
    x0: np.ndarray,
    x1: np.ndarray,
    *,
    key: str,
    bpm: float,
    n_intermediates: int = 10,
    thresholds: QualityThresholds,
    transpose: int = 0,
) -> dict:
    """Greedy slerp interpolation between two class rows [steps]; the endpoints are dropped.

    Each intermediate becomes a Melody (`generation.models.events_to_notes`, transposed by
    ``transpose`` semitones, lead register; ``key``, ``bpm``, ``steps // 16`` bars, no chords) and
    must pass `music.quality.check_melody` with ``thresholds``. ``failures`` lists
    ``"intermediate i/n: <reason>"`` (i from 1). ``all_pass`` needs at least one intermediate.
    """
    if n_intermediates < 0:
        raise ValueError(f"n_intermediates must be >= 0, got {n_intermediates}")
    x0 = np.asarray(x0, dtype=np.int64).reshape(-1)
    x1 = np.asarray(x1, dtype=np.int64).reshape(-1)
    steps = int(x0.shape[0])
    with torch.no_grad():
        classes = model.interpolate(torch.as_tensor(x0[None]), torch.as_tensor(x1[None]), n_intermediates + 2, greedy=True)
    classes = classes.detach().cpu().numpy()[1:-1]
    passed, failures = 0, []
    for i, row in enumerate(classes, start=1):
        m = _classes_to_melody(row, key=key, bpm=bpm, steps=steps, transpose=transpose)
        report = check_melody(m, thresholds)
        if report.passed:
            passed += 1
        else:
            failures.append(f"intermediate {i}/{n_intermediates}: {report.reason()}")
    return {
        "intermediates": int(n_intermediates),
        "passed": passed,
        "failures": failures,
        "all_pass": n_intermediates > 0 and passed == n_intermediates,
    }


def vae_interpolation_row(result: Mapping) -> dict:
    name = "interpolation has no garbage intermediates"
    threshold = "every intermediate passes the corpus quality filter"
    n = int(result.get("intermediates") or 0)
    if n <= 0:
        return criterion(name, None, threshold, False, "no intermediates")
    share = result["passed"] / n
    failures = list(result.get("failures") or [])
    detail = f"{result['passed']}/{n} pass"
    if failures:
        detail += "; " + "; ".join(failures[:3]) + (f"; … {len(failures) - 3} more" if len(failures) > 3 else "")
    return criterion(name, share, threshold, bool(result.get("all_pass")), detail)


def vae_variations_in_key(
    model,
    x: np.ndarray,
    *,
    key: str,
    bpm: float,
    noise_scale: float = 0.2,
    n: int = 8,
    seed: int = 0,
    min_scale_compliance: float = 0.9,
    transpose: int = 0,
) -> dict:
    """``n`` greedy variations (z = mu + noise_scale · N(0, I), noise from a generator seeded with
    ``seed``) of one class row [steps]; each as a Melody (as in `vae_interpolation`) scored with
    `music.analysis.scale_compliance` against ``key`` (None for a variation without notes, which is
    not in key). ``in_key`` counts compliance >= ``min_scale_compliance``; ``all_in_key`` needs n > 0.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    steps = int(x.shape[0])
    key_obj = parse_key(key)
    compliance: list[float | None] = []
    if n > 0:
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            classes = model.variations(torch.as_tensor(x[None]), n, noise_scale=noise_scale, generator=gen, greedy=True)
        for row in classes.detach().cpu().numpy():
            m = _classes_to_melody(row, key=key, bpm=bpm, steps=steps, transpose=transpose)
            c = scale_compliance(m.notes, key_obj)
            compliance.append(None if c is None else float(c))
    in_key = sum(1 for c in compliance if c is not None and c >= min_scale_compliance - _SLACK)
    return {
        "n": int(n),
        "noise_scale": float(noise_scale),
        "min_scale_compliance": float(min_scale_compliance),
        "compliance": compliance,
        "in_key": in_key,
        "all_in_key": n > 0 and in_key == n,
    }


def vae_variations_row(result: Mapping) -> dict:
    scale = result.get("noise_scale", 0.2)
    min_c = result.get("min_scale_compliance", 0.9)
    name = f"variations at noise_scale {scale:g} stay in key"
    threshold = f"every variation has scale compliance >= {min_c:g}"
    vals = [c for c in result.get("compliance") or [] if c is not None]
    if not vals:
        return criterion(name, None, threshold, False, "no variation with notes")
    n = int(result.get("n") or 0)
    detail = f"{result.get('in_key')}/{n} in key; min compliance {min(vals):.3g}"
    return criterion(name, float(np.mean(vals)), threshold, bool(result.get("all_in_key")), detail)


# ---- 7. table ------------------------------------------------------------------------------------


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def criteria_table(rows: Sequence[Mapping]) -> str:
    """A markdown table of criterion rows: criterion | value | threshold | passed (✅/❌) | detail."""
    lines = ["| criterion | value | threshold | passed | detail |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [
            _cell(r.get("criterion")),
            _cell(r.get("value")),
            _cell(r.get("threshold")),
            "✅" if r.get("passed") else "❌",
            _cell(r.get("detail", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
