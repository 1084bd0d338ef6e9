"""Transcription: Basic Pitch (ICASSP 2022 model) on onnxruntime, with the ONNX file the package ships.

Basic Pitch reads mono audio at 22.05 kHz and loses the last fraction of a second of its input (its
final analysis window is not emitted), so the audio is padded with trailing silence first. The
result is a table of note events: onset and offset in seconds, MIDI pitch, amplitude (0-1) and the
pitch-bend curve (list of bend values, 3 per semitone, one per frame).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf
from scipy.signal import resample_poly

BASIC_PITCH_SR = 22050
EVENT_SCHEMA = {
    "onset_s": pl.Float64,
    "offset_s": pl.Float64,
    "pitch": pl.Int64,
    "amplitude": pl.Float64,
    "pitch_bends": pl.List(pl.Int64),
    "reonsets_s": pl.List(pl.Float64),
}


@dataclass(frozen=True)
class TranscriberConfig:
    onset_threshold: float = 0.6
    frame_threshold: float = 0.3
    minimum_note_ms: float = 50.0  # gated 16ths at 150 BPM last 100 ms; Basic Pitch's default is 127.7
    minimum_hz: float | None = None
    maximum_hz: float | None = None
    melodia_trick: bool = True
    pad_seconds: float = 1.0
    # Re-articulations: times inside a note where the onset activation of its own pitch peaks again
    # (>= this). Gated trance leads repeat a pitch with gaps that leakage from pads fills, and Basic
    # Pitch then merges the repeats into one long note; the lead-line stage splits its chosen notes
    # there (column `reonsets_s`). None: none recorded.
    repeat_onset_threshold: float | None = 0.5
    repeat_min_seconds: float = 0.06  # ignore peaks closer than this to the note's start or end

    def validate(self) -> None:
        for name in ("onset_threshold", "frame_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"transcriber {name}={v!r} must be within (0, 1)")
        if self.minimum_note_ms <= 0:
            raise ValueError(f"transcriber minimum_note_ms={self.minimum_note_ms!r} must be > 0")
        if self.minimum_hz is not None and self.maximum_hz is not None and self.minimum_hz >= self.maximum_hz:
            raise ValueError(f"transcriber minimum_hz={self.minimum_hz} must be below maximum_hz={self.maximum_hz}")
        if self.repeat_onset_threshold is not None and not 0.0 < self.repeat_onset_threshold < 1.0:
            raise ValueError(f"transcriber repeat_onset_threshold={self.repeat_onset_threshold!r} must be within (0, 1) or None")
        if self.repeat_min_seconds <= 0:
            raise ValueError(f"transcriber repeat_min_seconds={self.repeat_min_seconds!r} must be > 0")
        if self.pad_seconds < 0.5:
            raise ValueError("transcriber pad_seconds must be >= 0.5 (Basic Pitch drops the input's tail)")

    def to_dict(self) -> dict:
        return asdict(self)


def onnx_model_path() -> Path:
    import basic_pitch

    path = Path(basic_pitch.__file__).parent / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"Basic Pitch's ONNX model is missing at {path}; reinstall basic-pitch==0.4.0")
    return path


@functools.lru_cache(maxsize=1)
def _model():
    # basic_pitch logs warnings about TensorFlow / TFLite being absent: expected, we use ONNX.
    from basic_pitch.inference import Model

    return Model(onnx_model_path())


def transcriber_version() -> str:
    from importlib.metadata import version

    return f"basic-pitch {version('basic-pitch')} (icassp_2022 nmp.onnx, onnxruntime {version('onnxruntime')})"


def to_mono_22k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sample_rate != BASIC_PITCH_SR:
        g = np.gcd(int(sample_rate), BASIC_PITCH_SR)
        x = resample_poly(x, BASIC_PITCH_SR // g, int(sample_rate) // g).astype(np.float32)
    return x


def transcribe(audio: np.ndarray, sample_rate: int, config: TranscriberConfig = TranscriberConfig()) -> pl.DataFrame:
    """Note events of `audio` ((n,) or (n, channels) float) as a polars DataFrame (EVENT_SCHEMA)."""
    config.validate()
    from basic_pitch import note_creation
    from basic_pitch.constants import FFT_HOP
    from basic_pitch.inference import run_inference

    x = to_mono_22k(audio, sample_rate)
    x = np.concatenate([x, np.zeros(int(config.pad_seconds * BASIC_PITCH_SR), dtype=np.float32)])
    with tempfile.TemporaryDirectory(prefix="trance-bp-") as d:
        path = Path(d) / "input.wav"
        sf.write(path, x, BASIC_PITCH_SR, subtype="FLOAT")
        output = run_inference(path, _model())
    min_len = int(np.round(config.minimum_note_ms / 1000 * (BASIC_PITCH_SR / FFT_HOP)))
    _, events = note_creation.model_output_to_notes(
        output,
        onset_thresh=config.onset_threshold,
        frame_thresh=config.frame_threshold,
        min_note_len=max(1, min_len),
        min_freq=config.minimum_hz,
        max_freq=config.maximum_hz,
        multiple_pitch_bends=False,
        melodia_trick=config.melodia_trick,
    )
    rows = sorted(
        (float(s), float(e), int(p), float(a), [int(b) for b in (bends or [])]) for s, e, p, a, bends in events
    )
    reonsets = (
        repeated_onsets(rows, output["onset"], config.repeat_onset_threshold, config.repeat_min_seconds)
        if config.repeat_onset_threshold is not None
        else [[] for _ in rows]
    )
    rows = [(*r, cuts) for r, cuts in zip(rows, reonsets)]
    return pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")


def repeated_onsets(rows: list[tuple], onset_activation: np.ndarray, threshold: float, min_seconds: float) -> list[list[float]]:
    """Per note, the times of local peaks (>= threshold) of its own pitch's onset activation inside it.

    `onset_activation`: Basic Pitch's (frames, 88) onset posteriorgram.
    """
    from basic_pitch.note_creation import MIDI_OFFSET, model_frames_to_time

    times = model_frames_to_time(onset_activation.shape[0])
    out = []
    for onset, offset, pitch, _amp, _bends in rows:
        col = pitch - MIDI_OFFSET
        cuts = []
        if 0 <= col < onset_activation.shape[1]:
            a = onset_activation[:, col]
            inside = np.nonzero((times > onset + min_seconds) & (times < offset - min_seconds))[0]
            for i in inside:
                if 0 < i < len(a) - 1 and a[i] >= threshold and a[i] >= a[i - 1] and a[i] > a[i + 1]:
                    if not cuts or times[i] - cuts[-1] >= min_seconds:
                        cuts.append(float(times[i]))
        out.append(cuts)
    return out
