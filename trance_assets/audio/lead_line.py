"""From transcribed note events to a quantised monophonic lead melody.

1. `best_lead_path`: a monophonic reduction that beats "highest note at each onset". Candidate notes
   are scored by amplitude, register and harmonic plausibility; a dynamic programme then picks the
   best chain of notes with distinct onsets (each cut where the next begins), paying for pitch
   leaps (continuity). Pads (long, quiet),
   bass (out of register) and octave-up harmonics of the lead lose.
2. `estimate_tempo` / `beat_phase` / `downbeat_offset`: tempo from the full mix's onset envelope
   (autocorrelation over a BPM range, with a confidence), the beat phase, and which beat starts the
   bar (chord changes in the harmonic residual).
3. `quantise`: onsets and offsets onto the 16th-note grid of that beat grid.
4. `infer_bar_chords`: one triad per bar from the residual's chroma (labelled inferred).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..music.melody import BEATS_PER_BAR, ChordSpan, Note
from ..music.theory import FLAT_NAMES, SHARP_NAMES, Key

ANALYSIS_SR = 22050
HOP = 256  # onset envelopes (11.6 ms at 22.05 kHz)
CHROMA_HOP = 512  # chroma is averaged per beat or bar; 23 ms frames keep beat boundaries sharp
FEATURE_CHUNK_SECONDS = 60.0  # features are computed in chunks so a long track stays small in memory


def chunked_frames(y: np.ndarray, sr: int, hop: int, fn, chunk_seconds: float = FEATURE_CHUNK_SECONDS, context_seconds: float = 2.0) -> np.ndarray:
    """`fn(segment) -> (..., frames)` (centred frames, `hop` apart) over `y` in chunks with context.

    Each chunk is analysed with `context_seconds` of audio on both sides and trimmed to its own
    frames, so the result matches one whole-track call away from chunk edges while peak memory is
    that of one chunk's spectrogram.
    """
    n = len(y)
    chunk = max(hop, int(chunk_seconds * sr) // hop * hop)
    ctx = int(context_seconds * sr) // hop * hop
    total = 1 + n // hop
    parts = []
    for start in range(0, n, chunk):
        a, b = max(0, start - ctx), min(n, start + chunk + ctx)
        frames = fn(y[a:b])
        skip = (start - a) // hop
        want = min(chunk // hop, total - start // hop)
        parts.append(frames[..., skip : skip + want])
    return np.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class Candidate:
    onset: float  # seconds
    offset: float
    pitch: int
    amplitude: float
    reonsets: tuple[float, ...] = ()  # re-articulations inside the note (same pitch struck again)


def split_reonsets(notes: list[Candidate], grid: tuple[float, float] | None = None, tolerance: float = 0.025) -> list[Candidate]:
    """Split notes at their recorded re-articulations (applied to the chosen lead line only).

    `grid` = (origin_s, step_s): keep only re-articulations within `tolerance` of a grid step (a
    re-struck gated note lands on the 16th grid; the activation's other wiggles do not).
    """
    out = []
    for c in notes:
        cuts = [t for t in c.reonsets if c.onset < t < c.offset]
        if grid is not None:
            origin, step = grid
            cuts = [t for t in cuts if abs((t - origin) / step - round((t - origin) / step)) * step <= tolerance]
        edges = [c.onset, *cuts, c.offset]
        out.extend(Candidate(s, e, c.pitch, c.amplitude) for s, e in zip(edges, edges[1:]))
    return out


@dataclass(frozen=True)
class LeadParams:
    register: tuple[int, int] = (55, 100)  # MIDI range where a lead is expected (first pass)
    outside_cost: float = 0.5 / 12  # per semitone outside the register
    adaptive_half_span: int | None = 13  # second pass: register = lead centre ± this (None: one pass)
    adaptive_outside_cost: float = 0.12
    adaptive_amp_ratio: float = 0.8  # second pass drops notes quieter than ratio x the first chain's median
    leap_cost: float = 0.25  # per octave of leap beyond a whole tone
    big_leap_cost: float = 0.3  # extra for leaps over an octave
    note_bonus: float = 0.3  # per selected note (favours the busy lead over sustained pads)
    long_note_seconds: float = 1.2  # notes longer than this are pad-like ...
    long_note_cost: float = 0.4  # ... and pay per second beyond it
    harmonic_cost: float = 0.6  # a note an octave/twelfth above a louder simultaneous note
    min_onset_gap: float = 0.05  # seconds between consecutive chosen onsets (a release tail may overlap: it is cut)
    window: int = 256  # candidates looked back over in the DP


def best_lead_path(cands: list[Candidate], params: LeadParams = LeadParams()) -> list[Candidate]:
    """The highest-scoring monophonic chain of candidates (see module docstring).

    Two passes: the first, with the broad default register, finds where the lead lives (the
    amplitude-weighted median pitch of its chain); the second keeps the register to
    ±`adaptive_half_span` semitones around it, so pads and bass an octave or two below drop out.
    """
    first = _best_path(cands, params)
    if len(first) < 8 or params.adaptive_half_span is None:
        return first
    pitches = np.array([c.pitch for c in first], dtype=float)
    weights = np.array([c.amplitude for c in first])
    order = np.argsort(pitches)
    cum = np.cumsum(weights[order])
    centre = float(pitches[order][np.searchsorted(cum, cum[-1] / 2)])
    half = params.adaptive_half_span
    # Quiet notes in the lead's gaps (pad and bass harmonics leaking through) fall below a floor set
    # relative to the lead's own typical amplitude, and so score negative.
    floor = params.adaptive_amp_ratio * float(np.median(weights))

    second = replace(params, register=(int(centre - half), int(centre + half)), outside_cost=params.adaptive_outside_cost)
    return _best_path([c for c in cands if c.amplitude >= floor], second)


def _best_path(cands: list[Candidate], params: LeadParams) -> list[Candidate]:
    if not cands:
        return []
    cands = sorted(cands, key=lambda c: (c.onset, -c.amplitude))
    on = np.array([c.onset for c in cands])
    off = np.array([c.offset for c in cands])
    pitch = np.array([c.pitch for c in cands], dtype=float)
    amp = np.array([c.amplitude for c in cands])
    lo, hi = params.register
    outside = np.maximum(0, lo - pitch) + np.maximum(0, pitch - hi)
    dur = off - on
    score = amp + params.note_bonus - params.outside_cost * outside - params.long_note_cost * np.maximum(0, dur - params.long_note_seconds)
    # Harmonic plausibility: an onset together with a louder note 12 or 19 semitones lower.
    for i in range(len(cands)):
        near = np.abs(on - on[i]) < 0.05
        lower = near & np.isin(pitch[i] - pitch, (12, 19, 24)) & (amp >= 0.6 * amp[i])
        if lower.any():
            score[i] -= params.harmonic_cost
    n = len(cands)
    best = np.empty(n)
    prev = np.full(n, -1)
    for i in range(n):
        j0 = max(0, i - params.window)
        js = np.arange(j0, i)
        ok = on[js] <= on[i] - params.min_onset_gap
        if ok.any():
            js = js[ok]
            leap = np.abs(pitch[i] - pitch[js])
            cost = params.leap_cost * np.maximum(0, leap - 2) / 12 + params.big_leap_cost * (leap > 12)
            cand = best[js] - cost
            k = int(np.argmax(cand))
            if cand[k] > 0:
                best[i] = score[i] + cand[k]
                prev[i] = js[k]
                continue
        best[i] = score[i]
    i = int(np.argmax(best))
    chain = []
    while i >= 0:
        chain.append(cands[i])
        i = int(prev[i])
    chain.reverse()
    out = []
    for a, b in zip(chain, chain[1:] + [None]):
        end = min(a.offset, b.onset) if b is not None else a.offset
        out.append(replace(a, offset=max(end, a.onset + 1e-3)))
    return out


def highest_note_baseline(cands: list[Candidate], tolerance: float = 0.03) -> list[Candidate]:
    """The naive reduction: at each onset (within `tolerance`), keep the highest note."""
    out: list[Candidate] = []
    group_onset = 0.0  # first onset of the current group; a later, higher note within tolerance replaces the kept one
    for c in sorted(cands, key=lambda c: (c.onset, -c.pitch)):
        if out and c.onset - group_onset < tolerance:
            if c.pitch > out[-1].pitch:
                out[-1] = c
            continue
        out.append(c)
        group_onset = c.onset
    return out


# ---- tempo and grid ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tempo:
    bpm: float
    confidence: float  # 0..1: how clearly the autocorrelation prefers this tempo
    source: str  # "declared" | "estimated"


def onset_envelope(mono: np.ndarray, sr: int, fmax: float | None = None) -> np.ndarray:
    """Spectral-flux onset strength (frames `HOP` apart), computed in chunks.

    With `fmax`: the kick's envelope — only the percussive part (harmonic–percussive separation) of
    the band below `fmax`. Trance puts the bass on the off-beats in the same band; bass notes are
    harmonic, so without the separation the beat comb would lock half a beat off.
    """
    import librosa

    y = np.asarray(mono, dtype=np.float32)
    if not fmax:
        return chunked_frames(y, sr, HOP, lambda seg: librosa.onset.onset_strength(y=seg, sr=sr, hop_length=HOP, aggregate=np.median))
    n_fft = 4096
    top = int(np.searchsorted(np.fft.rfftfreq(n_fft, 1.0 / sr), 2 * fmax)) + 1

    def kick(seg: np.ndarray) -> np.ndarray:
        mag = np.abs(librosa.stft(seg, n_fft=n_fft, hop_length=HOP))[:top]
        _, perc = librosa.decompose.hpss(mag, margin=2.0)
        mel_basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=8, fmax=fmax)[:, :top]
        mel = librosa.power_to_db(mel_basis @ perc**2)
        return librosa.onset.onset_strength(S=mel, sr=sr, hop_length=HOP, aggregate=np.median)

    return chunked_frames(y, sr, HOP, kick)


def refine_grid(onsets: np.ndarray, bpm: float, phase_s: float, *, search: float = 0.02, fixed_tempo: bool = False) -> tuple[float, float]:
    """The 16th-note grid that best explains the note onsets: (bpm, phase_s of a 16th step).

    Basic Pitch's onsets are precise to ~12 ms, far finer than the autocorrelation tempo (~2 %
    resolution at trance tempi, where 0.5 BPM drifts a 16th over 40 s). For each tempo within
    ±`search` of `bpm` (0.005 BPM steps), the onsets' phases on that grid are averaged as unit
    vectors; the tempo with the most coherent phases (largest mean resultant length) wins, and its
    mean angle gives the phase. A least-squares fit over the onsets near that grid then polishes
    both. With `fixed_tempo` only the phase is fitted. `phase_s` (e.g. the kick's beat phase) picks
    which 16th of the beat the grid starts on.
    """
    onsets = np.asarray(onsets, dtype=float)
    if len(onsets) < 8:
        return bpm, phase_s
    cands = np.array([bpm]) if fixed_tempo else np.arange(bpm * (1 - search), bpm * (1 + search), 0.005)
    steps = 60.0 / cands / 4
    z = np.exp(2j * np.pi * onsets[None, :] / steps[:, None]).mean(axis=1)
    best = int(np.argmax(np.abs(z)))
    step = float(steps[best])
    phase = float(np.angle(z[best]) / (2 * np.pi) * step) % step
    k = np.round((onsets - phase) / step)
    ok = np.abs(onsets - (phase + k * step)) < step / 3
    if ok.sum() >= 8 and np.ptp(k[ok]) >= 16:
        if fixed_tempo:
            phase = float(np.mean(onsets[ok] - k[ok] * step))
        else:
            step, phase = (float(v) for v in np.polyfit(k[ok], onsets[ok], 1))
    # Align to the beat: of the four 16ths, the one nearest the given beat phase.
    beat = 4 * step
    shift = ((phase_s - phase) / step)
    phase = phase + step * round(shift)
    phase = phase - beat * np.floor(phase / beat)  # the first beat at or after time 0
    return 60.0 / beat, float(phase)


def estimate_tempo(env: np.ndarray, sr: int, bpm_range: tuple[float, float] = (120.0, 160.0), step: float = 0.05) -> Tempo:
    """Tempo maximising the onset envelope's autocorrelation at 1, 2 and 4 beat lags."""
    x = env - env.mean()
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    ac = ac / (ac[0] + 1e-12)
    fps = sr / HOP
    bpms = np.arange(bpm_range[0], bpm_range[1] + step / 2, step)
    lags = 60.0 * fps / bpms
    frames = np.arange(len(ac))
    score = sum(np.interp(lags * m, frames, ac, right=0.0) / m**0.5 for m in (1, 2, 4))
    k = int(np.argmax(score))
    med = float(np.median(score))
    conf = float(np.clip((score[k] - med) / (abs(score[k]) + 1e-9), 0.0, 1.0))
    return Tempo(round(float(bpms[k]), 2), round(conf, 3), "estimated")


def beat_phase(env: np.ndarray, sr: int, bpm: float) -> float:
    """Seconds of the first beat: the phase whose comb of beat times collects the most onset energy."""
    fps = sr / HOP
    period = 60.0 * fps / bpm  # frames
    phases = np.arange(0, period, 0.25)
    t = np.arange(len(env))
    energy = []
    for ph in phases:
        idx = ph + period * np.arange(int((len(env) - ph) // period) + 1)
        energy.append(np.interp(idx, t, env).sum())
    return float(phases[int(np.argmax(energy))] / fps)


def downbeat_offset(chroma_frames: np.ndarray, sr: int, bpm: float, phase_s: float) -> int:
    """Which of the first four beats starts the bar: the one where harmony changes most."""
    fps = sr / CHROMA_HOP
    beat = 60.0 / bpm
    n_beats = int((chroma_frames.shape[1] / fps - phase_s) / beat)
    if n_beats < 8:
        return 0
    idx = [int(round((phase_s + b * beat) * fps)) for b in range(n_beats + 1)]
    per_beat = np.stack([chroma_frames[:, a:max(a + 1, b)].mean(axis=1) for a, b in zip(idx, idx[1:])], axis=1)
    norm = per_beat / (np.linalg.norm(per_beat, axis=0, keepdims=True) + 1e-9)
    change = np.r_[0.0, 1 - (norm[:, 1:] * norm[:, :-1]).sum(axis=0)]
    return int(np.argmax([change[k::4].mean() for k in range(4)]))


def quantise(lead: list[Candidate], origin_s: float, bpm: float, steps_per_beat: int = 4) -> list[Note]:
    """Snap onsets/offsets to the 16th grid starting at `origin_s`; one note per grid step."""
    step = 60.0 / bpm / steps_per_beat
    notes: dict[int, tuple[int, int, float]] = {}
    for c in lead:
        s = int(round((c.onset - origin_s) / step))
        e = int(round((c.offset - origin_s) / step))
        if s < 0:
            continue
        e = max(e, s + 1)
        if s in notes and notes[s][2] >= c.amplitude:
            continue
        notes[s] = (e, c.pitch, c.amplitude)
    starts = sorted(notes)
    out = []
    for s, nxt in zip(starts, starts[1:] + [None]):
        e, p, a = notes[s]
        if nxt is not None:
            e = min(e, nxt)
        vel = int(np.clip(round(40 + 87 * a), 1, 127))
        out.append(Note(s / steps_per_beat, p, (e - s) / steps_per_beat, vel))
    return out


# ---- chords ---------------------------------------------------------------------------------

def chroma(mono: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    y = np.asarray(mono, dtype=np.float32)
    return chunked_frames(y, sr, CHROMA_HOP, lambda seg: librosa.feature.chroma_stft(y=seg, sr=sr, hop_length=CHROMA_HOP, n_fft=4096))


def _templates() -> tuple[np.ndarray, list[tuple[int, str]]]:
    rows, labels = [], []
    for root in range(12):
        for quality, ivs in (("", (0, 4, 7)), ("m", (0, 3, 7))):
            t = np.zeros(12)
            t[[(root + i) % 12 for i in ivs]] = 1.0
            t[root] += 0.5  # the root is usually the strongest tone of a trance pad/bass
            rows.append(t / np.linalg.norm(t))
            labels.append((root, quality))
    return np.array(rows), labels


def infer_bar_chords(chroma_frames: np.ndarray, sr: int, bpm: float, origin_s: float, bars: int, key: Key) -> tuple[ChordSpan, ...]:
    """One major/minor triad per bar, by template matching the bar's mean chroma (labelled inferred)."""
    fps = sr / CHROMA_HOP
    bar_s = BEATS_PER_BAR * 60.0 / bpm
    templates, labels = _templates()
    flats = key.mode == "minor" and key.relative_minor_tonic in (2, 7, 0, 5, 10, 3) or key.mode == "major" and key.tonic in (5, 10, 3, 8, 1, 6)
    names = FLAT_NAMES if flats else SHARP_NAMES
    spans = []
    for b in range(bars):
        a = int(round((origin_s + b * bar_s) * fps))
        z = int(round((origin_s + (b + 1) * bar_s) * fps))
        a, z = max(a, 0), min(z, chroma_frames.shape[1])
        if z - a < 2:
            break
        v = chroma_frames[:, a:z].mean(axis=1)
        if not v.any():
            continue
        root, quality = labels[int(np.argmax(templates @ (v / np.linalg.norm(v))))]
        spans.append(ChordSpan(names[root] + quality, b * BEATS_PER_BAR, BEATS_PER_BAR, inferred=True))
    return tuple(spans)
