"""A small, deterministic trance synthesiser: renders a `Melody` to audio with numpy and scipy.

Signal chain of `render_arrangement` (all stems are float64 (channels, samples) buffers, mixed at the end):

* **lead**   - per note, a 7-voice supersaw (PolyBLEP saws detuned -24..+24 cents, spread across the
  stereo field symmetrically, so the lead sits in the centre overall), an ADSR envelope (5 ms attack,
  40 ms release), velocity as gain; the summed stem goes through a 2-pole Butterworth lowpass at 5 kHz.
* **pad**    - per `ChordSpan`, the chord's triad voiced in MIDI 52-63 (the lowest instance >= 52 of each
  pitch class), 3 soft detuned saws per chord tone, 150 ms attack, 250 ms release, lowpass at 1.8 kHz.
  No chords, no pad.
* **bass**   - an 8th note on the "and" of every beat, on the root of the chord sounding there, put in
  MIDI 36-47 (the key's tonic when the melody has no chord there); one saw through a 600 Hz lowpass.
* **kick**   - on every beat: a sine swept 150 Hz -> 45 Hz, 250 ms long with an exponential decay.
* **hats**   - on the "and" of every beat: an 80 ms burst of white noise (drawn from `seed`), highpassed
  at 7 kHz.
* **sidechain** - pad and bass are multiplied by a gain that dips to 0.3 in 4 ms at every beat and
  recovers to 1 over one 8th note, the pumping of a kick-keyed compressor.

The mix is the stems times fixed gains, normalised to a -1 dBFS peak (0.891), returned as float32.

Oscillators are PolyBLEP saws (a naive saw with a polynomial correction around each wrap, which
removes most of the aliasing), generated a whole note at a time: each note is one vectorised
(voices, samples) block slice-added into its stem, so the per-note Python loop is the only loop.
Voice phases are those of free-running oscillators (frequency x note start time), so renders are
deterministic; the only random numbers are the hat noise, drawn from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from ..music.melody import Melody
from ..music.theory import parse_chord

PEAK = 10 ** (-1 / 20)  # -1 dBFS

# Mix gains of the stems (before the final peak normalisation).
LEAD_GAIN = 0.55
PAD_GAIN = 0.13
BASS_GAIN = 0.30
KICK_GAIN = 0.90
HAT_GAIN = 0.08

PAD_LOW = 52  # pad chord tones: the lowest instance >= PAD_LOW of each triad pitch class
BASS_LOW = 36  # bass notes in MIDI 36-47
DUCK_FLOOR = 0.3  # sidechain gain right after each beat
DUCK_DIP_SECONDS = 0.004


@dataclass(frozen=True)
class Adsr:
    """Envelope times in seconds; `sustain` is a level 0..1. Decay is exponential towards sustain."""

    attack: float
    decay: float
    sustain: float
    release: float

    def envelope(self, n_gate: int, sr: int) -> np.ndarray:
        """Gain for a note held `n_gate` samples, followed by its linear release (length n_gate + release)."""
        t = np.arange(n_gate) / sr
        after_attack = np.maximum(t - self.attack, 0.0)
        held = self.sustain + (1.0 - self.sustain) * np.exp(-after_attack / max(self.decay, 1e-9))
        gate = np.where(t < self.attack, t / max(self.attack, 1e-9), held)
        level = gate[-1] if n_gate else 0.0
        n_release = int(round(self.release * sr))
        release = level * (1.0 - np.arange(1, n_release + 1) / n_release) if n_release else np.zeros(0)
        return np.concatenate([gate, release])


@dataclass(frozen=True)
class Patch:
    """A saw instrument: one voice per detune entry, each with a stereo position -1..1."""

    detune_cents: tuple[float, ...]
    pans: tuple[float, ...]
    voice_gains: tuple[float, ...]
    adsr: Adsr
    cutoff_hz: float

    @property
    def n_voices(self) -> int:
        return len(self.detune_cents)


LEAD = Patch(
    detune_cents=(-24.0, -14.0, -6.0, 0.0, 6.0, 14.0, 24.0),
    pans=(-0.9, 0.6, -0.3, 0.0, 0.3, -0.6, 0.9),
    voice_gains=(0.8, 0.9, 1.0, 1.2, 1.0, 0.9, 0.8),
    adsr=Adsr(attack=0.005, decay=0.15, sustain=0.8, release=0.04),
    cutoff_hz=5000.0,
)
LEAD_MONO = Patch((0.0,), (0.0,), (1.0,), LEAD.adsr, LEAD.cutoff_hz)
PAD = Patch(
    detune_cents=(-9.0, 0.0, 9.0),
    pans=(-0.7, 0.0, 0.7),
    voice_gains=(1.0, 1.0, 1.0),
    adsr=Adsr(attack=0.15, decay=0.5, sustain=0.85, release=0.25),
    cutoff_hz=1800.0,
)
BASS = Patch((0.0,), (0.0,), (1.0,), Adsr(attack=0.003, decay=0.08, sustain=0.7, release=0.02), 600.0)
PLAIN_SAW = Adsr(attack=0.005, decay=0.1, sustain=1.0, release=0.03)

# Voice phase offsets (fractions of a cycle), so detuned voices never start in phase.
_PHASE_OFFSETS = (np.arange(1, 16) * 0.6180339887) % 1.0


@dataclass(frozen=True)
class _Event:
    """One sounding chord or note: start and held length in seconds, MIDI pitches, gain."""

    start: float
    duration: float
    pitches: tuple[int, ...]
    gain: float = 1.0


# ---- public API -------------------------------------------------------------------------------


def midi_to_hz(pitch: float | np.ndarray) -> float | np.ndarray:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    hz = 440.0 * 2.0 ** ((np.asarray(pitch, dtype=float) - 69.0) / 12.0)
    return float(hz) if hz.ndim == 0 else hz


def render_arrangement(melody: Melody, *, sr: int = 44100, seed: int = 0, tail_seconds: float = 1.0) -> np.ndarray:
    """The full arrangement (lead, pad, bass, kick, hats) as float32 stereo, shape (n_samples, 2).

    Length: the melody's length in seconds plus `tail_seconds`. Peak -1 dBFS (all zeros if silent).
    """
    n = _n_samples(melody, sr, tail_seconds)
    duck = _sidechain_gain(melody, sr, n)
    mix = (
        LEAD_GAIN * _lead_stem(melody, sr, n, LEAD, channels=2)
        + PAD_GAIN * duck * _pad_stem(melody, sr, n)
        + BASS_GAIN * duck * _bass_stem(melody, sr, n)
        + KICK_GAIN * _kick_stem(melody, sr, n)
        + HAT_GAIN * _hat_stem(melody, sr, n, seed)
    )
    return _normalise(mix).T.copy()


def render_lead(melody: Melody, *, sr: int = 44100, detune: bool = True) -> np.ndarray:
    """Only the lead synth, float32 mono, peak -1 dBFS; `detune=False` uses a single saw voice.

    Length: the melody plus the lead's release time.
    """
    n = _n_samples(melody, sr, LEAD.adsr.release)
    stem = _lead_stem(melody, sr, n, LEAD if detune else LEAD_MONO, channels=1)
    return _normalise(stem)[0]


def render_saw(melody: Melody, *, sr: int = 44100) -> np.ndarray:
    """One plain PolyBLEP saw per note, simple ADSR, no filter, velocity as gain; float32 mono, peak -1 dBFS."""
    n = _n_samples(melody, sr, PLAIN_SAW.release)
    patch = Patch((0.0,), (0.0,), (1.0,), PLAIN_SAW, cutoff_hz=float("inf"))
    buf = np.zeros((1, n))
    _add_events(buf, _lead_events(melody), patch, sr)
    return _normalise(buf)[0]


# ---- oscillators and helpers ------------------------------------------------------------------


def _n_samples(melody: Melody, sr: int, tail_seconds: float) -> int:
    if sr <= 0:
        raise ValueError(f"sample rate must be > 0, got {sr}")
    if tail_seconds < 0:
        raise ValueError(f"tail_seconds must be >= 0, got {tail_seconds}")
    return int(round((melody.length_beats * 60.0 / melody.bpm + tail_seconds) * sr))


def _polyblep_saw(freqs: np.ndarray, phase0: np.ndarray, n: int, sr: int) -> np.ndarray:
    """Band-limited-ish saws in -1..1, shape (len(freqs), n); voices at or above Nyquist are silent."""
    dt = (freqs / sr)[:, None]
    phase = (phase0[:, None] + dt * np.arange(n)) % 1.0
    saw = 2.0 * phase - 1.0
    # PolyBLEP residual: smooths the step in the two samples around each wrap.
    x = phase / dt
    saw -= np.where(x < 1.0, 2.0 * x - x * x - 1.0, 0.0)
    y = (phase - 1.0) / dt
    saw -= np.where(y > -1.0, y * y + 2.0 * y + 1.0, 0.0)
    saw[(dt[:, 0] >= 0.5)] = 0.0
    return saw


def _pan_matrix(pans: Sequence[float], gains: Sequence[float], channels: int) -> np.ndarray:
    """(channels, voices) mixing matrix: equal-power panning for stereo, plain gains for mono."""
    g = np.asarray(gains, dtype=float) / np.sqrt(len(gains))
    if channels == 1:
        return g[None, :]
    theta = (np.asarray(pans, dtype=float) + 1.0) * np.pi / 4.0
    return np.stack([np.cos(theta), np.sin(theta)]) * g * np.sqrt(2.0)


def _add_events(buf: np.ndarray, events: Iterable[_Event], patch: Patch, sr: int) -> None:
    """Slice-add each event (all its pitches x all patch voices at once) into buf (channels, n)."""
    cents = np.asarray(patch.detune_cents)
    for ev in events:
        start = int(round(ev.start * sr))
        if start >= buf.shape[1] or not ev.pitches:
            continue
        env = patch.adsr.envelope(max(1, int(round(ev.duration * sr))), sr)
        length = min(env.size, buf.shape[1] - start)
        freqs = (midi_to_hz(np.asarray(ev.pitches))[:, None] * 2.0 ** (cents / 1200.0)).ravel()
        offsets = np.resize(_PHASE_OFFSETS, freqs.size)
        phase0 = (freqs * start / sr + offsets) % 1.0  # free-running oscillators
        voices = _polyblep_saw(freqs, phase0, length, sr)
        mixer = np.tile(_pan_matrix(patch.pans, patch.voice_gains, buf.shape[0]), len(ev.pitches))
        buf[:, start : start + length] += (ev.gain * mixer @ voices) * env[:length]


def _sos(kind: str, cutoff_hz: float, sr: int, order: int = 2) -> np.ndarray:
    return butter(order, min(cutoff_hz, 0.45 * sr), btype=kind, fs=sr, output="sos")


def _lowpass(x: np.ndarray, cutoff_hz: float, sr: int) -> np.ndarray:
    return sosfilt(_sos("lowpass", cutoff_hz, sr), x, axis=-1)


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    out = x * (PEAK / peak) if peak > 0 else x
    return np.nan_to_num(out).astype(np.float32)


def _beat_seconds(melody: Melody) -> float:
    return 60.0 / melody.bpm


def _n_beats(melody: Melody) -> int:
    return int(np.ceil(melody.length_beats - 1e-9))


# ---- stems ------------------------------------------------------------------------------------


def _lead_events(melody: Melody) -> list[_Event]:
    spb = _beat_seconds(melody)
    return [_Event(n.start * spb, n.duration * spb, (n.pitch,), n.velocity / 127.0) for n in melody.notes]


def _lead_stem(melody: Melody, sr: int, n: int, patch: Patch, channels: int) -> np.ndarray:
    buf = np.zeros((channels, n))
    _add_events(buf, _lead_events(melody), patch, sr)
    return _lowpass(buf, patch.cutoff_hz, sr)


def _pad_voicing(symbol: str) -> tuple[int, ...]:
    """The chord's triad, each pitch class at its lowest MIDI note >= PAD_LOW (so within 52-63)."""
    return tuple(PAD_LOW + (pc - PAD_LOW) % 12 for pc in parse_chord(symbol).triad_pcs)


def _pad_stem(melody: Melody, sr: int, n: int) -> np.ndarray:
    spb = _beat_seconds(melody)
    events = [_Event(c.start * spb, c.duration * spb, _pad_voicing(c.symbol)) for c in melody.chords]
    buf = np.zeros((2, n))
    _add_events(buf, events, PAD, sr)
    return _lowpass(buf, PAD.cutoff_hz, sr)


def _bass_stem(melody: Melody, sr: int, n: int) -> np.ndarray:
    spb = _beat_seconds(melody)
    tonic = melody.key_obj.tonic
    events = []
    for beat in range(_n_beats(melody)):
        span = melody.chord_at(beat + 0.5)
        root = parse_chord(span.symbol).root if span is not None else tonic
        events.append(_Event((beat + 0.5) * spb, 0.45 * spb, (BASS_LOW + (root - BASS_LOW) % 12,)))
    buf = np.zeros((1, n))
    _add_events(buf, events, BASS, sr)
    return np.repeat(_lowpass(buf, BASS.cutoff_hz, sr), 2, axis=0)


def _kick_sample(sr: int) -> np.ndarray:
    """Sine swept 150 -> 45 Hz (30 ms time constant), 250 ms, exponential decay with a short fade-out."""
    t = np.arange(int(0.25 * sr)) / sr
    f_hi, f_lo, tau = 150.0, 45.0, 0.03
    phase = 2 * np.pi * (f_lo * t + (f_hi - f_lo) * tau * (1.0 - np.exp(-t / tau)))
    fade = np.clip((t[-1] - t) / 0.01, 0.0, 1.0)
    return np.sin(phase) * np.exp(-t / 0.07) * fade


def _place(buf: np.ndarray, starts: Iterable[float], samples: Iterable[np.ndarray], sr: int) -> None:
    """Slice-add each (channels, k) sample at its start time (seconds), cropping at the buffer end."""
    for s, x in zip(starts, samples):
        a = int(round(s * sr))
        m = min(x.shape[-1], buf.shape[1] - a)
        if m > 0:
            buf[:, a : a + m] += x[..., :m]


def _kick_stem(melody: Melody, sr: int, n: int) -> np.ndarray:
    buf = np.zeros((2, n))
    spb = _beat_seconds(melody)
    beats = _n_beats(melody)
    _place(buf, (b * spb for b in range(beats)), [_kick_sample(sr)[None, :]] * beats, sr)
    return buf


def _hat_stem(melody: Melody, sr: int, n: int, seed: int) -> np.ndarray:
    spb = _beat_seconds(melody)
    beats = _n_beats(melody)
    t = np.arange(int(0.08 * sr)) / sr
    env = np.minimum(t / 0.001, 1.0) * np.exp(-t / 0.025) * np.clip((t[-1] - t) / 0.005, 0.0, 1.0)
    noise = np.random.default_rng(seed).standard_normal((beats, 2, t.size)) * env
    buf = np.zeros((2, n))
    _place(buf, ((b + 0.5) * spb for b in range(beats)), noise, sr)
    return sosfilt(_sos("highpass", 7000.0, sr, order=4), buf, axis=-1)


def _sidechain_gain(melody: Melody, sr: int, n: int) -> np.ndarray:
    """Gain (n,) that dips to DUCK_FLOOR at each kick and recovers over an 8th note (sin^2 curve)."""
    spb = _beat_seconds(melody)
    if _n_beats(melody) == 0:
        return np.ones(n)
    beats = np.arange(n) / sr / spb
    since = (beats - np.minimum(np.floor(beats), _n_beats(melody) - 1)) * spb  # seconds since the last kick
    dip = 1.0 - (1.0 - DUCK_FLOOR) * since / DUCK_DIP_SECONDS
    x = np.clip((since - DUCK_DIP_SECONDS) / (0.5 * spb), 0.0, 1.0)
    recover = DUCK_FLOOR + (1.0 - DUCK_FLOOR) * np.sin(0.5 * np.pi * x) ** 2
    return np.where(since < DUCK_DIP_SECONDS, dip, recover)
