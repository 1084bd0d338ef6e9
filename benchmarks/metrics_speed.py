"""Evaluation-metrics speed: 1,000 16-bar rule-engine melodies through `score_many`.

Target (phase-2 evaluation): 1,000 melodies of 16 bars scored in <= 5 s on 2 cores.

Baseline, measured in the same run on the same machine: the same 13 metrics written as a
straightforward pure-Python loop over `Note` objects (`naive_score` below: Counter, per-note
`Melody.chord_at` + `parse_chord`, onset grids as Python sets, `statistics.pstdev`), on the first
100 melodies and extrapolated to 1,000. Both share `top_line` and `Melody` construction; the
baseline's values are checked against `score_many`'s (max absolute difference per metric), so the
comparison is between two implementations of the same definitions. Generating the melodies is not
timed. Every timing is the best of 3 runs. Also timed: `workers=2` (a process pool; at this size
process start-up and pickling cost more than they save) and the same melodies without their chord
tracks (chords inferred per bar, as for corpus melodies without annotation).

Run: `.venv/bin/python benchmarks/metrics_speed.py` (writes benchmarks/results/metrics_speed.json).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trance_assets.corpus.card import pitch_class_distribution  # noqa: E402
from trance_assets.evaluation.metrics import METRICS, composite, score_many, top_line  # noqa: E402
from trance_assets.music.melody import Melody  # noqa: E402
from trance_assets.music.synthetic import synthetic_melodies  # noqa: E402
from trance_assets.music.theory import parse_chord  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "metrics_speed.json"
TARGET_SECONDS = 5.0
COUNT, BASELINE_COUNT = 1000, 100


def _best_of(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ---- the baseline: the same definitions, one Python loop at a time ---------------------------------


def _cos_sets(a: set, b: set) -> float | None:
    if not a and not b:
        return None
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


def naive_score(m: Melody, q) -> dict:
    notes = top_line(m.notes)
    key = m.key_obj
    bars = m.n_bars
    n = len(notes)
    row = dict.fromkeys(METRICS)
    if n:
        counts = Counter(x.pitch for x in notes)
        row["pitch_entropy"] = -sum(c / n * math.log2(c / n) for c in counts.values()) + 0.0
        row["pitch_range"] = (max(x.pitch for x in notes) - min(x.pitch for x in notes)) / 12
        hits = total = 0
        for x in notes:
            span = m.chord_at(x.start)
            if span is not None:
                total += 1
                hits += (x.pitch % 12) in parse_chord(span.symbol).pcs
        row["chord_tone_ratio"] = hits / total if total else None
        onsets = [(math.floor(x.start * 4 + 0.5), x.pitch % 12) for x in notes]
        for size in (8, 16):
            chunks = bars // size
            if chunks >= 2:
                sets = [{(s - c * size * 16, pc) for s, pc in onsets if c * size * 16 <= s < (c + 1) * size * 16} for c in range(chunks)]
                sims = [_cos_sets(sets[i], sets[i + 1]) for i in range(chunks - 1)]
                sims = [v for v in sims if v is not None]
                row[f"self_similarity_{size}"] = sum(sims) / len(sims) if sims else None
        if n >= 2:
            row["stepwise_ratio"] = sum(abs(b.pitch - a.pitch) <= 2 for a, b in zip(notes, notes[1:])) / (n - 1)
        iois = [b.start - a.start for a, b in zip(notes, notes[1:])]
        if len(iois) >= 2:
            row["npvi"] = 100 / (len(iois) - 1) * sum(abs(a - b) / ((a + b) / 2) for a, b in zip(iois, iois[1:]))
        tonic = key.relative_minor_tonic
        hist = [0.0] * 12
        for x in notes:
            hist[(x.pitch - tonic) % 12] += x.duration
        tot = sum(hist)
        p = [h / tot + 1e-6 for h in hist]
        p = [v / sum(p) for v in p]
        row["kl_to_reference"] = sum(pi * math.log2(pi / qi) for pi, qi in zip(p, q))
        scale = key.scale_pcs()
        degree = {pc: i + 1 for i, pc in enumerate(scale)}
        if key.mode == "minor":
            degree[(key.tonic + 11) % 12] = 7
        if n >= 2:
            res = 0
            for a, b in zip(notes, notes[1:]):
                da, db = degree.get(a.pitch % 12), degree.get(b.pitch % 12)
                if (da, db) in ((7, 1), (4, 3), (2, 1)) and 1 <= abs(b.pitch - a.pitch) <= 2:
                    res += 1
            row["resolutions"] = res * 8 / bars
        minor = {(key.tonic + s) % 12 for s in (0, 2, 3, 5, 7, 8, 10, 11)}
        row["minor_adherence"] = sum(x.pitch % 12 in minor for x in notes) / n
        starts = [notes[0].start] + [b.start for a, b in zip(notes, notes[1:]) if b.start - a.end >= 1 - 1e-9]
        row["phrase_regularity"] = sum(min(s % 16, 16 - s % 16) <= 1 + 1e-9 for s in starts) / len(starts)
        if bars >= 8:
            hook = {(s, pc) for s, pc in onsets if s < 64}
            if hook:
                best = 0.0
                for start_bar in range(4, bars - 3):
                    lo = start_bar * 16
                    win = {(s - lo, pc) for s, pc in onsets if lo <= s < lo + 64}
                    best = max(best, _cos_sets(hook, win) or 0.0)
                row["hook_memorability"] = best
        row["register_consistency"] = max(0.0, 1 - statistics.pstdev([x.pitch for x in notes]) / 24)
    row["composite"] = composite(row)
    return row


def main() -> None:
    t0 = time.perf_counter()
    melodies = list(synthetic_melodies(COUNT, seed=3, bars_choices=(16,)))
    gen_s = time.perf_counter() - t0
    q = pitch_class_distribution([m.key for m in melodies], [m.pitches for m in melodies], [[n.duration for n in m.notes] for m in melodies])

    t_fast, rows = _best_of(lambda: score_many(melodies, q))
    t_pool, rows_pool = _best_of(lambda: score_many(melodies, q, workers=2))
    assert rows_pool == rows
    # the same melodies without their chord tracks: chords inferred per bar (the corpus case)
    bare = [dataclasses.replace(m, chords=()) for m in melodies]
    t_inferred, rows_inferred = _best_of(lambda: score_many(bare, q))
    assert all(r["chords_inferred"] for r in rows_inferred)
    t_naive, naive_rows = _best_of(lambda: [naive_score(m, q) for m in melodies[:BASELINE_COUNT]])

    diffs = {}
    for name in METRICS + ("composite",):
        pairs = [(a[name], b[name]) for a, b in zip(rows, naive_rows)]
        assert all((x is None) == (y is None) for x, y in pairs), name
        defined = [abs(x - y) for x, y in pairs if x is not None]
        diffs[name] = max(defined) if defined else None
    worst = max(v for v in diffs.values() if v is not None)

    naive_1000 = t_naive * COUNT / BASELINE_COUNT
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(), "numpy": np.__version__},
        "melodies": COUNT,
        "bars": 16,
        "mean_notes": round(statistics.mean(len(m.notes) for m in melodies), 1),
        "generation_seconds_untimed": round(gen_s, 2),
        "score_many_seconds": round(t_fast, 3),
        "melodies_per_s": round(COUNT / t_fast, 1),
        "score_many_workers2_seconds": round(t_pool, 3),
        "score_many_inferred_chords_seconds": round(t_inferred, 3),
        "target_seconds": TARGET_SECONDS,
        "target_met": t_fast <= TARGET_SECONDS,
        "baseline": {
            "what": "same 13 metrics + composite as a straightforward pure-Python loop over Note objects",
            "melodies_timed": BASELINE_COUNT,
            "seconds": round(t_naive, 3),
            "melodies_per_s": round(BASELINE_COUNT / t_naive, 1),
            "extrapolated_seconds_for_1000": round(naive_1000, 3),
            "speedup_of_score_many": round(naive_1000 / t_fast, 2),
            "max_abs_difference_vs_score_many": worst,
            "max_abs_difference_per_metric": diffs,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
