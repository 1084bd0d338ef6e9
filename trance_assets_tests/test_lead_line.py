"""The lead-line stage on hand-built inputs (no audio): monophonic reduction, re-articulation splits,
tempo / grid fitting, quantisation and bar-chord inference, each with exact expectations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trance_assets.audio.lead_line import (
    ANALYSIS_SR,
    HOP,
    Candidate,
    LeadParams,
    best_lead_path,
    estimate_tempo,
    highest_note_baseline,
    infer_bar_chords,
    CHROMA_HOP,
    quantise,
    refine_grid,
    split_reonsets,
)
from trance_assets.music.melody import ChordSpan, Note
from trance_assets.music.theory import parse_key

STEP = 0.25  # seconds between lead onsets in the hand-built scenes


# ---- best_lead_path -------------------------------------------------------------------------


def _lead_notes() -> list[Candidate]:
    """Two 8-note phrases (0-1.95 s and 4-5.95 s) with a gap between them. Note 5 of the first
    phrase dips an octave below its neighbours (72 between 83 and 84); note 2 carries a recorded
    re-articulation."""
    first = [79, 81, 83, 84, 83, 72, 84, 83]
    second = [81, 79, 77, 79, 81, 83, 84, 86]
    notes = [Candidate(i * STEP, i * STEP + 0.2, p, 0.8) for i, p in enumerate(first)]
    notes += [Candidate(4.0 + i * STEP, 4.0 + i * STEP + 0.2, p, 0.8) for i, p in enumerate(second)]
    notes[2] = replace(notes[2], reonsets=(0.6,))
    return notes


def _scene():
    lead = _lead_notes()
    pad = Candidate(0.01, 6.0, 62, 0.35)  # long, quiet, spanning the whole lead
    harmonic = Candidate(5 * STEP + 0.005, 5 * STEP + 0.2, 84, 0.75)  # 12 above the louder 72
    bass = [Candidate(2.0 + i * STEP, 2.0 + i * STEP + 0.2, 45, 0.9) for i in range(8)]  # in the lead's gap
    return lead, pad, harmonic, bass


def test_best_lead_path_keeps_exactly_the_lead():
    lead, pad, harmonic, bass = _scene()
    cands = [*bass, harmonic, pad, *lead][::-1]  # input order does not matter
    assert best_lead_path(cands) == lead


def test_best_lead_path_drops_the_long_quiet_pad():
    lead, pad, _, _ = _scene()
    assert best_lead_path([pad, *lead]) == lead
    # The pad alone is still a (one-note) line: it loses to the lead, it is not filtered out.
    assert best_lead_path([pad]) == [pad]


def test_best_lead_path_drops_the_octave_up_harmonic():
    lead, _, harmonic, _ = _scene()
    assert best_lead_path([harmonic, *lead]) == lead
    # The harmonic sits right between its neighbours (83 and 84) while the true note leaps an
    # octave: only the harmonic penalty keeps the fundamental.
    no_penalty = best_lead_path([harmonic, *lead], LeadParams(harmonic_cost=0.0))
    assert [c.pitch for c in no_penalty[:8]] == [79, 81, 83, 84, 83, 84, 84, 83]
    assert no_penalty[5] == harmonic


def test_best_lead_path_second_pass_drops_bass_far_below():
    lead, _, _, bass = _scene()
    assert best_lead_path([*bass, *lead]) == lead
    # One pass with the broad register keeps the bass run that fills the lead's gap.
    one_pass = best_lead_path([*bass, *lead], LeadParams(adaptive_half_span=None))
    assert one_pass == lead[:8] + bass + lead[8:]


def test_best_lead_path_cuts_overlaps_but_splits_nothing():
    lead = _lead_notes()
    out = best_lead_path(lead)
    assert len(out) == len(lead)
    assert out[2].reonsets == (0.6,) and (out[2].onset, out[2].offset) == (0.5, 0.7)
    # A note held into the next onset is cut there (a release tail), never split.
    long = [replace(lead[0], offset=0.4), *lead[1:]]
    out = best_lead_path(long)
    assert out[0] == replace(lead[0], offset=STEP)
    assert out[1:] == lead[1:]
    assert best_lead_path([]) == []


# ---- highest-note baseline ------------------------------------------------------------------


def test_highest_note_baseline_keeps_the_top_note_per_onset():
    cands = [
        Candidate(0.0, 0.4, 60, 0.9),
        Candidate(0.0, 0.4, 64, 0.5),
        Candidate(0.01, 0.4, 72, 0.3),  # same onset within 30 ms, highest
        Candidate(0.5, 0.9, 67, 0.5),
        Candidate(0.52, 0.9, 55, 0.9),
        Candidate(1.0, 1.4, 48, 0.9),  # alone at its onset
        Candidate(1.04, 1.4, 50, 0.9),  # 40 ms later: an onset of its own
    ]
    out = highest_note_baseline(cands[::-1])
    assert [(c.onset, c.pitch) for c in out] == [(0.01, 72), (0.5, 67), (1.0, 48), (1.04, 50)]
    assert highest_note_baseline([]) == []


# ---- split_reonsets -------------------------------------------------------------------------


def test_split_reonsets_everywhere_without_grid():
    c = Candidate(0.0, 1.0, 76, 0.7, reonsets=(0.25, 0.31, 0.51, 1.0, 0.0))
    plain = Candidate(1.0, 1.5, 74, 0.6)
    out = split_reonsets([c, plain])
    assert out == [
        Candidate(0.0, 0.25, 76, 0.7),
        Candidate(0.25, 0.31, 76, 0.7),
        Candidate(0.31, 0.51, 76, 0.7),
        Candidate(0.51, 1.0, 76, 0.7),
        plain,
    ]


def test_split_reonsets_only_on_the_grid():
    # Grid origin 0.02 s, 16th step 0.125 s: 0.27 is on it, 0.33 is 60 ms off, 0.53 is 10 ms off.
    c = Candidate(0.02, 1.02, 76, 0.7, reonsets=(0.27, 0.33, 0.53))
    out = split_reonsets([c], grid=(0.02, 0.125))
    assert out == [
        Candidate(0.02, 0.27, 76, 0.7),
        Candidate(0.27, 0.53, 76, 0.7),
        Candidate(0.53, 1.02, 76, 0.7),
    ]
    # A tighter tolerance keeps only the exact one.
    assert [p.onset for p in split_reonsets([c], grid=(0.02, 0.125), tolerance=0.005)] == [0.02, 0.27]


# ---- tempo and grid -------------------------------------------------------------------------


def _grid_onsets(bpm: float, beat_phase: float, seed: int, seconds: float = 60.0) -> np.ndarray:
    """Onsets on 60 % of the 16th steps, ±8 ms uniform jitter, plus 10 % outliers anywhere."""
    rng = np.random.default_rng(seed)
    step = 60.0 / bpm / 4
    k = np.arange(int(seconds / step))
    k = k[rng.random(k.size) < 0.6]
    on = beat_phase + k * step + rng.uniform(-0.008, 0.008, k.size)
    outliers = rng.uniform(0, seconds, int(0.1 * on.size))
    return np.sort(np.concatenate([on, outliers]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("start_error", [1.015, 0.985])
def test_refine_grid_recovers_tempo_and_phase(seed, start_error):
    true_bpm, true_phase = 138.0, 0.1
    onsets = _grid_onsets(true_bpm, true_phase, seed)
    # The kick's beat phase is only roughly right (15 ms off); the grid snaps to the onsets.
    bpm, phase = refine_grid(onsets, true_bpm * start_error, true_phase + 0.015)
    assert bpm == pytest.approx(true_bpm, abs=0.01)
    assert phase == pytest.approx(true_phase, abs=0.002)


def test_refine_grid_phase_is_the_first_beat_after_zero():
    # Beat phase 0.1 + 3 beats: the returned phase is still the first beat at or after 0.
    onsets = _grid_onsets(138.0, 0.1 + 3 * 60 / 138, seed=3)
    bpm, phase = refine_grid(onsets, 138.0 * 1.01, 0.1)
    assert bpm == pytest.approx(138.0, abs=0.01)
    assert phase == pytest.approx(0.1, abs=0.002)


def test_refine_grid_fixed_tempo_keeps_the_bpm():
    onsets = _grid_onsets(138.0, 0.1, seed=0)
    bpm, phase = refine_grid(onsets, 138.0, 0.11, fixed_tempo=True)
    assert bpm == pytest.approx(138.0, abs=1e-9)
    assert phase == pytest.approx(0.1, abs=0.002)
    # A declared tempo stays as declared even where the onsets disagree with it.
    bpm, _ = refine_grid(onsets, 140.07, 0.1, fixed_tempo=True)
    assert bpm == pytest.approx(140.07, abs=1e-9)


def test_refine_grid_needs_eight_onsets():
    assert refine_grid(np.array([0.1, 0.2, 0.3]), 140.0, 0.05) == (140.0, 0.05)


@pytest.mark.parametrize("bpm", [126.0, 138.0, 150.0])
def test_estimate_tempo_on_a_click_track(bpm):
    fps = ANALYSIS_SR / HOP
    env = np.zeros(int(30 * fps))
    beats = np.arange(0.2, 30.0 - 0.1, 60.0 / bpm)
    env[np.round(beats * fps).astype(int)] = 1.0
    # Off-beat hats, weaker: they must not pull the tempo to double time.
    env[np.round((beats[:-1] + 30.0 / bpm) * fps).astype(int)] += 0.3
    tempo = estimate_tempo(env, ANALYSIS_SR)
    assert tempo.bpm == pytest.approx(bpm, abs=1.0)
    assert tempo.source == "estimated"
    assert 0.0 <= tempo.confidence <= 1.0


# ---- quantise -------------------------------------------------------------------------------


def test_quantise_exact_grid():
    origin, bpm = 0.1, 120.0  # 16th = 0.125 s
    lead = [
        Candidate(0.0, 0.2, 60, 0.9),  # 0.8 steps before the origin: dropped
        Candidate(0.09, 0.35, 72, 0.5),  # step 0 (-0.08 rounds to 0) .. step 2
        Candidate(0.36, 0.61, 74, 0.2),  # step 2 .. 4
        Candidate(0.37, 0.55, 86, 0.6),  # also step 2, louder: replaces the 74
        Candidate(0.6, 1.2, 76, 0.0),  # step 4 .. 9, cut at the next note's step 8
        Candidate(1.1, 1.2, 77, 1.0),  # step 8 .. 9
        Candidate(1.4, 1.41, 79, 0.5),  # zero length on the grid: one step
        Candidate(1.41, 1.45, 81, 0.5),  # the same step 10.4 -> 10 as the 79, not louder: dropped
    ]
    notes = quantise(lead, origin, bpm)
    assert notes == [
        Note(0.0, 72, 0.5, 84),
        Note(0.5, 86, 0.5, 92),
        Note(1.0, 76, 1.0, 40),
        Note(2.0, 77, 0.25, 127),
        Note(2.5, 79, 0.25, 84),
    ]


def test_quantise_one_note_per_step_and_eighth_grid():
    lead = [Candidate(0.5, 0.6, 70, 0.4), Candidate(0.51, 0.9, 71, 0.4), Candidate(0.52, 0.7, 72, 0.41)]
    assert quantise(lead, 0.0, 120.0) == [Note(1.0, 72, 0.5, 76)]
    # steps_per_beat=2: an 8th grid (0.25 s at 120 BPM).
    assert quantise([Candidate(0.26, 0.74, 64, 0.5)], 0.0, 120.0, steps_per_beat=2) == [Note(0.5, 64, 1.0, 84)]
    assert quantise([], 0.0, 120.0) == []


# ---- bar chords -----------------------------------------------------------------------------


def _chroma_bars(bars: list[tuple[int, ...]], bpm: float, origin_s: float, rng) -> np.ndarray:
    fps = ANALYSIS_SR / CHROMA_HOP
    bar_frames = 4 * 60.0 / bpm * fps
    n = int(round(origin_s * fps + len(bars) * bar_frames))  # ends with the last bar
    c = 0.05 * rng.random((12, n))
    for b, pcs in enumerate(bars):
        a, z = int(round(origin_s * fps + b * bar_frames)), int(round(origin_s * fps + (b + 1) * bar_frames))
        for i, pc in enumerate(pcs):
            c[pc, a:z] += 1.0 if i == 0 else 0.7  # root strongest
    return c


def test_infer_bar_chords_minor_key_sharps():
    rng = np.random.default_rng(0)
    chroma = _chroma_bars([(9, 0, 4), (5, 9, 0), (0, 4, 7), (7, 11, 2)], bpm=138.0, origin_s=0.3, rng=rng)
    spans = infer_bar_chords(chroma, ANALYSIS_SR, 138.0, 0.3, 4, parse_key("Am"))
    assert [s.symbol for s in spans] == ["Am", "F", "C", "G"]
    assert spans == (
        ChordSpan("Am", 0, 4, inferred=True),
        ChordSpan("F", 4, 4, inferred=True),
        ChordSpan("C", 8, 4, inferred=True),
        ChordSpan("G", 12, 4, inferred=True),
    )
    assert all(s.inferred for s in spans)


def test_infer_bar_chords_flat_key_and_short_input():
    rng = np.random.default_rng(1)
    # D minor: i - VI - III - VII = Dm Bb F C, spelled with flats.
    chroma = _chroma_bars([(2, 5, 9), (10, 2, 5), (5, 9, 0), (0, 4, 7)], bpm=140.0, origin_s=0.0, rng=rng)
    spans = infer_bar_chords(chroma, ANALYSIS_SR, 140.0, 0.0, 6, parse_key("Dm"))
    # Only four bars of chroma: bars beyond its end are not invented.
    assert [s.symbol for s in spans] == ["Dm", "Bb", "F", "C"]
    assert [s.start for s in spans] == [0, 4, 8, 12]
