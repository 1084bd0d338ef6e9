"""Unit tests of evaluation.metrics: every metric on small melodies whose value is worked out by hand
in the comments, with its undefined cases; scores, composite, top line and inferred chords."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trance_assets.corpus.card import kl_bits, pitch_class_distribution
from trance_assets.evaluation.metrics import (
    COMPOSITE_WEIGHTS,
    EXTRA_METRICS,
    FEATURE_NAMES,
    METRICS,
    TARGETS,
    chord_tone_ratio,
    composite,
    feature_vector,
    hook_memorability,
    infer_bar_chords,
    kl_to_reference,
    metric_score,
    minor_adherence,
    npvi,
    phrase_regularity,
    pitch_class_vector,
    pitch_entropy,
    pitch_range,
    prepare,
    register_consistency,
    resolutions,
    score_many,
    score_melody,
    self_similarity_8,
    self_similarity_16,
    stepwise_ratio,
    top_line,
)
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.theory import parse_key

A, B, C, D, E, F, G = 69, 71, 72, 74, 76, 77, 79  # A4 .. G5


def mel(notes, key="Am", chords=(), bars=None) -> Melody:
    """notes: (start, pitch, duration) triples; chords: (symbol, start, duration) triples."""
    return Melody(
        notes=tuple(Note(float(s), int(p), float(d)) for s, p, d in notes),
        bpm=140.0,
        key=key,
        chords=tuple(ChordSpan(sym, float(s), float(d)) for sym, s, d in chords),
        bars=bars,
    )


def prep(notes, **kw):
    return prepare(mel(notes, **kw))


def seq(pitches, step=1.0, dur=1.0):
    """Consecutive notes, one per `step` beats."""
    return [(i * step, p, dur) for i, p in enumerate(pitches)]


EMPTY = prep([], bars=16)
SINGLE = prep([(0, A, 1)])


# ---- definitions -------------------------------------------------------------------------------


def test_weights_targets_and_metric_order() -> None:
    assert list(COMPOSITE_WEIGHTS) == [
        "pitch_entropy", "pitch_range", "chord_tone_ratio", "self_similarity_8", "self_similarity_16",
        "stepwise_ratio", "npvi", "kl_to_reference", "resolutions",
    ]
    # the table's weights sum to 0.85, not 1: the composite divides by the sum of the weights used
    assert math.isclose(sum(COMPOSITE_WEIGHTS.values()), 0.85)
    assert COMPOSITE_WEIGHTS["chord_tone_ratio"] == 0.20 and COMPOSITE_WEIGHTS["kl_to_reference"] == 0.15
    assert TARGETS["pitch_entropy"] == (2.5, 3.0) and TARGETS["npvi"] == (30.0, 60.0)
    assert TARGETS["chord_tone_ratio"] == 0.80 and TARGETS["self_similarity_16"] == 0.40
    assert TARGETS["kl_to_reference"] is None
    assert METRICS == tuple(COMPOSITE_WEIGHTS) + EXTRA_METRICS
    assert EXTRA_METRICS == ("minor_adherence", "phrase_regularity", "hook_memorability", "register_consistency")


# ---- top line and inferred chords --------------------------------------------------------------


def test_top_line_keeps_the_highest_note_per_onset_and_cuts_at_the_next_onset() -> None:
    notes = [Note(0, 60, 2), Note(0, 64, 1), Note(1, 62, 2), Note(2.5, 59, 0.5)]
    # onset 0: 64 beats 60 (60, held to beat 2, is dropped); onset 1: 62 lasts to 3 but 59 starts at
    # 2.5, so 62 is cut to 2.5 - 1 = 1.5 beats.
    assert top_line(notes) == [Note(0, 64, 1), Note(1, 62, 1.5), Note(2.5, 59, 0.5)]


def test_top_line_a_new_lower_onset_cuts_a_held_higher_note() -> None:
    assert top_line([Note(0, 84, 4), Note(1, 60, 1)]) == [Note(0, 84, 1), Note(1, 60, 1)]


def test_top_line_groups_onsets_within_tolerance_and_prefers_the_longer_equal_pitch() -> None:
    # 60 at 0 and 67 at 0.0000001 are one onset: 67 wins although it starts later.
    assert top_line([Note(0, 60, 1), Note(1e-7, 67, 1)]) == [Note(1e-7, 67, 1)]
    assert top_line([Note(0, 67, 0.5), Note(0, 67, 1)]) == [Note(0, 67, 1)]


def test_top_line_leaves_a_monophonic_line_unchanged() -> None:
    notes = [Note(0, 60, 1), Note(1.5, 62, 0.5), Note(2, 64, 2)]
    assert top_line(reversed(notes)) == notes
    assert top_line([]) == []


def test_infer_bar_chords_picks_the_triad_covering_most_sounding_time() -> None:
    key = parse_key("Am")  # triads: Am Bdim C Dm E(V major) F G
    notes = [
        # bar 0: A 2 beats, C 1, E 1 -> Am covers 4; F (A, C) 3; C (C, E) 2
        Note(0, A, 2), Note(2, C, 1), Note(3, E, 1),
        # bar 1: G 2, B 1, D 1 -> G (G B D) covers 4; Bdim (B D) 2
        Note(4, G, 2), Note(6, B, 1), Note(7, D, 1),
        # bar 2: C 4 beats -> Am, C and F all cover 4: the tie goes to degree 1 (Am)
        Note(8, C, 4),
    ]  # bar 3 empty -> every triad covers 0 -> tonic
    chords = infer_bar_chords(notes, key, bars=4)
    assert [c.symbol for c in chords] == ["Am", "G", "Am", "Am"]
    assert [(c.start, c.duration, c.inferred) for c in chords] == [(b * 4.0, 4.0, True) for b in range(4)]
    assert len(infer_bar_chords(notes, "Am")) == 3  # default: ceil(12 / 4) bars


def test_infer_bar_chords_weighs_a_note_by_the_time_it_sounds_in_each_bar() -> None:
    notes = [
        Note(0, D, 3),  # bar 0: D 3 beats
        Note(3, F, 2),  # F sounds 1 beat in bar 0 and 1 beat in bar 1
        Note(5, A, 1),  # bar 1: A 1 beat
        Note(6, C, 2),  # bar 1: C 2 beats
    ]
    # bar 0: D 3 + F 1: Bdim (B D F) 4 = Dm (D F A) 4 -> degree 2 before degree 4: Bdim.
    # bar 1: F 1 + A 1 + C 2: F (F A C) 4 > Am (A C) 3 > Dm (F A) 2 -> F.
    # (Weighting F's 2 beats by its onset bar would give bar 1 Am.)
    assert [c.symbol for c in infer_bar_chords(notes, "Am")] == ["Bdim", "F"]


def test_prepare_uses_the_melodys_chords_else_inferred_ones_and_bars() -> None:
    own = prep([(0, A, 1), (5, C, 1)], chords=[("F", 0, 8)])
    assert [c.symbol for c in own.chords] == ["F"] and own.chords_inferred is False
    assert own.bars == 2  # ceil(6 / 4)
    inferred = prep([(0, A, 1), (5, C, 1)], bars=4)
    assert inferred.chords_inferred is True and len(inferred.chords) == 4 and inferred.bars == 4
    assert prepare(mel([(0, A, 1)]), key="C").key == parse_key("C")


def test_prepare_rejects_an_unreadable_chord_symbol_naming_it() -> None:
    with pytest.raises(ValueError, match="Hm7"):
        prep([(0, A, 1)], chords=[("Hm7", 0, 4)])


# ---- pitch metrics -------------------------------------------------------------------------------


def test_pitch_entropy() -> None:
    # counts 60:2, 62:1, 64:1 -> p = .5, .25, .25 -> H = .5*1 + 2 * .25*2 = 1.5 bits
    assert pitch_entropy(prep(seq([60, 60, 62, 64]))) == pytest.approx(1.5)
    # 8 distinct pitches once each -> log2 8 = 3
    assert pitch_entropy(prep(seq(range(60, 68)))) == pytest.approx(3.0)
    # MIDI pitch numbers, not pitch classes: 60 and 72 are two values -> 1 bit
    assert pitch_entropy(prep(seq([60, 72]))) == pytest.approx(1.0)
    assert pitch_entropy(SINGLE) == 0.0
    assert pitch_entropy(EMPTY) is None


def test_pitch_range() -> None:
    assert pitch_range(prep(seq([60, 79, 65]))) == pytest.approx(19 / 12)  # 1.5833 octaves
    assert pitch_range(SINGLE) == 0.0
    assert pitch_range(EMPTY) is None


def test_chord_tone_ratio() -> None:
    p = prep(
        [(0, A, 1), (1, B, 1), (2, C, 1), (4, 65, 1), (5, 67, 1), (8.5, 65, 1), (12, A, 1)],
        chords=[("Am", 0, 4), ("F", 4, 4), ("G7", 8, 4)],
    )
    # Am: A yes, B no, C yes | F: F yes, G no | G7: F yes (the 7th) | beat 12: no chord -> excluded
    # -> 4 / 6
    assert chord_tone_ratio(p) == pytest.approx(4 / 6)
    # a note at a chord's end belongs to the next span, never the previous one
    assert chord_tone_ratio(prep([(4, 65, 1)], chords=[("Am", 0, 4), ("F", 4, 4)])) == 1.0
    assert chord_tone_ratio(prep([(0, A, 1)], chords=[("F", 4, 4)])) is None  # no note has a chord
    assert chord_tone_ratio(EMPTY) is None


def test_chord_tone_ratio_with_inferred_chords() -> None:
    # bar 0 A C E B: Am covers 3 beats -> Am; B is the only non-chord tone -> 3 / 4
    p = prep(seq([A, C, E, B]))
    assert [c.symbol for c in p.chords] == ["Am"] and chord_tone_ratio(p) == pytest.approx(0.75)


def test_stepwise_ratio() -> None:
    # intervals 2, 0, 3, 1, 7 -> <= 2: three of five
    assert stepwise_ratio(prep(seq([60, 62, 62, 65, 64, 71]))) == pytest.approx(0.6)
    assert stepwise_ratio(SINGLE) is None
    assert stepwise_ratio(EMPTY) is None


def test_register_consistency() -> None:
    # 60, 72: mean 66, population std 6 -> 1 - 6/24 = 0.75
    assert register_consistency(prep(seq([60, 72]))) == pytest.approx(0.75)
    # 36, 96: std 30 -> 1 - 30/24 < 0 -> floored at 0
    assert register_consistency(prep(seq([36, 96]))) == 0.0
    assert register_consistency(SINGLE) == 1.0
    assert register_consistency(EMPTY) is None


def test_minor_adherence() -> None:
    # A natural ∪ harmonic minor = A B C D E F G G#: A B C G G# in, F# C# out -> 5 / 7
    assert minor_adherence(prep(seq([A, B, C, G, 68, 66, 61]))) == pytest.approx(5 / 7)
    # a C major melody is measured against C minor (C D Eb F G Ab Bb B): C G in, E A out -> 0.5
    assert minor_adherence(prep(seq([60, 64, 67, 69]), key="C")) == pytest.approx(0.5)
    assert minor_adherence(EMPTY) is None


# ---- rhythm metrics ------------------------------------------------------------------------------


def test_npvi() -> None:
    # onsets 0 1 2 4 -> d = 1, 1, 2 (m = 3): |1-1|/1 = 0, |1-2|/1.5 = 2/3 -> 100/2 * 2/3 = 33.33
    assert npvi(prep([(0, 60, 1), (1, 62, 1), (2, 64, 2), (4, 65, 1)])) == pytest.approx(100 / 3)
    assert npvi(prep(seq([60] * 6, step=0.5, dur=0.5))) == 0.0  # isochronous
    assert npvi(prep(seq([60, 62]))) is None  # m = 1
    assert npvi(SINGLE) is None
    assert npvi(EMPTY) is None


def test_phrase_regularity() -> None:
    notes = [
        (0, A, 1),  # first note: phrase start at 0 -> on the boundary
        (1, B, 2),  # rest 0
        (5, C, 10),  # rest 5 - 3 = 2 -> start at 5: 5 beats from 0 -> off
        (16.5, D, 1),  # rest 16.5 - 15 = 1.5 -> start, 0.5 from 16 -> on
        (18, E, 1),  # rest 0.5 -> not a start
        (31, C, 1),  # rest 12 -> start, exactly 1 beat before 32 -> on (inclusive)
        (33.5, D, 1),  # rest 1.5 -> start, 1.5 from 32 -> off
        (35.5, E, 1),  # rest exactly 1 -> start, 3.5 from 32 -> off
    ]
    # starts 0, 5, 16.5, 31, 33.5, 35.5 -> on: 0, 16.5, 31 -> 3 / 6
    assert phrase_regularity(prep(notes)) == pytest.approx(0.5)
    assert phrase_regularity(prep([(2, A, 1)])) == 0.0  # the only start is 2 beats off
    assert phrase_regularity(EMPTY) is None


def test_resolutions_in_a_minor_key() -> None:
    # A minor degrees: A1 B2 C3 D4 E5 F6 G7, and G#=7 too.
    pitches = [68, 69, 67, 69, 62, 60, 59, 57, 67, 57, 64, 62]
    # G#->A (7->1, +1) yes | A->G no | G->A (7->1, +2) yes | A->D no | D->C (4->3, -2) yes |
    # C->B no | B->A (2->1, -2) yes | A->G no | G->A (7->1, a leap of -10) no | A->E no |
    # E->D (5->4) no -> 4 resolutions
    assert resolutions(prep(seq(pitches), bars=8)) == pytest.approx(4.0)  # 4 per 8 bars
    assert resolutions(prep(seq(pitches), bars=16)) == pytest.approx(2.0)  # 4 * 8 / 16


def test_resolutions_in_a_major_key() -> None:
    # C major: B->C (7->1) yes | C->F no | F->E (4->3) yes | E->D (3->2) no | D->C (2->1) yes |
    # C->Bb no | Bb->C no (Bb is no degree of C major) -> 3 in 4 bars -> 3 * 8 / 4 = 6 per 8 bars
    assert resolutions(prep(seq([71, 72, 65, 64, 62, 60, 70, 72]), key="C", bars=4)) == pytest.approx(6.0)
    assert resolutions(SINGLE) is None
    assert resolutions(EMPTY) is None


# ---- onset-grid metrics --------------------------------------------------------------------------


def bar_notes(pcs_by_bar, octave=60):
    """One quarter note at the start of each bar; None = empty bar."""
    return [(4 * b, octave + pc, 1) for b, pc in enumerate(pcs_by_bar) if pc is not None]


def test_onset_grid_rounds_onsets_to_the_nearest_16th() -> None:
    grid = prep([(0.1, 60, 0.1), (0.2, 62, 0.1), (0.375, 64, 0.1)], bars=1).onset_grid
    # 0.1 * 4 = 0.4 -> step 0; 0.2 * 4 = 0.8 -> step 1; 0.375 * 4 = 1.5 -> step 2 (half up)
    assert grid.shape == (16, 12)
    assert list(zip(*np.nonzero(grid))) == [(0, 0), (1, 2), (2, 4)]


def test_self_similarity_8() -> None:
    # chunk 1: A at the start of bars 0-7 (8 onsets); chunk 2: A at bars 8-11, C at bars 12-15.
    # dot = 4 shared onsets, norms sqrt(8) * sqrt(8) -> cos = 4 / 8 = 0.5
    sixteen = [9] * 12 + [0] * 4
    assert self_similarity_8(prep(bar_notes(sixteen))) == pytest.approx(0.5)
    # a third chunk equal to chunk 2: cos(2, 3) = 1 -> mean (0.5 + 1) / 2 = 0.75
    assert self_similarity_8(prep(bar_notes(sixteen + [9] * 4 + [0] * 4))) == pytest.approx(0.75)
    assert self_similarity_8(prep(bar_notes([9] * 15))) is None  # 15 bars: one whole chunk
    assert self_similarity_8(EMPTY) is None


def test_self_similarity_8_silent_chunks() -> None:
    # notes only in chunk 1 of 2: cos(non-empty, empty) = 0
    assert self_similarity_8(prep(bar_notes([9] * 8), bars=16)) == 0.0
    # chunks 2 and 3 both silent: that pair leaves the mean -> 0 (it would be 0.5 if counted as 1)
    assert self_similarity_8(prep(bar_notes([9] * 8), bars=24)) == 0.0
    # 20 bars, one note in bar 17: both whole chunks (bars 0-15) are silent, no pair left -> None
    assert self_similarity_8(prep([(70, 60, 1)], bars=20)) is None


def test_self_similarity_16() -> None:
    # chunk 1: A at bars 0-15 (16 onsets); chunk 2: A at bars 16-27 (12), C at bars 28-31 (4)
    # dot = 12, norms 4 * 4 -> 12 / 16 = 0.75
    pcs = [9] * 28 + [0] * 4
    p = prep(bar_notes(pcs))
    assert self_similarity_16(p) == pytest.approx(0.75)
    # the same melody in 8-bar chunks: cos 1, 1, then 4/8 -> (1 + 1 + 0.5) / 3
    assert self_similarity_8(p) == pytest.approx(2.5 / 3)
    assert self_similarity_16(prep(bar_notes(pcs[:31]))) is None  # 31 bars
    assert self_similarity_16(prep(bar_notes([9] * 16))) is None  # 16 bars


def test_hook_memorability_steps_by_one_bar() -> None:
    # bars 0-3: A at each bar start + C at beat 2 of bar 0 (5 onsets); bar 4 empty;
    # bars 5-8: the same 4 bars again; bar 9 empty; 10 bars -> windows start at bars 4, 5, 6.
    hook = [(0, A, 1), (2, C, 1), (4, A, 1), (8, A, 1), (12, A, 1)]
    notes = hook + [(s + 20, p, d) for s, p, d in hook]
    p = prep(notes, bars=10)
    # window 4 (bars 4-7): A at window bars 1-3 match (3), C at window bar 1 does not -> 3/(sqrt5*2)
    # window 5 (bars 5-8): identical -> 1.0; window 6: A at window bars 0-2 -> 3/(sqrt5*sqrt3)
    assert hook_memorability(p) == pytest.approx(1.0)
    # The copy without its first A (bar 5 keeps only the C at beat 2; A at bars 6-8):
    # window 4: A at window bars 2, 3 match, 3 onsets -> 2 / (sqrt5 * sqrt3) = 0.5164;
    # window 5: C at window bar 0 beat 2 and A at window bars 1-3 match, 4 onsets (norm 2)
    #           -> 4 / (sqrt5 * 2) = 0.8944 (the maximum);
    # window 6: A at window bars 0-2, 3 onsets -> 3 / (sqrt5 * sqrt3) = 0.7746
    notes2 = hook + [(20 + 2, C, 1), (20 + 4, A, 1), (20 + 8, A, 1), (20 + 12, A, 1)]
    assert hook_memorability(prep(notes2, bars=10)) == pytest.approx(4 / (2 * math.sqrt(5)))


def test_hook_memorability_undefined_cases() -> None:
    assert hook_memorability(prep(bar_notes([9] * 7))) is None  # 7 bars
    assert hook_memorability(prep([(16, A, 1)], bars=8)) is None  # silent first 4 bars
    assert hook_memorability(prep([(0, A, 1)], bars=8)) == 0.0  # silent later window
    assert hook_memorability(EMPTY) is None


# ---- kl_to_reference -----------------------------------------------------------------------------


def test_kl_to_reference_by_hand() -> None:
    # Am, A and C one beat each. Rotated to A = 0: bins 0 and 3 hold 0.5 each; + 1e-6 in all 12
    # bins, renormalised by 1 + 12e-6. Q uniform 1/12.
    p_hi = (0.5 + 1e-6) / (1 + 12e-6)
    p_lo = 1e-6 / (1 + 12e-6)
    expected = 2 * p_hi * math.log2(12 * p_hi) + 10 * p_lo * math.log2(12 * p_lo)  # ≈ 2.5849
    uniform = np.full(12, 1 / 12)
    p = prep([(0, A, 1), (1, C, 1)])
    assert kl_to_reference(p, uniform) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(math.log2(6), abs=1e-3)
    # a major key is rotated to its relative minor: C major with the same notes is the same P
    assert kl_to_reference(prep([(0, A, 1), (1, C, 1)], key="C"), uniform) == pytest.approx(expected, rel=1e-12)
    # the reuse of corpus.card: KL(P, P) = 0
    pc = pitch_class_distribution(["Am"], [[A, C]], [[1.0, 1.0]])
    assert kl_to_reference(p, pc) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_reference(p, None) is None
    assert kl_to_reference(EMPTY, uniform) is None


def test_kl_to_reference_duration_weighting_and_zero_bins() -> None:
    # A 3 beats, C 1 beat -> 0.75 / 0.25 before smoothing; a Q with zero bins is ε-smoothed: finite
    p = prep([(0, A, 3), (3, C, 1)])
    q = np.zeros(12)
    q[[0, 3]] = 0.5
    qs = (q + 1e-6) / (1 + 12e-6)
    expected = kl_bits(pitch_class_distribution(["Am"], [[A, C]], [[3.0, 1.0]]), qs)
    assert kl_to_reference(p, q) == pytest.approx(expected)
    assert 0.18 < expected < 0.19  # ≈ .75 log2(1.5) + .25 log2(.5) = 0.1887
    with pytest.raises(ValueError, match="12"):
        kl_to_reference(p, [1, 2, 3])


# ---- scores and the composite --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "score"),
    [
        ("pitch_entropy", 2.75, 1.0),  # inside 2.5-3.0
        ("pitch_entropy", 2.5, 1.0),
        ("pitch_entropy", 2.25, 0.5),  # 0.25 below, width 0.5 -> 1 - 0.5
        ("pitch_entropy", 3.1, 0.8),  # 0.1 above -> 1 - 0.2
        ("pitch_entropy", 3.5, 0.0),  # one width above
        ("pitch_entropy", 1.0, 0.0),
        ("npvi", 75.0, 0.5),  # 15 above 60, width 30
        ("npvi", 10.0, 1 / 3),  # 20 below 30 -> 1 - 20/30
        ("pitch_range", 2.0, 1.0),
        ("chord_tone_ratio", 0.4, 0.5),  # 0.4 / 0.8
        ("chord_tone_ratio", 0.9, 1.0),
        ("self_similarity_16", 0.1, 0.25),  # 0.1 / 0.4
        ("stepwise_ratio", 0.0, 0.0),
        ("kl_to_reference", 3.0, 0.25),  # 1 / (1 + 3)
        ("kl_to_reference", 0.0, 1.0),
        ("resolutions", 0.5, 0.5),
        ("resolutions", 2.0, 1.0),
    ],
)
def test_metric_score(name: str, value: float, score: float) -> None:
    assert metric_score(name, value) == pytest.approx(score)


def test_metric_score_undefined_and_unscored() -> None:
    assert metric_score("npvi", None) is None
    assert metric_score("npvi", float("nan")) is None
    assert metric_score("hook_memorability", 0.9) is None  # reported beside the composite
    with pytest.raises(ValueError, match="bogus"):
        metric_score("bogus", 1.0)


PERFECT = {
    "pitch_entropy": 2.7, "pitch_range": 2.0, "chord_tone_ratio": 0.9, "self_similarity_8": 0.7,
    "self_similarity_16": 0.5, "stepwise_ratio": 0.7, "npvi": 45.0, "kl_to_reference": 0.0, "resolutions": 1.5,
}


def test_composite_renormalises_over_defined_metrics() -> None:
    assert composite(PERFECT) == pytest.approx(1.0)
    # chord_tone_ratio 0.4 scores 0.5; all weights sum to 0.85:
    # (0.85 - 0.20 + 0.20 * 0.5) / 0.85 = 0.75 / 0.85 = 0.88235
    assert composite({**PERFECT, "chord_tone_ratio": 0.4}) == pytest.approx(0.75 / 0.85)
    # without self_similarity_16 (0.05) and kl (0.15): weights sum 0.65 -> (0.65 - 0.2 + 0.1) / 0.65
    partial = {**PERFECT, "chord_tone_ratio": 0.4, "self_similarity_16": None}
    del partial["kl_to_reference"]
    assert composite(partial) == pytest.approx(0.55 / 0.65)
    # one metric alone: its own score
    assert composite({"npvi": 75.0}) == pytest.approx(0.5)
    # extra metrics never enter; nothing defined -> None
    assert composite({**PERFECT, "hook_memorability": 0.0, "minor_adherence": 0.0}) == pytest.approx(1.0)
    assert composite({m: None for m in METRICS}) is None
    assert composite({}) is None


# ---- whole-melody scoring ------------------------------------------------------------------------


def test_score_melody_row() -> None:
    m = mel(seq([A, C, E, B, A, G, 68, A]), chords=[("Am", 0, 8)])
    row = score_melody(m, np.full(12, 1 / 12))
    assert set(row) == set(METRICS) | {"composite", "chords_inferred", "n_notes", "bars"}
    assert row["n_notes"] == 8 and row["bars"] == 2 and row["chords_inferred"] is False
    # A C E B A G G# A over Am: chord tones A C E A A -> 5 / 8
    assert row["chord_tone_ratio"] == pytest.approx(5 / 8)
    assert row["self_similarity_8"] is None and row["hook_memorability"] is None
    assert row["composite"] == pytest.approx(composite(row))


def test_score_melody_reduces_polyphony_to_the_top_line() -> None:
    m = mel([(0, A, 2), (0, 57, 2), (2, C, 2), (2, 60, 2)])
    row = score_melody(m)
    assert row["n_notes"] == 2 and row["pitch_range"] == pytest.approx(3 / 12)


def test_score_melody_empty() -> None:
    row = score_melody(mel([], bars=16), np.full(12, 1 / 12))
    assert all(row[m] is None for m in METRICS)
    assert row["composite"] is None and row["n_notes"] == 0 and row["bars"] == 16


def test_score_many_matches_score_melody_serial_and_pooled() -> None:
    from trance_assets.music.synthetic import synthetic_melodies

    melodies = list(synthetic_melodies(6, seed=1, bars_choices=(16,)))
    q = pitch_class_distribution([m.key for m in melodies], [m.pitches for m in melodies], [[n.duration for n in m.notes] for m in melodies])
    expected = [score_melody(m, q) for m in melodies]
    assert score_many(melodies, q) == expected
    assert score_many(melodies, q, workers=2, chunk_size=2) == expected
    assert all(r["self_similarity_8"] is not None and r["self_similarity_16"] is None for r in expected)
    assert score_many([]) == []


def test_pitch_class_vector_and_feature_vector() -> None:
    m = mel([(0, A, 3), (3, C, 1)])
    pc = pitch_class_vector(m)
    assert np.allclose(pc, pitch_class_distribution(["Am"], [[A, C]], [[3.0, 1.0]]))
    assert pc.sum() == pytest.approx(1.0) and pc[0] > pc[3] > pc[1]
    row = score_melody(m)
    vec = feature_vector(row, pc)
    assert vec.shape == (len(METRICS) + 12,) == (len(FEATURE_NAMES),)
    assert np.isnan(vec[METRICS.index("npvi")])  # two notes: undefined
    assert np.isnan(vec[METRICS.index("kl_to_reference")])  # no reference
    assert vec[METRICS.index("pitch_range")] == pytest.approx(3 / 12)
    assert np.array_equal(vec[-12:], pc)
    with pytest.raises(ValueError, match="12"):
        feature_vector(row, [1.0, 2.0])
