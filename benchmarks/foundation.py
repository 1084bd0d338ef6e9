"""Foundation benchmarks: rule engine, demo synthesis, reference-audio validation.

Every figure is a ratio against a baseline measured in the same run on the same machine, so the
numbers travel between machines better than seconds do:

- rule engine: melodies/s, against a naive generator (a seeded random walk on the same scale with
  the same number of notes) — the price of the musical rules;
- synthesis: real-time factor of `render_arrangement` (audio seconds per compute second);
- validation: `inspect_audio` (full decode + peak/RMS/LUFS + SHA-256) against the bare minimum
  (`soundfile.read` of the whole file + SHA-256).

Run: `.venv/bin/python benchmarks/foundation.py` (writes benchmarks/results/foundation.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trance_assets.audio.io import inspect_audio  # noqa: E402
from trance_assets.audio.synth import render_arrangement  # noqa: E402
from trance_assets.music.melody import Melody, Note  # noqa: E402
from trance_assets.music.rules import generate  # noqa: E402
from trance_assets.music.theory import parse_key  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "foundation.json"


def _best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def naive_melody(n_notes: int, seed: int) -> Melody:
    rng = np.random.default_rng(seed)
    scale = [p for p in range(60, 97) if p % 12 in parse_key("Am").allowed_pcs()]
    i = len(scale) // 2
    notes = []
    for k in range(n_notes):
        i = int(np.clip(i + rng.integers(-2, 3), 0, len(scale) - 1))
        notes.append(Note(k * 0.5, scale[i], 0.25, 100))
    return Melody(tuple(notes), 140.0, "Am", bars=max(1, n_notes // 8))


def bench_rules(count: int = 200) -> dict:
    ref = [generate("Am", 140, ["Am", "F", "C", "G"], 16, seed=s) for s in range(count)]
    mean_notes = int(statistics.mean(len(m.notes) for m in ref))
    t_rules = _best_of(lambda: [generate("Am", 140, ["Am", "F", "C", "G"], 16, seed=s) for s in range(count)], 3)
    t_naive = _best_of(lambda: [naive_melody(mean_notes, s) for s in range(count)], 3)
    return {
        "melodies": count,
        "bars": 16,
        "mean_notes": mean_notes,
        "rules_melodies_per_s": round(count / t_rules, 1),
        "naive_melodies_per_s": round(count / t_naive, 1),
        "rules_cost_vs_naive": round(t_rules / t_naive, 2),
    }


def bench_synth() -> dict:
    m = generate("Am", 138, ["Am", "F", "C", "G"], 20, seed=1)
    t = _best_of(lambda: render_arrangement(m, sr=44100, seed=1), 3)
    audio_s = m.length_beats * 60 / m.bpm + 1.0
    return {"audio_seconds": round(audio_s, 2), "render_seconds": round(t, 3), "real_time_factor": round(audio_s / t, 1)}


def bench_validation(minutes: float = 3.0) -> dict:
    sr = 44100
    m = generate("Am", 140, ["Am", "F", "C", "G"], 16, seed=3)
    loop = render_arrangement(m, sr=sr, seed=3, tail_seconds=0.0)
    reps = int(np.ceil(minutes * 60 * sr / len(loop)))
    audio = np.tile(loop, (reps, 1))[: int(minutes * 60 * sr)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "track.wav"
        sf.write(path, audio, sr, subtype="PCM_16")

        def baseline():
            sf.read(path, dtype="float32")
            hashlib.sha256(path.read_bytes()).hexdigest()

        t_base = _best_of(baseline, 3)
        t_inspect = _best_of(lambda: inspect_audio(path), 3)
    return {
        "audio_minutes": minutes,
        "inspect_seconds": round(t_inspect, 3),
        "baseline_read_hash_seconds": round(t_base, 3),
        "inspect_cost_vs_baseline": round(t_inspect / t_base, 2),
        "inspect_x_real_time": round(minutes * 60 / t_inspect, 1),
    }


def main() -> None:
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "rule_engine": bench_rules(),
        "synthesis": bench_synth(),
        "validation": bench_validation(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
