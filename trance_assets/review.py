"""Listening spot-checks (the plan's Tier 2 rule): queue every 5th accepted track, read verdicts,
reject a batch whose reviewed tracks are more than 30% flagged. Plain Python; nothing is deleted.

Batch: the tracks whose Tier 2 melody was first extracted on the same UTC day (`date_added`) — in
practice the tracks ingested together. Within a batch, accepted tracks are ordered by partition key
and the 1st, 6th, 11th, ... enter the queue (every 5th, starting with the first).

Reviews file (`storage/reviews/reviews.csv`, created with its header when missing), one row per
verdict; a later row for the same track replaces an earlier one (a re-review):

    partition_key,verdict,reviewer,reviewed_on,note
    demo-01-aurora-fc59197084,pass,alice,2026-11-24,clean
    demo-06-eternity-26af9a0531,flag,alice,2026-11-24,octave errors in bar 3

`verdict` is `pass` or `flag`. A batch is `rejected` when flagged / reviewed > 0.30, `pending` while
some queued track has no verdict, otherwise `approved`. Melodies of a rejected batch are not
corpus-eligible until a re-review brings the share down; their files stay where they are.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

REVIEW_EVERY = 5
MAX_FLAGGED_SHARE = 0.30
REVIEW_COLUMNS = ("partition_key", "verdict", "reviewer", "reviewed_on", "note")
VERDICTS = ("pass", "flag")


class ReviewFileError(ValueError):
    """The reviews file has a malformed row; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Track:
    partition_key: str
    batch: str
    accepted: bool


@dataclass(frozen=True)
class Review:
    partition_key: str
    verdict: str
    reviewer: str
    reviewed_on: str
    note: str = ""


def select_for_review(tracks: list[Track], every: int = REVIEW_EVERY) -> set[str]:
    """Partition keys queued for review: every `every`-th accepted track of each batch."""
    queued = set()
    for batch in sorted({t.batch for t in tracks}):
        accepted = sorted(t.partition_key for t in tracks if t.batch == batch and t.accepted)
        queued.update(accepted[::every])
    return queued


def parse_reviews(text: str, source: str = "reviews.csv") -> dict[str, Review]:
    """Latest verdict per partition key. Raises ReviewFileError naming `source`, line and cause."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("partition_key", "verdict") if c not in (reader.fieldnames or [])]
    if missing:
        raise ReviewFileError(f"{source}: header must include {', '.join(REVIEW_COLUMNS)}; missing {missing}")
    out: dict[str, Review] = {}
    for row in reader:
        line = reader.line_num  # the file's own line number (blank lines are skipped, not counted by rows)
        key = (row.get("partition_key") or "").strip()
        verdict = (row.get("verdict") or "").strip().lower()
        if not key and not verdict:
            continue
        if not key:
            raise ReviewFileError(f"{source}:{line}: empty partition_key")
        if verdict not in VERDICTS:
            raise ReviewFileError(f"{source}:{line}: verdict must be 'pass' or 'flag', got {row.get('verdict')!r}")
        out[key] = Review(key, verdict, (row.get("reviewer") or "").strip(), (row.get("reviewed_on") or "").strip(), (row.get("note") or "").strip())
    return out


def reviews_template() -> str:
    return ",".join(REVIEW_COLUMNS) + "\n"


@dataclass(frozen=True)
class BatchStatus:
    batch: str
    tracks: int
    accepted: int
    queued: int
    reviewed: int
    flagged: int
    status: str  # "pending" | "approved" | "rejected"

    @property
    def flagged_share(self) -> float | None:
        return self.flagged / self.reviewed if self.reviewed else None


def batch_statuses(tracks: list[Track], queued: set[str], reviews: dict[str, Review], max_flagged: float = MAX_FLAGGED_SHARE) -> dict[str, BatchStatus]:
    out = {}
    for batch in sorted({t.batch for t in tracks}):
        members = [t for t in tracks if t.batch == batch]
        q = [t.partition_key for t in members if t.partition_key in queued]
        reviewed = [k for k in q if k in reviews]
        flagged = [k for k in reviewed if reviews[k].verdict == "flag"]
        if reviewed and len(flagged) / len(reviewed) > max_flagged:
            status = "rejected"
        elif len(reviewed) < len(q):
            status = "pending"
        else:
            status = "approved"
        out[batch] = BatchStatus(batch, len(members), sum(t.accepted for t in members), len(q), len(reviewed), len(flagged), status)
    return out


def corpus_eligible(track: Track, statuses: dict[str, BatchStatus]) -> bool:
    """Accepted, and its batch not rejected (a pending batch does not block: review is a sample)."""
    return track.accepted and statuses[track.batch].status != "rejected"


def write_review_material(folder, lead_audio, sample_rate: int, melody, origin_s: float, seconds: float = 20.0) -> dict[str, str]:
    """Piano roll + two short WAVs for a reviewer: the isolated lead and the transcribed melody
    re-synthesised (plain saw), both covering the same `seconds` from the start of bar 0."""
    import numpy as np

    from .audio.synth import render_saw
    from .music.pianoroll import piano_roll_png
    from .storage import atomic_write_bytes

    start = max(0, int(round(origin_s * sample_rate)))
    n = int(seconds * sample_rate)
    lead = np.asarray(lead_audio, dtype=np.float32)[start : start + n]
    peak = float(np.abs(lead).max()) if lead.size else 0.0
    if peak > 0:
        lead = lead * (0.89 / peak)
    synth = render_saw(melody, sr=sample_rate)[:n] if melody.notes else np.zeros(n, dtype=np.float32)
    out = {}
    for name, audio in (("lead_isolated.wav", lead), ("melody_resynth.wav", synth)):
        out[name] = str(atomic_write_bytes(folder / name, _wav_bytes(audio, sample_rate)))
    beats = seconds * melody.bpm / 60.0
    clipped = melody.with_notes(n_ for n_ in melody.notes if n_.start < beats)
    out["pianoroll.png"] = str(atomic_write_bytes(folder / "pianoroll.png", piano_roll_png([clipped])))
    return out


def write_melody_review_material(folder, melody, *, sample_rate: int = 22050, beats: float = 64.0) -> dict[str, str]:
    """Piano roll and a plain-saw rendering of the first `beats` (16 bars) of a melody that has no
    source audio (corpus spot-checks)."""
    from .audio.synth import render_saw
    from .music.pianoroll import piano_roll_png
    from .storage import atomic_write_bytes

    clipped = melody.with_notes(n for n in melody.notes if n.start < beats)
    return {
        "melody.wav": str(atomic_write_bytes(folder / "melody.wav", _wav_bytes(render_saw(clipped, sr=sample_rate), sample_rate))),
        "pianoroll.png": str(atomic_write_bytes(folder / "pianoroll.png", piano_roll_png([clipped]))),
    }


def _wav_bytes(audio, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
