"""The rule engine's contract (music.rules.generate), property by property, over all 24 keys.

Every property is checked on 72 melodies (24 keys x 3 seeds, each with a stock progression of its
mode) plus targeted cases: arbitrary chord symbols, short and long forms, parameter extremes.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest

from trance_assets.formats.remi import remi_roundtrip
from trance_assets.music.analysis import polyphony_ratio
from trance_assets.music.melody import Melody
from trance_assets.music.quality import QualityThresholds, check_melody
from trance_assets.music.rules import RuleParams, generate
from trance_assets.music.theory import (
    ALL_KEYS,
    MAJOR_PROGRESSIONS,
    MINOR_PROGRESSIONS,
    Key,
    parse_chord,
    progression_symbols,
)

SEEDS = (0, 1, 2)
CASES = [(k, s) for k in ALL_KEYS for s in SEEDS]
CASE_IDS = [f"{k.name}-s{s}" for k, s in CASES]
MIXED = ["Am", "Dm7", "G7", "Cmaj7", "E7", "F#m7b5", "Bbmaj7", "Esus4", "C/E"]


def stock_progression(key: Key, seed: int) -> tuple[str, ...]:
    table = MINOR_PROGRESSIONS if key.mode == "minor" else MAJOR_PROGRESSIONS
    return tuple(progression_symbols(key, table[(key.tonic + seed) % len(table)]))


@lru_cache(maxsize=None)
def melody(
    key: str, seed: int, progression: tuple[str, ...] | None = None, bars: int = 16, params: tuple = ()
) -> Melody:
    k = next(k for k in ALL_KEYS if k.name == key)
    prog = list(progression) if progression is not None else list(stock_progression(k, seed))
    return generate(key=key, bpm=140, chord_progression=prog, bars=bars, seed=seed, **dict(params))


def case(key: Key, seed: int) -> Melody:
    return melody(key.name, seed)


def onset_grid(m: Melody, first_bar: int, n_bars: int) -> np.ndarray:
    """EVALUATION.md's onset grid: 12 pitch classes x 16th steps, flattened."""
    g = np.zeros((12, n_bars * 16))
    lo, hi = first_bar * 4, (first_bar + n_bars) * 4
    for n in m.notes:
        if lo <= n.start < hi:
            g[n.pitch % 12, int(round((n.start - lo) * 4))] = 1.0
    return g.ravel()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def bar_rhythm(m: Melody, bar: int) -> list[tuple[float, float]]:
    return [(n.start - bar * 4, n.duration) for n in m.notes if bar * 4 <= n.start < bar * 4 + 4]


def bar_notes(m: Melody, bar: int) -> list[tuple[float, int, float]]:
    return [(n.start - bar * 4, n.pitch, n.duration) for n in m.notes if bar * 4 <= n.start < bar * 4 + 4]


# ---- properties checked on helpers, so the same checks serve every case ----------------------


def assert_in_key(m: Melody, key: Key) -> None:
    allowed = key.allowed_pcs()
    leading = (key.tonic + 11) % 12
    for n in m.notes:
        assert n.pitch % 12 in allowed, f"{n} is not in {key.name}"
        if key.mode == "minor" and n.pitch % 12 == leading:
            chord = parse_chord(m.chord_at(n.start).symbol)
            assert leading in chord.pcs, f"harmonic 7th {n} over {chord.symbol}, which lacks it"


def assert_on_beat_chord_tones(m: Melody) -> None:
    on_beat = [n for n in m.notes if n.start == int(n.start)]
    assert len(on_beat) >= len(m.notes) // 4
    for n in on_beat:
        chord = parse_chord(m.chord_at(n.start).symbol)
        assert n.pitch % 12 in chord.pcs, f"{n} on a beat is not a tone of {chord.symbol}"


def assert_gated_grid_monophonic(m: Melody) -> None:
    for n in m.notes:
        assert (n.start * 4) == int(n.start * 4), f"onset {n.start} is off the 16th grid"
        assert (n.duration * 4) == int(n.duration * 4), f"duration {n.duration} is off the 16th grid"
    for a, b in zip(m.notes, m.notes[1:]):
        assert a.end <= b.start, f"{a} overlaps {b}"
    assert polyphony_ratio(m.notes) == 0.0


def assert_register(m: Melody, span: int, bars: int) -> None:
    pitches = m.pitches
    assert 60 <= min(pitches) and max(pitches) <= 96
    assert max(pitches) - min(pitches) <= span
    if bars >= 4:
        assert max(pitches) - min(pitches) >= 12


def assert_final_cadence(m: Melody, key: Key, bars: int) -> None:
    last = m.notes[-1]
    assert last.pitch % 12 == key.tonic
    assert last.end == bars * 4


def assert_chord_track(m: Melody, progression: list[str] | tuple[str, ...], bars: int) -> None:
    assert [c.symbol for c in m.chords] == [progression[b % len(progression)] for b in range(bars)]
    assert [(c.start, c.duration, c.inferred) for c in m.chords] == [(b * 4.0, 4.0, False) for b in range(bars)]


# ---- the contract over 24 keys x 3 seeds ------------------------------------------------------


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_notes_are_in_key_and_the_harmonic_seventh_only_sounds_over_its_chords(key: Key, seed: int) -> None:
    assert_in_key(case(key, seed), key)


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_notes_on_beats_are_chord_tones(key: Key, seed: int) -> None:
    assert_on_beat_chord_tones(case(key, seed))


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_gated_sixteenth_rhythm_and_monophony(key: Key, seed: int) -> None:
    assert_gated_grid_monophonic(case(key, seed))


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_register_and_span(key: Key, seed: int) -> None:
    assert_register(case(key, seed), span=21, bars=16)


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_phrase_final_cadence_on_the_tonic(key: Key, seed: int) -> None:
    assert_final_cadence(case(key, seed), key, bars=16)


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_key_and_chord_track_are_carried(key: Key, seed: int) -> None:
    m = case(key, seed)
    assert m.key == key.name
    assert m.bars == 16 and m.bpm == 140.0
    assert_chord_track(m, stock_progression(key, seed), 16)
    assert m.attributes["generator"] == "rules"
    assert m.attributes["seed"] == seed
    assert m.attributes["progression"] == list(stock_progression(key, seed))


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_motif_repeats_across_phrases(key: Key, seed: int) -> None:
    """Bars 1 and 2 of each 4-bar phrase share their rhythm; with a 4-chord progression (which
    lines up with the phrases) and the default register, they repeat bars 1-2 note for note."""
    m = case(key, seed)
    for phrase_start in (0, 4, 8, 12):
        assert bar_rhythm(m, phrase_start) == bar_rhythm(m, phrase_start + 1)
        assert bar_notes(m, phrase_start) == bar_notes(m, 0)
        assert bar_notes(m, phrase_start + 1) == bar_notes(m, 1)


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_eight_bar_self_similarity(key: Key, seed: int) -> None:
    m = case(key, seed)
    assert cosine(onset_grid(m, 0, 8), onset_grid(m, 8, 8)) >= 0.6


@pytest.mark.parametrize(("key", "seed"), CASES, ids=CASE_IDS)
def test_passes_the_strictest_corpus_filter_and_the_remi_roundtrip(key: Key, seed: int) -> None:
    m = case(key, seed)
    report = check_melody(m, QualityThresholds.for_tier(1))
    assert report.reason() == ""
    assert report.passed is True
    assert [r.rule for r in report.results] == ["notes", "range_octaves", "bpm", "polyphony", "scale_compliance"]
    assert report.as_dict()["scale_compliance"] == 1.0
    rt = remi_roundtrip(m)
    assert rt.mismatches == []
    assert rt.ok is True
    assert rt.n_notes == len(m.notes)


# ---- any progression of standard chord symbols -----------------------------------------------


@pytest.mark.parametrize("rotation", range(len(MIXED)))
@pytest.mark.parametrize("seed", (0, 1))
def test_mixed_chord_symbols(rotation: int, seed: int) -> None:
    """Sevenths, half-diminished, borrowed bVII, sus and slash chords in A minor, each rotation so that
    every chord lands on a phrase ending. (Rotation 2 puts F#m7b5 on the call cadence of bar 4: the
    engine used to aim at F#, outside A minor, and gave up with a RuntimeError.)"""
    prog = tuple(MIXED[rotation:] + MIXED[:rotation])
    key = ALL_KEYS[9]
    assert key.name == "Am"
    m = melody("Am", seed, prog, 16)
    assert_in_key(m, key)
    assert_on_beat_chord_tones(m)
    assert_gated_grid_monophonic(m)
    assert_register(m, 21, 16)
    assert_final_cadence(m, key, 16)
    assert_chord_track(m, prog, 16)
    assert check_melody(m, QualityThresholds.for_tier(1)).reason() == ""
    assert remi_roundtrip(m).ok
    # The harmonic 7th (G#) only over E7, the one chord here that contains it.
    assert {m.chord_at(n.start).symbol for n in m.notes if n.pitch % 12 == 8} <= {"E7"}


def test_chord_outside_the_key_keeps_the_melody_in_key() -> None:
    """Bb, Eb and Ab in A minor: on beats the melody plays the chord tones that are in the key."""
    prog = ("Am", "Bb", "Eb", "Ab")
    for seed in range(3):
        m = melody("Am", seed, prog, 16)
        assert_in_key(m, ALL_KEYS[9])
        assert_on_beat_chord_tones(m)
        assert_final_cadence(m, ALL_KEYS[9], 16)


@pytest.mark.parametrize("symbol", ["H", "Am#x", "", "C/Q"])
def test_malformed_chord_symbol_raises_naming_it(symbol: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(symbol))):
        generate("Am", 140, ["Am", symbol, "C", "G"], 8, 0)


def test_progression_cycles_one_chord_per_bar() -> None:
    m = generate("Am", 140, ["Am", "F", "C"], bars=10, seed=3)
    assert [c.symbol for c in m.chords] == ["Am", "F", "C", "Am", "F", "C", "Am", "F", "C", "Am"]
    assert [c.start for c in m.chords] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert m.chord_at(37.5).symbol == "Am"
    assert m.chord_at(40.0) is None
    short = generate("Am", 140, ["Am", "F", "C", "G"], bars=2, seed=3)
    assert [c.symbol for c in short.chords] == ["Am", "F"]


def test_default_progression_is_the_keys_i_vi_iii_vii() -> None:
    m = generate("Em", 138, None, bars=8, seed=5)
    assert [c.symbol for c in m.chords] == ["Em", "C", "G", "D"] * 2
    assert m.key == "Em" and m.bpm == 138.0


# ---- forms and parameters --------------------------------------------------------------------


@pytest.mark.parametrize("bars", [1, 2, 3, 4, 5, 6, 7, 9, 12, 17])
def test_any_length(bars: int) -> None:
    key = ALL_KEYS[9]
    for seed in (0, 1):
        m = melody("Am", seed, ("Am", "F", "C", "G"), bars)
        assert m.bars == bars
        assert_in_key(m, key)
        assert_on_beat_chord_tones(m)
        assert_gated_grid_monophonic(m)
        assert_register(m, 21, bars)
        assert_final_cadence(m, key, bars)
        assert_chord_track(m, ("Am", "F", "C", "G"), bars)


def test_thirty_two_bars_stay_self_similar() -> None:
    for key in (ALL_KEYS[9], ALL_KEYS[14]):
        m = melody(key.name, 4, None, 32)
        assert_final_cadence(m, key, 32)
        for a in (0, 8, 16):
            assert cosine(onset_grid(m, a, 8), onset_grid(m, a + 8, 8)) >= 0.6


@pytest.mark.parametrize("span", [13, 18, 24, 30, 31, 36])
def test_span_parameter_bounds_the_register(span: int) -> None:
    """Spans 31-36 used to crash drawing the register (numpy 'low >= high'); spans >= 30 enable the
    octave lift of the second period, which used to clip the motif (8-bar similarity ~0.1)."""
    for key in (ALL_KEYS[0], ALL_KEYS[9], ALL_KEYS[16]):
        for seed in (0, 1):
            m = melody(key.name, seed, None, 16, (("span", span),))
            assert m.attributes["params"]["span"] == span
            assert_register(m, span, 16)
            assert_in_key(m, key)
            assert_on_beat_chord_tones(m)
            assert_final_cadence(m, key, 16)
            assert cosine(onset_grid(m, 0, 8), onset_grid(m, 8, 8)) >= 0.6


def test_register_low_parameter() -> None:
    for low in (60, 68, 75):
        m = melody("Dm", 2, None, 16, (("register_low", low),))
        assert low <= min(m.pitches) and max(m.pitches) <= low + 21


def test_second_period_lifts_an_octave_where_the_register_allows() -> None:
    lifted = melody("Cm", 0, ("Cm", "Ab", "Eb", "Bb"), 16, (("span", 30),))
    assert lifted.attributes["params"]["register_low"] == 62
    first = [(s, p + 12, d) for s, p, d in bar_notes(lifted, 0) + bar_notes(lifted, 1)]
    assert bar_notes(lifted, 8) + bar_notes(lifted, 9) == first
    flat = melody("Cm", 0, ("Cm", "Ab", "Eb", "Bb"), 16, (("span", 30), ("lift", False)))
    assert bar_notes(flat, 8) + bar_notes(flat, 9) == bar_notes(flat, 0) + bar_notes(flat, 1)


def test_two_bar_motif_repeats_as_a_pair() -> None:
    for seed in range(3):
        m = melody("F#m", seed, None, 16, (("motif_bars", 2),))
        for phrase_start in (4, 8, 12):
            assert bar_rhythm(m, phrase_start) == bar_rhythm(m, 0)
            assert bar_rhythm(m, phrase_start + 1) == bar_rhythm(m, 1)
        assert_on_beat_chord_tones(m)
        assert cosine(onset_grid(m, 0, 8), onset_grid(m, 8, 8)) >= 0.6


@pytest.mark.parametrize(
    "params",
    [
        {"density": 0.0},
        {"density": 1.0},
        {"hold": 0.0},
        {"hold": 1.0},
        {"chord_tone_bias": 0.0},
        {"chord_tone_bias": 1.0},
        {"velocity": 127, "accent": 60},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_parameter_extremes_keep_the_contract(params: dict) -> None:
    for key in (ALL_KEYS[4], ALL_KEYS[19]):
        m = melody(key.name, 7, None, 16, tuple(sorted(params.items())))
        assert_in_key(m, key)
        assert_on_beat_chord_tones(m)
        assert_gated_grid_monophonic(m)
        assert_register(m, 21, 16)
        assert_final_cadence(m, key, 16)
        assert check_melody(m, QualityThresholds.for_tier(1)).reason() == ""


def test_density_sets_how_busy_the_off_beats_are() -> None:
    sparse = melody("Am", 0, None, 16, (("density", 0.0),))
    busy = melody("Am", 0, None, 16, (("density", 1.0),))
    # density 0: only the four beats of a bar sound (the cadence bars add an anticipation at most).
    assert all(n.start == int(n.start) or n.start % 4 == 3.5 for n in sparse.notes)
    # density 1: every 8th of a motif bar carries an onset (16th off-beats 80% of the time).
    onsets = [s for s, _ in bar_rhythm(busy, 0)]
    assert set(onsets) >= {i * 0.5 for i in range(8)}
    assert len(onsets) > 8


# ---- determinism -----------------------------------------------------------------------------


def test_same_arguments_give_identical_melodies() -> None:
    a = generate("G#m", 136, ["G#m", "E", "B", "F#"], 16, 42, density=0.6)
    b = generate("G#m", 136, ["G#m", "E", "B", "F#"], 16, 42, density=0.6)
    assert a.notes == b.notes
    assert a.to_dict() == b.to_dict()


def test_different_seeds_give_different_melodies() -> None:
    notes = [generate("Am", 140, ["Am", "F", "C", "G"], 16, seed).notes for seed in range(8)]
    assert len(set(notes)) == 8


# ---- invalid arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bars": 0}, "bars"),
        ({"bars": -4}, "bars"),
        ({"bars": 2.5}, "bars"),
        ({"bpm": 0}, "bpm"),
        ({"bpm": -140}, "bpm"),
        ({"density": 2}, "density"),
        ({"density": -0.1}, "density"),
        ({"hold": 1.5}, "hold"),
        ({"chord_tone_bias": -1}, "chord_tone_bias"),
        ({"span": 12}, "span"),
        ({"span": 37}, "span"),
        ({"register_low": 59}, "register_low"),
        ({"register_low": 80}, "register_low"),  # 80 + 21 > 96
        ({"motif_bars": 3}, "motif_bars"),
        ({"velocity": 0}, "velocity"),
        ({"unknown_knob": 1}, "unknown_knob"),
        ({"key": "H"}, "'H'"),
        ({"chord_progression": []}, "at least one chord"),
        ({"chord_progression": "Am F C G"}, "list of chord symbols"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    args = {"key": "Am", "bpm": 140, "chord_progression": ["Am", "F", "C", "G"], "bars": 8, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(**args)


def test_rule_params_defaults() -> None:
    p = RuleParams()
    assert (p.density, p.span, p.register_low, p.motif_bars) == (0.5, 21, None, 1)
    p.validate()
