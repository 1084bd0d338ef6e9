"""The corpus quality filter (music.quality) rule by rule, and the analysis functions it rests on
(music.analysis), on melodies whose values were worked out by hand."""

from __future__ import annotations

import music21
import pytest

from trance_assets.music.analysis import (
    estimate_key,
    pitch_class_histogram,
    pitch_range_semitones,
    polyphony_ratio,
    scale_compliance,
)
from trance_assets.music.melody import Melody, Note
from trance_assets.music.quality import QualityThresholds, check_melody
from trance_assets.music.rules import generate
from trance_assets.music.theory import Key, default_progression, parse_key


def seq(pitches: list[int], step: float = 0.5, dur: float = 0.5) -> list[Note]:
    """One note every `step` beats."""
    return [Note(i * step, p, dur) for i, p in enumerate(pitches)]


def mel(notes: list[Note], bpm: float = 140, key: str = "Am") -> Melody:
    return Melody(notes=tuple(notes), bpm=bpm, key=key)


# A minor, one octave (A4-A5), ten monophonic 8th notes: passes every rule of every tier.
GOOD = [69, 71, 72, 74, 76, 77, 79, 81, 76, 69]


# ---- analysis: polyphony ---------------------------------------------------------------------


def test_polyphony_ratio_hand_computed() -> None:
    # 0.5 starts under the note of 0-1; 2.5 under 2-3; 3 starts as 2-3 ends (not overlapping): 2/5.
    notes = [Note(0, 60, 1), Note(0.5, 62, 1), Note(2, 64, 1), Note(2.5, 65, 0.25), Note(3, 67, 1)]
    assert polyphony_ratio(notes) == 0.4
    # A triad then a single note: the 2nd and 3rd onsets overlap the 1st: 2/4.
    assert polyphony_ratio([Note(0, 60, 1), Note(0, 64, 1), Note(0, 67, 1), Note(1, 60, 1)]) == 0.5
    # A pedal under three short notes: all three overlap it (the latest end, not the last note's): 3/4.
    assert polyphony_ratio([Note(0, 48, 4), Note(1, 62, 0.5), Note(2, 64, 0.5), Note(3, 65, 0.5)]) == 0.75
    # Legato, touching notes: 0.
    assert polyphony_ratio(seq([60, 62, 64], step=1, dur=1)) == 0.0
    assert polyphony_ratio([]) is None


# ---- analysis: scale compliance --------------------------------------------------------------


def test_scale_compliance_hand_computed() -> None:
    # A B C D E F G G# C# F#: the first 8 are natural ∪ harmonic A minor, C# and F# are not: 8/10.
    notes = seq([69, 71, 72, 74, 76, 77, 79, 80, 73, 78])
    assert scale_compliance(notes, parse_key("Am")) == 0.8
    # In C major G#, C# and F# are out: 7/10.
    assert scale_compliance(notes, parse_key("C")) == 0.7
    # Octaves do not matter, only pitch classes.
    assert scale_compliance(seq([33, 45, 57, 105]), parse_key("Am")) == 1.0
    assert scale_compliance([], parse_key("Am")) is None


def test_pitch_class_histogram_and_range() -> None:
    notes = [Note(0, 69, 2), Note(2, 81, 1), Note(3, 64, 0.5)]
    h = pitch_class_histogram(notes)
    assert h[9] == 3.0 and h[4] == 0.5 and h.sum() == 3.5
    assert list(pitch_class_histogram(notes, weighted=False)[[9, 4]]) == [2.0, 1.0]
    assert pitch_range_semitones(notes) == 17
    assert pitch_range_semitones([]) is None


# ---- analysis: key estimation ----------------------------------------------------------------


def test_estimate_key_on_scale_melodies() -> None:
    # A harmonic minor up and down, tonic held and the dominant stressed: A minor.
    a_minor = seq([69, 71, 72, 74, 76, 77, 80, 81, 80, 77, 76, 74, 72, 71], step=1, dur=1)
    a_minor += [Note(14, 64, 2), Note(16, 69, 4)]
    assert estimate_key(a_minor) == Key(9, "minor")
    # C major up and down, ending on a held C: C major.
    c_major = seq([60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62], step=1, dur=1) + [Note(14, 60, 4)]
    assert estimate_key(c_major) == Key(0, "major")


@pytest.mark.parametrize("shift", range(12))
def test_estimate_key_is_transposition_equivariant(shift: int) -> None:
    a_minor = seq([69, 71, 72, 74, 76, 77, 80, 81, 76, 69], step=1, dur=1) + [Note(10, 69, 4)]
    moved = [Note(n.start, n.pitch + shift, n.duration) for n in a_minor]
    assert estimate_key(moved) == Key((9 + shift) % 12, "minor")


def test_estimate_key_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        estimate_key([])


def _music21_stream(m: Melody) -> music21.stream.Stream:
    s = music21.stream.Stream()
    for n in m.notes:
        x = music21.note.Note(n.pitch)
        x.quarterLength = n.duration
        s.insert(n.start, x)
    return s


def _as_key(k: music21.key.Key) -> Key:
    return Key(k.tonic.pitchClass, k.mode)


def test_estimate_key_agrees_with_music21() -> None:
    """Five rule-engine melodies in different keys, converted note for note into a music21 stream.

    `analyze('krumhansl')` runs the same algorithm with the same Krumhansl-Kessler profiles on the
    same duration-weighted histogram: it must agree on all five. Note that music21's *default*
    `analyze('key')` is not Krumhansl-Schmuckler but Aarden-Essen, whose profiles lean towards the
    subdominant: on the A minor melody (tonic, E and the i-VI-III-VII chord tones, with D frequent)
    it answers D minor, so against it we ask for agreement on at least 4 of 5 (it is 4 of 5 here).
    """
    melodies = [generate(k, 140, default_progression(parse_key(k)), 16, 0) for k in ("Am", "Em", "Dm", "Bm", "G")]
    ours = [estimate_key(m.notes) for m in melodies]
    ks = [_as_key(_music21_stream(m).analyze("krumhansl")) for m in melodies]
    assert ours == ks
    default = [_as_key(_music21_stream(m).analyze("key")) for m in melodies]
    agree = sum(a == b for a, b in zip(ours, default))
    assert agree >= 4, list(zip([k.name for k in ours], [k.name for k in default]))


# ---- the corpus filter, rule by rule ---------------------------------------------------------

TIER1 = QualityThresholds.for_tier(1)


def test_thresholds_per_tier() -> None:
    assert TIER1 == QualityThresholds(8, 1.0, 3.0, 120.0, 160.0, 0.30, 0.90)
    assert QualityThresholds.for_tier(2).min_scale_compliance == 0.70
    assert QualityThresholds.for_tier(3).min_scale_compliance == 0.60
    assert QualityThresholds.for_tier(1, max_range_octaves=2.5).max_range_octaves == 2.5
    with pytest.raises(ValueError, match="tier"):
        QualityThresholds.for_tier(4)


def test_a_good_melody_passes_every_tier() -> None:
    for tier in (1, 2, 3):
        report = check_melody(mel(seq(GOOD)), QualityThresholds.for_tier(tier))
        assert report.passed is True
        assert report.reason() == ""
        assert report.failures == ()
    assert check_melody(mel(seq(GOOD)), TIER1).as_dict() == {
        "notes": 10,
        "range_octaves": 1.0,
        "bpm": 140,
        "polyphony": 0.0,
        "scale_compliance": 1.0,
    }


def test_rule_notes() -> None:
    assert check_melody(mel(seq(GOOD[:8])), TIER1).passed  # exactly 8 notes
    report = check_melody(mel(seq([69, 71, 72, 74, 76, 77, 81])), TIER1)
    assert report.passed is False
    assert report.reason() == "notes=7 (needs >= 8)"


def test_rule_range_octaves() -> None:
    narrow = check_melody(mel(seq([69, 71, 72, 74, 76, 77, 79, 80, 76, 69])), TIER1)  # 11 semitones
    assert narrow.reason() == "range_octaves=0.917 (needs 1-3 octaves)"
    wide = check_melody(mel(seq([45, 71, 72, 74, 76, 77, 79, 81, 84, 69])), TIER1)  # 39 semitones
    assert wide.reason() == "range_octaves=3.250 (needs 1-3 octaves)"
    three = check_melody(mel(seq([45, 71, 72, 74, 76, 77, 79, 81, 81, 69])), TIER1)  # 36: the limit
    assert three.passed is True


def test_rule_bpm() -> None:
    assert check_melody(mel(seq(GOOD), bpm=120), TIER1).passed
    assert check_melody(mel(seq(GOOD), bpm=160), TIER1).passed
    assert check_melody(mel(seq(GOOD), bpm=170.0), TIER1).reason() == "bpm=170.000 (needs 120-160 BPM)"
    assert check_melody(mel(seq(GOOD), bpm=119.5), TIER1).reason() == "bpm=119.500 (needs 120-160 BPM)"
    # Without a meaningful tempo (e.g. a file with none) the rule is not applied at all.
    report = check_melody(mel(seq(GOOD), bpm=170), TIER1, tempo_meaningful=False)
    assert report.passed is True
    assert "bpm" not in report.as_dict()


def test_rule_polyphony() -> None:
    # Notes 2, 4 and 6 (of 10) start while the note before still sounds: 3/10 = 0.3, allowed.
    notes = seq(GOOD)
    at_limit = [Note(n.start, n.pitch, 0.75 if i in (1, 3, 5) else 0.5) for i, n in enumerate(notes)]
    assert polyphony_ratio(at_limit) == 0.3
    assert check_melody(mel(at_limit), TIER1).passed is True
    over = [Note(n.start, n.pitch, 0.75 if i in (1, 3, 5, 7) else 0.5) for i, n in enumerate(notes)]
    assert check_melody(mel(over), TIER1).reason() == "polyphony=0.400 (needs <= 0.3)"


def test_rule_scale_compliance_by_tier() -> None:
    nine = seq([69, 71, 72, 74, 76, 77, 79, 81, 75, 69])  # D# is out: 9/10
    assert check_melody(mel(nine), TIER1).passed is True
    eight = seq([69, 71, 72, 74, 76, 73, 79, 81, 75, 69])  # C# and D# out: 8/10
    assert check_melody(mel(eight), TIER1).reason() == "scale_compliance=0.800 (needs >= 0.9)"
    assert check_melody(mel(eight), QualityThresholds.for_tier(2)).passed is True
    six = seq([69, 70, 72, 73, 76, 78, 75, 81, 76, 69])  # Bb, C#, F#, D# out: 6/10
    assert check_melody(mel(six), QualityThresholds.for_tier(2)).reason() == "scale_compliance=0.600 (needs >= 0.7)"
    assert check_melody(mel(six), QualityThresholds.for_tier(3)).passed is True
    # The melody's own key decides: G# is in A minor (harmonic) but not in C major.
    with_leading_tone = seq([69, 71, 72, 74, 76, 77, 80, 81, 76, 69])
    assert check_melody(mel(with_leading_tone, key="Am"), TIER1).as_dict()["scale_compliance"] == 1.0
    assert check_melody(mel(with_leading_tone, key="C"), TIER1).as_dict()["scale_compliance"] == 0.9


def test_several_failures_are_all_named() -> None:
    report = check_melody(mel(seq([69, 70, 72]), bpm=100.0), TIER1)
    assert [r.rule for r in report.failures] == ["notes", "range_octaves", "bpm", "scale_compliance"]
    assert report.reason() == (
        "notes=3 (needs >= 8); range_octaves=0.250 (needs 1-3 octaves); bpm=100.000 (needs 120-160 BPM); "
        "scale_compliance=0.667 (needs >= 0.9)"
    )


def test_an_empty_melody_fails_with_undefined_values() -> None:
    report = check_melody(mel([]), TIER1)
    assert report.as_dict() == {
        "notes": 0,
        "range_octaves": None,
        "bpm": 140,
        "polyphony": None,
        "scale_compliance": None,
    }
    assert report.reason() == (
        "notes=0 (needs >= 8); range_octaves=n/a (needs 1-3 octaves); polyphony=n/a (needs <= 0.3); "
        "scale_compliance=n/a (needs >= 0.9)"
    )
