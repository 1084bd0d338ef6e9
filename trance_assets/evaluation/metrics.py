"""Per-melody evaluation metrics and the composite score, as defined in docs/EVALUATION.md.

A melody is first *prepared* (`prepare`): reduced to its top line, given a key and a chord track,
and turned into numpy arrays. Each metric is then a small pure function of the prepared melody that
returns a float, or None when the metric is undefined for that melody (never 0 in its place).

Choices the definitions leave open, fixed here (tests pin each one):

- **Top line** (`top_line`): notes are grouped by onset (onsets within 1e-6 beats are one onset); at
  each onset the highest note is kept (equal pitches: the longest). A kept note still sounding when
  the next kept onset starts is cut to end there, whatever its pitch: the newest onset always wins.
- **Inferred chords** (`infer_bar_chords`): one chord per bar, the diatonic triad of the key
  (`Key.roman_chord`, minor keys: natural minor with V major) whose pitch classes cover the largest
  share of the bar's *sounding time* (each note weighted by how long it sounds inside the bar). Ties
  go to the lower scale degree, so a bar with no notes gets the tonic triad.
- **Onset grid** (self-similarity, hook): one cell per (16th-note step, pitch class), 1 where a note
  starts (onset rounded to the nearest 16th), else 0. Chunks are whole: a 20-bar melody has two
  8-bar chunks, bars 16-20 are not compared. The cosine of an all-zero chunk with a non-empty one is
  0; a pair of two all-zero chunks (shared silence is not melodic repetition) is left out of the
  mean, and the metric is None when no pair is left.
- **chord_tone_ratio**: the chord is the span sounding at the note's onset (start <= onset < end; the
  first such span when spans overlap), with every tone of the symbol (7ths and extensions count).
  Notes with no chord at their onset leave the denominator; None when no note has a chord.
- **resolutions**: scale degrees are the key's own: major scale, or natural minor for minor keys
  with the raised 7th (leading tone) also counting as degree 7. A resolution is a pair of
  consecutive notes with degrees 7→1, 4→3 or 2→1 that moves by a step (1 or 2 semitones), so a
  7→1 leap of an octave does not count. Rate = count × 8 / bars. None with fewer than 2 notes.
- **minor_adherence**: the natural ∪ harmonic minor of the key's own tonic (a C major melody is
  measured against C minor: the metric says how minor the melody is, not whether it is in key).
- **phrase_regularity**: a rest is the gap between a note's end and the next onset in the top line;
  a phrase starts at the first note and at every onset after a rest of >= 1 beat; it is regular when
  within 1 beat (inclusive) of a multiple of 16 beats.
- **hook_memorability**: the first 4 bars against every later 4-bar window that does not overlap
  them (starting at bar 4, 5, ..., bars − 4); None under 8 bars or when the first 4 bars are silent.
- **pitch_entropy / pitch_range / register_consistency** are defined for a single note (0, 0, 1).
- **kl_to_reference**: P is `corpus.card.pitch_class_distribution` of the top line (durations after
  the top-line cut); Q is the reference given, normalised to sum 1 (and ε-smoothed like P only when
  it has a zero bin); KL by `corpus.card.kl_bits`.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from ..corpus.card import EPS as PC_EPS
from ..corpus.card import kl_bits, pitch_class_distribution
from ..music.melody import BEATS_PER_BAR, ChordSpan, Melody, Note
from ..music.theory import HARMONIC_MINOR_STEPS, MAJOR_STEPS, NATURAL_MINOR_STEPS, Key, parse_chord, parse_key

# ---- definitions (EVALUATION.md) ---------------------------------------------------------------

COMPOSITE_WEIGHTS: dict[str, float] = {
    "pitch_entropy": 0.10,
    "pitch_range": 0.05,
    "chord_tone_ratio": 0.20,
    "self_similarity_8": 0.10,
    "self_similarity_16": 0.05,
    "stepwise_ratio": 0.10,
    "npvi": 0.05,
    "kl_to_reference": 0.15,
    "resolutions": 0.05,
}

# A tuple (low, high) is a range target; a float t a lower bound; None "lower is better" (KL).
TARGETS: dict[str, tuple[float, float] | float | None] = {
    "pitch_entropy": (2.5, 3.0),
    "pitch_range": (1.5, 2.5),
    "chord_tone_ratio": 0.80,
    "self_similarity_8": 0.60,
    "self_similarity_16": 0.40,
    "stepwise_ratio": 0.60,
    "npvi": (30.0, 60.0),
    "kl_to_reference": None,
    "resolutions": 1.0,
}

EXTRA_METRICS: tuple[str, ...] = ("minor_adherence", "phrase_regularity", "hook_memorability", "register_consistency")
METRICS: tuple[str, ...] = tuple(COMPOSITE_WEIGHTS) + EXTRA_METRICS

STEPS_PER_BEAT = 4  # 16th notes
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
ONSET_TOL = 1e-6  # beats: onsets closer than this are one onset
_TOL = 1e-9  # float slack in comparisons of beat positions


# ---- key and chord tables (cached: parsing is the slow part of a small melody) ------------------


@dataclass(frozen=True, eq=False)
class _KeyTables:
    key: Key
    degree: np.ndarray  # (12,) scale degree 1-7 of each pitch class, 0 when out of scale
    minor_mask: np.ndarray  # (12,) bool: natural ∪ harmonic minor of the tonic
    triads: tuple[str, ...]  # symbols of the diatonic triads, degree 1 first
    triad_masks: np.ndarray  # (7, 12) float: 1 where the triad has the pitch class


@lru_cache(maxsize=64)
def _key_tables(key: Key) -> _KeyTables:
    steps = MAJOR_STEPS if key.mode == "major" else NATURAL_MINOR_STEPS
    degree = np.zeros(12, dtype=np.int64)
    for d, s in enumerate(steps, start=1):
        degree[(key.tonic + s) % 12] = d
    if key.mode == "minor":
        degree[(key.tonic + 11) % 12] = 7  # the raised 7th is degree 7 as well
    minor_mask = np.zeros(12, dtype=bool)
    for s in set(NATURAL_MINOR_STEPS) | set(HARMONIC_MINOR_STEPS):
        minor_mask[(key.tonic + s) % 12] = True
    chords = [key.roman_chord(d) for d in range(1, 8)]
    masks = np.zeros((7, 12))
    for i, c in enumerate(chords):
        masks[i, list(c.pcs)] = 1.0
    for a in (degree, minor_mask, masks):
        a.setflags(write=False)
    return _KeyTables(key, degree, minor_mask, tuple(c.symbol for c in chords), masks)


@lru_cache(maxsize=1024)
def _chord_mask(symbol: str) -> np.ndarray:
    mask = np.zeros(12, dtype=bool)
    mask[list(parse_chord(symbol.rstrip("?")).pcs)] = True
    mask.setflags(write=False)
    return mask


# ---- preparation ---------------------------------------------------------------------------------


def top_line(notes: Iterable[Note]) -> list[Note]:
    """The top line of (possibly polyphonic) notes, sorted by onset.

    Onsets within `ONSET_TOL` beats are one onset; at each onset the highest note is kept (equal
    pitches: the longest). A kept note that is still sounding at the next kept onset is cut to end
    there, even when the new note is lower. Monophonic input comes back unchanged.
    """
    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch, -n.duration))
    kept: list[Note] = []
    group_start = -math.inf
    for n in ordered:
        if n.start - group_start <= ONSET_TOL:  # same onset: keep the highest (then longest) note
            if (n.pitch, n.duration) > (kept[-1].pitch, kept[-1].duration):
                kept[-1] = n
            continue
        group_start = n.start
        kept.append(n)
    out = []
    for i, n in enumerate(kept):
        if i + 1 < len(kept) and n.end > kept[i + 1].start + _TOL:
            n = Note(n.start, n.pitch, kept[i + 1].start - n.start, n.velocity)
        out.append(n)
    return out


def infer_bar_chords(notes: Sequence[Note], key: Key | str, bars: int | None = None) -> tuple[ChordSpan, ...]:
    """One inferred chord per bar: the key's diatonic triad covering most of the bar's sounding time.

    `bars` defaults to ceil(last note end / 4). Each note weighs by the beats it sounds inside the
    bar; a triad scores the weight of the notes whose pitch class it contains; ties (within 1e-9)
    go to the lower scale degree, so an empty bar gets the tonic. Spans are `inferred=True`.
    """
    key = key if isinstance(key, Key) else parse_key(key)
    tables = _key_tables(key)
    if bars is None:
        bars = math.ceil(max((n.end for n in notes), default=0.0) / BEATS_PER_BAR - _TOL)
    if bars <= 0:
        return ()
    bar_start = np.arange(bars, dtype=np.float64) * BEATS_PER_BAR
    weights = np.zeros((bars, 12))
    if len(notes):
        s = np.array([n.start for n in notes])
        e = np.array([n.end for n in notes])
        pc = np.array([n.pitch % 12 for n in notes])
        overlap = np.clip(np.minimum(e[:, None], bar_start[None, :] + BEATS_PER_BAR) - np.maximum(s[:, None], bar_start[None, :]), 0.0, None)
        onehot = np.zeros((len(notes), 12))
        onehot[np.arange(len(notes)), pc] = 1.0
        weights = overlap.T @ onehot  # (bars, 12): sounding beats per pitch class
    scores = weights @ tables.triad_masks.T  # (bars, 7)
    best = np.argmax(scores >= scores.max(axis=1, keepdims=True) - 1e-9, axis=1)
    return tuple(ChordSpan(tables.triads[d], float(b * BEATS_PER_BAR), float(BEATS_PER_BAR), inferred=True) for b, d in enumerate(best))


@dataclass(frozen=True, eq=False)
class Prepared:
    """A melody ready for scoring: top line, key, chord track and the arrays the metrics read."""

    notes: tuple[Note, ...]  # top line, sorted by onset
    key: Key
    chords: tuple[ChordSpan, ...]
    chords_inferred: bool
    bars: int
    starts: np.ndarray = field(repr=False)  # (n,) beats
    pitches: np.ndarray = field(repr=False)  # (n,) MIDI
    durations: np.ndarray = field(repr=False)  # (n,) beats, after the top-line cut

    @property
    def n(self) -> int:
        return len(self.notes)

    @cached_property
    def onset_grid(self) -> np.ndarray:
        """(bars × 16, 12) float: 1 where a note starts at that 16th step on that pitch class."""
        grid = np.zeros((self.bars * STEPS_PER_BAR, 12))
        steps = np.floor(self.starts * STEPS_PER_BEAT + 0.5).astype(np.int64)
        inside = steps < len(grid)
        grid[steps[inside], self.pitches[inside] % 12] = 1.0
        return grid

    @cached_property
    def chord_at_onset(self) -> np.ndarray:
        """(n, 12) bool: tones of the chord sounding at each note's onset; all False without one."""
        out = np.zeros((self.n, 12), dtype=bool)
        if not self.chords or not self.n:
            return out
        cs = np.array([c.start for c in self.chords])
        ce = np.array([c.end for c in self.chords])
        covers = (cs[None, :] <= self.starts[:, None] + _TOL) & (self.starts[:, None] < ce[None, :] - _TOL)
        has = covers.any(axis=1)
        first = np.argmax(covers, axis=1)
        masks = np.stack([_chord_mask(c.symbol) for c in self.chords])
        out[has] = masks[first[has]]
        return out


def prepare(melody: Melody, *, key: Key | str | None = None) -> Prepared:
    """Top line, key (`key` overrides the melody's), chords (the melody's own, else inferred per bar)
    and bars (`melody.bars`, else ceil(last note end / 4) over the original notes)."""
    notes = tuple(top_line(melody.notes))
    key_obj = melody.key_obj if key is None else (key if isinstance(key, Key) else parse_key(key))
    bars = melody.n_bars
    if melody.chords:
        chords, inferred = tuple(melody.chords), False
        for c in chords:
            try:
                _chord_mask(c.symbol)
            except ValueError as exc:
                raise ValueError(f"melody {melody.name!r}: chord track has an unreadable symbol: {exc}") from exc
    else:
        chords, inferred = infer_bar_chords(notes, key_obj, bars), True
    return Prepared(
        notes=notes,
        key=key_obj,
        chords=chords,
        chords_inferred=inferred,
        bars=bars,
        starts=np.array([n.start for n in notes], dtype=np.float64),
        pitches=np.array([n.pitch for n in notes], dtype=np.int64),
        durations=np.array([n.duration for n in notes], dtype=np.float64),
    )


def _as_prepared(m: Melody | Prepared) -> Prepared:
    return m if isinstance(m, Prepared) else prepare(m)


# ---- the composite metrics -----------------------------------------------------------------------


def pitch_entropy(p: Prepared) -> float | None:
    """Shannon entropy (bits) of the note-count distribution over MIDI pitch numbers. None when empty."""
    if not p.n:
        return None
    counts = np.bincount(p.pitches, minlength=128)
    q = counts[counts > 0] / p.n
    return float(-np.sum(q * np.log2(q))) + 0.0  # + 0.0: no -0.0 for one pitch


def pitch_range(p: Prepared) -> float | None:
    """(max pitch − min pitch) / 12, in octaves. None when empty."""
    if not p.n:
        return None
    return float(p.pitches.max() - p.pitches.min()) / 12.0


def chord_tone_ratio(p: Prepared) -> float | None:
    """Share of notes whose pitch class is in the chord sounding at their onset.

    Notes with no chord at their onset are left out of the denominator; None when no note has one.
    """
    chord = p.chord_at_onset
    has = chord.any(axis=1)
    if not has.any():
        return None
    hit = chord[np.arange(p.n), p.pitches % 12]
    return float(hit[has].mean())


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine of two non-negative vectors; 0 when exactly one is all zero, None when both are."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return None
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _self_similarity(p: Prepared, chunk_bars: int) -> float | None:
    n_chunks = p.bars // chunk_bars
    if not p.n or n_chunks < 2:
        return None
    chunks = p.onset_grid[: n_chunks * chunk_bars * STEPS_PER_BAR].reshape(n_chunks, -1)
    sims = [_cosine(chunks[i], chunks[i + 1]) for i in range(n_chunks - 1)]
    sims = [s for s in sims if s is not None]
    return float(np.mean(sims)) if sims else None


def self_similarity_8(p: Prepared) -> float | None:
    """Mean cosine between consecutive whole 8-bar chunks of the onset grid. None under 16 bars."""
    return _self_similarity(p, 8)


def self_similarity_16(p: Prepared) -> float | None:
    """Mean cosine between consecutive whole 16-bar chunks of the onset grid. None under 32 bars."""
    return _self_similarity(p, 16)


def stepwise_ratio(p: Prepared) -> float | None:
    """Share of consecutive-note intervals of at most 2 semitones (repeats count). None under 2 notes."""
    if p.n < 2:
        return None
    return float(np.mean(np.abs(np.diff(p.pitches)) <= 2))


def npvi(p: Prepared) -> float | None:
    """100/(m−1) · Σ |d_k − d_{k+1}| / ((d_k + d_{k+1}) / 2) over the m inter-onset intervals d.

    None when m < 2 (fewer than 3 notes).
    """
    d = np.diff(p.starts)
    m = len(d)
    if m < 2:
        return None
    return float(100.0 / (m - 1) * np.sum(np.abs(d[:-1] - d[1:]) / ((d[:-1] + d[1:]) / 2.0)))


def _reference_q(reference_pc) -> np.ndarray:
    q = np.asarray(reference_pc, dtype=np.float64)
    if q.shape != (12,) or not np.all(np.isfinite(q)) or np.any(q < 0) or q.sum() <= 0:
        raise ValueError(f"reference_pc must be 12 non-negative finite numbers with a positive sum, got {reference_pc!r}")
    q = q / q.sum()
    if np.any(q == 0):
        q = (q + PC_EPS) / (q + PC_EPS).sum()
    return q


def melody_pc(p: Prepared) -> np.ndarray:
    """P: the duration-weighted, tonic-rotated, ε-smoothed pitch-class distribution of the top line."""
    return pitch_class_distribution([p.key.name], [p.pitches], [p.durations])


def kl_to_reference(p: Prepared, reference_pc=None) -> float | None:
    """KL(P‖Q) in bits (`corpus.card`'s definition). None when empty or without a reference Q."""
    if not p.n or reference_pc is None:
        return None
    return kl_bits(melody_pc(p), _reference_q(reference_pc))


_RESOLUTIONS = ((7, 1), (4, 3), (2, 1))


def resolutions(p: Prepared) -> float | None:
    """Stepwise 7→1, 4→3, 2→1 scale-degree moves between consecutive notes, per 8 bars.

    Degrees are the key's (minor: natural minor plus the raised 7th as degree 7); a move counts when
    the two pitches are 1 or 2 semitones apart. None with fewer than 2 notes or no bars.
    """
    if p.n < 2 or p.bars <= 0:
        return None
    deg = _key_tables(p.key).degree[p.pitches % 12]
    a, b = deg[:-1], deg[1:]
    step = np.abs(np.diff(p.pitches))
    is_step = (step >= 1) & (step <= 2)
    hit = np.zeros(len(a), dtype=bool)
    for x, y in _RESOLUTIONS:
        hit |= (a == x) & (b == y)
    return float(np.count_nonzero(hit & is_step)) * 8.0 / p.bars


# ---- reported beside the composite ---------------------------------------------------------------


def minor_adherence(p: Prepared) -> float | None:
    """Share of notes in the natural ∪ harmonic minor of the key's tonic. None when empty."""
    if not p.n:
        return None
    return float(_key_tables(p.key).minor_mask[p.pitches % 12].mean())


def phrase_regularity(p: Prepared) -> float | None:
    """Share of phrase starts (the first note; onsets after a rest >= 1 beat) within 1 beat of a
    4-bar boundary. None when empty."""
    if not p.n:
        return None
    rest = p.starts[1:] - (p.starts[:-1] + p.durations[:-1])
    starts = np.concatenate([p.starts[:1], p.starts[1:][rest >= 1.0 - _TOL]])
    period = 4 * BEATS_PER_BAR
    off = np.mod(starts, period)
    dist = np.minimum(off, period - off)
    return float(np.mean(dist <= 1.0 + _TOL))


def hook_memorability(p: Prepared) -> float | None:
    """Max cosine between the first 4 bars' onset grid and any later, non-overlapping 4-bar window
    (starting at bar 4, 5, ..., stepping by one bar). None under 8 bars or when bars 0-4 are silent."""
    if not p.n or p.bars < 8:
        return None
    w = 4 * STEPS_PER_BAR
    grid = p.onset_grid
    hook = grid[:w].ravel()
    hook_norm = float(np.linalg.norm(hook))
    if hook_norm == 0.0:
        return None
    best = 0.0
    for bar in range(4, p.bars - 4 + 1):
        win = grid[bar * STEPS_PER_BAR : bar * STEPS_PER_BAR + w].ravel()
        nw = float(np.linalg.norm(win))
        if nw > 0.0:
            best = max(best, float(np.dot(hook, win)) / (hook_norm * nw))
    return best


def register_consistency(p: Prepared) -> float | None:
    """max(0, 1 − std(pitch) / 24), population std over notes. None when empty."""
    if not p.n:
        return None
    return max(0.0, 1.0 - float(np.std(p.pitches)) / 24.0)


METRIC_FUNCTIONS = {
    "pitch_entropy": pitch_entropy,
    "pitch_range": pitch_range,
    "chord_tone_ratio": chord_tone_ratio,
    "self_similarity_8": self_similarity_8,
    "self_similarity_16": self_similarity_16,
    "stepwise_ratio": stepwise_ratio,
    "npvi": npvi,
    "kl_to_reference": kl_to_reference,
    "resolutions": resolutions,
    "minor_adherence": minor_adherence,
    "phrase_regularity": phrase_regularity,
    "hook_memorability": hook_memorability,
    "register_consistency": register_consistency,
}
assert tuple(METRIC_FUNCTIONS) == METRICS


# ---- scores and the composite --------------------------------------------------------------------


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def metric_score(name: str, value: float | None) -> float | None:
    """Map a composite metric's value to [0, 1] (EVALUATION.md).

    Range (lo, hi): 1 inside, falling linearly to 0 at one range-width (hi − lo) outside. Lower bound
    t: min(1, value / t), floored at 0. kl_to_reference: 1 / (1 + KL). resolutions: min(1, rate).
    None for an undefined value and for the metrics reported beside the composite (no target).
    Raises ValueError for an unknown metric name.
    """
    if name not in METRIC_FUNCTIONS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if name not in COMPOSITE_WEIGHTS or not _defined(value):
        return None
    value = float(value)
    if name == "kl_to_reference":
        return 1.0 / (1.0 + max(0.0, value))
    if name == "resolutions":
        return max(0.0, min(1.0, value))
    target = TARGETS[name]
    if isinstance(target, tuple):
        lo, hi = target
        width = hi - lo
        outside = max(lo - value, value - hi, 0.0)
        return max(0.0, 1.0 - outside / width)
    return max(0.0, min(1.0, value / target))


def composite(metrics: Mapping[str, float | None]) -> float | None:
    """Σ wᵢ·sᵢ / Σ wᵢ over the composite metrics that are defined; None when none is."""
    num = den = 0.0
    for name, w in COMPOSITE_WEIGHTS.items():
        s = metric_score(name, metrics.get(name))
        if s is not None:
            num += w * s
            den += w
    return num / den if den > 0 else None


def score_prepared(p: Prepared, reference_pc=None) -> dict:
    row: dict = {}
    for name, fn in METRIC_FUNCTIONS.items():
        row[name] = fn(p, reference_pc) if name == "kl_to_reference" else fn(p)
    row["composite"] = composite(row)
    row["chords_inferred"] = p.chords_inferred
    row["n_notes"] = p.n  # notes of the top line, the notes scored
    row["bars"] = p.bars
    return row


def score_melody(melody: Melody | Prepared, reference_pc=None) -> dict:
    """Every metric (None where undefined), `composite`, `chords_inferred`, `n_notes` (top line), `bars`."""
    if reference_pc is not None:
        reference_pc = _reference_q(reference_pc)
    return score_prepared(_as_prepared(melody), reference_pc)


def _score_chunk(args) -> list[dict]:
    melodies, reference_pc = args
    return [score_prepared(prepare(m), reference_pc) for m in melodies]


def score_many(melodies: Iterable[Melody], reference_pc=None, *, workers: int = 1, chunk_size: int = 250) -> list[dict]:
    """`score_melody` over many melodies, in order. `workers` > 1 scores chunks in a process pool."""
    melodies = list(melodies)
    q = _reference_q(reference_pc) if reference_pc is not None else None
    if workers <= 1 or len(melodies) <= chunk_size:
        return _score_chunk((melodies, q))
    chunks = [(melodies[i : i + chunk_size], q) for i in range(0, len(melodies), chunk_size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [row for part in pool.map(_score_chunk, chunks) for row in part]


# ---- vectors for set-level comparison ------------------------------------------------------------


def pitch_class_vector(melody: Melody | Prepared) -> np.ndarray:
    """P of the melody's top line (12 bins, tonic-rotated, sums to 1; uniform when empty)."""
    return melody_pc(_as_prepared(melody))


FEATURE_NAMES: tuple[str, ...] = METRICS + tuple(f"pc_{i}" for i in range(12))


def feature_vector(scored_row: Mapping, pc_vector) -> np.ndarray:
    """The per-melody metrics in `METRICS` order (None → NaN) followed by the 12-bin histogram."""
    pc = np.asarray(pc_vector, dtype=np.float64)
    if pc.shape != (12,):
        raise ValueError(f"pc_vector must have 12 bins, got shape {pc.shape}")
    vals = [scored_row.get(m) for m in METRICS]
    head = np.array([float(v) if v is not None else np.nan for v in vals])
    return np.concatenate([head, pc])
