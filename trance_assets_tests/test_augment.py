"""corpus.augment: 12-key transposition, tempo, octave and in-place velocity copies; every expectation
worked out by hand (keys, chord spellings, BPMs, skipped copies)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trance_assets.corpus.augment import (
    AugmentPolicy,
    AugmentStats,
    augment,
    augment_all,
    transpose_chord,
    transpose_key,
)
from trance_assets.corpus.examples import Example, example_from_melody, normalise
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.theory import Key, parse_key

NO_JITTER = AugmentPolicy(velocity_jitter=0)


def src_example(pitches, *, key="Am", bpm=140.0, chords=("F", "C/E", "Am", "G"), velocity=100, name="src", transforms=()) -> Example:
    notes = [Note(i * 0.5, p, 0.5, velocity if isinstance(velocity, int) else velocity[i]) for i, p in enumerate(pitches)]
    spans = [ChordSpan(sym, 4.0 * i, 4.0) for i, sym in enumerate(chords)]
    m = Melody(tuple(notes), bpm, key, tuple(spans), name=name)
    ex = normalise(example_from_melody(m, source="tier3/synthetic", licence="CC0", source_file="x.mid"))
    return replace(ex, transforms=tuple(transforms)) if transforms else ex


# A minor lead in MIDI 60-80: every transposition and both octave shifts are allowed.
PITCHES = [69, 71, 72, 74, 76, 60, 80, 77, 79, 80]


def by_suffix(copies: list[Example]) -> dict[str, Example]:
    return {c.example_id.split("~", 1)[1]: c for c in copies[1:]}


# ---- transpose_key / transpose_chord ---------------------------------------------------------


@pytest.mark.parametrize(
    "key,k,want",
    [("Am", 3, "Cm"), ("Am", -5, "Em"), ("Am", 1, "Bbm"), ("Am", 12, "Am"), ("C", -1, "B"), ("F#", 6, "C"), ("Eb", 1, "E"), ("C#m", 2, "Ebm"), ("G", 6, "Db")],
)
def test_transpose_key(key: str, k: int, want: str) -> None:
    assert transpose_key(key, k) == want


@pytest.mark.parametrize(
    "symbol,k,key,want",
    [
        ("F", 3, "Cm", "Ab"),  # Cm: three flats
        ("C/E", 3, "Cm", "Eb/G"),  # slash chords move the bass too
        ("Am", 3, "Cm", "Cm"),
        ("G", 3, "Cm", "Bb"),
        ("F", 2, "Bm", "G"),
        ("C/E", 2, "Bm", "D/F#"),  # Bm: two sharps
        ("C/E", 1, "Bbm", "Db/F"),  # Bbm: five flats
        ("F", 1, "Bbm", "Gb"),
        ("Bbm7", 2, "C", "Cm7"),  # two-letter root, quality kept
        ("F#m", 1, "G", "Gm"),
        ("Dsus4", 1, "Eb", "Ebsus4"),
        ("E7", -1, "Ab", "Eb7"),
        ("C#", 1, "D", "D"),
        ("Cmaj7", 12, "C", "Cmaj7"),  # a whole octave changes nothing
        ("Am", 0, "Am", "Am"),
    ],
)
def test_transpose_chord(symbol: str, k: int, key: str, want: str) -> None:
    assert transpose_chord(symbol, k, parse_key(key)) == want


# ---- transposition ---------------------------------------------------------------------------


def test_twelve_keys() -> None:
    src = src_example(PITCHES)
    out = augment(src, NO_JITTER)
    assert out[0] is src
    trs = [c for c in out if any(t.startswith("transpose:") for t in c.transforms)]
    assert len(trs) == 11
    keys = {src.key} | {c.key for c in trs}
    assert len(keys) == 12
    assert {parse_key(k).tonic for k in keys} == set(range(12))
    assert all(parse_key(k).mode == "minor" for k in keys)
    copies = by_suffix(out)
    assert sorted(k for k in copies if k.startswith("tr")) == sorted(f"tr{k:+d}" for k in (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6))
    for k in (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6):
        c = copies[f"tr{k:+d}"]
        assert c.pitch.tolist() == [p + k for p in PITCHES]
        assert c.pitch.dtype == np.int16
        assert c.start.tolist() == src.start.tolist() and c.duration.tolist() == src.duration.tolist()
        assert c.bpm == src.bpm
        assert c.transforms == (f"transpose:{k:+d}",)


def test_transposition_moves_key_and_chords() -> None:
    copies = by_suffix(augment(src_example(PITCHES), NO_JITTER))
    up3 = copies["tr+3"]
    assert up3.key == "Cm"
    assert [c[0] for c in up3.chords] == ["Ab", "Eb/G", "Cm", "Bb"]
    assert [c[1:] for c in up3.chords] == [(0.0, 4.0, False), (4.0, 4.0, False), (8.0, 4.0, False), (12.0, 4.0, False)]
    down5 = copies["tr-5"]
    assert down5.key == "Em"
    assert [c[0] for c in down5.chords] == ["C", "G/B", "Em", "D"]
    up1 = copies["tr+1"]
    assert up1.key == "Bbm"
    assert [c[0] for c in up1.chords] == ["Gb", "Db/F", "Bbm", "Ab"]
    up2 = copies["tr+2"]
    assert up2.key == "Bm"
    assert [c[0] for c in up2.chords] == ["G", "D/F#", "Bm", "A"]


def test_transposition_leaving_midi_range_is_skipped_and_counted() -> None:
    low = src_example([2, 4, 5, 7, 9, 11, 12, 14], key="C", chords=())
    stats = AugmentStats()
    out = augment(low, NO_JITTER, stats)
    # lowest pitch 2: -5, -4, -3 would go below 0; -2 gives 0 (allowed).
    suffixes = set(by_suffix(out))
    assert {"tr-5", "tr-4", "tr-3"}.isdisjoint(suffixes)
    assert {"tr-2", "tr-1", "tr+1", "tr+6"} <= suffixes
    assert by_suffix(out)["tr-2"].pitch.min() == 0
    assert stats.skipped_out_of_midi_range == 3
    # Octaves: down, 2-12 = -10 < 48; up, the low end 2+12 = 14 is still below 48: both refused.
    assert stats.octave_not_permitted == 2
    assert stats.copies == len(out) - 1 == 8 + 4

    high = src_example([110, 115, 120, 121, 123, 125, 118, 117], key="C", chords=())
    stats = AugmentStats()
    out = augment(high, NO_JITTER, stats)
    # highest pitch 125: +3..+6 exceed 127, +2 gives 127 (allowed).
    assert stats.skipped_out_of_midi_range == 4
    assert by_suffix(out)["tr+2"].pitch.max() == 127
    assert not any(s in by_suffix(out) for s in ("tr+3", "tr+4", "tr+5", "tr+6"))


# ---- tempo -----------------------------------------------------------------------------------


def test_tempo_copies() -> None:
    src = src_example(PITCHES, bpm=137.777)
    copies = by_suffix(augment(src, NO_JITTER))
    # 137.777 x 0.9 = 123.9993 -> 124.0; x 0.95 = 130.88815 -> 130.89;
    # x 1.05 = 144.66585 -> 144.67; x 1.1 = 151.5547 -> 151.55
    want = {"tempo0.90": 124.0, "tempo0.95": 130.89, "tempo1.05": 144.67, "tempo1.10": 151.55}
    for suffix, bpm in want.items():
        c = copies[suffix]
        assert c.bpm == bpm
        assert c.transforms == (f"tempo:x{suffix[5:]}",)
        assert c.pitch.tolist() == src.pitch.tolist()
        assert c.start.tolist() == src.start.tolist()
        assert c.duration.tolist() == src.duration.tolist()
        assert c.key == src.key and c.chords == src.chords


def test_tempo_copy_of_round_bpm() -> None:
    copies = by_suffix(augment(src_example(PITCHES, bpm=140.0), NO_JITTER))
    assert [copies[s].bpm for s in ("tempo0.90", "tempo0.95", "tempo1.05", "tempo1.10")] == [126.0, 133.0, 147.0, 154.0]


# ---- octave ----------------------------------------------------------------------------------


def test_octave_copies_only_within_bounds() -> None:
    wide = src_example([50, 60, 70, 80, 90, 72, 74, 76])  # 50-90: 38 < 48 and 102 > 96
    stats = AugmentStats()
    out = augment(wide, NO_JITTER, stats)
    assert not [c for c in out if any(t.startswith("octave:") for t in c.transforms)]
    assert stats.octave_not_permitted == 2

    mid = src_example(PITCHES)  # 60-80: 48-68 and 72-92 both inside 48-96
    stats = AugmentStats()
    copies = by_suffix(augment(mid, NO_JITTER, stats))
    assert stats.octave_not_permitted == 0
    assert copies["oct-1"].pitch.tolist() == [p - 12 for p in PITCHES]
    assert copies["oct+1"].pitch.tolist() == [p + 12 for p in PITCHES]
    assert copies["oct+1"].transforms == ("octave:+1",)
    assert copies["oct-1"].key == "Am" and copies["oct-1"].chords == mid.chords

    edge = src_example([48, 60, 72, 84, 50, 52, 53, 55])  # 48-84: down gives 36 (no), up gives 60-96 (yes, 96 included)
    copies = by_suffix(augment(edge, NO_JITTER))
    assert "oct-1" not in copies and copies["oct+1"].pitch.max() == 96


def test_copy_count_with_default_policy() -> None:
    stats = AugmentStats()
    out = augment(src_example(PITCHES), AugmentPolicy(), stats)
    assert len(out) == 1 + 11 + 4 + 2
    assert stats.sources == 1 and stats.copies == 17
    assert stats.as_dict() == {"sources": 1, "copies": 17, "skipped_out_of_midi_range": 0, "octave_not_permitted": 0}


def test_empty_source_has_no_copies() -> None:
    src = src_example([], chords=())
    stats = AugmentStats()
    assert augment(src, AugmentPolicy(), stats) == [src]
    assert stats.sources == 1 and stats.copies == 0


# ---- velocity ----------------------------------------------------------------------------------


def test_velocity_jitter_within_ten_on_every_copy_not_on_the_source() -> None:
    src = src_example(PITCHES, velocity=100)
    out = augment(src, AugmentPolicy())
    assert out[0].velocity.tolist() == [100] * len(PITCHES)
    offsets = []
    for c in out[1:]:
        d = c.velocity.astype(int) - 100
        assert c.velocity.dtype == np.int16
        assert np.all(np.abs(d) <= 10), (c.example_id, d)
        assert c.transforms[-1] == "velocity:±10"
        offsets.append(tuple(d))
    # Jitter is applied (not all zero) and differs between copies.
    assert any(any(o) for o in offsets)
    assert len(set(offsets)) == len(offsets)
    # Jitter is drawn from the full -10..10 range over this many notes.
    flat = np.concatenate([np.array(o) for o in offsets])
    assert flat.min() < -5 and flat.max() > 5


def test_velocity_jitter_is_clipped_to_1_127() -> None:
    n = len(PITCHES)
    vel = [1, 127] * (n // 2)
    src = src_example(PITCHES, velocity=vel)
    out = augment(src, AugmentPolicy())
    lows = np.concatenate([c.velocity[0::2] for c in out[1:]])
    highs = np.concatenate([c.velocity[1::2] for c in out[1:]])
    assert lows.min() == 1 and lows.max() <= 11 and lows.max() > 1
    assert highs.max() == 127 and highs.min() >= 117 and highs.min() < 127


def test_no_jitter_policy_keeps_velocities_and_transforms() -> None:
    out = augment(src_example(PITCHES, velocity=90), NO_JITTER)
    for c in out[1:]:
        assert c.velocity.tolist() == [90] * len(PITCHES)
        assert len(c.transforms) == 1


# ---- identity and determinism ------------------------------------------------------------------


def test_parent_transforms_and_ids() -> None:
    src = src_example(PITCHES, transforms=("quantise:1/16", "trim:1bars"))
    out = augment(src, AugmentPolicy())
    ids = [c.example_id for c in out]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "t3-src"
    for c in out[1:]:
        assert c.parent == src.example_id
        assert c.source_id == src.source_id
        assert c.example_id.startswith(src.example_id + "~")
        own = c.example_id.split("~", 1)[1]
        expect_first = {"tr": "transpose:", "te": "tempo:x", "oc": "octave:"}[own[:2]]
        assert c.transforms[:2] == ("quantise:1/16", "trim:1bars")
        assert len(c.transforms) == 4
        assert c.transforms[2].startswith(expect_first)
        assert c.transforms[3] == "velocity:±10"
        # Provenance-type fields carried over unchanged.
        assert (c.tier, c.source, c.licence, c.source_file, c.link, c.program) == (src.tier, src.source, src.licence, src.source_file, src.link, src.program)
    assert "t3-src~tr+3" in ids and "t3-src~tempo1.05" in ids and "t3-src~oct-1" in ids


def test_augment_is_deterministic() -> None:
    a = augment(src_example(PITCHES), AugmentPolicy())
    b = augment(src_example(PITCHES), AugmentPolicy())
    assert [c.example_id for c in a] == [c.example_id for c in b]
    assert [c.content_hash() for c in a] == [c.content_hash() for c in b]
    assert [c.transforms for c in a] == [c.transforms for c in b]


def test_same_suffix_of_different_sources_gets_different_jitter() -> None:
    a = by_suffix(augment(src_example(PITCHES, name="one"), AugmentPolicy()))["tr+1"]
    b = by_suffix(augment(src_example(PITCHES, name="two"), AugmentPolicy()))["tr+1"]
    assert a.velocity.tolist() != b.velocity.tolist()


def test_augment_all_concatenates_and_counts() -> None:
    srcs = [src_example(PITCHES, name="one"), src_example([50, 60, 70, 80, 90, 72, 74, 76], name="two")]
    out, stats = augment_all(srcs, AugmentPolicy())
    assert len(out) == 18 + 16
    assert out[0].example_id == "t3-one" and out[18].example_id == "t3-two"
    assert stats.sources == 2 and stats.copies == 17 + 15 and stats.octave_not_permitted == 2


def test_policy_describe_names_every_transform() -> None:
    text = AugmentPolicy().describe()
    assert "transpose [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6]" in text
    assert "tempo x[0.9, 0.95, 1.05, 1.1]" in text
    assert "octave [-1, 1] within MIDI 48-96" in text
    assert "velocity ±10" in text


def test_key_object_name_used_for_new_key() -> None:
    # A source written as "A minor" gets canonical short names on its copies.
    src = replace(src_example(PITCHES), key="A minor")
    copies = by_suffix(augment(src, NO_JITTER))
    assert copies["tr+3"].key == Key(0, "minor").name == "Cm"
