"""Corpus-build speed: examples per second per stage, on the demo profile's sources and on 10,000
synthetic melodies. Target (issue 4): >= 200 melodies/s through augment + filter + tokenize on 2 cores.

Stages, timed separately, on the same machine in the same run:

- augment: normalised sources → copies (`augment_incremental`, nothing cached);
- filter + tokenize: every EVALUATION.md rule plus the MidiTok REMI encode/decode roundtrip, whose
  token ids are the REMI tokens the corpus stores (`filter_incremental`, no cached verdicts), with
  the profile's 2 worker processes;
- splits, and the three training formats (NoteSequence TFRecord, REMI parquet, metadata JSON).

Baseline, measured in the same run on a sample of the same examples: the straightforward path —
`Melody` objects, `music.quality.check_melody` and `formats.remi.remi_roundtrip` (MIDI bytes → symusic
→ REMI → compare), one process. The ratio fast / baseline is the number that travels between machines.

Run: `.venv/bin/python benchmarks/corpus_build.py [--examples 10000]` (writes
benchmarks/results/corpus_build.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from upath import UPath  # noqa: E402

from trance_assets.corpus.build import augment_incremental, filter_incremental, split_table, tier1_examples, tier3_examples  # noqa: E402
from trance_assets.corpus.examples import from_table  # noqa: E402
from trance_assets.corpus.export import write_metadata, write_remi, write_tfrecords  # noqa: E402
from trance_assets.formats.remi import remi_roundtrip, remi_tokenizer  # noqa: E402
from trance_assets.music.quality import check_melody  # noqa: E402
from trance_assets.music.synthetic import synthetic_melodies  # noqa: E402
from trance_assets.profiles import get_profile  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "corpus_build.json"


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def run_stages(sources, profile, label: str, workers: int) -> dict:
    import polars as pl

    out: dict = {"label": label, "sources": len(sources), "workers": workers}
    t0 = time.perf_counter()
    aug = augment_incremental(sources, profile.augment_policy())
    t_aug = time.perf_counter() - t0
    table = aug.table
    out["examples"] = len(table)
    out["augment"] = {"seconds": round(t_aug, 3), "examples_per_s": rate(len(table), t_aug)}

    thresholds = {t: profile.quality_thresholds(t) for t in (1, 2, 3)}
    t0 = time.perf_counter()
    filt = filter_incremental(table, thresholds, workers=workers)
    t_filter = time.perf_counter() - t0
    out["filter_and_tokenize"] = {"seconds": round(t_filter, 3), "examples_per_s": rate(len(table), t_filter), "accepted": len(filt.accepted)}
    out["augment_filter_tokenize_examples_per_s"] = rate(len(table), t_aug + t_filter)

    t0 = time.perf_counter()
    splits, _ = split_table(filt.accepted, fractions=profile.split_fractions)
    t_split = time.perf_counter() - t0
    out["splits"] = {"seconds": round(t_split, 3), "examples_per_s": rate(len(splits), t_split)}

    with tempfile.TemporaryDirectory() as d:
        root = UPath(d)
        t0 = time.perf_counter()
        write_tfrecords(root, splits)
        t_tf = time.perf_counter() - t0
        tok = remi_tokenizer()
        tok.save(Path(d) / "tok.json")
        t0 = time.perf_counter()
        write_remi(root, splits, (Path(d) / "tok.json").read_bytes())
        t_remi = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_metadata(root, splits, {"bench": "1"})
        t_meta = time.perf_counter() - t0
    out["notesequence_tfrecords"] = {"seconds": round(t_tf, 3), "examples_per_s": rate(len(splits), t_tf)}
    out["remi_tokens_parquet"] = {"seconds": round(t_remi, 3), "examples_per_s": rate(len(splits), t_remi)}
    out["metadata_json"] = {"seconds": round(t_meta, 3), "examples_per_s": rate(len(splits), t_meta)}

    # Baseline on a sample of the same augmented examples: Melody objects, check_melody, remi_roundtrip.
    sample = from_table(table.head(min(600, len(table))))
    melodies = [ex.to_melody() for ex in sample]
    t0 = time.perf_counter()
    for ex, m in zip(sample, melodies):
        check_melody(m, thresholds[ex.tier], tempo_meaningful=ex.tempo_meaningful)
        remi_roundtrip(m)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    filter_incremental(table.head(len(sample)), thresholds, workers=1)
    t_fast1 = time.perf_counter() - t0
    out["baseline"] = {
        "examples": len(sample),
        "baseline_examples_per_s": rate(len(sample), t_base),
        "fast_path_one_process_examples_per_s": rate(len(sample), t_fast1),
        "fast_vs_baseline_one_process": round(t_base / t_fast1, 2),
        "pipeline_vs_baseline": round(out["filter_and_tokenize"]["examples_per_s"] / rate(len(sample), t_base), 2),
    }
    return out


def demo_sources(profile):
    from trance_assets.bulk.public_domain import public_domain_melodies
    from trance_assets.demo import write_demo_data
    from trance_assets.gold_inbox import read_manifest, scan_gold_folder
    from trance_assets.music.gold import load_gold
    from trance_assets.music.melody import Melody

    with tempfile.TemporaryDirectory() as d:
        write_demo_data(d, tracks=profile.demo_tracks, tier1_extra=profile.demo_tier1_extra, inbox=Path(d) / "inbox", log=lambda *_: None)
        root = Path(d) / "dataset" / "tier1"
        manifest = read_manifest(root)
        gold = {}
        for rel in scan_gold_folder(root):
            r = load_gold((root / rel).read_bytes(), file=rel, entry=manifest.get(rel))
            m = r.melody
            gold[rel] = Melody(m.notes, m.bpm, m.key, m.chords, m.bars, m.program, m.name, {**m.attributes, "accepted": True})
    t0 = time.perf_counter()
    pd = public_domain_melodies(profile.public_domain_count, bpm=profile.public_domain_bpm, cache_dir=None, workers=profile.corpus_workers, log=lambda *_: None)
    t_pd = time.perf_counter() - t0
    synth = synthetic_melodies(profile.synthetic_count, seed=profile.synthetic_seed, bars_choices=profile.synthetic_bars)
    sources = tier1_examples(gold)[0] + tier3_examples(pd.melodies, "tier3/public_domain") + tier3_examples(synth, "tier3/synthetic")
    return sources, {"public_domain_tunes": len(pd.melodies), "public_domain_parse_seconds_cold": round(t_pd, 2), "public_domain_tunes_per_s": rate(len(pd.melodies), t_pd)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=10_000, help="synthetic examples after augmentation (about 18 per source)")
    args = ap.parse_args()
    profile = get_profile("demo")
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}}

    sources, extra = demo_sources(profile)
    results["demo_profile"] = {**extra, **run_stages(sources, profile, "demo profile sources (Tier 1 demo gold, public domain, synthetic)", profile.corpus_workers)}
    print(json.dumps(results["demo_profile"], indent=1), flush=True)

    n_sources = max(1, round(args.examples / 17.5))
    t0 = time.perf_counter()
    synth = synthetic_melodies(n_sources, seed=7, bars_choices=(8, 16))
    t_gen = time.perf_counter() - t0
    sources = tier3_examples(synth, "tier3/synthetic")
    r = run_stages(sources, profile, f"{n_sources} synthetic sources → about {args.examples} examples", profile.corpus_workers)
    r["rule_engine_melodies_per_s"] = rate(n_sources, t_gen)
    results["synthetic_10k"] = r
    print(json.dumps(r, indent=1), flush=True)
    results["target"] = {
        "required_examples_per_s": 200,
        "achieved_examples_per_s": r["augment_filter_tokenize_examples_per_s"],
        "met": r["augment_filter_tokenize_examples_per_s"] >= 200,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
