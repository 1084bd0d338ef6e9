"""Augmentation: the plan's transforms, deterministic, each copy recording its parent and transforms.

For every source example (already `normalise`d), with an `AugmentPolicy`:

- **12-key transposition**: one copy per shift in `transpositions` (default -5…+6 except 0, so with
  the source itself the melody appears in all 12 keys, never moved more than half an octave); key
  and chord symbols move with the notes.
- **tempo** ±5% and ±10%: one copy of the source per factor; notes stay on their beats, the BPM
  changes (rounded to 0.01).
- **octave ±1**, only where the range permits: the shifted notes must stay within
  `octave_bounds` (default MIDI 48-96, the register of trance leads).
- **velocity ±10, in place**: every copy (not the source) gets per-note velocity offsets drawn
  uniformly from -10…+10 by a generator seeded with the CRC-32 of the copy's id (clipped to 1-127),
  so a copy is identical on every run and the offsets differ between copies; recorded as
  `velocity:±10`.

Copies are not combined (a transposed copy keeps the source tempo): ×(1 + 11 + 4 + ≤2) per source.
Copies whose notes would leave MIDI 0-127 are skipped and counted.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from ..music.theory import FLAT_NAMES, SHARP_NAMES, Key, parse_key
from .examples import Example

AUGMENT_VERSION = "1"


@dataclass(frozen=True)
class AugmentPolicy:
    transpositions: tuple[int, ...] = (-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)
    tempo_factors: tuple[float, ...] = (0.90, 0.95, 1.05, 1.10)
    octave_shifts: tuple[int, ...] = (-1, 1)
    octave_bounds: tuple[int, int] = (48, 96)
    velocity_jitter: int = 10

    def describe(self) -> str:
        return (
            f"transpose {list(self.transpositions)}; tempo x{list(self.tempo_factors)}; "
            f"octave {list(self.octave_shifts)} within MIDI {self.octave_bounds[0]}-{self.octave_bounds[1]}; "
            f"velocity ±{self.velocity_jitter} in place"
        )


@dataclass
class AugmentStats:
    sources: int = 0
    copies: int = 0
    skipped_out_of_midi_range: int = 0
    octave_not_permitted: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def transpose_key(key: str, semitones: int) -> str:
    k = parse_key(key)
    return Key((k.tonic + semitones) % 12, k.mode).name


def transpose_chord(symbol: str, semitones: int, key: Key) -> str:
    """Move a chord symbol's root (and slash bass) by `semitones`, spelled for `key`."""
    if semitones % 12 == 0:
        return symbol
    flats = _uses_flats(key)

    def move(name: str) -> str:
        from ..music.theory import parse_pitch_class

        pc = (parse_pitch_class(name) + semitones) % 12
        return (FLAT_NAMES if flats else SHARP_NAMES)[pc]

    root_len = 2 if len(symbol) > 1 and symbol[1] in "#b♯♭" else 1
    root, rest = symbol[:root_len], symbol[root_len:]
    if "/" in rest:
        quality, bass = rest.rsplit("/", 1)
        return f"{move(root)}{quality}/{move(bass)}"
    return move(root) + rest


def _uses_flats(key: Key) -> bool:
    major_tonic = key.tonic if key.mode == "major" else (key.tonic + 3) % 12
    return major_tonic in {5, 10, 3, 8, 1, 6}


def _jitter(ex_id: str, n: int, amount: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(ex_id.encode()))
    return rng.integers(-amount, amount + 1, size=n).astype(np.int16)


def _copy(src: Example, suffix: str, transform: str, policy: AugmentPolicy, **changes) -> Example:
    cid = f"{src.example_id}~{suffix}"
    velocity = changes.pop("velocity", src.velocity)
    transforms = (*src.transforms, transform)
    if policy.velocity_jitter:
        velocity = np.clip(velocity + _jitter(cid, velocity.size, policy.velocity_jitter), 1, 127).astype(np.int16)
        transforms = (*transforms, f"velocity:±{policy.velocity_jitter}")
    return replace(src, example_id=cid, parent=src.example_id, transforms=transforms, velocity=velocity, **changes)


def augment(src: Example, policy: AugmentPolicy = AugmentPolicy(), stats: AugmentStats | None = None) -> list[Example]:
    """The source followed by its copies (see the module docstring), in a fixed order."""
    stats = stats if stats is not None else AugmentStats()
    stats.sources += 1
    out = [src]
    if src.pitch.size == 0:
        return out
    lo, hi = int(src.pitch.min()), int(src.pitch.max())
    key = parse_key(src.key)
    for k in policy.transpositions:
        if lo + k < 0 or hi + k > 127:
            stats.skipped_out_of_midi_range += 1
            continue
        new_key = Key((key.tonic + k) % 12, key.mode)
        chords = tuple((transpose_chord(sym, k, new_key), s, d, inf) for sym, s, d, inf in src.chords)
        out.append(_copy(src, f"tr{k:+d}", f"transpose:{k:+d}", policy, pitch=(src.pitch + k).astype(np.int16), key=new_key.name, chords=chords))
    for f in policy.tempo_factors:
        out.append(_copy(src, f"tempo{f:.2f}", f"tempo:x{f:.2f}", policy, bpm=round(src.bpm * f, 2)))
    b_lo, b_hi = policy.octave_bounds
    for o in policy.octave_shifts:
        if lo + 12 * o < b_lo or hi + 12 * o > b_hi:
            stats.octave_not_permitted += 1
            continue
        out.append(_copy(src, f"oct{o:+d}", f"octave:{o:+d}", policy, pitch=(src.pitch + 12 * o).astype(np.int16)))
    stats.copies += len(out) - 1
    return out


def augment_all(sources: list[Example], policy: AugmentPolicy = AugmentPolicy()) -> tuple[list[Example], AugmentStats]:
    stats = AugmentStats()
    out: list[Example] = []
    for src in sources:
        out.extend(augment(src, policy, stats))
    return out, stats
