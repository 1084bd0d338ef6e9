"""Note-level transcription accuracy (mir_eval): onset within 50 ms, same pitch, offsets ignored."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoteScore:
    precision: float
    recall: float
    f1: float
    reference_notes: int
    estimated_notes: int


def note_f1(
    ref: list[tuple[float, float, int]], est: list[tuple[float, float, int]], onset_tolerance: float = 0.05
) -> NoteScore:
    """`ref`/`est`: (onset_s, offset_s, midi_pitch). Pitches must match exactly (±0.5 semitone)."""
    import mir_eval

    def arrays(notes):
        if not notes:
            return np.zeros((0, 2)), np.zeros(0)
        iv = np.array([[max(s, 0.0), max(e, s + 1e-3, 1e-3)] for s, e, _ in notes], dtype=float)
        hz = mir_eval.util.midi_to_hz(np.array([p for _, _, p in notes], dtype=float))
        return iv, hz

    ri, rp = arrays(ref)
    ei, ep = arrays(est)
    if len(ref) == 0 or len(est) == 0:
        return NoteScore(0.0, 0.0, 0.0, len(ref), len(est))
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=onset_tolerance, pitch_tolerance=50.0, offset_ratio=None
    )
    return NoteScore(float(p), float(r), float(f), len(ref), len(est))


def melody_seconds(melody, origin_s: float = 0.0) -> list[tuple[float, float, int]]:
    beat = 60.0 / melody.bpm
    return [(origin_s + n.start * beat, origin_s + n.end * beat, n.pitch) for n in melody.notes]
