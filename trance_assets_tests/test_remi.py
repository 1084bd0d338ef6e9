"""The REMI tokenizer configuration and the corpus filter's REMI roundtrip (formats.remi)."""

from __future__ import annotations

import miditok
import pytest
import symusic

from trance_assets.formats.remi import (
    BEAT_RES,
    RoundtripResult,
    remi_config,
    remi_roundtrip,
    remi_tokenizer,
    score_roundtrip,
)
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.rules import generate
from trance_assets.music.theory import ALL_KEYS, default_progression


def test_tokenizer_configuration() -> None:
    cfg = remi_config()
    assert isinstance(cfg, miditok.TokenizerConfig)
    assert cfg.beat_res == {(0, 4): 4, (4, 12): 4} == BEAT_RES
    assert cfg.max_num_pos_per_beat == 4
    assert cfg.num_velocities == 32
    assert cfg.use_velocities is True
    assert cfg.use_chords is True
    assert cfg.use_tempos is True
    assert cfg.use_time_signatures is True
    assert cfg.use_programs is False
    assert cfg.use_rests is False
    tok = remi_tokenizer()
    assert isinstance(tok, miditok.REMI)
    assert len(tok.velocities) == 32
    # Durations from one 16th up to 3 bars, every 16th: 48 values.
    durations = [d[0] * d[2] + d[1] for d in tok.durations]  # (beats, positions, res) -> 16ths
    assert durations == list(range(1, 49))
    assert {"TimeSig_4/4", "Pitch_60", "Pitch_96", "Bar_None", "Position_15"} <= set(tok.vocab)
    assert not any(t.startswith("Program_") for t in tok.vocab)
    assert any(t.startswith("Chord_") for t in tok.vocab)
    assert any(t.startswith("Tempo_") for t in tok.vocab)


def _melody(notes: list[Note], bars: int = 2) -> Melody:
    return Melody(notes=tuple(notes), bpm=140.0, key="Am", chords=(ChordSpan("Am", 0, 4 * bars),), bars=bars)


ON_GRID = [Note(0, 69, 0.25), Note(0.5, 72, 0.75), Note(1.25, 76, 1), Note(3, 81, 4.5), Note(7.75, 57, 0.25)]


def test_on_grid_notes_come_back_exactly() -> None:
    r = remi_roundtrip(_melody(ON_GRID))
    assert r == RoundtripResult(ok=True, n_notes=5, mismatches=[])


@pytest.mark.parametrize(("key", "seed"), [(k, s) for k in ALL_KEYS for s in (0, 5)], ids=lambda v: getattr(v, "name", v))
def test_rule_engine_melodies_roundtrip(key, seed: int) -> None:
    m = generate(key, 128 + seed, default_progression(key), 16, seed, density=0.3 if seed == 0 else 0.8)
    r = remi_roundtrip(m)
    assert r.mismatches == []
    assert r.ok is True
    assert r.n_notes == len(m.notes)


def test_long_form_and_two_bar_motif_roundtrip() -> None:
    for seed in range(4):
        m = generate("F#m", 150, ["F#m", "D", "A", "C#7"], 32, seed, motif_bars=2, hold=0.8)
        assert remi_roundtrip(m).ok is True


def test_chords_roundtrip_and_emit_chord_tokens() -> None:
    """Polyphonic input (corpus files before top-line reduction) roundtrips too; a triad gives a
    Chord token, which decoding ignores."""
    triad = [Note(0, 57, 1), Note(0, 60, 1), Note(0, 64, 1), Note(1, 65, 1), Note(1, 69, 1), Note(1, 72, 1)]
    m = _melody(triad + [Note(2, 76, 2)])
    assert remi_roundtrip(m) == RoundtripResult(ok=True, n_notes=7, mismatches=[])
    score = symusic.Score.from_midi(m.to_midi_bytes())
    tokens = remi_tokenizer().encode(score)[0].tokens
    assert sum(t.startswith("Chord_") for t in tokens) == 2


def test_off_grid_onset_is_reported() -> None:
    notes = list(ON_GRID)
    notes[1] = Note(0.6, 72, 0.5)  # 0.1 beat after the 8th: REMI snaps it to 0.5
    r = remi_roundtrip(_melody(notes))
    assert r.ok is False
    assert r.n_notes == 5
    assert r.mismatches == ["note 1 (pitch 72 at beat 0.6): onset 0.6 -> 0.5 beats"]


def test_off_grid_duration_is_reported() -> None:
    notes = list(ON_GRID)
    notes[0] = Note(0, 69, 0.1)  # shorter than a 16th: comes back as one 16th
    r = remi_roundtrip(_melody(notes))
    assert r.ok is False
    assert r.mismatches == ["note 0 (pitch 69 at beat 0): duration 0.1 -> 0.25 beats"]


def test_off_grid_first_onset_is_reported() -> None:
    r = remi_roundtrip(_melody([Note(0.1, 69, 0.5)] + ON_GRID[1:]))
    assert r.ok is False
    assert r.mismatches == ["note 0 (pitch 69 at beat 0.1): onset 0.1 -> 0 beats"]


def test_overlong_and_out_of_range_notes_are_reported() -> None:
    long_note = remi_roundtrip(_melody([Note(0, 69, 13)], bars=4))
    assert long_note.mismatches == ["note 0 (pitch 69 at beat 0): duration 13 -> 12 beats"]
    too_low = remi_roundtrip(_melody([Note(0, 20, 1), Note(1, 60, 1)]))
    assert too_low.ok is False
    assert too_low.mismatches == ["note count 2 -> 1", "lost: pitch 20 at beat 0 for 1 beats"]


def test_at_most_five_mismatches_are_listed() -> None:
    jittered = [Note(i + 0.1, 60 + i, 0.5) for i in range(8)]
    r = remi_roundtrip(_melody(jittered))
    assert r.ok is False
    assert r.n_notes == 8
    assert len(r.mismatches) == 5
    assert r.mismatches[0] == "note 0 (pitch 60 at beat 0.1): onset 0.1 -> 0 beats"


def test_comparison_is_in_beats_whatever_the_ticks_per_quarter() -> None:
    """A 96-tpq score (not MidiTok's 8) whose notes are on the 16th grid roundtrips."""
    score = symusic.Score(96)
    track = symusic.Track("lead", 80)
    for i, (tick, dur, pitch) in enumerate([(0, 24, 69), (48, 72, 72), (192, 384, 76)]):
        track.notes.append(symusic.Note(tick, dur, pitch, 90 + i))
    score.tracks.append(track)
    assert score_roundtrip(score) == RoundtripResult(ok=True, n_notes=3, mismatches=[])
    track.notes.append(symusic.Note(600, 10, 81, 90))  # 6.25 beats on, 10/96 beat long
    r = score_roundtrip(score)
    assert r.mismatches == ["note 3 (pitch 81 at beat 6.25): duration 0.104167 -> 0.25 beats"]
