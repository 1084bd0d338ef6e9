"""The benchmark: every configuration generates for every prompt; per-melody metrics, set-level
comparison with the reference corpus, paired tests between configurations, tests against the
reference, plagiarism flags, the composite as a share of the reference's, and the phase gate.

`run_benchmark` returns plain data (`BenchmarkResult`); `report.py` renders it.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..generation.base import Configuration, Prompt
from ..music.melody import Melody
from .metrics import METRICS, feature_vector, pitch_class_vector, score_many
from .plagiarism import THRESHOLD, plagiarism_flags
from .sets import fd_features, overlapping_area
from .stats import paired_comparisons, reference_comparisons

OUTCOME_METRICS = ("pitch_entropy", "chord_tone_ratio", "self_similarity_8", "kl_to_reference", "composite")


@dataclass
class ConfigResult:
    config: Configuration
    generator: dict
    melodies: list[Melody]
    scores: list[dict]
    seconds: float
    plagiarism: list = field(default_factory=list)

    def values(self, metric: str) -> list:
        return [s.get(metric) for s in self.scores]

    def mean(self, metric: str) -> float | None:
        v = [x for x in self.values(metric) if x is not None and not (isinstance(x, float) and math.isnan(x))]
        return float(np.mean(v)) if v else None


@dataclass
class BenchmarkResult:
    prompts: list[Prompt]
    configs: list[ConfigResult]
    reference_scores: list[dict]
    reference_melodies: list[Melody]
    reference_composite: float | None
    set_level: list[dict]  # per config x metric: OA; per config: fd_features
    fd: dict[str, float | None]
    paired: list[dict]
    vs_reference: list[dict]
    listening: dict | None
    gate: dict
    outcome: list[dict]


def _clean(v):
    return [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]


def run_benchmark(
    configs: Sequence[Configuration],
    prompts: Sequence[Prompt],
    reference_melodies: Sequence[Melody],
    reference_pc: Sequence[float],
    *,
    training_pitch_sequences: Sequence[Sequence[int]] = (),
    listening: dict | None = None,
    gate_composite_ratio: float = 0.90,
    gate_listening_win_rate: float = 0.70,
    plagiarism_threshold: float = THRESHOLD,
    log=print,
) -> BenchmarkResult:
    q = np.asarray(reference_pc, dtype=float)
    ref_scores = score_many(list(reference_melodies), reference_pc=q)
    ref_comp = _clean([s.get("composite") for s in ref_scores])
    reference_composite = float(np.mean(ref_comp)) if ref_comp else None
    ref_features = np.array([feature_vector(s, pitch_class_vector(m)) for s, m in zip(ref_scores, reference_melodies)]) if ref_scores else np.zeros((0, len(METRICS) + 12))

    results: list[ConfigResult] = []
    for cfg in configs:
        gen = cfg.make()
        t0 = time.perf_counter()
        melodies = [gen.generate(p.key, p.bpm, list(p.chords), p.bars, p.seed) for p in prompts]
        scores = score_many(melodies, reference_pc=q)
        seconds = time.perf_counter() - t0
        pitch_seqs = [[n.pitch for n in m.notes] for m in melodies]
        hits = plagiarism_flags(pitch_seqs, list(training_pitch_sequences), threshold=plagiarism_threshold)
        results.append(ConfigResult(cfg, gen.info.to_dict(), melodies, scores, seconds, hits))
        log(f"{cfg.name}: {len(melodies)} melodies generated and scored in {seconds:.1f} s")

    set_level, fd = [], {}
    for r in results:
        for metric in (*METRICS, "composite"):
            oa = overlapping_area(_clean(r.values(metric)), _clean([s.get(metric) for s in ref_scores]))
            set_level.append({"configuration": r.config.name, "metric": metric, "overlapping_area": oa})
        feats = np.array([feature_vector(s, pitch_class_vector(m)) for s, m in zip(r.scores, r.melodies)])
        fd[r.config.name] = fd_features(feats, ref_features) if len(ref_features) >= 2 and len(feats) >= 2 else None

    values = {r.config.name: {m: r.values(m) for m in (*METRICS, "composite")} for r in results}
    paired = paired_comparisons(values) if len(results) >= 2 else []
    reference = {m: [s.get(m) for s in ref_scores] for m in (*METRICS, "composite")}
    vs_ref = reference_comparisons(values, reference) if ref_scores else []

    gate = gate_decision(results, reference_composite, listening, gate_composite_ratio, gate_listening_win_rate)
    outcome = outcome_table(results, ref_scores, reference_composite, listening)
    return BenchmarkResult(list(prompts), results, ref_scores, list(reference_melodies), reference_composite, set_level, fd, paired, vs_ref, listening, gate, outcome)


def gate_decision(results: Sequence[ConfigResult], reference_composite: float | None, listening: dict | None, ratio: float, win_rate: float) -> dict:
    """EVALUATION.md's phase gate: the best configuration > `ratio` of the reference composite and
    > `win_rate` of listening comparisons; otherwise name the gaps."""
    if not results or reference_composite is None or reference_composite <= 0:
        return {"passed": False, "best": None, "text": "No decision: no configuration or no reference corpus to compare with."}
    best = max(results, key=lambda r: r.mean("composite") or -1)
    share = (best.mean("composite") or 0.0) / reference_composite
    gaps = []
    if share <= ratio:
        gaps.append(f"its composite is {share:.1%} of the reference corpus's (needs > {ratio:.0%})")
    best_wins = None
    if listening and listening.get("n"):
        a, b = listening.get("config_a"), listening.get("config_b")
        if best.config.name not in (a, b):
            gaps.append(f"the listening test compared {a} with {b}, not {best.config.name}")
        else:
            best_wins = listening["win_rate"] if best.config.name == a else 1 - listening["win_rate"]
            if best_wins <= win_rate:
                gaps.append(f"it wins {best_wins:.1%} of {listening['n']} listening comparisons against {b if best.config.name == a else a} (needs > {win_rate:.0%})")
    else:
        gaps.append("the listening test has not been run yet (no answers)")
    passed = not gaps
    text = (
        f"Production-ready: {best.config.name} reaches {share:.1%} of the reference composite and wins "
        f"{best_wins:.1%} of listening comparisons."
        if passed
        else f"Not production-ready. Best configuration: {best.config.name}; gaps: " + "; ".join(gaps) + "."
    )
    return {"passed": passed, "best": best.config.name, "composite_share": share, "listening_win_rate": best_wins, "text": text}


def outcome_table(results: Sequence[ConfigResult], ref_scores: list[dict], reference_composite: float | None, listening: dict | None) -> list[dict]:
    """The plan's outcome table, measured: one row per configuration plus the reference corpus."""
    rows = []
    for r in results:
        row = {"configuration": r.config.name}
        for m in OUTCOME_METRICS:
            row[m] = r.mean(m)
        row["composite_vs_reference"] = (row["composite"] / reference_composite) if row["composite"] is not None and reference_composite else None
        if listening and listening.get("n") and r.config.name in (listening.get("config_a"), listening.get("config_b")):
            wr = listening["win_rate"] if r.config.name == listening["config_a"] else 1 - listening["win_rate"]
            row["human_preference"] = f"{wr:.1%} of {listening['n']} ({listening['config_a']} vs {listening['config_b']})"
        else:
            row["human_preference"] = "not yet run"
        rows.append(row)
    ref = {"configuration": "reference corpus"}
    for m in OUTCOME_METRICS:
        v = _clean([s.get(m) for s in ref_scores])
        ref[m] = float(np.mean(v)) if v else None
    ref["composite_vs_reference"] = 1.0 if reference_composite else None
    ref["human_preference"] = "—"
    rows.append(ref)
    return rows
