"""corpus.filtering: every rule with a passing and a failing example (values worked out by hand), the
REMI roundtrip rule, agreement with music.quality.check_melody, the parallel path, and the token ids
against the project's REMI tokenizer."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import symusic

from trance_assets.corpus.examples import Example, example_from_melody, normalise
from trance_assets.corpus.filtering import (
    RULES,
    check_example,
    filter_examples,
    polyphony,
    rule_failures,
    rule_values,
    thresholds_key,
    verdict_key,
)
from trance_assets.formats.remi import remi_tokenizer
from trance_assets.music.melody import Melody, Note
from trance_assets.music.quality import QualityThresholds, check_melody
from trance_assets.music.synthetic import synthetic_melodies

T = {t: QualityThresholds.for_tier(t) for t in (1, 2, 3)}

# A minor, A4-A5 (one octave), ten monophonic 8th notes at 140 BPM: passes every rule of every tier.
GOOD = [69, 71, 72, 74, 76, 77, 79, 81, 76, 69]


def example(pitches=GOOD, *, step=0.5, dur=0.5, key="Am", bpm=140.0, source="tier3/synthetic", tempo_meaningful=True, name="m", notes=None) -> Example:
    notes = notes if notes is not None else [Note(i * step, p, dur) for i, p in enumerate(pitches)]
    m = Melody(tuple(notes), bpm, key, name=name)
    return example_from_melody(m, source=source, licence="", source_file=f"{name}.mid", tempo_meaningful=tempo_meaningful)


def failed_rules(ex: Example, tier: int | None = None) -> list[str]:
    return [f[0] for f in rule_failures(rule_values(ex), T[tier or ex.tier], ex.tempo_meaningful)]


def test_good_melody_passes_every_tier() -> None:
    for source in ("tier1/gold", "tier2/audio_extraction", "tier3/synthetic"):
        ex = example(source=source)
        v = check_example(ex, T[ex.tier])
        assert v.passed, v.failures
        assert v.failures == ()
        assert v.values == {"notes": 10, "range_octaves": 1.0, "bpm": 140.0, "polyphony": 0.0, "scale_compliance": 1.0, "remi_roundtrip": 0}
        assert set(v.values) == set(RULES)
        assert v.remi_ids.dtype == np.uint16 and v.remi_ids.size > 0
        assert v.remi_detail == ""


# ---- notes -------------------------------------------------------------------------------------


def test_notes_rule() -> None:
    eight = example([69, 71, 72, 74, 76, 77, 79, 81])
    seven = example([69, 71, 72, 74, 76, 77, 81])
    assert rule_values(eight)["notes"] == 8 and failed_rules(eight) == []
    assert rule_values(seven)["notes"] == 7
    assert rule_failures(rule_values(seven), T[3], True) == [("notes", 7, ">= 8")]


# ---- range -------------------------------------------------------------------------------------


def test_range_rule() -> None:
    # 69..80 = 11 semitones: 11/12 octave, too narrow.
    narrow = example([69, 71, 72, 74, 76, 77, 79, 80, 76, 69])
    assert rule_values(narrow)["range_octaves"] == 11 / 12
    assert rule_failures(rule_values(narrow), T[3], True) == [("range_octaves", 11 / 12, "1-3 octaves")]
    # exactly 3 octaves (45..81) passes, 37 semitones (44..81) fails (G#2 is in A harmonic minor).
    three = example([45, 71, 72, 74, 76, 77, 79, 81, 76, 69])
    assert rule_values(three)["range_octaves"] == 3.0 and failed_rules(three) == []
    wide = example([44, 71, 72, 74, 76, 77, 79, 81, 76, 69])
    assert rule_values(wide)["range_octaves"] == 37 / 12
    assert failed_rules(wide) == ["range_octaves"]


# ---- bpm ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bpm,fails", [(119.9, True), (120.0, False), (160.0, False), (160.5, True), (140.0, False)])
def test_bpm_rule_when_tempo_is_meaningful(bpm: float, fails: bool) -> None:
    ex = example(bpm=bpm)
    assert rule_values(ex)["bpm"] == bpm
    fl = rule_failures(rule_values(ex), T[3], True)
    assert fl == ([("bpm", bpm, "120-160 BPM")] if fails else [])


def test_bpm_ignored_when_tempo_not_meaningful() -> None:
    ex = example(bpm=90.0, tempo_meaningful=False)
    assert rule_values(ex)["bpm"] is None
    assert failed_rules(ex) == []
    v = check_example(ex, T[3])
    assert v.passed and v.values["bpm"] is None
    # The same melody with a meaningful tempo fails.
    assert failed_rules(replace(ex, tempo_meaningful=True)) == ["bpm"]


# ---- polyphony ---------------------------------------------------------------------------------


def test_polyphony_rule_hand_computed() -> None:
    # Ten 8th-note onsets; notes 1, 4 and 7 last 1 beat and so overlap the next onset: 3/10 = 0.3.
    durs = [0.5, 1.0, 0.5, 0.5, 1.0, 0.5, 0.5, 1.0, 0.5, 0.5]
    three = example(notes=[Note(i * 0.5, p, d) for i, (p, d) in enumerate(zip(GOOD, durs))])
    assert rule_values(three)["polyphony"] == 0.3
    assert failed_rules(three) == []  # <= 0.3 passes
    durs[8] = 1.0  # note 8 now covers onset 9 as well: 4/10
    four = example(notes=[Note(i * 0.5, p, d) for i, (p, d) in enumerate(zip(GOOD, durs))])
    assert rule_values(four)["polyphony"] == 0.4
    assert rule_failures(rule_values(four), T[3], True) == [("polyphony", 0.4, "<= 0.3")]


def test_polyphony_function() -> None:
    # Onsets 0, 0.5, 2, 2.5, 3; ends 1, 1.5, 3, 2.75, 4. Overlap at 0.5 and 2.5; 3 starts as 2-3 ends.
    s = np.array([0, 0.5, 2, 2.5, 3.0])
    d = np.array([1, 1, 1, 0.25, 1.0])
    assert polyphony(s, d) == 2 / 5
    # Order of the arrays does not matter.
    o = np.array([4, 2, 0, 3, 1])
    assert polyphony(s[o], d[o]) == 2 / 5
    # A long note covering the next two onsets counts both.
    assert polyphony(np.array([0.0, 1, 2]), np.array([4.0, 0.5, 0.5])) == 2 / 3
    assert polyphony(np.array([]), np.array([])) is None


# ---- scale compliance --------------------------------------------------------------------------


def with_out_of_key(n_out: int, key="Am", **kw) -> Example:
    # Replace notes 1..n_out (not the range-defining 0 and 7) by pitch classes outside A minor
    # (natural ∪ harmonic: A B C D E F G G#): A#, C#, D#, F#, A#.
    p = list(GOOD)
    for i, q in zip([1, 2, 3, 4, 5], [70, 73, 75, 78, 70][:n_out]):
        p[i] = q
    return example(p, key=key, **kw)


@pytest.mark.parametrize(
    "n_out,compliance,fails_tiers",
    [(0, 1.0, []), (1, 0.9, []), (2, 0.8, [1]), (3, 0.7, [1]), (4, 0.6, [1, 2]), (5, 0.5, [1, 2, 3])],
)
def test_scale_compliance_per_tier(n_out: int, compliance: float, fails_tiers: list[int]) -> None:
    ex = with_out_of_key(n_out)
    assert rule_values(ex)["scale_compliance"] == pytest.approx(compliance, abs=1e-12)
    for tier, need in ((1, 0.9), (2, 0.7), (3, 0.6)):
        fl = rule_failures(rule_values(ex), T[tier], True)
        if tier in fails_tiers:
            assert fl == [("scale_compliance", rule_values(ex)["scale_compliance"], f">= {need:g}")]
        else:
            assert fl == []


def test_scale_compliance_harmonic_minor_and_major_keys() -> None:
    # G# (80) is in A harmonic minor: still 1.0.
    ex = example([69, 71, 72, 74, 76, 77, 80, 81, 76, 69])
    assert rule_values(ex)["scale_compliance"] == 1.0
    # In C major the same G# is outside: 9/10.
    assert rule_values(replace(ex, key="C"))["scale_compliance"] == 0.9
    # In E major (E F# G# A B C# D#): A B E G# A are in, C D F are out -> 69 71 72 74 76 77 80 81 76 69
    # in: 69 71 76 80 81 76 69 (7); out: 72 74 77 (3).
    assert rule_values(replace(ex, key="E"))["scale_compliance"] == 0.7


def test_empty_example_fails_everything_but_bpm() -> None:
    ex = example([])
    assert rule_values(ex) == {"notes": 0, "range_octaves": None, "bpm": 140.0, "polyphony": None, "scale_compliance": None}
    assert failed_rules(ex) == ["notes", "range_octaves", "polyphony", "scale_compliance"]


# ---- REMI roundtrip ------------------------------------------------------------------------------


def test_remi_roundtrip_passes_on_grid() -> None:
    notes = [Note(0, 69, 0.25), Note(0.25, 71, 0.75), Note(1.0, 72, 1.5), Note(2.75, 74, 4.0), Note(6.75, 76, 12.0), Note(19, 81, 0.25), Note(20, 69, 2), Note(23.5, 77, 0.5)]
    v = check_example(example(notes=notes), T[3])
    assert v.values["remi_roundtrip"] == 0
    assert not any(f[0] == "remi_roundtrip" for f in v.failures)


def test_remi_roundtrip_fails_for_a_note_longer_than_12_beats() -> None:
    ex = example(notes=[Note(i * 0.5, p, 13.0 if i == 9 else 0.5) for i, p in enumerate(GOOD)])
    v = check_example(ex, T[3])
    assert not v.passed
    assert [f[0] for f in v.failures] == ["remi_roundtrip"]
    assert v.values["remi_roundtrip"] > 0
    # The 13-beat note comes back clipped (12 beats): it is lost and a new one appears.
    assert "1 note(s) did not come back, 1 appeared" in v.remi_detail
    assert "lost pitch 69 at beat 4.5 for 13 beats" in v.remi_detail
    assert v.remi_ids.size > 0


def test_remi_roundtrip_fails_off_grid_when_not_normalised() -> None:
    notes = [Note(i * 0.5 + (0.05 if i == 3 else 0), p, 0.5) for i, p in enumerate(GOOD)]
    ex = example(notes=notes)
    v = check_example(ex, T[3])
    assert "remi_roundtrip" in [f[0] for f in v.failures]
    assert "1 note(s) off the 16th grid" in v.remi_detail
    assert "did not come back" in v.remi_detail
    # After normalise the same melody passes.
    fixed = normalise(ex)
    assert fixed.transforms == ("quantise:1/16",)
    assert check_example(fixed, T[3]).passed


@pytest.mark.parametrize("pitch", [20, 110])
def test_remi_roundtrip_fails_outside_the_piano_range(pitch: int) -> None:
    p = list(GOOD)
    p[2] = pitch  # the note at beat 1
    v = check_example(example(p), T[3])
    assert "remi_roundtrip" in [f[0] for f in v.failures]
    assert v.remi_detail.startswith("1 note(s) did not come back, 0 appeared")
    assert f"lost pitch {pitch} at beat 1 for 0.5 beats" in v.remi_detail


@pytest.mark.parametrize("pitch", [21, 108, 109])
def test_remi_roundtrip_keeps_the_tokenizer_pitch_range(pitch: int) -> None:
    # MidiTok's default pitch range (21, 109) is inclusive at both ends.
    p = list(GOOD)
    p[2] = pitch
    v = check_example(example(p), T[3])
    assert v.values["remi_roundtrip"] == 0


def test_remi_failure_row_value_and_requirement() -> None:
    ex = example(notes=[Note(i * 0.5, p, 13.0 if i == 9 else 0.5) for i, p in enumerate(GOOD)])
    (fail,) = check_example(ex, T[3]).failures
    assert fail[0] == "remi_roundtrip" and fail[2] == "0 notes lost (exact roundtrip)"


# ---- token ids are the tokenizer's -------------------------------------------------------------


def _beats(score) -> list[tuple[Fraction, Fraction, int]]:
    tpq = score.ticks_per_quarter
    return sorted((Fraction(int(n.time), tpq), Fraction(int(n.duration), tpq), int(n.pitch)) for t in score.tracks for n in t.notes)


def test_token_ids_are_the_project_tokenizers_and_decode_to_the_notes() -> None:
    tok = remi_tokenizer()
    notes = [Note(0, 69, 0.25, 90), Note(0.25, 71, 0.75, 100), Note(1.0, 72, 1.5, 110), Note(2.75, 74, 4.0, 70), Note(6.75, 76, 2.0), Note(9, 81, 0.25), Note(10, 69, 2), Note(13.5, 77, 0.5)]
    for bpm, key in ((140.0, "Am"), (128.0, "C")):
        ex = example(notes=notes, bpm=bpm, key=key)
        v = check_example(ex, T[3])
        assert v.passed, v.failures
        # Independent encoding: the melody's own MIDI file read by symusic.
        score = symusic.Score.from_midi(ex.to_melody().to_midi_bytes())
        seqs = tok.encode(score)
        seq = seqs[0] if isinstance(seqs, list) else seqs
        assert v.remi_ids.tolist() == list(seq.ids)
        decoded = tok.decode([v.remi_ids.tolist()])
        want = sorted((Fraction(n.start).limit_denominator(64), Fraction(n.duration).limit_denominator(64), n.pitch) for n in notes)
        assert _beats(decoded) == want
        assert [t for t in seq.tokens if t.startswith("Pitch_")] == [f"Pitch_{n.pitch}" for n in notes]


# ---- agreement with music.quality --------------------------------------------------------------


@pytest.fixture(scope="module")
def synth30() -> list[Example]:
    return [
        example_from_melody(m, source="tier3/synthetic", licence=m.attributes.get("license", ""), source_file=m.name)
        for m in synthetic_melodies(30, seed=1)
    ]


def _crafted() -> list[Example]:
    """Hand-made melodies that fail single rules (the rule-engine ones pass nearly everything)."""
    poly = [Note(i * 0.5, p, 1.0 if i in (1, 4, 7, 8) else 0.5) for i, p in enumerate(GOOD)]
    chord_stack = [Note(0, 69, 2), Note(0, 72, 2), Note(0, 76, 2), Note(2, 81, 1), Note(2.5, 71, 0.5)]
    return [
        with_out_of_key(3, name="c1"),
        with_out_of_key(5, name="c2"),
        example(notes=poly, name="c3"),
        example(notes=chord_stack, name="c4"),
        example([69, 71, 72, 74, 76, 77, 81], name="c5"),
        example([44, 71, 72, 74, 76, 77, 79, 81, 76, 69], bpm=119.0, name="c6"),
        example([], name="c7"),
        example(GOOD, key="F#", name="c8"),
    ]


@pytest.mark.parametrize("tempo_meaningful", [True, False])
def test_rule_values_agree_with_check_melody(synth30: list[Example], tempo_meaningful: bool) -> None:
    strict = QualityThresholds(min_notes=100, min_range_octaves=1.25, max_range_octaves=1.5, min_bpm=130, max_bpm=140, max_polyphony=0.2, min_scale_compliance=0.75)
    assert len(synth30) == 30
    failed_somewhere = set()
    for ex in synth30 + _crafted():
        ex = replace(ex, tempo_meaningful=tempo_meaningful)
        m = ex.to_melody()
        values = rule_values(ex)
        for th in (T[1], T[3], strict):
            report = check_melody(m, th, tempo_meaningful=tempo_meaningful)
            want = report.as_dict()
            got = dict(values)
            if not tempo_meaningful:
                assert got.pop("bpm") is None
            assert got == want
            fails = [f[0] for f in rule_failures(values, th, tempo_meaningful)]
            assert fails == [r.rule for r in report.failures]
            failed_somewhere |= set(fails)
    # Every rule fails somewhere, so the comparison covers failures as well as passes.
    expected = {"notes", "range_octaves", "polyphony", "scale_compliance"} | ({"bpm"} if tempo_meaningful else set())
    assert failed_somewhere == expected


def test_crafted_values_by_hand() -> None:
    c = {e.example_id: rule_values(e) for e in _crafted()}
    assert c["t3-c1"]["scale_compliance"] == pytest.approx(0.7)
    assert c["t3-c2"]["scale_compliance"] == pytest.approx(0.5)
    assert c["t3-c3"]["polyphony"] == 0.4
    # Three notes at beat 0: two onsets overlap; 2.5 starts inside 2-3: 3/5.
    assert c["t3-c4"]["polyphony"] == 0.6
    assert c["t3-c5"]["notes"] == 7
    assert c["t3-c6"]["range_octaves"] == 37 / 12 and c["t3-c6"]["bpm"] == 119.0
    # F# major (F# G# A# B C# D# E#): of 69 71 72 74 76 77 79 81 76 69 only B (71) and F (77, E#) are in.
    assert c["t3-c8"]["scale_compliance"] == pytest.approx(0.2)


# ---- the parallel path ---------------------------------------------------------------------------


def test_parallel_verdicts_equal_serial(synth30: list[Example]) -> None:
    bad = [
        example([69, 71, 72, 74, 76, 77, 81], name="seven"),
        example(notes=[Note(i * 0.5, p, 13.0 if i == 9 else 0.5) for i, p in enumerate(GOOD)], name="long"),
        with_out_of_key(2, name="t1", source="tier1/gold"),
    ]
    exs = [normalise(e) for e in synth30[:14]] + bad
    progress = []
    serial = filter_examples(exs, T, workers=1, chunk_size=6, progress=lambda d, n: progress.append((d, n)))
    assert progress == [(6, 17), (12, 17), (17, 17)]
    parallel = filter_examples(exs, T, workers=2, chunk_size=6, min_parallel=0)
    assert [v.example_id for v in parallel] == [e.example_id for e in exs]
    for a, b in zip(serial, parallel, strict=True):
        assert a.example_id == b.example_id
        assert a.passed == b.passed
        assert a.values == b.values
        assert a.failures == b.failures
        assert a.remi_detail == b.remi_detail
        assert np.array_equal(a.remi_ids, b.remi_ids)
    by_id = {v.example_id: v for v in serial}
    assert [f[0] for f in by_id["t3-seven"].failures] == ["notes"]
    assert [f[0] for f in by_id["t3-long"].failures] == ["remi_roundtrip"]
    assert [f[0] for f in by_id["t1-t1"].failures] == ["scale_compliance"]  # 0.8 < 0.9 for Tier 1


def test_verdict_key_tracks_content_thresholds_and_tempo_flag() -> None:
    ex = example()
    k = verdict_key(ex, T[3])
    assert verdict_key(example(), T[3]) == k
    assert verdict_key(ex, T[1]) != k
    assert verdict_key(replace(ex, tempo_meaningful=False), T[3]) != k
    assert verdict_key(replace(ex, bpm=141.0), T[3]) != k
    assert verdict_key(replace(ex, example_id="other"), T[3]) == k
    assert thresholds_key(T[3]) == thresholds_key(QualityThresholds.for_tier(3)) != thresholds_key(T[2])
