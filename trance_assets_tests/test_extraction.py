"""The whole Tier 2 chain on files (`extract_file` with the DSP separator) against rendered
arrangements with known melodies, its sidecar, the key choice, and every kind of bad input: each
gives a recorded rejection or a clear failure naming the file; nothing else fails, nothing is lost."""

from __future__ import annotations

import hashlib
import json
import math
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from trance_assets.audio.accuracy import melody_seconds, note_f1
from trance_assets.audio.extraction import extract_file, melody_from_events, music21_key
from trance_assets.audio.io import AudioValidationError
from trance_assets.audio.separation import DSP_NAME, DSP_VERSION, SeparatorConfig, read_audio, separate
from trance_assets.audio import synth
from trance_assets.audio.synth import render_arrangement
from trance_assets.audio.transcription import TranscriberConfig, to_mono_22k, transcribe, transcriber_version
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.rules import generate

BPM = 138
CHORDS = ["Am", "F", "C", "G"]
DSP = SeparatorConfig(method="dsp")


def _write(folder: Path, name: str, audio: np.ndarray, sr: int, subtype: str = "PCM_16", bpm: float | None = BPM) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.wav"
    sf.write(path, audio, sr, subtype=subtype)
    if bpm is not None:
        (folder / f"{name}.json").write_text(json.dumps({"bpm": bpm}))
    return path


def _f1(truth: Melody, ex) -> float:
    return note_f1(melody_seconds(truth), melody_seconds(ex.melody, ex.origin_s)).f1


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- a 12-bar arrangement, with and without a declared tempo ---------------------------------


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    melody = generate("Am", BPM, CHORDS, 12, seed=2)
    audio = render_arrangement(melody, sr=44100, seed=2)
    path = _write(tmp_path_factory.mktemp("declared"), "arrangement", audio, 44100)
    return melody, path, extract_file(path, separator_config=DSP)


@pytest.fixture(scope="module")
def track_estimated(tmp_path_factory, track):
    melody, declared_path, _ = track
    path = tmp_path_factory.mktemp("estimated") / "arrangement.wav"
    path.write_bytes(declared_path.read_bytes())  # the same file, no sidecar
    return melody, path, extract_file(path, separator_config=DSP)


def test_arrangement_is_accepted_with_declared_bpm(track):
    melody, path, fx = track
    ex = fx.extraction
    assert fx.error == "" and fx.path == str(path)
    assert ex.accepted is True and ex.rejection == ""
    assert ex.melody.key == "Am"
    assert (ex.tempo.bpm, ex.tempo.source, ex.tempo.confidence) == (138.0, "declared", 1.0)
    assert ex.melody.bpm == 138.0
    assert _f1(melody, ex) >= 0.8
    assert ex.melody.n_bars == 12
    assert [c.symbol for c in ex.melody.chords] == CHORDS * 3
    assert fx.duration_s == pytest.approx(12 * 4 * 60 / BPM + 1.0, abs=1e-3)  # the render has a 1 s tail
    assert set(fx.timings) == {"load", "separate", "transcribe", "melody"}


def test_sidecar_has_every_field(track):
    melody, path, fx = track
    before = date.today()
    side = fx.sidecar
    ex = fx.extraction
    assert side["source_track"] == str(path)
    assert side["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["tier"] == 2
    assert side["original_key"] == "Am"
    assert side["bpm"] == 138.0 and side["bpm_source"] == "declared"
    assert side["augmentations"] == []
    assert side["scale_compliance"] == ex.quality.as_dict()["scale_compliance"]
    assert 0.7 <= side["scale_compliance"] <= 1.0
    pitches = [n.pitch for n in ex.melody.notes]
    assert side["pitch_range"] == [min(pitches), max(pitches)]
    assert side["notes"] == len(pitches) == ex.kept
    method = side["extraction_method"]
    assert method["separator"] == DSP_NAME == "dsp:hpss-band-centre"
    assert method["separator_version"] == DSP_VERSION
    assert method["separator_fallback_reason"] is None
    assert method["transcriber"] == transcriber_version()
    assert method["transcriber"].startswith("basic-pitch 0.4.0 (icassp_2022 nmp.onnx, onnxruntime ")
    assert side["manually_verified"] is False and side["spot_checked"] is False
    assert side["date_added"] in {before.isoformat(), (before - timedelta(days=1)).isoformat()}
    assert side["accepted"] is True and side["rejection"] == ""
    assert side["chords"] == CHORDS * 3 and side["chords_inferred"] is True
    assert side["grid_origin_s"] == round(ex.origin_s, 4)
    # Plain JSON: it is written next to the MIDI file as is.
    assert json.loads(json.dumps(side)) == side


def test_tempo_is_estimated_without_a_sidecar(track, track_estimated):
    melody, path, fx = track_estimated
    ex = fx.extraction
    assert not path.with_suffix(".json").exists()
    assert fx.sidecar["source_sha256"] == track[2].sidecar["source_sha256"]
    assert ex.tempo.source == "estimated" and fx.sidecar["bpm_source"] == "estimated"
    assert abs(ex.tempo.bpm - BPM) <= 0.1
    assert ex.accepted is True and ex.melody.key == "Am"
    assert _f1(melody, ex) >= 0.8


# ---- key ------------------------------------------------------------------------------------


def _line(pitches: list[int], beat: float = 1.0) -> list[Note]:
    return [Note(i * beat, p, beat) for i, p in enumerate(pitches)]


def _bars(symbols: list[str]) -> tuple[ChordSpan, ...]:
    return tuple(ChordSpan(s, 4 * i, 4) for i, s in enumerate(symbols))


def test_music21_key_prefers_the_minor_key_of_i_VI_III_VII():
    # Am F C G: the pitch set of C major too; the progression opens on Am and the line ends on A.
    notes = _line([69, 72, 76, 72, 69, 72, 77, 72, 67, 72, 76, 79, 71, 74, 79, 69])
    assert music21_key(notes, _bars(["Am", "F", "C", "G"])).name == "Am"
    # Em C G D likewise.
    notes = _line([64, 67, 71, 67, 64, 67, 72, 67, 62, 67, 71, 74, 66, 69, 74, 64])
    assert music21_key(notes, _bars(["Em", "C", "G", "D"])).name == "Em"


def test_music21_key_relative_major_or_minor_follows_the_tonal_evidence():
    """C major and A minor share a pitch set; the ending note and the opening chord decide."""
    line = [72, 76, 79, 76, 72, 77, 81, 77, 72, 76, 79, 76, 71, 74, 79, 69]  # C-E-G arpeggios, ends on A
    line_c = line[:-1] + [72]  # the same line ending on C
    assert music21_key(_line(line)).name == "Am"
    assert music21_key(_line(line_c)).name == "C"
    assert music21_key(_line(line), _bars(["Am", "F", "C", "G"])).name == "Am"
    assert music21_key(_line(line_c), _bars(["C", "G", "Am", "F"])).name == "C"
    down, down_c = [p - 5 for p in line], [p - 5 for p in line_c]
    assert music21_key(_line(down)).name == "Em"
    assert music21_key(_line(down_c)).name == "G"
    assert music21_key(_line(down), _bars(["Em", "C", "G", "D"])).name == "Em"


def test_music21_key_keeps_the_major_key_of_I_V_vi_IV():
    notes = _line([72, 76, 79, 76, 71, 74, 79, 74, 69, 72, 76, 72, 69, 72, 77, 72])
    assert music21_key(notes, _bars(["C", "G", "Am", "F"])).name == "C"


# ---- bad input: recorded rejections ----------------------------------------------------------


def _rejected(path: Path):
    before = _snapshot(path.parent)
    fx = extract_file(path, separator_config=DSP)
    assert _snapshot(path.parent) == before  # nothing written, nothing removed
    ex = fx.extraction
    assert ex.accepted is False
    assert ex.rejection.strip() != ""
    assert fx.sidecar["accepted"] is False and fx.sidecar["rejection"] == ex.rejection
    return ex


def test_white_noise_is_rejected_with_a_reason(tmp_path):
    noise = 0.3 * np.random.default_rng(0).standard_normal((10 * 44100, 2))
    ex = _rejected(_write(tmp_path, "noise", noise.astype(np.float32), 44100, bpm=None))
    assert "range_octaves" in ex.rejection


@pytest.mark.parametrize("with_bass", [False, True])
def test_drums_only_is_rejected_with_a_reason(tmp_path, with_bass):
    empty = Melody((), BPM, "Am", (), bars=8)
    if with_bass:  # the arrangement of no notes and no chords: kick, hats and a bass on the tonic
        mix = render_arrangement(empty, sr=44100, seed=1)
    else:  # kick and hats alone, from the synthesiser's own stems
        n = int(round(8 * 4 * 60 / BPM * 44100)) + 44100
        stems = synth.KICK_GAIN * synth._kick_stem(empty, 44100, n) + synth.HAT_GAIN * synth._hat_stem(empty, 44100, n, 1)
        mix = synth._normalise(stems).T.copy()
    ex = _rejected(_write(tmp_path, "drums", mix, 44100))
    assert "range_octaves" in ex.rejection  # whatever it transcribes of the drums spans no octave


def test_pad_and_bass_without_a_lead_is_rejected_with_a_reason(tmp_path):
    melody = generate("Am", BPM, CHORDS, 8, seed=2)
    mix = render_arrangement(melody.with_notes([]), sr=44100, seed=2)  # chords kept: pad + bass + drums
    ex = _rejected(_write(tmp_path, "padbass", mix, 44100))
    assert "lead_register" in ex.rejection


# ---- bad input: clear failures ---------------------------------------------------------------


def test_silence_fails_naming_the_file(tmp_path):
    path = _write(tmp_path, "silence", np.zeros((5 * 44100, 2), dtype=np.float32), 44100)
    before = _snapshot(tmp_path)
    with pytest.raises(AudioValidationError) as err:
        extract_file(path, separator_config=DSP)
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: silent")
    assert _snapshot(tmp_path) == before


def test_corrupt_files_fail_naming_the_file_and_nothing_is_deleted(tmp_path):
    good = _write(tmp_path, "good", (0.1 * np.sin(np.arange(44100) * 0.05)).astype(np.float32), 44100)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30_000])
    (tmp_path / "notes.txt").write_text("keep me")
    before = _snapshot(tmp_path)
    with pytest.raises(AudioValidationError) as err:
        extract_file(corrupt, separator_config=DSP)
    assert err.value.path == str(corrupt) and str(err.value).startswith(f"{corrupt}: not a readable audio file")
    with pytest.raises(AudioValidationError) as err:
        extract_file(truncated, separator_config=DSP)
    assert err.value.path == str(truncated) and str(err.value).startswith(f"{truncated}: truncated")
    assert _snapshot(tmp_path) == before
    assert set(before) == {"good.wav", "good.json", "corrupt.wav", "truncated.wav", "notes.txt"}


# ---- formats: bit depths, channels, sample rates ---------------------------------------------


@pytest.fixture(scope="module")
def short_melody() -> Melody:
    return generate("Am", BPM, CHORDS, 8, seed=2)


_renders: dict[int, np.ndarray] = {}


def _render(melody: Melody, sr: int) -> np.ndarray:
    if sr not in _renders:
        _renders[sr] = render_arrangement(melody, sr=sr, seed=2)
    return _renders[sr]


FORMAT_CASES = [
    *[(sub, ch, 44100) for sub in ("PCM_U8", "PCM_16", "PCM_24", "FLOAT") for ch in (1, 2)],
    *[("PCM_16", ch, sr) for sr in (22050, 48000, 96000) for ch in (1, 2)],
    ("PCM_24", 1, 48000),
    ("FLOAT", 2, 96000),
    ("PCM_U8", 2, 22050),
]


@pytest.mark.parametrize("subtype, channels, sr", FORMAT_CASES)
def test_formats_extract(tmp_path, short_melody, subtype, channels, sr):
    stereo = _render(short_melody, sr)
    audio = stereo if channels == 2 else stereo.mean(axis=1)
    path = _write(tmp_path, f"clip_{subtype}_{channels}_{sr}", audio, sr, subtype=subtype)
    info = sf.info(str(path))
    assert (info.subtype, info.channels, info.samplerate) == (subtype, channels, sr)
    fx = extract_file(path, separator_config=DSP)
    ex = fx.extraction
    assert fx.duration_s == pytest.approx(len(audio) / sr)
    assert fx.sidecar["extraction_method"]["separator"] == DSP_NAME
    if subtype == "PCM_U8":
        # 8-bit audio (48 dB of dynamic range): accepted or rejected, but always a recorded result.
        assert (ex.accepted and ex.melody.key == "Am") or (not ex.accepted and ex.rejection)
    else:
        assert ex.accepted is True, ex.rejection
        assert ex.melody.key == "Am" and ex.tempo.bpm == 138.0
        assert _f1(short_melody, ex) >= 0.8


# ---- a 10-minute track -----------------------------------------------------------------------

LONG_SR = 22050
LONG_SECONDS = 600


@pytest.fixture(scope="module")
def long_track(tmp_path_factory):
    """10 minutes, 22.05 kHz mono 16-bit: an 8-bar arrangement loop (13.9 s) tiled 43+ times."""
    melody = generate("Am", BPM, CHORDS, 8, seed=2)
    loop_n = int(round(melody.length_beats * 60 / BPM * LONG_SR))
    loop = render_arrangement(melody, sr=LONG_SR, seed=2).mean(axis=1)[:loop_n]
    n = LONG_SECONDS * LONG_SR
    audio = np.tile(loop, math.ceil(n / loop_n))[:n]
    path = _write(tmp_path_factory.mktemp("long"), "ten_minutes", audio, LONG_SR)
    truth = []
    for i in range(math.ceil(n / loop_n)):
        shift = i * loop_n / LONG_SR
        truth += [(s + shift, e + shift, p) for s, e, p in melody_seconds(melody) if e + shift <= LONG_SECONDS]
    return path, truth


@pytest.mark.slow
def test_ten_minute_separation_memory_is_bounded(long_track):
    path, _ = long_track
    audio, sr = read_audio(path)
    assert audio.shape == (LONG_SECONDS * LONG_SR, 1) and sr == LONG_SR
    tracemalloc.start()
    try:
        sep = separate(audio, sr, DSP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One STFT of the whole track alone would take ~4x the input (complex64, 75 % overlap) and the
    # mask stages several times that; chunks of 30 s keep the peak near the outputs' own size.
    assert peak < 6 * audio.nbytes, f"peak {peak / 1e6:.0f} MB for {audio.nbytes / 1e6:.0f} MB of audio"
    assert sep.lead.shape == sep.residual.shape == audio.shape
    np.testing.assert_allclose(sep.lead + sep.residual, audio, atol=1e-6)


@pytest.mark.slow
def test_ten_minute_track_extracts(long_track):
    path, truth = long_track
    fx = extract_file(path, separator_config=DSP)
    ex = fx.extraction
    assert fx.duration_s == LONG_SECONDS
    assert ex.accepted is True, ex.rejection
    assert ex.melody.key == "Am" and ex.tempo.bpm == 138.0
    assert abs(ex.melody.n_bars - LONG_SECONDS / (4 * 60 / BPM)) <= 2  # 345 bars
    assert note_f1(truth, melody_seconds(ex.melody, ex.origin_s)).f1 >= 0.8


@pytest.mark.slow
def test_ten_minute_melody_stage_memory_is_bounded(long_track):
    """After separation, the analysis features (onset envelopes, chroma) are computed in 60 s chunks:
    whole-track spectrograms of a 10-minute track would take gigabytes."""
    path, _ = long_track
    audio, sr = read_audio(path, mono=True)
    sep = separate(audio, sr, DSP)
    events = transcribe(sep.lead, sep.sample_rate, TranscriberConfig())
    mix22, res22 = to_mono_22k(audio, sr), to_mono_22k(sep.residual, sep.sample_rate)
    tracemalloc.start()
    try:
        ex = melody_from_events(events, mix22, res22, name="long", declared_bpm=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * mix22.nbytes, f"peak {peak / 1e6:.0f} MB for {mix22.nbytes / 1e6:.0f} MB of audio"
    assert ex.accepted and abs(ex.tempo.bpm - BPM) < 0.05
