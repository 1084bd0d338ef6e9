"""Reading and validating reference audio: exact measurements, LUFS against pyloudnorm, and a
specific, file-naming error for every kind of bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from trance_assets.audio.io import (
    AUDIO_EXTENSIONS,
    AudioValidationError,
    _LoudnessMeter,
    inspect_audio,
    read_declared_bpm,
    sha256_file,
    sidecar_path,
)

FORMATS = [
    # (suffix, format, subtype, sample rate, channels, expected info.format, info.subtype)
    (".wav", "WAV", "PCM_16", 44100, 2, "WAV", "PCM_16"),
    (".wav", "WAV", "PCM_24", 48000, 1, "WAV", "PCM_24"),
    (".wav", "WAV", "FLOAT", 22050, 2, "WAV", "FLOAT"),
    (".flac", "FLAC", "PCM_16", 48000, 2, "FLAC", "PCM_16"),
    (".flac", "FLAC", "PCM_24", 22050, 1, "FLAC", "PCM_24"),
    (".ogg", "OGG", "VORBIS", 44100, 2, "OGG", "VORBIS"),
    (".ogg", "OGG", "VORBIS", 22050, 1, "OGG", "VORBIS"),
    (".aiff", "AIFF", "PCM_16", 44100, 2, "AIFF", "PCM_16"),
    (".mp3", "MP3", "MPEG_LAYER_III", 44100, 2, "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize("suffix, fmt, subtype, sr, channels, info_format, info_subtype", FORMATS)
def test_inspect_measures_every_format_exactly(tmp_path, write_wav, suffix, fmt, subtype, sr, channels, info_format, info_subtype):
    path = write_wav(tmp_path / f"track{suffix}", seconds=2.0, sr=sr, channels=channels, subtype=subtype, format=fmt)
    info = inspect_audio(path)
    assert info.path == str(path)
    assert (info.format, info.subtype) == (info_format, info_subtype)
    assert (info.sample_rate, info.channels, info.frames) == (sr, channels, 2 * sr)
    assert info.duration_s == 2.0
    data = path.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(path, chunk=1000)
    assert info.size_bytes == len(data)
    # The test audio peaks at -1 dBFS (lossy codecs move the peak a little).
    if fmt in ("WAV", "FLAC", "AIFF"):
        assert info.peak_dbfs == pytest.approx(-1.0, abs=0.01)
    else:
        assert -2.0 <= info.peak_dbfs <= 0.5
    assert info.rms_dbfs < info.peak_dbfs
    assert info.lufs is not None and -20.0 < info.lufs < -3.0
    assert info.as_dict()["sample_rate"] == sr


@pytest.mark.parametrize("sr", [44100, 48000])
def test_blockwise_lufs_matches_pyloudnorm(tmp_path, write_wav, sr):
    path = write_wav(tmp_path / "five.wav", seconds=5.0, sr=sr, channels=2, subtype="FLOAT")
    data, file_sr = sf.read(str(path), dtype="float64", always_2d=True)
    reference = pyloudnorm.Meter(file_sr).integrated_loudness(data)
    # Many small blocks: the K-weighting filter state must carry across block boundaries.
    small = inspect_audio(path, block_seconds=0.05)
    whole = inspect_audio(path)
    assert abs(small.lufs - reference) <= 0.05
    assert small.lufs == whole.lufs
    meter = _LoudnessMeter(sr, 2)
    for i in range(0, len(data), 3001):  # block length not a multiple of the 100 ms step
        meter.add(data[i : i + 3001])
    assert meter.integrated() == pytest.approx(reference, abs=0.05)


def test_lufs_of_a_full_scale_1khz_sine_is_minus_3():
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS (pyloudnorm's filters,
    # designed from the analogue prototype, read 0.04 LU lower; we use the same filters).
    sr = 48000
    x = np.sin(2 * np.pi * 997 * np.arange(sr * 3) / sr)
    meter = _LoudnessMeter(sr, 1)
    for i in range(0, len(x), 10000):
        meter.add(x[i : i + 10000, None])
    assert meter.integrated() == pytest.approx(-3.01, abs=0.05)
    assert meter.integrated() == pytest.approx(pyloudnorm.Meter(sr).integrated_loudness(x), abs=1e-9)


def test_too_short_for_gating_has_no_lufs(tmp_path, write_wav):
    info = inspect_audio(write_wav(tmp_path / "blip.wav", seconds=0.3))
    assert info.lufs is None
    assert info.frames == 13230


# ---- rejections: each names the file and the cause ------------------------------------------------


def reject(path, **kw) -> str:
    with pytest.raises(AudioValidationError) as ei:
        inspect_audio(path, **kw)
    err = ei.value
    assert err.path == str(path)
    assert str(err) == f"{path}: {err.cause}"
    return err.cause


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    assert reject(p) == "zero-length file (0 bytes)"


def test_text_file_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("these are my notes about the track, not audio\n" * 20)
    assert reject(p).startswith("not a readable audio file (")
    assert "Format not recognised" in reject(p)


def test_wav_truncated_to_half_its_length(tmp_path, write_wav):
    p = write_wav(tmp_path / "cut.wav", seconds=2.0, sr=44100, channels=2)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    declared = 2 * 44100 * 2 * 2
    available = len(data) // 2 - 44
    assert reject(p) == f"truncated: header declares {declared} bytes of audio, file holds {available}"


def test_aiff_truncated(tmp_path, write_wav):
    p = write_wav(tmp_path / "cut.aiff", seconds=1.0, format="AIFF")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert reject(p).startswith("truncated: header declares ")


def test_mp3_cut_off_midway_is_truncated_not_padded(tmp_path, write_wav):
    # libsndfile still reports the full frame count (from the Xing header) for a cut-off MP3.
    p = write_wav(tmp_path / "cut.mp3", seconds=2.0, format="MP3", subtype=None)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    cause = reject(p)
    assert cause.startswith("truncated: decoded ")
    assert cause.endswith(" of 88200 frames")
    decoded = int(cause.split()[2])
    assert 30000 < decoded < 50000


def test_flac_cut_off_midway(tmp_path, write_wav):
    p = write_wav(tmp_path / "cut.flac", seconds=2.0, format="FLAC")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert reject(p).startswith("corrupt audio data after ")


def test_header_only(tmp_path):
    p = tmp_path / "tiny.wav"
    p.write_bytes(b"RIFF")
    assert reject(p) == "truncated: only 4 bytes, shorter than an audio header"


def test_silence(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(str(p), np.zeros((44100, 2)), 44100, subtype="PCM_16")
    assert reject(p) == "silent: peak -inf dBFS is below the -60 dBFS threshold"


def test_near_silence_below_threshold(tmp_path):
    p = tmp_path / "hiss.wav"
    x = np.zeros((44100, 1), np.float32)
    x[1000:2000] = 10 ** (-70 / 20)
    sf.write(str(p), x, 44100, subtype="FLOAT")
    assert reject(p) == "silent: peak -70.0 dBFS is below the -60 dBFS threshold"
    assert inspect_audio(p, silence_dbfs=-80).peak_dbfs == -70.0


def test_non_finite_samples(tmp_path):
    p = tmp_path / "nan.wav"
    x = np.full((44100, 2), 0.25, np.float32)
    x[30000, 1] = np.nan
    sf.write(str(p), x, 44100, subtype="FLOAT")
    assert reject(p, block_seconds=0.1) == "corrupt audio data: non-finite samples after 0.6 s"


def test_longer_than_the_limit(tmp_path, write_wav):
    p = write_wav(tmp_path / "long.wav", seconds=2.0)
    assert reject(p, max_seconds=1) == "too long: 2.0 s exceeds the limit of 1.0 s"
    assert inspect_audio(p, max_seconds=2).duration_s == 2.0
    assert reject(p, max_seconds=1.5) == "too long: 2.0 s exceeds the limit of 1.5 s"


def test_longer_than_a_limit_in_minutes(tmp_path):
    p = tmp_path / "set.wav"
    sf.write(str(p), np.zeros((61 * 8000, 1), np.int16), 8000, subtype="PCM_16")  # checked before decoding
    assert reject(p, max_seconds=60) == "too long: 1 min 1 s exceeds the limit of 1 min"
    assert reject(p, max_seconds=60.5) == "too long: 1 min 1 s exceeds the limit of 1 min 0.5 s"


def test_unsupported_extension(tmp_path, write_wav):
    p = write_wav(tmp_path / "track.wav", seconds=0.5)
    q = p.rename(tmp_path / "track.m4a")
    assert reject(q) == f"unsupported extension '.m4a' (supported: {', '.join(AUDIO_EXTENSIONS)})"


def test_missing_file(tmp_path):
    assert reject(tmp_path / "gone.wav") == "file not found"


# ---- declared BPM ---------------------------------------------------------------------------------


def flac_with_bpm_tag(write_wav, path, bpm: str):
    import mutagen.flac

    write_wav(path, seconds=0.5, format="FLAC")
    f = mutagen.flac.FLAC(str(path))
    f["BPM"] = bpm
    f.save()
    return path


def test_bpm_from_a_flac_vorbis_tag(tmp_path, write_wav):
    p = flac_with_bpm_tag(write_wav, tmp_path / "tagged.flac", "138")
    assert read_declared_bpm(p) == (138.0, "tag")


def test_bpm_from_an_id3_tag(tmp_path, write_wav):
    from mutagen.id3 import ID3, TBPM

    p = write_wav(tmp_path / "tagged.mp3", seconds=0.5, format="MP3", subtype=None)
    tags = ID3()
    tags.add(TBPM(encoding=3, text=["140"]))
    tags.save(str(p))
    assert read_declared_bpm(p) == (140.0, "tag")


def test_sidecar_wins_over_the_tag(tmp_path, write_wav):
    p = flac_with_bpm_tag(write_wav, tmp_path / "tagged.flac", "138")
    sidecar_path(p).write_text(json.dumps({"bpm": 140.5, "artist": "x"}))
    assert sidecar_path(p) == tmp_path / "tagged.json"
    assert read_declared_bpm(p) == (140.5, "sidecar")


def test_sidecar_without_bpm_falls_back_to_the_tag(tmp_path, write_wav):
    p = flac_with_bpm_tag(write_wav, tmp_path / "tagged.flac", "132")
    sidecar_path(p).write_text('{"artist": "someone", "bpm": null}')
    assert read_declared_bpm(p) == (132.0, "tag")


def test_malformed_sidecar_raises_naming_the_sidecar(tmp_path, write_wav):
    p = write_wav(tmp_path / "song.wav", seconds=0.5)
    side = tmp_path / "song.json"
    side.write_text('{"bpm": 138,')
    with pytest.raises(AudioValidationError) as ei:
        read_declared_bpm(p)
    assert ei.value.path == str(side)
    assert str(ei.value).startswith(f"{side}: sidecar is not valid JSON (")


@pytest.mark.parametrize("bad", ['"fast"', "5", "1000", "true"])
def test_sidecar_bpm_out_of_range_raises(tmp_path, write_wav, bad):
    p = write_wav(tmp_path / "song.wav", seconds=0.5)
    (tmp_path / "song.json").write_text('{"bpm": %s}' % bad)
    with pytest.raises(AudioValidationError) as ei:
        read_declared_bpm(p)
    assert ei.value.path == str(tmp_path / "song.json")
    assert ei.value.cause == f"sidecar bpm must be a number within 20-400, got {json.loads(bad)!r}"


def test_no_bpm_anywhere(tmp_path, write_wav):
    assert read_declared_bpm(write_wav(tmp_path / "plain.wav", seconds=0.5)) == (None, "unknown")
    assert read_declared_bpm(flac_with_bpm_tag(write_wav, tmp_path / "odd.flac", "fast")) == (None, "unknown")
    assert read_declared_bpm(flac_with_bpm_tag(write_wav, tmp_path / "wild.flac", "9000")) == (None, "unknown")
