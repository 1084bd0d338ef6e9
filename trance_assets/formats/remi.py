"""REMI tokenisation (MidiTok 3.1) and the corpus filter's REMI roundtrip check.

The tokenizer every stage shares (see `remi_config`):

- 4 positions per beat (16th notes), the rule engine's grid and the resolution of trance leads;
  `beat_res={(0, 4): 4, (4, 12): 4}` keeps that resolution for note durations up to 12 beats
  (3 bars of 4/4), enough for the longest held note a lead plausibly has. Longer notes are clipped by
  the tokenizer, so the roundtrip reports them.
- 32 velocity bins, `Chord` tokens (detected from simultaneous onsets), `Tempo` tokens (MidiTok's
  default 32 bins over 40-250 BPM) and `TimeSig` tokens (MidiTok's default range, 4/4 included);
  no `Program` tokens (one lead track per file).

`remi_roundtrip` is the EVALUATION.md rule "MidiTok REMI encode -> decode gives back every note's
pitch, onset and duration at the tokenizer's resolution, exactly": the melody's own MIDI bytes are
read with symusic, encoded, decoded, and every decoded note is compared with the original one in
beats (ticks / ticks-per-quarter of *each* score, since MidiTok decodes at its own time division).
The comparison uses exact fractions, so a note that is not on the 1/4-beat grid (or lasts longer
than 12 beats, or lies outside MIDI 21-109) does not come back and the check fails. Velocity (binned)
and tempo (binned) are not compared.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import miditok
import symusic

from ..music.melody import Melody

POSITIONS_PER_BEAT = 4  # 16th-note resolution
MAX_DURATION_BEATS = 12  # 3 bars of 4/4
BEAT_RES = {(0, 4): POSITIONS_PER_BEAT, (4, MAX_DURATION_BEATS): POSITIONS_PER_BEAT}
NUM_VELOCITIES = 32
MAX_REPORTED_MISMATCHES = 5


def remi_config() -> miditok.TokenizerConfig:
    """The project's REMI configuration (see the module docstring for the choices)."""
    return miditok.TokenizerConfig(
        beat_res=dict(BEAT_RES),
        num_velocities=NUM_VELOCITIES,
        use_velocities=True,
        use_chords=True,
        use_rests=False,
        use_tempos=True,
        use_time_signatures=True,
        use_programs=False,
    )


@lru_cache(maxsize=1)
def _shared_tokenizer() -> miditok.REMI:
    return miditok.REMI(remi_config())


def remi_tokenizer() -> miditok.REMI:
    """A REMI tokenizer with `remi_config()` (a fresh object: callers may train or mutate it)."""
    return miditok.REMI(remi_config())


@dataclass(frozen=True)
class RoundtripResult:
    ok: bool
    n_notes: int  # notes in the original melody's MIDI
    mismatches: list[str] = field(default_factory=list)  # the first few differences, in words


# A note as compared: (onset, pitch, duration), times in beats as exact fractions.
_Cmp = tuple[Fraction, int, Fraction]


def _score_notes(score: symusic.Score) -> list[_Cmp]:
    tpq = score.ticks_per_quarter
    out = []
    for track in score.tracks:
        for n in track.notes:
            out.append((Fraction(int(n.time), tpq), int(n.pitch), Fraction(int(n.duration), tpq)))
    return sorted(out)


def _beats(x: Fraction) -> str:
    return f"{float(x):g}"


def _note(n: _Cmp) -> str:
    return f"pitch {n[1]} at beat {_beats(n[0])} for {_beats(n[2])} beats"


def _describe(i: int, a: _Cmp, b: _Cmp) -> str:
    parts = []
    if a[1] != b[1]:
        parts.append(f"pitch {a[1]} -> {b[1]}")
    if a[0] != b[0]:
        parts.append(f"onset {_beats(a[0])} -> {_beats(b[0])} beats")
    if a[2] != b[2]:
        parts.append(f"duration {_beats(a[2])} -> {_beats(b[2])} beats")
    return f"note {i} (pitch {a[1]} at beat {_beats(a[0])}): " + ", ".join(parts)


def score_roundtrip(score: symusic.Score, tokenizer: miditok.REMI | None = None) -> RoundtripResult:
    """Encode `score` with REMI, decode it, and compare every note (pitch, onset, duration in beats)."""
    tok = tokenizer or _shared_tokenizer()
    original = _score_notes(score)
    decoded = _score_notes(tok.decode(tok.encode(score)))
    mismatches: list[str] = []
    if len(decoded) == len(original):
        mismatches = [_describe(i, a, b) for i, (a, b) in enumerate(zip(original, decoded)) if a != b]
    else:  # notes were dropped (or split): name the ones that did not come back, and the new ones
        lost = Counter(original) - Counter(decoded)
        new = Counter(decoded) - Counter(original)
        mismatches = [f"note count {len(original)} -> {len(decoded)}"]
        mismatches += [f"lost: {_note(n)}" for n in sorted(lost.elements())]
        mismatches += [f"new: {_note(n)}" for n in sorted(new.elements())]
    return RoundtripResult(
        ok=not mismatches, n_notes=len(original), mismatches=mismatches[:MAX_REPORTED_MISMATCHES]
    )


def remi_roundtrip(melody: Melody, tokenizer: miditok.REMI | None = None) -> RoundtripResult:
    """The corpus filter's REMI rule for one melody (its `to_midi_bytes()`, read with symusic)."""
    score = symusic.Score.from_midi(melody.to_midi_bytes())
    return score_roundtrip(score, tokenizer)
