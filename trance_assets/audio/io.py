"""Reading and validating reference audio: decode in blocks, measure, and explain any rejection.

`inspect_audio` decodes the whole file once, in blocks (memory stays bounded for long files),
and measures peak, RMS and integrated loudness (ITU-R BS.1770 / EBU R128, using pyloudnorm's
K-weighting filters applied block by block with carried filter state). Every problem raises
`AudioValidationError` with a message that names the file and the cause.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, lfilter_zi

from ..storage import sha256_file  # noqa: F401  (re-exported: callers import it from here)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")


class AudioValidationError(ValueError):
    """A reference audio file cannot be used; str() names the file and the cause."""

    def __init__(self, path: str | Path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{path}: {cause}")


@dataclass(frozen=True)
class AudioInfo:
    path: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    peak_dbfs: float
    rms_dbfs: float
    lufs: float | None  # None when too short or too quiet for a gated measurement
    sha256: str
    size_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _check_riff_or_aiff_length(path: Path, size: int) -> None:
    """Catch truncated WAV/AIFF files, which libsndfile silently reads short."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            raise AudioValidationError(path, f"truncated: only {size} bytes, shorter than an audio header")
        if head[:4] in (b"RIFF", b"RIFX"):
            little = head[:4] == b"RIFF"
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return  # no data chunk found; libsndfile will complain if it matters
                cid, clen = ch[:4], struct.unpack("<I" if little else ">I", ch[4:])[0]
                if cid == b"data":
                    available = size - f.tell()
                    if clen != 0xFFFFFFFF and clen > available:
                        raise AudioValidationError(
                            path, f"truncated: header declares {clen} bytes of audio, file holds {available}"
                        )
                    return
                f.seek(clen + (clen & 1), 1)
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return
                cid, clen = ch[:4], struct.unpack(">I", ch[4:])[0]
                if cid == b"SSND":
                    available = size - f.tell()
                    if clen > available:
                        raise AudioValidationError(
                            path, f"truncated: header declares {clen} bytes of audio, file holds {available}"
                        )
                    return
                f.seek(clen + (clen & 1), 1)


def _fmt_seconds(seconds: float) -> str:
    """'2.0 s', '20 min', '20 min 0.4 s': exact enough that a limit and a length never read the same."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, tenths = divmod(round(seconds * 10), 600)
    return f"{minutes} min" if tenths == 0 else f"{minutes} min {tenths / 10:g} s"


def _db(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else -math.inf


class _LoudnessMeter:
    """Integrated loudness (BS.1770-4) accumulated block by block."""

    def __init__(self, sample_rate: int, channels: int):
        import pyloudnorm

        filters = pyloudnorm.Meter(sample_rate)._filters  # K-weighting: high shelf then high pass
        self.stages = [(f.b, f.a) for f in (filters["high_shelf"], filters["high_pass"])]
        self.state = [np.repeat(lfilter_zi(b, a)[:, None] * 0.0, channels, axis=1) for b, a in self.stages]
        self.step = int(round(0.1 * sample_rate))  # 100 ms sub-blocks; a gating block is 4 of them
        self.pending = np.zeros((0, channels))
        self.sub_power: list[np.ndarray] = []  # mean square per channel per 100 ms
        # BS.1770 channel weights: 1.0 for L/R/C; surround channels 1.41 (only for >= 5 channels).
        self.weights = np.ones(channels) if channels < 5 else np.array([1, 1, 1, 0, 1.41, 1.41][:channels])

    def add(self, block: np.ndarray) -> None:
        y = block
        for i, (b, a) in enumerate(self.stages):
            y, self.state[i] = lfilter(b, a, y, axis=0, zi=self.state[i])
        y = np.concatenate([self.pending, y]) if len(self.pending) else y
        n = len(y) // self.step
        if n:
            chunks = y[: n * self.step].reshape(n, self.step, -1)
            self.sub_power.extend((chunks**2).mean(axis=1))
        self.pending = y[n * self.step :]

    def integrated(self) -> float | None:
        if len(self.sub_power) < 4:
            return None
        sp = np.array(self.sub_power)  # (n, channels)
        blocks = (sp[:-3] + sp[1:-2] + sp[2:-1] + sp[3:]) / 4  # 400 ms windows, 75 % overlap
        z = blocks @ self.weights
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10 * np.log10(z)
        above_abs = z[loud >= -70.0]
        if not len(above_abs):
            return None
        rel = -0.691 + 10 * np.log10(above_abs.mean()) - 10.0
        gated = z[(loud >= -70.0) & (loud >= rel)]
        return float(-0.691 + 10 * np.log10(gated.mean()))


def inspect_audio(
    path: str | Path,
    *,
    max_seconds: float = 20 * 60,
    silence_dbfs: float = -60.0,
    block_seconds: float = 10.0,
) -> AudioInfo:
    """Validate and measure an audio file. Raises AudioValidationError naming the file and cause.

    Rejected: unknown extension, zero-length, unreadable, truncated (WAV/AIFF header longer than the
    data, or a decode error part-way), no frames, longer than `max_seconds`, silent (peak below
    `silence_dbfs`).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioValidationError(path, "file not found")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioValidationError(path, f"unsupported extension {path.suffix!r} (supported: {', '.join(AUDIO_EXTENSIONS)})")
    size = path.stat().st_size
    if size == 0:
        raise AudioValidationError(path, "zero-length file (0 bytes)")
    _check_riff_or_aiff_length(path, size)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile reports every format problem as a RuntimeError/LibsndfileError
        raise AudioValidationError(path, f"not a readable audio file ({exc})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioValidationError(path, "contains no audio frames")
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        raise AudioValidationError(
            path, f"too long: {_fmt_seconds(duration)} exceeds the limit of {_fmt_seconds(max_seconds)}"
        )
    meter = _LoudnessMeter(info.samplerate, info.channels)
    peak, sumsq, frames = 0.0, 0.0, 0
    blocksize = max(1024, int(block_seconds * info.samplerate))
    try:
        # Not sf.blocks: it yields whole preallocated buffers even when libsndfile decodes fewer frames
        # than the header declares (a cut-off MP3), so a short file would pass with garbage samples.
        with sf.SoundFile(str(path)) as f:
            while len(block := f.read(blocksize, dtype="float32", always_2d=True)):
                if not np.isfinite(block).all():
                    raise AudioValidationError(
                        path, f"corrupt audio data: non-finite samples after {frames / info.samplerate:.1f} s"
                    )
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
                sumsq += float(np.square(block, dtype=np.float64).sum())
                frames += len(block)
                meter.add(block.astype(np.float64))
    except AudioValidationError:
        raise
    except Exception as exc:
        raise AudioValidationError(
            path, f"corrupt audio data after {frames / info.samplerate:.1f} s ({type(exc).__name__}: {exc})"
        ) from exc
    if frames == 0:
        raise AudioValidationError(path, "contains no audio frames")
    if frames < 0.98 * info.frames:
        raise AudioValidationError(path, f"truncated: decoded {frames} of {info.frames} frames")
    peak_db = _db(peak)
    if peak_db < silence_dbfs:
        shown = "-inf" if math.isinf(peak_db) else f"{peak_db:.1f}"
        raise AudioValidationError(path, f"silent: peak {shown} dBFS is below the {silence_dbfs:g} dBFS threshold")
    rms = math.sqrt(sumsq / (frames * info.channels))
    return AudioInfo(
        path=str(path),
        format=info.format,
        subtype=info.subtype,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(frames),
        duration_s=frames / info.samplerate,
        peak_dbfs=round(peak_db, 2),
        rms_dbfs=round(_db(rms), 2),
        lufs=None if (lufs := meter.integrated()) is None else round(lufs, 2),
        sha256=sha256_file(path),
        size_bytes=size,
    )


def sidecar_path(audio_path: str | Path) -> Path:
    """`<name>.json` beside the audio file (the name without the audio extension)."""
    p = Path(audio_path)
    return p.with_suffix(".json")


def read_declared_bpm(audio_path: str | Path) -> tuple[float | None, str]:
    """BPM declared for a track: the sidecar `<name>.json` {"bpm": ...}, else a tag (ID3 TBPM,
    Vorbis/FLAC BPM). Returns (bpm, source) with source 'sidecar', 'tag' or 'unknown'.

    A sidecar that exists but is malformed raises AudioValidationError naming it.
    """
    side = sidecar_path(audio_path)
    if side.is_file():
        try:
            data = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AudioValidationError(side, f"sidecar is not valid JSON ({exc})") from exc
        if isinstance(data, dict) and data.get("bpm") is not None:
            bpm = data["bpm"]
            if not isinstance(bpm, (int, float)) or not 20 <= bpm <= 400:
                raise AudioValidationError(side, f"sidecar bpm must be a number within 20-400, got {bpm!r}")
            return float(bpm), "sidecar"
    bpm = _tag_bpm(Path(audio_path))
    return (bpm, "tag") if bpm is not None else (None, "unknown")


def _tag_bpm(path: Path) -> float | None:
    try:
        import mutagen

        f = mutagen.File(str(path))
    except Exception:  # unreadable tags are not an error: BPM is optional
        return None
    if f is None or not f.tags:
        return None
    for key in ("TBPM", "bpm", "BPM", "tmpo"):
        try:
            val = f.tags.get(key)
        except (KeyError, ValueError):
            continue
        if val is None:
            continue
        raw = val.text[0] if hasattr(val, "text") else (val[0] if isinstance(val, list) else val)
        try:
            bpm = float(str(raw).strip())
        except ValueError:
            continue
        if 20 <= bpm <= 400:
            return bpm
    return None
