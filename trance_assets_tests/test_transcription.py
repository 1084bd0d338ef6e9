"""Basic Pitch on onnxruntime: note events of rendered melodies at several sample rates and channel
counts, the trailing-silence padding, the event table's schema, re-articulations (`reonsets_s`) and
the configuration checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from basic_pitch.note_creation import model_frames_to_time

from trance_assets.audio.accuracy import melody_seconds, note_f1
from trance_assets.audio.synth import render_saw
from trance_assets.audio.transcription import (
    BASIC_PITCH_SR,
    EVENT_SCHEMA,
    TranscriberConfig,
    repeated_onsets,
    to_mono_22k,
    transcribe,
)
from trance_assets.music.melody import Melody, Note
from trance_assets.music.rules import generate

BPM = 140


@pytest.fixture(scope="module")
def melody() -> Melody:
    # 4 bars at 140 BPM (6.86 s); its last note (beat 15.5, an 8th) ends exactly where the bars end.
    m = generate("Am", BPM, ["Am", "F", "C", "G"], 4, seed=1)
    assert max(n.end for n in m.notes) == m.length_beats == 16.0
    return m


_cache: dict = {}


def _events(melody: Melody, sr: int, channels: int, config: TranscriberConfig = TranscriberConfig()) -> pl.DataFrame:
    key = (sr, channels, config)
    if key not in _cache:
        mono = render_saw(melody, sr=sr)
        audio = mono if channels == 1 else np.stack([mono, 0.6 * mono], axis=1)
        _cache[key] = transcribe(audio, sr, config)
    return _cache[key]


def _notes(df: pl.DataFrame) -> list[tuple[float, float, int]]:
    return [(r["onset_s"], r["offset_s"], r["pitch"]) for r in df.iter_rows(named=True)]


# ---- notes of a rendered melody ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_transcribes_the_melody(melody, sr, channels):
    df = _events(melody, sr, channels)
    score = note_f1(melody_seconds(melody), _notes(df))
    assert score.reference_notes == 43
    assert score.f1 >= 0.9, score
    assert score.precision >= 0.9 and score.recall >= 0.9, score
    onsets = df["onset_s"].to_list()
    assert onsets == sorted(onsets)
    assert (df["offset_s"] > df["onset_s"]).all()
    assert df["amplitude"].is_between(0.0, 1.0).all()


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_the_last_note_is_found_up_to_the_end_of_the_file(melody, sr):
    onset, end, pitch = melody_seconds(melody)[-1]
    assert end == pytest.approx(16 * 60 / BPM)
    df = _events(melody, sr, 1)
    last = [n for n in _notes(df) if n[2] == pitch and abs(n[0] - onset) <= 0.05]
    assert len(last) == 1, _notes(df)[-3:]
    # Its offset reaches the end of the note (Basic Pitch, unpadded, stops ~60 ms short of the file's end).
    assert last[0][1] >= end - 0.02


def test_without_the_padding_the_tail_is_lost(melody, monkeypatch):
    """Why `pad_seconds` exists (and must be >= 0.5): unpadded, the final frames are not emitted."""
    monkeypatch.setattr(TranscriberConfig, "validate", lambda self: None)
    df = transcribe(render_saw(melody, sr=BASIC_PITCH_SR), BASIC_PITCH_SR, TranscriberConfig(pad_seconds=0.0))
    _, end, _ = melody_seconds(melody)[-1]
    assert df["offset_s"].max() < end - 0.02


def test_event_table_schema(melody):
    df = _events(melody, 44100, 2)
    assert df.columns == list(EVENT_SCHEMA)
    assert dict(df.schema) == EVENT_SCHEMA
    assert EVENT_SCHEMA == {
        "onset_s": pl.Float64,
        "offset_s": pl.Float64,
        "pitch": pl.Int64,
        "amplitude": pl.Float64,
        "pitch_bends": pl.List(pl.Int64),
        "reonsets_s": pl.List(pl.Float64),
    }
    # A plain saw has no re-articulations inside its notes, and a bend curve on each.
    assert df["reonsets_s"].list.len().sum() == 0
    assert (df["pitch_bends"].list.len() > 0).all()


def test_silence_gives_an_empty_table_with_the_schema():
    df = transcribe(np.zeros((BASIC_PITCH_SR, 2), dtype=np.float32), BASIC_PITCH_SR)
    assert df.height == 0
    assert dict(df.schema) == EVENT_SCHEMA


@pytest.mark.parametrize("sr", [22050, 44100, 48000, 96000])
def test_to_mono_22k(sr):
    n, expected = sr // 2, BASIC_PITCH_SR // 2  # half a second in, half a second out
    t = np.arange(n) / sr
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros(n)], axis=1)
    y = to_mono_22k(x, sr)
    assert y.dtype == np.float32 and y.shape == (expected,)
    # Channel mean: the 440 Hz sine at half amplitude, at the same times.
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(expected) / BASIC_PITCH_SR)
    assert np.abs(y[500:-500] - ref[500:-500]).max() < 0.01


# ---- re-articulations -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated_over_sustain():
    """Eight gated 8ths of A5 (0.375 beat on, 0.125 off) over a same-pitch sustained note (a pad's
    leak) that fills the gaps, at 140 BPM: the re-strikes' onset activations stay below a 0.88
    onset threshold, so Basic Pitch merges them into one note."""
    lead = Melody(tuple(Note(0.5 * i, 81, 0.375, 110) for i in range(8)), BPM, "Am")
    leak = Melody((Note(0.0, 81, 4.0, 110),), BPM, "Am")
    a, b = render_saw(lead, sr=BASIC_PITCH_SR), render_saw(leak, sr=BASIC_PITCH_SR)
    n = max(len(a), len(b))
    x = np.pad(a, (0, n - len(a))) + np.pad(b, (0, n - len(b)))
    restrikes = [0.5 * i * 60 / BPM for i in range(1, 8)]
    return x, restrikes


def test_merged_repeats_record_their_reonsets(gated_over_sustain):
    x, restrikes = gated_over_sustain
    df = transcribe(x, BASIC_PITCH_SR, TranscriberConfig(onset_threshold=0.88))
    assert df["pitch"].to_list() == [81]  # merged: one long note
    row = df.row(0, named=True)
    assert row["onset_s"] < 0.03 and row["offset_s"] > 1.6
    cuts = row["reonsets_s"]
    assert len(cuts) == 7, cuts
    assert np.abs(np.array(cuts) - restrikes).max() <= 0.015
    assert all(abs(c - model_frames_to_time(200)).min() < 1e-9 for c in cuts)  # on Basic Pitch's frame times


def test_reonsets_off_when_threshold_is_none(gated_over_sustain):
    x, _ = gated_over_sustain
    df = transcribe(x, BASIC_PITCH_SR, TranscriberConfig(onset_threshold=0.88, repeat_onset_threshold=None))
    assert df["pitch"].to_list() == [81]
    assert df["reonsets_s"].to_list() == [[]]


def test_repeated_onsets_on_a_synthetic_activation():
    n_frames = 400
    times = model_frames_to_time(n_frames)
    act = np.zeros((n_frames, 88), dtype=np.float32)
    col = 69 - 21  # A4
    # Hand-placed peaks in A4's column.
    act[[40, 41, 42], col] = [0.3, 0.8, 0.4]  # a clear peak at 41
    act[[60, 61, 62], col] = [0.3, 0.45, 0.3]  # below the 0.5 threshold
    act[[80, 81, 82], col] = [0.3, 0.7, 0.7]  # a plateau: its last frame counts
    act[[83, 84, 85], col] = [0.2, 0.9, 0.1]  # 2 frames (23 ms) after the plateau: too close, skipped
    act[[120, 121, 122], col] = [0.2, 0.9, 0.2]  # 2 frames (23 ms) before the note's end: skipped
    act[[10, 11, 12], col] = [0.2, 0.9, 0.2]  # before the note
    act[[50, 51, 52], col + 1] = [0.2, 0.9, 0.2]  # another pitch
    onset, offset = float(times[35]), float(times[123])
    rows = [
        (onset, offset, 69, 0.8, []),
        (float(times[45]), float(times[130]), 70, 0.5, []),  # A#4: its column peaks at 51 only
        (0.0, 1.0, 10, 0.5, []),  # pitch below the model's range: nothing
        (float(times[36]), float(times[124]), 69, 0.5, []),  # ends a frame later: 121 is inside now
    ]
    out = repeated_onsets(rows, act, threshold=0.5, min_seconds=0.03)
    assert out[0] == [float(times[41]), float(times[82])]
    assert out[1] == [float(times[51])]
    assert out[2] == []
    assert out[3] == [float(times[41]), float(times[82]), float(times[121])]
    # min_seconds also guards the note's start: 41 is 6 frames (70 ms) after onset 35.
    assert repeated_onsets(rows[:1], act, 0.5, 0.08)[0] == [float(times[82])]
    # A lower threshold admits the 0.45 peak at 61.
    assert repeated_onsets(rows[:1], act, 0.4, 0.03)[0] == [float(times[41]), float(times[61]), float(times[82])]
    # Exactly the documented frame times (Basic Pitch's window-corrected frame clock).
    assert times[41] == pytest.approx(41 * 256 / 22050, abs=1e-12)


# ---- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"onset_threshold": 0.0}, r"onset_threshold=0\.0 must be within \(0, 1\)"),
        ({"onset_threshold": 1.0}, r"onset_threshold=1\.0 must be within \(0, 1\)"),
        ({"frame_threshold": -0.1}, r"frame_threshold=-0\.1 must be within \(0, 1\)"),
        ({"frame_threshold": 1.5}, r"frame_threshold=1\.5 must be within \(0, 1\)"),
        ({"minimum_note_ms": 0.0}, r"minimum_note_ms=0\.0 must be > 0"),
        ({"minimum_hz": 500.0, "maximum_hz": 500.0}, r"minimum_hz=500\.0 must be below maximum_hz=500\.0"),
        ({"minimum_hz": 800.0, "maximum_hz": 200.0}, r"minimum_hz=800\.0 must be below maximum_hz=200\.0"),
        ({"pad_seconds": 0.4}, r"pad_seconds must be >= 0\.5"),
    ],
)
def test_config_validate_errors(kwargs, message):
    config = TranscriberConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        config.validate()
    with pytest.raises(ValueError, match=message):  # transcribe checks before any work
        transcribe(np.zeros(100, dtype=np.float32), BASIC_PITCH_SR, config)


def test_config_valid_values():
    TranscriberConfig().validate()
    TranscriberConfig(minimum_hz=200.0).validate()
    TranscriberConfig(maximum_hz=2000.0).validate()
    TranscriberConfig(minimum_hz=200.0, maximum_hz=2000.0, pad_seconds=0.5, repeat_onset_threshold=None).validate()
    d = TranscriberConfig().to_dict()
    assert d["onset_threshold"] == 0.6 and d["pad_seconds"] == 1.0 and d["repeat_onset_threshold"] == 0.5


@pytest.mark.parametrize("field,value", [("repeat_onset_threshold", 1.5), ("repeat_onset_threshold", 0.0), ("repeat_min_seconds", 0.0)])
def test_repeat_parameters_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        TranscriberConfig(**{field: value}).validate()
