"""Keys, scales and chord symbols: the small amount of music theory the pipeline needs.

Pitch classes are integers 0-11 with C = 0. A `Key` is a tonic pitch class plus a mode
("major" or "minor"); minor keys accept the natural and the harmonic minor scale (the raised 7th).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOTE_PCS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")

MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11)

# Conventional spellings for the 24 keys (fewest accidentals; F# major / Eb minor as usual).
_MAJOR_KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


def parse_pitch_class(name: str) -> int:
    """'C#' -> 1, 'Bb' -> 10, 'E#' -> 5. Raises ValueError on anything else."""
    m = re.fullmatch(r"([A-Ga-g])([#b♯♭]*)", name.strip())
    if not m:
        raise ValueError(f"not a note name: {name!r}")
    pc = NOTE_PCS[m.group(1).upper()]
    for acc in m.group(2):
        pc += 1 if acc in "#♯" else -1
    return pc % 12


@dataclass(frozen=True, order=True)
class Key:
    tonic: int  # pitch class 0-11
    mode: str  # "major" | "minor"

    def __post_init__(self) -> None:
        if self.mode not in ("major", "minor"):
            raise ValueError(f"key mode must be 'major' or 'minor', got {self.mode!r}")
        if not 0 <= self.tonic < 12:
            raise ValueError(f"key tonic must be a pitch class 0-11, got {self.tonic!r}")

    @property
    def name(self) -> str:
        """'Am', 'C#m', 'Eb', ... (the short form `parse_key` reads back)."""
        if self.mode == "minor":
            return _MINOR_KEY_NAMES[self.tonic] + "m"
        return _MAJOR_KEY_NAMES[self.tonic]

    def __str__(self) -> str:
        return self.name

    @property
    def long_name(self) -> str:
        return f"{self.name.rstrip('m') if self.mode == 'minor' else self.name} {self.mode}"

    def scale_pcs(self, harmonic: bool = False) -> tuple[int, ...]:
        """Pitch classes of the scale, tonic first (harmonic=True: harmonic minor)."""
        if self.mode == "major":
            steps = MAJOR_STEPS
        else:
            steps = HARMONIC_MINOR_STEPS if harmonic else NATURAL_MINOR_STEPS
        return tuple((self.tonic + s) % 12 for s in steps)

    def allowed_pcs(self) -> frozenset[int]:
        """Pitch classes counted as 'in key': major scale, or natural ∪ harmonic minor."""
        pcs = set(self.scale_pcs())
        if self.mode == "minor":
            pcs |= set(self.scale_pcs(harmonic=True))
        return frozenset(pcs)

    @property
    def relative_minor_tonic(self) -> int:
        """Tonic pitch class of the minor key with this key signature (itself if minor)."""
        return self.tonic if self.mode == "minor" else (self.tonic + 9) % 12

    def roman_chord(self, degree: int, seventh: bool = False) -> "Chord":
        """Diatonic triad on a 1-based scale degree (minor keys: natural minor, V made major)."""
        scale = self.scale_pcs()
        if not 1 <= degree <= 7:
            raise ValueError(f"scale degree must be 1-7, got {degree}")
        root = scale[degree - 1]
        third = scale[(degree + 1) % 7]
        fifth = scale[(degree + 3) % 7]
        if self.mode == "minor" and degree == 5:
            third = (self.tonic + 11) % 12  # the leading tone: V is major in minor keys
        intervals = sorted({0, (third - root) % 12, (fifth - root) % 12})
        quality = {(0, 4, 7): "", (0, 3, 7): "m", (0, 3, 6): "dim", (0, 4, 8): "aug"}[tuple(intervals)]
        return parse_chord(_spell(root, self) + quality)


def _spell(pc: int, key: Key) -> str:
    """Spell a pitch class with sharps or flats according to the key signature."""
    flat_keys_major = {5, 10, 3, 8, 1, 6}  # F Bb Eb Ab Db Gb
    major_tonic = key.tonic if key.mode == "major" else (key.tonic + 3) % 12
    return FLAT_NAMES[pc] if major_tonic in flat_keys_major else SHARP_NAMES[pc]


def parse_key(text: str) -> Key:
    """Parse 'Am', 'A minor', 'a-', 'C#m', 'Ebmaj', 'F# major', 'C' into a Key.

    Raises ValueError naming the text when it is not a key.
    """
    t = text.strip()
    m = re.fullmatch(
        r"([A-Ga-g][#b♯♭]?)\s*(m|min|minor|-|maj|major|M)?", t
    )
    if not m:
        raise ValueError(f"not a key: {text!r} (expected e.g. 'Am', 'C#m', 'Eb', 'F# major')")
    tonic = parse_pitch_class(m.group(1))
    suffix = m.group(2)
    if suffix in ("m", "min", "minor", "-"):
        mode = "minor"
    elif suffix is None and m.group(1)[0].islower() and len(t) <= 2:
        mode = "minor"  # music21 convention: lower-case tonic means minor
    else:
        mode = "major"
    return Key(tonic, mode)


ALL_KEYS: tuple[Key, ...] = tuple(Key(pc, mode) for mode in ("minor", "major") for pc in range(12))

# Chord qualities: suffix -> intervals above the root.
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "": (0, 4, 7),
    "maj": (0, 4, 7),
    "M": (0, 4, 7),
    "m": (0, 3, 7),
    "min": (0, 3, 7),
    "-": (0, 3, 7),
    "dim": (0, 3, 6),
    "°": (0, 3, 6),
    "aug": (0, 4, 8),
    "+": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "sus": (0, 5, 7),
    "5": (0, 7),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "M7": (0, 4, 7, 11),
    "Δ": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "min7": (0, 3, 7, 10),
    "-7": (0, 3, 7, 10),
    "mMaj7": (0, 3, 7, 11),
    "m(maj7)": (0, 3, 7, 11),
    "dim7": (0, 3, 6, 9),
    "°7": (0, 3, 6, 9),
    "m7b5": (0, 3, 6, 10),
    "ø": (0, 3, 6, 10),
    "ø7": (0, 3, 6, 10),
    "9": (0, 4, 7, 10, 2),
    "maj9": (0, 4, 7, 11, 2),
    "m9": (0, 3, 7, 10, 2),
    "add9": (0, 4, 7, 2),
    "madd9": (0, 3, 7, 2),
    "7sus4": (0, 5, 7, 10),
}

_CHORD_RE = re.compile(r"^([A-G])([#b♯♭]?)(.*?)(?:/([A-G][#b♯♭]?))?$")


@dataclass(frozen=True)
class Chord:
    symbol: str
    root: int
    intervals: tuple[int, ...]
    bass: int

    @property
    def pcs(self) -> frozenset[int]:
        return frozenset((self.root + i) % 12 for i in self.intervals)

    @property
    def triad_pcs(self) -> tuple[int, ...]:
        """Root, third (or sus tone) and fifth: the tones a melody anchors on."""
        return tuple((self.root + i) % 12 for i in self.intervals[:3])


def parse_chord(symbol: str) -> Chord:
    """Parse a standard chord symbol ('Am', 'F', 'C/E', 'G7', 'Bbmaj7', 'F#m7b5', 'Dsus4').

    Raises ValueError naming the symbol and what is wrong with it.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"malformed chord symbol {symbol!r}: empty")
    s = symbol.strip()
    m = _CHORD_RE.match(s)
    if not m:
        raise ValueError(f"malformed chord symbol {symbol!r}: must start with a root A-G")
    root = parse_pitch_class(m.group(1) + m.group(2))
    quality = m.group(3)
    if quality not in CHORD_QUALITIES:
        raise ValueError(
            f"malformed chord symbol {symbol!r}: unknown quality {quality!r} "
            f"(known: {', '.join(repr(q) for q in sorted(CHORD_QUALITIES) if q)})"
        )
    intervals = CHORD_QUALITIES[quality]
    bass = parse_pitch_class(m.group(4)) if m.group(4) else root
    return Chord(symbol=s, root=root, intervals=intervals, bass=bass)


# Progressions common in trance, as scale degrees of a minor key (i-VI-III-VII is the classic).
MINOR_PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (1, 6, 3, 7),
    (1, 6, 7, 1),
    (1, 7, 6, 7),
    (6, 7, 1, 1),
    (1, 4, 6, 7),
    (1, 6, 4, 5),
    (6, 4, 1, 5),
    (1, 3, 7, 6),
    (4, 6, 7, 1),
    (1, 5, 6, 4),
)
MAJOR_PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (1, 5, 6, 4),
    (6, 4, 1, 5),
    (1, 4, 6, 5),
    (4, 5, 6, 6),
)


def progression_symbols(key: Key, degrees: tuple[int, ...]) -> list[str]:
    """Chord symbols for scale degrees in a key: (1, 6, 3, 7) in Am -> ['Am', 'F', 'C', 'G']."""
    return [key.roman_chord(d).symbol for d in degrees]


def default_progression(key: Key) -> list[str]:
    return progression_symbols(key, MINOR_PROGRESSIONS[0] if key.mode == "minor" else MAJOR_PROGRESSIONS[0])
