"""The Tier 2 chain in plain Python: separate → transcribe → reduce → tempo/grid → key/chords → validate.

The Dagster assets call these stages one by one (one asset per stage); `extract_file` runs them all for
the `trance-assets extract` command and the accuracy benchmark, so both measure exactly what the
pipeline does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from ..music.melody import BEATS_PER_BAR, Melody
from ..music.quality import QualityReport, QualityThresholds, check_melody
from ..music.theory import Key, parse_key
from .lead_line import (
    ANALYSIS_SR,
    Candidate,
    LeadParams,
    Tempo,
    beat_phase,
    best_lead_path,
    chroma,
    downbeat_offset,
    estimate_tempo,
    infer_bar_chords,
    onset_envelope,
    quantise,
    refine_grid,
    split_reonsets,
)
from .transcription import TranscriberConfig, to_mono_22k, transcribe, transcriber_version

EXTRACTION_VERSION = "1"
# A lead line whose median pitch lies below this (MIDI 64, E4) sits where pads (voiced around
# MIDI 52-63) and bass play, not where a trance lead does (fundamentals MIDI 60-96, typically
# C5 and up): such a "melody" is what the separator leaves of a mix without a lead.
LEAD_MIN_MEDIAN_PITCH = 64.0


@dataclass(frozen=True)
class MelodyExtraction:
    melody: Melody
    accepted: bool
    rejection: str  # "" when accepted
    quality: QualityReport
    tempo: Tempo
    origin_s: float  # time of beat 0 of bar 0 (may be negative when the lead starts before the first downbeat)
    candidates: int  # transcribed note events
    kept: int  # notes in the lead line

    def beats_to_seconds(self, beats: float) -> float:
        return self.origin_s + beats * 60.0 / self.melody.bpm


def music21_key(melody_notes, chords=()) -> Key:
    """Key by music21's Krumhansl–Schmuckler analysis of the melody (duration-weighted) together with
    the bar chords (their triads, one bar long: the harmony settles the relative major/minor that a
    melody alone leaves open)."""
    from music21 import chord as m21chord, key as m21key, note as m21note, stream

    from ..music.theory import parse_chord

    s = stream.Stream()
    for n in melody_notes:
        m = m21note.Note(n.pitch)
        m.quarterLength = max(0.25, n.duration)
        s.insert(n.start, m, ignoreSort=True)  # sorted insertion re-scans the stream: quadratic in notes
    for c in chords:
        ch = parse_chord(c.symbol)
        m = m21chord.Chord([48 + pc for pc in ch.triad_pcs])
        m.quarterLength = c.duration
        s.insert(c.start, m, ignoreSort=True)
    k = s.analyze("krumhansl")
    assert isinstance(k, m21key.Key)
    best = _m21_to_key(k)
    if not melody_notes:
        return best
    # Keys that share most of a pitch set (relative major/minor, neighbours on the circle of fifths)
    # correlate almost equally; among those within 0.15 of music21's best (and their relatives), prefer the one that keeps
    # the most melody and chord tones in its scale, then the one whose tonic chord opens the
    # progression and whose tonic ends the melody, then music21's order.
    tones = [n.pitch % 12 for n in melody_notes] + [pc for c in chords for pc in parse_chord(c.symbol).triad_pcs]
    last_pc = max(melody_notes, key=lambda n: n.start).pitch % 12
    first_root = parse_chord(chords[0].symbol).root if chords else None

    def rank(item):
        cand, corr = item
        allowed = cand.allowed_pcs()
        fit = round(sum(t in allowed for t in tones) / len(tones), 2)
        evidence = int(first_root == cand.tonic) + int(last_pc == cand.tonic)
        return (fit, evidence, corr)

    corr = {_m21_to_key(a): a.correlationCoefficient for a in k.alternateInterpretations}
    corr[best] = k.correlationCoefficient
    near = [key for key, c in corr.items() if c >= k.correlationCoefficient - 0.15]
    # A key's relative major/minor has the same pitch set, so it joins the pool too: which of the two
    # is the tonal centre is for the evidence to decide, not the profile correlation.
    pool = {key for key in near} | {_relative(key) for key in near}
    return max(((key, corr.get(key, -1.0)) for key in pool), key=rank)[0]


def _relative(k: Key) -> Key:
    return Key((k.tonic + 9) % 12, "minor") if k.mode == "major" else Key((k.tonic + 3) % 12, "major")


def _m21_to_key(k) -> Key:
    return parse_key(k.tonic.name.replace("-", "b") + ("m" if k.mode == "minor" else ""))



def candidates_from_events(events: pl.DataFrame) -> list[Candidate]:
    return [
        Candidate(
            float(r["onset_s"]),
            float(r["offset_s"]),
            int(r["pitch"]),
            float(r["amplitude"]),
            tuple(r.get("reonsets_s") or ()),
        )
        for r in events.iter_rows(named=True)
    ]


def melody_from_events(
    events: pl.DataFrame,
    mix_22k: np.ndarray,
    residual_22k: np.ndarray,
    *,
    name: str,
    declared_bpm: float | None = None,
    thresholds: QualityThresholds = QualityThresholds.for_tier(2),
    lead_params: LeadParams = LeadParams(),
    bpm_range: tuple[float, float] = (120.0, 160.0),
    min_lead_median_pitch: float | None = LEAD_MIN_MEDIAN_PITCH,
) -> MelodyExtraction:
    """Everything after transcription. `mix_22k`/`residual_22k`: mono float at 22.05 kHz.

    Rejected: melodies failing the quality rules, and lead lines whose median pitch is below
    `min_lead_median_pitch` (None: no such check) - a mix without a lead yields pad and bass notes.
    """
    sr = ANALYSIS_SR
    cands = candidates_from_events(events)
    lead = best_lead_path(cands, lead_params)
    env = onset_envelope(mix_22k, sr)
    tempo = Tempo(float(declared_bpm), 1.0, "declared") if declared_bpm else estimate_tempo(env, sr, bpm_range)
    # Beat phase from the kick band; then tempo (estimated only) and phase refined on the lead's
    # own onsets.
    kick_phase = beat_phase(onset_envelope(mix_22k, sr, fmax=150.0), sr, tempo.bpm)
    fit_bpm, phase = refine_grid(
        np.array([c.onset for c in lead]), tempo.bpm, kick_phase, fixed_tempo=tempo.source == "declared"
    )
    if tempo.source == "estimated":
        tempo = Tempo(round(fit_bpm, 3), tempo.confidence, tempo.source)
    bpm = tempo.bpm
    res_chroma = chroma(residual_22k, sr)
    beat_s = 60.0 / bpm
    bar_s = BEATS_PER_BAR * beat_s
    first_downbeat = phase + downbeat_offset(res_chroma, sr, bpm, phase) * beat_s
    first_onset = lead[0].onset if lead else first_downbeat
    origin = first_downbeat - bar_s * math.ceil(max(0.0, first_downbeat - first_onset - 0.06) / bar_s)
    lead = split_reonsets(lead, grid=(origin, beat_s / 4))
    notes = quantise(lead, origin, bpm)
    if notes:
        bars = int(math.ceil(max(n.end for n in notes) / BEATS_PER_BAR))
        melody_key = music21_key(notes)
        chords = infer_bar_chords(res_chroma, sr, bpm, origin, bars, melody_key)
        key = music21_key(notes, chords)
        if key != melody_key:  # re-spell the chord symbols in the final key
            chords = infer_bar_chords(res_chroma, sr, bpm, origin, bars, key)
    else:
        key, bars, chords = parse_key("Am"), 0, ()
    melody = Melody(tuple(notes), round(bpm, 2), key.name, chords, bars=bars or None, name=name)
    report = check_melody(melody, thresholds)
    reasons = [] if report.passed else ["no notes transcribed" if not notes else report.reason()]
    if notes and min_lead_median_pitch is not None:
        median = float(np.median([n.pitch for n in notes]))
        if median < min_lead_median_pitch:
            reasons.append(
                f"lead_register: median pitch {median:g} (needs >= {min_lead_median_pitch:g}; "
                "lower lines are pads/bass: no lead found)"
            )
    rejection = "; ".join(reasons)
    return MelodyExtraction(melody, not reasons, rejection, report, tempo, origin, len(cands), len(notes))


def sidecar(
    extraction: MelodyExtraction,
    *,
    source_track: str,
    source_sha256: str,
    separator: str,
    separator_version: str,
    partition_key: str | None = None,
    separator_fallback_reason: str | None = None,
) -> dict:
    """The metadata JSON written next to each Tier 2 MIDI file (the plan's fields and provenance)."""
    m = extraction.melody
    pitches = m.pitches
    return {
        "source_track": source_track,
        "source_sha256": source_sha256,
        "partition_key": partition_key,
        "tier": 2,
        "original_key": m.key,
        "key_method": "music21 Krumhansl-Schmuckler on the extracted notes and inferred bar chords",
        "bpm": m.bpm,
        "bpm_source": extraction.tempo.source,
        "bpm_confidence": extraction.tempo.confidence,
        "augmentations": [],
        "scale_compliance": extraction.quality.as_dict().get("scale_compliance"),
        "pitch_range": [min(pitches), max(pitches)] if pitches else None,
        "notes": len(m.notes),
        "bars": m.n_bars,
        "chords": [c.symbol for c in m.chords],
        "chords_inferred": True,
        "grid_origin_s": round(extraction.origin_s, 4),
        "extraction_method": {
            "separator": separator,
            "separator_version": separator_version,
            "transcriber": transcriber_version(),
            "reduction": f"best-path lead line v{EXTRACTION_VERSION}",
            "separator_fallback_reason": separator_fallback_reason,
        },
        "accepted": extraction.accepted,
        "rejection": extraction.rejection,
        "quality": extraction.quality.as_dict(),
        "manually_verified": False,
        "spot_checked": False,
        "date_added": date.today().isoformat(),
    }


@dataclass
class FileExtraction:
    path: str
    extraction: MelodyExtraction | None
    sidecar: dict
    timings: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str = ""


def extract_file(
    path: str | Path,
    *,
    separator_config=None,
    transcriber_config: TranscriberConfig = TranscriberConfig(),
    thresholds: QualityThresholds = QualityThresholds.for_tier(2),
    separator_model=None,
) -> FileExtraction:
    """The whole chain on one audio file, as the pipeline runs it. Raises AudioValidationError for
    unusable audio (naming the file)."""
    from .io import inspect_audio, read_declared_bpm
    from .separation import SeparatorConfig, read_audio, separate

    path = Path(path)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = inspect_audio(path)
    declared, _ = read_declared_bpm(path)
    audio, sr = read_audio(path)
    timings["load"] = time.perf_counter() - t0
    sep = separate(audio, sr, separator_config or SeparatorConfig(), model=separator_model)
    timings["separate"] = sep.seconds
    t0 = time.perf_counter()
    events = transcribe(sep.lead, sep.sample_rate, transcriber_config)
    timings["transcribe"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex = melody_from_events(
        events,
        to_mono_22k(audio, sr),
        to_mono_22k(sep.residual, sep.sample_rate),
        name=path.stem,
        declared_bpm=declared,
        thresholds=thresholds,
    )
    timings["melody"] = time.perf_counter() - t0
    side = sidecar(
        ex,
        source_track=str(path),
        source_sha256=info.sha256,
        separator=sep.separator,
        separator_version=sep.separator_version,
        separator_fallback_reason=sep.fallback_reason,
    )
    return FileExtraction(str(path), ex, side, timings, info.duration_s)
