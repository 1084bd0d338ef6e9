"""Descriptive statistics of a melody that several stages share (key finding, compliance, polyphony)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .melody import Note
from .theory import ALL_KEYS, Key

# Krumhansl–Kessler key profiles (the weights music21's KrumhanslSchmuckler analysis uses).
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def pitch_class_histogram(notes: Sequence[Note], weighted: bool = True) -> np.ndarray:
    """12-bin histogram of pitch classes, duration-weighted by default; not normalised."""
    h = np.zeros(12)
    for n in notes:
        h[n.pitch % 12] += n.duration if weighted else 1.0
    return h


def estimate_key(notes: Sequence[Note]) -> Key:
    """Krumhansl–Schmuckler: the key whose rotated profile best correlates with the
    duration-weighted pitch-class histogram. Ties go to the first key in `ALL_KEYS` (minor first)."""
    h = pitch_class_histogram(notes)
    if not h.any():
        raise ValueError("cannot estimate the key of an empty melody")
    best, best_r = None, -np.inf
    for key in ALL_KEYS:
        profile = np.roll(_KK_MINOR if key.mode == "minor" else _KK_MAJOR, key.tonic)
        r = np.corrcoef(h, profile)[0, 1] if h.std() > 0 else 0.0
        if r > best_r + 1e-12:
            best, best_r = key, r
    return best


def scale_compliance(notes: Sequence[Note], key: Key) -> float | None:
    """Share of notes whose pitch class is in the key (minor: natural ∪ harmonic). None when empty."""
    if not notes:
        return None
    allowed = key.allowed_pcs()
    return sum(n.pitch % 12 in allowed for n in notes) / len(notes)


def polyphony_ratio(notes: Sequence[Note], eps: float = 1e-6) -> float | None:
    """Share of note onsets that fall while an earlier-started note is still sounding."""
    if not notes:
        return None
    ordered = sorted(notes)
    overlapping = 0
    latest_end = -np.inf
    for n in ordered:
        if n.start < latest_end - eps:
            overlapping += 1
        latest_end = max(latest_end, n.end)
    return overlapping / len(ordered)


def pitch_range_semitones(notes: Sequence[Note]) -> int | None:
    if not notes:
        return None
    p = [n.pitch for n in notes]
    return max(p) - min(p)
