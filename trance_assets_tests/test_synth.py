"""Tests of the numpy synthesiser: format, determinism, pitch, kick timing, mix balance, ducking."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from trance_assets.audio.synth import midi_to_hz, render_arrangement, render_lead, render_saw
from trance_assets.music.melody import Melody, Note
from trance_assets.music.rules import generate

SR = 44100
PEAK = 10 ** (-1 / 20)


@pytest.fixture(scope="module")
def melody() -> Melody:
    return generate(key="Am", bpm=140, chord_progression=["Am", "F", "C", "G"], bars=16, seed=0)


@pytest.fixture(scope="module")
def arrangement(melody: Melody) -> np.ndarray:
    return render_arrangement(melody, sr=SR, seed=0)


@pytest.fixture(scope="module")
def backing(melody: Melody) -> np.ndarray:
    """The same arrangement with the lead's notes removed."""
    return render_arrangement(melody.with_notes([]), sr=SR, seed=0)


# ---- analysis helpers ------------------------------------------------------------------------


def _seconds(melody: Melody, beats: float) -> float:
    return beats * 60.0 / melody.bpm


def _note_window(x: np.ndarray, melody: Melody, note: Note) -> np.ndarray:
    """The middle 60% of a note (clear of its attack and the previous note's release)."""
    centre = _seconds(melody, note.start + note.duration / 2)
    half = 0.3 * _seconds(melody, note.duration)
    return x[int((centre - half) * SR) : int((centre + half) * SR)]


def _spectrum(x: np.ndarray, nfft: int = 1 << 17) -> tuple[np.ndarray, np.ndarray]:
    mag = np.abs(np.fft.rfft(x * np.hanning(x.size), nfft))
    return np.fft.rfftfreq(nfft, 1 / SR), mag


def _estimate_f0(x: np.ndarray, fmin: float = 60.0, fmax: float = 2000.0, harmonics: int = 6) -> float:
    """Harmonic-sum pitch estimate: the candidate f0 maximising sum_h |X(h f0)| / h."""
    freqs, mag = _spectrum(x)
    cands = np.geomspace(fmin, fmax, 6000)
    score = sum(np.interp(h * cands, freqs, mag) / h for h in range(1, harmonics + 1))
    return float(cands[np.argmax(score)])


def _band_energy(x: np.ndarray, hz: float, rel_width: float = 0.015) -> float:
    freqs, mag = _spectrum(x)
    band = (freqs >= hz * (1 - rel_width)) & (freqs <= hz * (1 + rel_width))
    return float(np.sum(mag[band] ** 2))


def _test_notes(melody: Melody, count: int = 8) -> list[Note]:
    """Up to `count` notes of at least half a beat, spread over the melody."""
    long_notes = [n for n in melody.notes if n.duration >= 0.5]
    assert len(long_notes) >= count
    idx = np.linspace(0, len(long_notes) - 1, count).round().astype(int)
    return [long_notes[i] for i in idx]


def _bandpass_envelope(x: np.ndarray, lo: float | None, hi: float, smooth_s: float = 0.005) -> np.ndarray:
    sos = butter(4, hi, btype="lowpass", fs=SR, output="sos") if lo is None else butter(
        4, [lo, hi], btype="bandpass", fs=SR, output="sos"
    )
    y = sosfiltfilt(sos, x)
    k = max(1, int(smooth_s * SR))
    return np.convolve(y**2, np.ones(k) / k, mode="same")


# ---- format ----------------------------------------------------------------------------------


def test_midi_to_hz() -> None:
    assert midi_to_hz(69) == pytest.approx(440.0)
    assert midi_to_hz(57) == pytest.approx(220.0)
    assert midi_to_hz(60) == pytest.approx(261.6256, abs=1e-3)
    np.testing.assert_allclose(midi_to_hz(np.array([45, 81])), [110.0, 880.0])


def test_arrangement_format(melody: Melody, arrangement: np.ndarray) -> None:
    assert melody.length_beats == 64 and melody.bpm == 140
    expected = round((64 * 60 / 140 + 1.0) * SR)
    assert arrangement.shape == (expected, 2)
    assert arrangement.dtype == np.float32
    assert np.all(np.isfinite(arrangement))
    assert float(np.max(np.abs(arrangement))) == pytest.approx(PEAK, abs=1e-3)
    assert np.std(arrangement[:, 0] - arrangement[:, 1]) > 0  # genuinely stereo


def test_arrangement_length_follows_bpm_sr_and_tail() -> None:
    m = generate(bpm=128, bars=4, seed=3)
    x = render_arrangement(m, sr=22050, tail_seconds=0.5)
    assert x.shape == (round((16 * 60 / 128 + 0.5) * 22050), 2)
    assert x.dtype == np.float32
    assert float(np.max(np.abs(x))) == pytest.approx(PEAK, abs=1e-3)


@pytest.mark.parametrize("render", [render_lead, render_saw])
def test_mono_renders_format(melody: Melody, render) -> None:
    x = render(melody, sr=SR)
    assert x.ndim == 1 and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert float(np.max(np.abs(x))) == pytest.approx(PEAK, abs=1e-3)
    seconds = 64 * 60 / 140
    assert seconds * SR <= x.size <= (seconds + 0.1) * SR


def test_full_16_bar_render_prints_time(melody: Melody) -> None:
    # Wall-clock time is reported, never asserted.
    t0 = time.perf_counter()
    x = render_arrangement(melody, sr=SR, seed=1)
    print(f"render_arrangement, 16 bars at 140 BPM ({x.shape[0] / SR:.1f} s): {time.perf_counter() - t0:.3f} s")
    assert x.shape == (round((64 * 60 / 140 + 1.0) * SR), 2)
    assert np.all(np.isfinite(x))


# ---- determinism -----------------------------------------------------------------------------


def test_deterministic_for_same_seed(melody: Melody, arrangement: np.ndarray) -> None:
    again = render_arrangement(melody, sr=SR, seed=0)
    assert np.array_equal(arrangement, again)
    assert np.array_equal(render_lead(melody), render_lead(melody))


def test_other_seed_changes_only_the_hats(melody: Melody, arrangement: np.ndarray) -> None:
    other = render_arrangement(melody, sr=SR, seed=1)
    diff = (other - arrangement).astype(np.float64).sum(axis=1)
    assert np.max(np.abs(diff)) > 1e-3
    freqs, mag = _spectrum(diff, nfft=1 << 22)
    power = mag**2
    # The hats are noise highpassed at 7 kHz: the difference lives almost entirely up there.
    assert power[freqs > 5000].sum() > 0.99 * power.sum()


# ---- pitch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "render",
    [render_saw, lambda m: render_lead(m, detune=True), lambda m: render_lead(m, detune=False)],
    ids=["saw", "lead", "lead-single-voice"],
)
def test_rendered_pitch_matches_the_notes(melody: Melody, render) -> None:
    x = render(melody)
    for note in _test_notes(melody):
        f0 = midi_to_hz(note.pitch)
        est = _estimate_f0(_note_window(x, melody, note))
        assert abs(est / f0 - 1) < 0.03, f"note {note}: estimated {est:.1f} Hz, expected {f0:.1f} Hz"


def test_pitch_estimate_of_a_single_low_note() -> None:
    m = Melody(notes=(Note(0.0, 45, 2.0),), bpm=120, key="Am")  # A2 = 110 Hz
    x = render_lead(m)
    assert _estimate_f0(x[int(0.2 * SR) : int(0.8 * SR)]) == pytest.approx(110.0, rel=0.03)


# ---- arrangement content ---------------------------------------------------------------------


def test_kick_lands_on_every_beat(melody: Melody, arrangement: np.ndarray) -> None:
    env = _bandpass_envelope(arrangement.astype(np.float64).sum(axis=1), None, 150.0)
    spb = _seconds(melody, 1.0)
    for beat in range(int(melody.length_beats)):
        lo = int(max(0.0, (beat - 0.25) * spb) * SR)
        hi = int((beat + 0.75) * spb * SR)
        peak_t = (lo + int(np.argmax(env[lo:hi]))) / SR
        assert abs(peak_t - beat * spb) < 0.03, f"beat {beat}: low-band peak at {peak_t:.3f} s"
        on = env[int(beat * spb * SR) : int((beat * spb + 0.05) * SR)].mean()
        off = env[int((beat + 0.5) * spb * SR) : int(((beat + 0.5) * spb + 0.05) * SR)].mean()
        assert on > 3 * off


def test_lead_is_clearly_present(melody: Melody, arrangement: np.ndarray, backing: np.ndarray) -> None:
    full = arrangement.astype(np.float64).sum(axis=1)
    bare = backing.astype(np.float64).sum(axis=1)
    ratios = []
    for note in _test_notes(melody):
        f0 = midi_to_hz(note.pitch)
        with_lead = _band_energy(_note_window(full, melody, note), f0)
        ratios.append(with_lead / _band_energy(_note_window(bare, melody, note), f0))
    # The lead at least 6 dB above everything else at its fundamental (the pad's harmonics can land
    # there), and typically more than 13 dB above it.
    assert min(ratios) > 4.0, ratios
    assert np.median(ratios) > 20.0, ratios


def test_lead_is_centred(arrangement: np.ndarray) -> None:
    left, right = (np.sqrt(np.mean(arrangement[:, c].astype(np.float64) ** 2)) for c in (0, 1))
    assert left == pytest.approx(right, rel=0.05)


def test_pad_and_bass_duck_on_the_beat(melody: Melody, backing: np.ndarray) -> None:
    env = _bandpass_envelope(backing.astype(np.float64).sum(axis=1), 250.0, 2000.0, smooth_s=0.01)
    spb = _seconds(melody, 1.0)
    ratios = []
    for beat in range(1, int(melody.length_beats) - 1):
        t = beat * spb
        ducked = env[int((t + 0.01) * SR) : int((t + 0.04) * SR)].mean()
        open_ = env[int((t + 0.36 * spb) * SR) : int((t + 0.48 * spb) * SR)].mean()
        ratios.append(ducked / open_)
    assert np.median(ratios) < 0.4, np.median(ratios)


def test_no_chords_means_no_pad(melody: Melody, backing: np.ndarray) -> None:
    no_chords = render_arrangement(replace(melody.with_notes([]), chords=()), sr=SR, seed=0)
    # 1-1.8 kHz: the pad's upper harmonics, above the bass filter and below the hats.
    with_pad = _bandpass_envelope(backing.astype(np.float64).sum(axis=1), 1000.0, 1800.0).mean()
    without = _bandpass_envelope(no_chords.astype(np.float64).sum(axis=1), 1000.0, 1800.0).mean()
    assert without < 0.15 * with_pad
