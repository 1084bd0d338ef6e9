"""The rule engine ("Phase 0"): monophonic trance leads from a key, a tempo and a chord progression.

How a melody is built (16th-note grid, 16 steps a bar, 4/4):

1. A one- or two-bar *motif*: a gated 16th rhythm (every beat is an onset, off-beats by `density`)
   and a contour written relative to the chord — strong-beat notes are chord tones counted from the
   bar's anchor chord tone, off-beat notes are chord tones or scale steps from the previous note.
2. *Phrases* of 4 bars in 8-bar periods: a call phrase (motif, repeat, variation, open ending on a
   chord tone other than the tonic) answered by a response phrase (motif, repeat, variation, cadence on
   the tonic). The second period repeats the first an octave up where the register allows
   (otherwise with a fresh variation): pitch classes and rhythm stay, so 8-bar self-similarity is high.
3. Each bar realises the motif over its chord (one chord per bar, the progression cycling), inside a
   register of `span` semitones (18-24: about 1.5-2 octaves) within MIDI 60-96. Notes are scale
   tones of the key (natural minor; the harmonic 7th only over chords that contain it).

Deterministic: the same arguments always give the same melody (numpy's PCG64 seeded by `seed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .analysis import pitch_range_semitones, polyphony_ratio, scale_compliance
from .melody import BEATS_PER_BAR, ChordSpan, Melody, Note
from .theory import Chord, Key, default_progression, parse_chord, parse_key

RULES_VERSION = "1.0"
STEPS_PER_BAR = 16
STEP = 0.25  # beats per 16th
REGISTER_FLOOR, REGISTER_CEILING = 60, 96


@dataclass(frozen=True)
class RuleParams:
    """Knobs of the rule engine; every field has a sensible trance default."""

    density: float = 0.5  # 0..1: share of off-beat 16ths that carry an onset
    span: int = 21  # register width in semitones (18-24 ≈ 1.5-2 octaves)
    register_low: int | None = None  # lowest pitch of the register; None: chosen from the seed
    motif_bars: int = 1  # 1 or 2
    chord_tone_bias: float = 0.5  # 0..1: probability that an off-beat note is a chord tone
    hold: float = 0.25  # 0..1: probability that a note holds over following empty steps
    velocity: int = 96  # base velocity; beats get +accent
    accent: int = 16
    lift: bool = True  # second 8-bar period an octave up when the register allows

    def validate(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"rule parameter {name}={getattr(self, name)!r} is invalid: {what}")

        need(0.0 <= self.density <= 1.0, "density", "must be within 0..1")
        # 13, not 12: a melody must span at least an octave, and a 12-semitone register only allows
        # that when both of its edges are in the key (generate() failed on ~40% of registers).
        need(13 <= self.span <= REGISTER_CEILING - REGISTER_FLOOR, "span", "must be 13-36 semitones")
        need(
            self.register_low is None
            or REGISTER_FLOOR <= self.register_low <= REGISTER_CEILING - self.span,
            "register_low",
            f"register must fit in MIDI {REGISTER_FLOOR}-{REGISTER_CEILING} (low + span <= {REGISTER_CEILING})",
        )
        need(self.motif_bars in (1, 2), "motif_bars", "must be 1 or 2")
        need(0.0 <= self.chord_tone_bias <= 1.0, "chord_tone_bias", "must be within 0..1")
        need(0.0 <= self.hold <= 1.0, "hold", "must be within 0..1")
        need(1 <= self.velocity <= 127 and 0 <= self.accent <= 60, "velocity", "velocity 1-127, accent 0-60")


@dataclass(frozen=True)
class _MotifNote:
    step: int  # 0-15 within its bar
    length: int  # in steps
    kind: str  # "chord": chord-tone offset from the anchor; "step": scale step from the previous note
    offset: int  # chord-tone offset (kind chord) or -1/0/+1 scale step (kind step; 0 repeats)


def generate(
    key: str | Key = "Am",
    bpm: float = 140,
    chord_progression: list[str] | tuple[str, ...] | None = None,
    bars: int = 16,
    seed: int = 0,
    **params,
) -> Melody:
    """A monophonic trance lead. See the module docstring; `params` are `RuleParams` fields.

    Raises ValueError for a malformed chord symbol, key, bar count or parameter.
    """
    key_obj = key if isinstance(key, Key) else parse_key(key)
    if chord_progression is None:
        chord_progression = default_progression(key_obj)
    if isinstance(chord_progression, str):
        raise ValueError("chord_progression must be a list of chord symbols, e.g. ['Am', 'F', 'C', 'G']")
    if not chord_progression:
        raise ValueError("chord_progression must contain at least one chord symbol")
    chords = [parse_chord(s) for s in chord_progression]
    if not isinstance(bars, (int, np.integer)) or bars < 1:
        raise ValueError(f"bars must be a positive integer, got {bars!r}")
    if not bpm > 0:
        raise ValueError(f"bpm must be > 0, got {bpm!r}")
    known = {f.name for f in fields(RuleParams)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown rule parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    p = RuleParams(**params)
    p.validate()

    rng = np.random.default_rng(seed)
    if p.register_low is None:
        # A margin of 2 below and 4 above the register; wide spans (> 30) that leave no room for
        # it draw from every register that fits (numpy would reject the empty range).
        low_min, low_max = REGISTER_FLOOR + 2, REGISTER_CEILING - p.span - 4
        if low_max < low_min:
            low_min, low_max = REGISTER_FLOOR, REGISTER_CEILING - p.span
        p = replace(p, register_low=int(rng.integers(low_min, low_max + 1)))
    # Compose; on the rare draw that misses the melody rules (range < 1 octave, off-key notes),
    # draw again from the same stream, so the result stays a pure function of the arguments.
    for _ in range(64):
        notes = _compose(key_obj, chords, bars, p, rng)
        if _acceptable(notes, key_obj, bars):
            break
    else:  # pragma: no cover - no seed tried has needed more than a handful of draws
        raise RuntimeError(f"rule engine found no acceptable melody for key={key_obj}, seed={seed}")
    chord_spans = tuple(
        ChordSpan(chords[b % len(chords)].symbol, b * BEATS_PER_BAR, BEATS_PER_BAR) for b in range(bars)
    )
    return Melody(
        notes=tuple(notes),
        bpm=float(bpm),
        key=key_obj.name,
        chords=chord_spans,
        bars=int(bars),
        name=f"rules_{key_obj.name}_{seed}",
        attributes={
            "generator": "rules",
            "generator_version": RULES_VERSION,
            "seed": int(seed),
            "progression": [c.symbol for c in chords],
            "params": asdict(p),
        },
    )


def _acceptable(notes: list[Note], key: Key, bars: int) -> bool:
    if not notes or polyphony_ratio(notes) > 0:
        return False
    if scale_compliance(notes, key) < 1.0:
        return False
    return bars < 4 or pitch_range_semitones(notes) >= 12


# ---- composition ------------------------------------------------------------------------------

def _rhythm(p: RuleParams, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Onsets and lengths (in steps) of one motif bar: every beat sounds, off-beats by density."""
    onsets = []
    for step in range(STEPS_PER_BAR):
        if step % 4 == 0:
            on = True
        elif step % 2 == 0:  # the "and" of a beat
            on = rng.random() < min(1.0, p.density * 1.3)
        else:  # 16th off-beats
            on = rng.random() < p.density * 0.8
        if on:
            onsets.append(step)
    out = []
    for i, s in enumerate(onsets):
        gap = (onsets[i + 1] if i + 1 < len(onsets) else STEPS_PER_BAR) - s
        # The trance gate: a 16th with a 16th rest, unless the note holds over the empty steps.
        length = gap if (gap > 1 and rng.random() < p.hold) else max(1, gap - 1)
        out.append((s, min(length, 4)))
    return out


def _motif(p: RuleParams, rng: np.random.Generator) -> list[list[_MotifNote]]:
    bars = []
    ct = 0  # chord-tone offset walk, kept within a compact span
    for _ in range(p.motif_bars):
        notes = []
        for step, length in _rhythm(p, rng):
            if step % 4 == 0 or rng.random() < p.chord_tone_bias:
                ct = int(np.clip(ct + rng.choice([-1, -1, 0, 0, 0, 1, 1, 2]), -2, 4))
                notes.append(_MotifNote(step, length, "chord", ct))
            else:
                notes.append(_MotifNote(step, length, "step", int(rng.choice([-1, 0, 0, 1]))))
        bars.append(notes)
    return bars


def _vary(bar: list[_MotifNote], rng: np.random.Generator, direction: int) -> list[_MotifNote]:
    """A variation: the second half of the bar moves by one chord tone (up for calls, down for responses)."""
    out = []
    for n in bar:
        if n.step >= 8 and n.kind == "chord":
            n = replace(n, offset=int(np.clip(n.offset + direction * int(rng.integers(1, 3)), -3, 5)))
        out.append(n)
    return out


class _Register:
    def __init__(self, key: Key, low: int, high: int):
        self.key = key
        self.low, self.high = low, high
        self.natural = set(key.scale_pcs())

    def scale_pitches(self, chord: Chord) -> list[int]:
        pcs = set(self.natural)
        if self.key.mode == "minor":
            leading = (self.key.tonic + 11) % 12
            if leading in chord.pcs:  # harmonic minor over chords that contain the leading tone
                pcs.discard((self.key.tonic + 10) % 12)
                pcs.add(leading)
        return [m for m in range(self.low, self.high + 1) if m % 12 in pcs]

    def chord_pitches(self, chord: Chord) -> list[int]:
        scale = set(self.scale_pitches(chord))
        tones = [m for m in scale if m % 12 in chord.triad_pcs]
        if len({m % 12 for m in tones}) < 2:  # chord mostly outside the key: use what fits
            tones = [m for m in scale if m % 12 in chord.pcs] or sorted(scale)
        return sorted(tones)


def _realise(
    motif_bar: list[_MotifNote],
    chord: Chord,
    reg: _Register,
    anchor_target: float,
    bar_index: int,
    p: RuleParams,
    rng: np.random.Generator,
) -> tuple[list[Note], int]:
    tones = reg.chord_pitches(chord)
    scale = reg.scale_pitches(chord)
    offsets = [n.offset for n in motif_bar if n.kind == "chord"] or [0]
    lo_off, hi_off = min(offsets), max(offsets)
    anchor = int(np.argmin([abs(t - anchor_target) for t in tones]))
    anchor = int(np.clip(anchor, -lo_off, len(tones) - 1 - hi_off)) if hi_off - lo_off < len(tones) else 0
    notes, prev = [], None
    for n in motif_bar:
        if n.kind == "chord" or prev is None:
            pitch = tones[int(np.clip(anchor + (n.offset if n.kind == "chord" else 0), 0, len(tones) - 1))]
        else:
            i = min(range(len(scale)), key=lambda j: abs(scale[j] - prev))
            pitch = scale[int(np.clip(i + n.offset, 0, len(scale) - 1))]
        vel = p.velocity + (p.accent if n.step % 4 == 0 else 0) + int(rng.integers(-4, 5))
        notes.append(Note((bar_index * STEPS_PER_BAR + n.step) * STEP, pitch, n.length * STEP, int(np.clip(vel, 1, 127))))
        prev = pitch
    # The anchor may lie outside `tones` (clipped so that anchor + offset stays in range when the
    # offsets are all positive or wider than the tones above it): report the nearest real tone.
    return notes, tones[int(np.clip(anchor, 0, len(tones) - 1))]


def _cadence(
    notes: list[Note], chord: Chord, reg: _Register, bar_index: int, final: bool, p: RuleParams
) -> list[Note]:
    """End a phrase: on the tonic (final) or another chord tone (open), held to the bar's end.

    The target lands on beat 3 when it is a tone of the bar's chord, else on the last 8th of the bar
    as an anticipation, so strong beats keep their chord tones.
    """
    key = reg.key
    bar_start = bar_index * BEATS_PER_BAR
    if final:
        target_pc = key.tonic
    else:  # an open ending: the in-key chord tone nearest the key's 5th, never the tonic itself
        fifth = (key.tonic + 7) % 12
        in_key = {m % 12 for m in reg.scale_pitches(chord)}
        cands = [pc for pc in chord.triad_pcs if pc != key.tonic and pc in in_key] or [fifth]
        target_pc = min(cands, key=lambda pc: min((pc - fifth) % 12, (fifth - pc) % 12))
    step = 8 if target_pc in chord.pcs else 14
    kept = [n for n in notes if n.start < bar_start + step * STEP]
    if kept and kept[-1].end > bar_start + step * STEP:
        last = kept.pop()
        kept.append(replace(last, duration=bar_start + step * STEP - last.start))
    ref = kept[-1].pitch if kept else (reg.low + reg.high) / 2
    cands = [m for m in range(reg.low, reg.high + 1) if m % 12 == target_pc]
    pitch = min(cands, key=lambda m: abs(m - ref))
    vel = int(np.clip(p.velocity + (p.accent if step % 4 == 0 else 0), 1, 127))
    kept.append(Note(bar_start + step * STEP, pitch, (STEPS_PER_BAR - step) * STEP, vel))
    return kept


def _compose(key: Key, chords: list[Chord], bars: int, p: RuleParams, rng: np.random.Generator) -> list[Note]:
    low = p.register_low
    high = low + p.span
    reg = _Register(key, low, high)
    motif = _motif(p, rng)
    # One set of variations per 8-bar period: the second period repeats the first's motif but
    # varies its third bars afresh ("repeated and varied").
    n_periods = -(-bars // 8)
    variations = [{d: [_vary(b, rng, d) for b in motif] for d in (+1, -1)} for _ in range(n_periods)]
    center = low + 0.4 * p.span
    # The lift transposes a whole second period up an octave once it is composed, and only when
    # all of it fits under the register's top: realising it around a raised anchor instead let the
    # ceiling clip the motif onto other chord tones (8-bar similarity fell to ~0.1 at spans >= 30).
    lift = 12 if (p.lift and high - (center + 12) >= 6) else 0
    notes: list[Note] = []
    period_notes: list[Note] = []
    anchor_target = center
    n_phrases = -(-bars // 4)
    for b in range(bars):
        phrase, pos = divmod(b, 4)
        call = phrase % 2 == 0
        period = phrase // 2
        if pos == 0:
            anchor_target = center
        m = motif[b % p.motif_bars] if pos < 2 else variations[period][+1 if call else -1][b % p.motif_bars]
        chord = chords[b % len(chords)]
        bar_notes, anchor_pitch = _realise(m, chord, reg, anchor_target, b, p, rng)
        last_bar_of_phrase = pos == 3 or b == bars - 1
        if last_bar_of_phrase:
            final = (not call) or phrase == n_phrases - 1
            bar_notes = _cadence(bar_notes, chord, reg, b, final, p)
        period_notes.extend(bar_notes)
        anchor_target = 0.5 * anchor_target + 0.5 * anchor_pitch
        if b % 8 == 7 or b == bars - 1:  # end of an 8-bar period
            if period % 2 == 1 and lift and period_notes and max(n.pitch for n in period_notes) + lift <= high:
                period_notes = [replace(n, pitch=n.pitch + lift) for n in period_notes]
            notes.extend(period_notes)
            period_notes = []
    return notes
