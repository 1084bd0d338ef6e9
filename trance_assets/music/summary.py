"""Per-melody summary rows (for tables in metadata and parquet indexes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .analysis import pitch_range_semitones, polyphony_ratio, scale_compliance
from .melody import Melody
from .quality import QualityThresholds, check_melody


def melody_row(m: Melody, thresholds: QualityThresholds | None = None) -> dict:
    row = {
        "name": m.name,
        "key": m.key,
        "bpm": m.bpm,
        "bars": m.n_bars,
        "notes": len(m.notes),
        "lowest": min(m.pitches, default=None),
        "highest": max(m.pitches, default=None),
        "range_semitones": pitch_range_semitones(m.notes),
        "scale_compliance": scale_compliance(m.notes, m.key_obj),
        "polyphony": polyphony_ratio(m.notes),
        "progression": " ".join(dict.fromkeys(c.symbol for c in m.chords)),
    }
    if thresholds is not None:
        report = check_melody(m, thresholds)
        row["passes_quality"] = report.passed
        row["quality_failures"] = report.reason()
    return row


def key_counts(melodies: Iterable[Melody]) -> dict[str, int]:
    return dict(sorted(Counter(m.key for m in melodies).items(), key=lambda kv: (-kv[1], kv[0])))
