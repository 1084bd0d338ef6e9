"""corpus.build: source examples of each tier (with what is skipped and why), incremental augmentation
and the incremental quality filter with its verdict cache and rejection table."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
import pytest

from trance_assets.corpus.augment import AugmentPolicy
from trance_assets.corpus.build import (
    REJECTION_SCHEMA,
    VERDICT_SCHEMA,
    augment_incremental,
    filter_incremental,
    link_for_track,
    policy_hash,
    tier1_examples,
    tier2_examples,
    tier3_examples,
    top_rejection_reasons,
)
from trance_assets.corpus.examples import from_table
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.quality import QualityThresholds

T = {t: QualityThresholds.for_tier(t) for t in (1, 2, 3)}
GOOD = [69, 71, 72, 74, 76, 77, 79, 81, 76, 69]
SEVEN = [69, 71, 72, 74, 76, 79, 81]  # one octave, 7 notes: fails only the note count
SMALL = AugmentPolicy(transpositions=(2,), tempo_factors=(1.05,), octave_shifts=(1,))


def melody(pitches=GOOD, *, name="m", attrs=None, bpm=140.0, key="Am", offset=0.0, step=0.5) -> Melody:
    notes = tuple(Note(offset + i * step, p, 0.5) for i, p in enumerate(pitches))
    return Melody(notes, bpm, key, (ChordSpan("Am", 0, 4), ChordSpan("F", 4, 4)), name=name, attributes=dict(attrs or {}))


def gold_attrs(**kw) -> dict:
    a = {
        "verified": True,
        "accepted": True,
        "file": "gold/01.mid",
        "source_path": "/inbox/gold/01.mid",
        "licence": "CC-BY-4.0",
        "title": "Aurora",
        "artist": "Someone",
        "verified_by": "ab",
        "verified_on": "2024-05-01",
        "sha256": "f" * 64,
        "reference_partition": "ref-aurora",
    }
    a.update(kw)
    return a


# ---- sources -------------------------------------------------------------------------------------


def test_link_for_track() -> None:
    assert link_for_track("ref-aurora") == "track:ref-aurora"
    assert link_for_track("") == ""


def test_tier1_examples_skip_unverified_and_rejected() -> None:
    melodies = {
        "gold-02": melody(name="x", attrs=gold_attrs(verified=False, file="gold/02.mid")),
        "gold-01": melody([69, 72, 76, 81], name="x", attrs=gold_attrs(), offset=4.1),
        "gold-03": melody(name="x", attrs=gold_attrs(accepted=False, rejection="notes=3 (needs >= 8)", file="gold/03.mid")),
        "gold-04": melody(name="x", attrs=gold_attrs(reference_partition="", source_path="", file="gold/04.mid", licence="")),
    }
    out, skipped = tier1_examples(melodies)
    assert [e.example_id for e in out] == ["t1-gold-01", "t1-gold-04"]
    assert skipped == [
        {"partition": "gold-02", "file": "gold/02.mid", "reason": "unverified (no manifest entry or no verified_by)"},
        {"partition": "gold-03", "file": "gold/03.mid", "reason": "rejected by the Tier 1 rules: notes=3 (needs >= 8)"},
    ]
    e1, e4 = out
    assert e1.tier == 1 and e1.source == "tier1/gold"
    assert e1.link == "track:ref-aurora"
    assert e1.source_file == "/inbox/gold/01.mid"  # source_path preferred over file
    assert e1.licence == "CC-BY-4.0" and e1.title == "Aurora"
    assert e1.provenance["partition"] == "gold-01"
    assert e1.provenance["verified_by"] == "ab" and e1.provenance["reference_partition"] == "ref-aurora"
    # Normalised: 4.1 -> 4.0 (quantised), then one empty bar trimmed.
    assert e1.transforms == ("quantise:1/16", "trim:1bars")
    assert e1.start.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert e4.link == "" and e4.source_file == "gold/04.mid" and e4.licence == ""
    assert e4.transforms == ()


def tier2_attrs(**kw) -> dict:
    a = {"accepted": True, "source_track": "/audio/aurora.flac", "title": "Aurora (extracted)", "source_sha256": "a" * 64, "extraction_method": "basic-pitch", "partition_key": "ref-aurora"}
    a.update(kw)
    return a


def test_tier2_examples_skip_rejected_and_ineligible() -> None:
    melodies = {
        "ref-aurora": melody(name="n", attrs=tier2_attrs()),
        "ref-bad": melody(name="n", attrs=tier2_attrs(accepted=False, rejection="polyphony=0.5", source_track="/audio/bad.flac")),
        "ref-held": melody(name="n", attrs=tier2_attrs(source_track="/audio/held.flac", title="")),
    }
    out, skipped = tier2_examples(melodies, {"ref-aurora": True, "ref-held": False})
    assert [e.example_id for e in out] == ["t2-ref-aurora"]
    assert skipped == [
        {"partition": "ref-bad", "file": "/audio/bad.flac", "reason": "rejected by the Tier 2 rules: polyphony=0.5"},
        {"partition": "ref-held", "file": "/audio/held.flac", "reason": "kept out by the review queue (batch rejected)"},
    ]
    (e,) = out
    assert e.tier == 2 and e.source == "tier2/audio_extraction"
    assert e.link == "track:ref-aurora"
    assert e.source_file == "/audio/aurora.flac"
    assert e.licence == "reference audio: see source track (training use only)"
    assert e.provenance["extraction_method"] == "basic-pitch"
    # Without review verdicts every accepted melody is used; a missing title falls back to the key.
    out, skipped = tier2_examples(melodies, None)
    assert [e.example_id for e in out] == ["t2-ref-aurora", "t2-ref-held"]
    assert out[1].title == "ref-held"
    assert [s["partition"] for s in skipped] == ["ref-bad"]
    # A partition missing from the review verdicts is not eligible.
    out, _ = tier2_examples(melodies, {"ref-aurora": True})
    assert [e.example_id for e in out] == ["t2-ref-aurora"]


def test_tier1_and_tier2_of_one_track_share_the_link() -> None:
    (t1,), _ = tier1_examples({"gold-01": melody(name="x", attrs=gold_attrs(reference_partition="ref-aurora"))})
    (t2,), _ = tier2_examples({"ref-aurora": melody(name="y", attrs=tier2_attrs())}, None)
    assert t1.link == t2.link == "track:ref-aurora"


def test_tier3_examples_licence_spellings_and_files() -> None:
    synth = [
        melody(name="synthetic_00001", attrs={"license": "CC0-1.0", "generator": "rules-1", "tempo_meaningful": True}),
        melody(GOOD[:9], name="synthetic_00002", attrs={"licence": "own", "license": "ignored", "generator": "rules-1"}),
        melody(GOOD[:8], name="synthetic_00003", attrs={}),
    ]
    out = tier3_examples(synth, "tier3/synthetic")
    assert [e.licence for e in out] == ["CC0-1.0", "own", ""]
    assert [e.example_id for e in out] == ["t3-synthetic_00001", "t3-synthetic_00002", "t3-synthetic_00003"]
    assert out[0].source_file == "rule engine rules-1"
    assert out[2].source_file == "rule engine"
    assert out[0].provenance["generator"] == "rules-1"
    assert all(e.tier == 3 and e.source == "tier3/synthetic" for e in out)

    giga = tier3_examples([melody(name="gm-abc-2", attrs={"licence": "CC-BY-NC", "source_location": "gigamidi/train", "md5": "abc", "track": 2, "tempo_meaningful": False, "title": "Song"})], "tier3/gigamidi")
    (g,) = giga
    assert g.licence == "CC-BY-NC"
    assert g.source_file == "gigamidi/train md5=abc track=2"
    assert g.tempo_meaningful is False and g.title == "Song"

    pd = tier3_examples([melody(name="bach/bwv1", attrs={"licence": "public domain", "corpus_path": "bach/bwv1.mxl"})], "tier3/public_domain")
    assert pd[0].licence == "public domain" and pd[0].source_file == "bach/bwv1.mxl"
    assert pd[0].example_id == "t3-bach-bwv1" and pd[0].title == "bach/bwv1"


# ---- augment_incremental -------------------------------------------------------------------------


def sources(n=4):
    # Different lengths (9..9+n-1 notes) so no table column has equal-length lists only.
    mels = [melody((GOOD * 2)[: 9 + i], name=f"synthetic_{i:05d}", attrs={"license": "CC0"}) for i in range(n)]
    return tier3_examples(mels, "tier3/synthetic")


def test_augment_incremental_first_call() -> None:
    srcs = sources()
    out = augment_incremental(srcs, SMALL)
    assert out.new_sources == 4 and out.reused_sources == 0
    assert len(out.table) == 4 * 4  # source + tr+2 + tempo1.05 + oct+1
    assert out.stats.sources == 4 and out.stats.copies == 12
    assert "augment_key" in out.table.columns
    keys = out.table["augment_key"].to_list()
    ph = policy_hash(SMALL)
    assert keys[0].endswith(f":{ph}:1:t3-synthetic_00000")
    assert keys[:4] == [keys[0]] * 4
    assert out.table["example_id"].to_list()[:4] == ["t3-synthetic_00000", "t3-synthetic_00000~tr+2", "t3-synthetic_00000~tempo1.05", "t3-synthetic_00000~oct+1"]


def test_augment_incremental_reuses_unchanged_sources() -> None:
    srcs = sources()
    first = augment_incremental(srcs, SMALL)
    second = augment_incremental(srcs, SMALL, first.table)
    assert second.new_sources == 0 and second.reused_sources == 4
    assert second.table.equals(first.table)
    assert second.stats.sources == 4 and second.stats.copies == 12


def test_augment_incremental_adds_one_source() -> None:
    srcs = sources(5)
    first = augment_incremental(srcs[:4], SMALL)
    second = augment_incremental(srcs, SMALL, first.table)
    assert second.new_sources == 1 and second.reused_sources == 4
    assert len(second.table) == 20
    assert second.table.head(16).equals(first.table)
    full = augment_incremental(srcs, SMALL)
    assert second.table["content_hash"].to_list() == full.table["content_hash"].to_list()
    assert second.table["example_id"].to_list() == full.table["example_id"].to_list()
    # The table reads back (list columns stay lists after mixing reused and new parts).
    assert [e.example_id for e in from_table(second.table)] == second.table["example_id"].to_list()


def test_augment_incremental_recomputes_a_changed_source_only() -> None:
    srcs = sources()
    first = augment_incremental(srcs, SMALL)
    changed = list(srcs)
    p = changed[1].pitch.copy()
    p[0] = 72
    from dataclasses import replace

    changed[1] = replace(changed[1], pitch=p)
    second = augment_incremental(changed, SMALL, first.table)
    assert second.new_sources == 1 and second.reused_sources == 3
    old_rows = first.table.filter(pl.col("source_id") == "t3-synthetic_00001")
    new_rows = second.table.filter(pl.col("source_id") == "t3-synthetic_00001")
    assert old_rows["example_id"].to_list() == new_rows["example_id"].to_list()
    assert set(old_rows["content_hash"].to_list()).isdisjoint(new_rows["content_hash"].to_list())
    assert new_rows["pitch"].to_list()[0][0] == 72
    assert new_rows["pitch"].to_list()[1][0] == 74  # tr+2 copy of the new note
    others = pl.col("source_id") != "t3-synthetic_00001"
    assert second.table.filter(others).equals(first.table.filter(others))
    # Order follows the sources.
    assert second.table["example_id"].to_list() == first.table["example_id"].to_list()


def test_augment_incremental_policy_change_recomputes_all() -> None:
    srcs = sources()
    first = augment_incremental(srcs, SMALL)
    other = AugmentPolicy(transpositions=(2, 3), tempo_factors=(1.05,), octave_shifts=(1,))
    second = augment_incremental(srcs, other, first.table)
    assert second.new_sources == 4 and second.reused_sources == 0
    assert len(second.table) == 4 * 5


def test_augment_incremental_ignores_previous_without_keys() -> None:
    srcs = sources()
    first = augment_incremental(srcs, SMALL)
    second = augment_incremental(srcs, SMALL, first.table.drop("augment_key"))
    assert second.new_sources == 4


# ---- filter_incremental --------------------------------------------------------------------------


def mixed_table() -> pl.DataFrame:
    """Three passing Tier 3 sources, a Tier 1 source failing scale compliance (0.8 < 0.9) and a
    Tier 3 source with 7 notes, augmented with a small policy."""
    good = sources(3)
    off_key = list(GOOD)
    off_key[1], off_key[2] = 70, 73  # A#, C#: 8/10 in A minor
    (t1,), _ = tier1_examples({"gold-09": melody(off_key, name="x", attrs=gold_attrs(file="gold/09.mid", source_path=""))})
    short = tier3_examples([melody(SEVEN, name="short", attrs={"license": "CC0"})], "tier3/synthetic")
    return augment_incremental(good + [t1] + short, SMALL).table


def test_filter_incremental_accepts_rejects_and_records() -> None:
    table = mixed_table()
    assert len(table) == 20
    out = filter_incremental(table, T)
    assert out.checked == 20 and out.reused == 0
    assert len(out.accepted) == 12
    assert set(out.accepted["source_id"].to_list()) == {"t3-synthetic_00000", "t3-synthetic_00001", "t3-synthetic_00002"}
    # The accepted table keeps the input columns and adds the REMI ids and rule values.
    assert out.accepted.columns == table.columns + ["remi_ids", "quality"]
    assert out.accepted.schema["remi_ids"] == pl.List(pl.UInt16)
    assert all(len(ids) > 0 for ids in out.accepted["remi_ids"].to_list())
    q = json.loads(out.accepted["quality"][0])
    assert q["notes"] == 9 and q["remi_roundtrip"] == 0 and q["scale_compliance"] == 1.0

    rej = out.rejections
    assert rej.schema == pl.Schema(REJECTION_SCHEMA)
    assert len(rej) == 8  # 4 Tier 1 rows (scale) + 4 short rows (notes)
    t1_rows = rej.filter(pl.col("tier") == 1)
    assert t1_rows["rule"].to_list() == ["scale_compliance"] * 4
    assert t1_rows["value"].to_list() == ["0.800"] * 4
    assert t1_rows["requirement"].to_list() == [">= 0.9"] * 4
    assert t1_rows["source"].to_list() == ["tier1/gold"] * 4
    assert t1_rows["source_file"].to_list() == ["gold/09.mid"] * 4
    assert t1_rows["example_id"].to_list() == ["t1-gold-09", "t1-gold-09~tr+2", "t1-gold-09~tempo1.05", "t1-gold-09~oct+1"]
    assert t1_rows["parent"].to_list() == [None] + ["t1-gold-09"] * 3
    assert t1_rows["transforms"].to_list()[1] == "transpose:+2 velocity:±10"
    assert t1_rows["detail"].to_list() == [""] * 4
    short = rej.filter(pl.col("example_id") == "t3-short")
    assert short.select("tier", "source", "rule", "value", "requirement").row(0) == (3, "tier3/synthetic", "notes", "7", ">= 8")

    assert out.by_tier == {
        1: {"examples": 4, "accepted": 0, "sources": 1, "sources_accepted": 0},
        3: {"examples": 16, "accepted": 12, "sources": 4, "sources_accepted": 3},
    }
    assert top_rejection_reasons(rej) == [{"tier": 1, "rule": "scale_compliance", "examples": 4}, {"tier": 3, "rule": "notes", "examples": 4}]
    assert out.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    assert len(out.verdicts) == 20


def test_filter_incremental_reuses_cached_verdicts() -> None:
    table = mixed_table()
    first = filter_incremental(table, T)
    # The cache goes through parquet, as the asset stores it.
    buf = io.BytesIO()
    first.verdicts.write_parquet(buf)
    cache = pl.read_parquet(buf.getvalue())
    second = filter_incremental(table, T, cache=cache)
    assert second.checked == 0 and second.reused == 20
    assert second.accepted.equals(first.accepted)
    assert second.rejections.equals(first.rejections)
    assert second.by_tier == first.by_tier


def test_filter_incremental_checks_only_new_examples_and_threshold_changes() -> None:
    table = mixed_table()
    first = filter_incremental(table.head(8), T)
    assert first.checked == 8
    second = filter_incremental(table, T, cache=first.verdicts)
    assert second.checked == 12 and second.reused == 8
    # Different Tier 1 thresholds: only the Tier 1 rows are checked again, and now pass.
    relaxed = dict(T)
    relaxed[1] = QualityThresholds.for_tier(1, min_scale_compliance=0.8)
    third = filter_incremental(table, relaxed, cache=second.verdicts)
    assert third.checked == 4 and third.reused == 16
    assert len(third.accepted) == 16
    assert set(third.rejections["rule"].to_list()) == {"notes"}


def test_filter_incremental_remi_rejection_has_detail() -> None:
    long = melody(name="long", attrs={"license": "CC0"})
    notes = list(long.notes)
    notes[-1] = Note(notes[-1].start, notes[-1].pitch, 13.0)
    srcs = tier3_examples([long.with_notes(notes), melody(GOOD[:9], name="fine", attrs={})], "tier3/synthetic")
    table = augment_incremental(srcs, AugmentPolicy(transpositions=(), tempo_factors=(), octave_shifts=()), None).table
    out = filter_incremental(table, T)
    assert out.accepted["example_id"].to_list() == ["t3-fine"]
    (row,) = out.rejections.to_dicts()
    assert row["example_id"] == "t3-long" and row["rule"] == "remi_roundtrip"
    assert row["value"] == "2"  # one note lost, one (clipped) note appeared
    assert "lost pitch 69 at beat 4.5 for 13 beats" in row["detail"]


def test_filter_incremental_all_rejected() -> None:
    srcs = tier3_examples([melody(SEVEN, name="a", attrs={}), melody(SEVEN[:3] + SEVEN[4:], name="b", attrs={})], "tier3/synthetic")
    table = augment_incremental(srcs, AugmentPolicy(transpositions=(), tempo_factors=(), octave_shifts=())).table
    out = filter_incremental(table, T)
    assert len(out.accepted) == 0
    assert "remi_ids" in out.accepted.columns and "quality" in out.accepted.columns
    assert sorted(out.rejections["example_id"].to_list()) == ["t3-a", "t3-b"]
    assert np.array_equal(out.rejections["value"].to_numpy(), np.array(["7", "6"], dtype=object))


def test_filter_incremental_single_source_corpus() -> None:
    table = augment_incremental(sources(1), SMALL).table
    out = filter_incremental(table, T)
    assert len(out.accepted) == 4


def test_tier1_and_tier2_provenance_keep_the_code_version() -> None:
    (t1,), _ = tier1_examples({"gold-01": melody(name="x", attrs=gold_attrs(code_version="gold-3"))})
    (t2,), _ = tier2_examples({"ref-aurora": melody(name="y", attrs=tier2_attrs(code_version="extraction-2"))}, None)
    (t3,) = tier3_examples([melody(name="s", attrs={"code_version": "rules-1"})], "tier3/synthetic")
    assert t3.provenance["code_version"] == "rules-1"  # Tier 3 keeps every attribute
    assert t1.provenance.get("code_version") == "gold-3"
    assert t2.provenance.get("code_version") == "extraction-2"
