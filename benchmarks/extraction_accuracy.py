"""Tier 2 extraction accuracy and speed against ground truth.

Accuracy: note-level F1 (mir_eval: onset within 50 ms, same pitch, offsets ignored) of the extracted
melody against the true lead, on
  - the 12 demo tracks (`storage/demo/ground_truth`, written by `trance-assets demo-data`; the
    extraction parameters were tuned on these), and
  - 12 held-out tracks rendered here from other seeds, keys and tempi (never used for tuning),
next to the naive baseline measured in the same run: Basic Pitch on the full mix, highest note at
each onset.

Speed: wall time and real-time factor (compute seconds / audio seconds) per stage on this machine,
for the chain with the configured separator (the DSP fallback unless Demucs weights are present),
and the full-size htdemucs architecture (random weights; same compute as the real model) on a
10-second clip with 2 torch threads.

Run: `.venv/bin/python benchmarks/extraction_accuracy.py [--separator auto|dsp|demucs] [--quick]`
With Demucs weights present (Hugging Face cache, or TRANCE_SEPARATOR_REPO=<folder>), run it with
`--separator demucs` to compare Demucs against the fallback. Results: benchmarks/results/extraction_accuracy[_<separator>].json
"""

from __future__ import annotations

import argparse
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

from trance_assets.audio.accuracy import melody_seconds, note_f1  # noqa: E402
from trance_assets.audio.extraction import candidates_from_events, extract_file  # noqa: E402
from trance_assets.audio.lead_line import highest_note_baseline  # noqa: E402
from trance_assets.audio.separation import SeparatorConfig  # noqa: E402
from trance_assets.audio.synth import render_arrangement  # noqa: E402
from trance_assets.audio.transcription import TranscriberConfig, transcribe  # noqa: E402
from trance_assets.demo import DEMO_BARS, demo_tracks, write_demo_data  # noqa: E402
from trance_assets.music.melody import Melody  # noqa: E402
from trance_assets.music.rules import generate  # noqa: E402
from trance_assets.music.theory import MINOR_PROGRESSIONS, parse_key, progression_symbols  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = (("Em", 141, 3), ("Am", 134, 5), ("Dm", 129, 7), ("F#m", 138, 2), ("Cm", 143, 1), ("Gm", 136, 8),
            ("Bm", 131, 4), ("C#m", 139, 6), ("Fm", 145, 9), ("Ebm", 133, 0), ("G#m", 137, 3), ("Bbm", 140, 5))


def held_out_tracks(folder: Path) -> list[tuple[Path, Melody]]:
    out = []
    for i, (key, bpm, prog) in enumerate(HELD_OUT):
        chords = progression_symbols(parse_key(key), MINOR_PROGRESSIONS[prog])
        m = generate(key, bpm, chords, DEMO_BARS, seed=90_000 + i, density=0.4 + 0.04 * (i % 6), span=19 + i % 5)
        path = folder / f"heldout_{i:02d}.wav"
        sf.write(path, render_arrangement(m, sr=44100, seed=500 + i), 44100, subtype="PCM_16")
        out.append((path, m))
    return out


def demo_set() -> list[tuple[Path, Melody]]:
    truth = ROOT / "storage" / "demo" / "ground_truth"
    inbox = ROOT / "storage" / "inbox" / "reference_audio"
    if not truth.is_dir():
        write_demo_data(ROOT / "storage", log=lambda *_: None)
    out = []
    for t in demo_tracks():
        data = json.loads((truth / f"{t.stem}.json").read_text())
        out.append((inbox / data["audio_file"], Melody.from_dict(data["melody"])))
    return out


def evaluate(items, config: SeparatorConfig) -> dict:
    rows = []
    for path, ref in items:
        r = extract_file(path, separator_config=config)
        ex = r.extraction
        f = note_f1(melody_seconds(ref), melody_seconds(ex.melody, ex.origin_s))
        audio, sr = sf.read(path, dtype="float32")
        t0 = time.perf_counter()
        events = transcribe(audio, sr, TranscriberConfig())
        t_base = time.perf_counter() - t0
        base = highest_note_baseline(candidates_from_events(events))
        fb = note_f1(melody_seconds(ref), [(c.onset, c.offset, c.pitch) for c in base])
        total = sum(r.timings.values())
        rows.append(
            {
                "file": path.name,
                "f1": round(f.f1, 4), "precision": round(f.precision, 4), "recall": round(f.recall, 4),
                "baseline_f1": round(fb.f1, 4),
                "key": ex.melody.key, "true_key": ref.key,
                "bpm": ex.melody.bpm, "true_bpm": ref.bpm, "bpm_source": ex.tempo.source,
                "accepted": ex.accepted,
                "separator": r.sidecar["extraction_method"]["separator"],
                "audio_s": round(r.duration_s, 2),
                "seconds": {k: round(v, 3) for k, v in r.timings.items()},
                "real_time_factor": round(total / r.duration_s, 4),
                "baseline_seconds": round(t_base, 3),
            }
        )
        print(f"  {path.name:28s} F1 {f.f1:.3f} (P {f.precision:.3f} R {f.recall:.3f})  baseline {fb.f1:.3f}  "
              f"key {ex.melody.key}/{ref.key}  bpm {ex.melody.bpm:g}/{ref.bpm:g}  RTF {total / r.duration_s:.3f}", flush=True)
    stages = {k: round(sum(r["seconds"][k] for r in rows) / sum(r["audio_s"] for r in rows), 4) for k in rows[0]["seconds"]}
    return {
        "tracks": rows,
        "mean_f1": round(statistics.mean(r["f1"] for r in rows), 4),
        "min_f1": round(min(r["f1"] for r in rows), 4),
        "mean_baseline_f1": round(statistics.mean(r["baseline_f1"] for r in rows), 4),
        "keys_correct": sum(r["key"] == r["true_key"] for r in rows),
        "tempo_within_0.5_bpm": sum(abs(r["bpm"] - r["true_bpm"]) <= 0.5 for r in rows),
        "accepted": sum(r["accepted"] for r in rows),
        "real_time_factor_by_stage": stages,
        "real_time_factor_total": round(sum(stages.values()), 4),
    }


def htdemucs_timing(seconds: float = 10.0) -> dict:
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.set_num_threads(2)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()  # full size, random weights
    x = torch.randn(1, 2, int(seconds * 44100)) * 0.1
    t0 = time.perf_counter()
    with torch.no_grad():
        apply_model(model, x, shifts=0, split=True, overlap=0.25, progress=False, device="cpu")
    dt = time.perf_counter() - t0
    return {"clip_s": seconds, "seconds": round(dt, 2), "real_time_factor": round(dt / seconds, 3), "torch_threads": 2,
            "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--separator", default="auto", choices=("auto", "dsp", "demucs"))
    ap.add_argument("--quick", action="store_true", help="4 tracks per set, no htdemucs timing")
    args = ap.parse_args()
    config = SeparatorConfig.from_env(method=args.separator)
    n = 4 if args.quick else 12
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "separator_method": args.separator}
    print("demo tracks (extraction tuned on these):")
    results["demo"] = evaluate(demo_set()[:n], config)
    with tempfile.TemporaryDirectory() as d:
        print("held-out tracks (never used for tuning):")
        results["held_out"] = evaluate(held_out_tracks(Path(d))[:n], config)
    if not args.quick:
        print("full-size htdemucs (random weights), 10 s clip, 2 threads ...", flush=True)
        results["htdemucs_full_size"] = htdemucs_timing()
    for name in ("demo", "held_out"):
        r = results[name]
        print(f"{name}: mean F1 {r['mean_f1']:.3f} (min {r['min_f1']:.3f}) vs baseline {r['mean_baseline_f1']:.3f}; "
              f"keys {r['keys_correct']}/{len(r['tracks'])}; tempo ±0.5 {r['tempo_within_0.5_bpm']}/{len(r['tracks'])}; "
              f"real-time factor {r['real_time_factor_total']:.3f} {r['real_time_factor_by_stage']}")
    if "htdemucs_full_size" in results:
        print(f"htdemucs full size: {results['htdemucs_full_size']}")
    if not args.quick:
        suffix = "" if args.separator == "auto" else f"_{args.separator}"
        out = ROOT / "benchmarks" / "results" / f"extraction_accuracy{suffix}.json"
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"written {out}")


if __name__ == "__main__":
    main()
