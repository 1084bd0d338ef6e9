"""Lead-synth isolation for trance mixes: Demucs when its weights are at hand, a DSP fallback otherwise.

Domain core (no Dagster). `separate(audio, sr, config)` returns a `Separation`: the lead, the residual
(mix minus lead: the harmony the chord inference listens to), and provenance (separator name and
version, why it fell back, compute time).

Demucs path
-----------
The 4-stem models (`htdemucs`, `htdemucs_ft`, `mdx_extra`, ...) separate drums / bass / other / vocals.
A trance lead synth is neither drums, bass nor vocals, so it lands in the **other** stem: lead = other,
residual = the sum of the remaining stems. (Two-stem "vocals" mode would be wrong for this music.)
The input is handled like demucs's own CLI / API does: channels converted to the model's
(`demucs.audio.convert_audio_channels`: mono is duplicated), resampled to `model.samplerate` with
`julius.resample_frac`, normalised by the mean / standard deviation of the mono reference and
de-normalised afterwards; the result stays at the model's sample rate and channel count.

Where the weights come from (`load_demucs`):

* `repo` set: a local folder in demucs's `LocalRepo` layout - `<sig>.th` or `<sig>-<sha256[:8]>.th`
  files (a `torch.save`d dict with `klass`, `args`, `kwargs`, `state`) and `<name>.yaml` bag files
  (`models: [sig, ...]`, optional `weights`, `segment`). `export_to_repo` writes such a folder from a
  loaded model, so weights can be copied from a machine that has them.
* `allow_download=True`: `demucs.pretrained.get_model`, i.e. the Hugging Face hub
  (`adefossez/HTDemucs`, ...; cached under `$HF_HOME`, default `~/.cache/huggingface`) and, failing
  that, demucs's legacy download site (cached under `torch.hub.get_dir()`).
* otherwise (the default): the caches only, and never the network. The Hugging Face files are looked
  up with `huggingface_hub.try_to_load_from_cache`, a pure file-system lookup (the same layout
  `hf_hub_download` writes: `models--<ns>--<Repo>/refs/main` -> `snapshots/<commit>/<file>`).
  Two things that look equivalent are not, with the installed huggingface_hub 2.4:
  `hf_hub_download(..., local_files_only=True)` still builds HTTP headers, and the first time in a
  process that fetches an "agent harness" registry from huggingface.co (3 s timeout); and setting
  `HF_HUB_OFFLINE=1` in `os.environ` around a call does nothing, the variable is read once at import.
  Then the legacy torch-hub cache is tried, but only when every file of the model is already there.
  Missing weights raise `SeparatorUnavailable` within milliseconds; its message explains how to
  provide them.

`method="auto"` falls back to the DSP separator on `SeparatorUnavailable` and records the first line
of its message as `fallback_reason`.

DSP fallback (`dsp_isolate_lead`, algorithm version `DSP_VERSION`)
------------------------------------------------------------------
A weight-free lead isolation tuned for trance: the lead is a bright, sustained, centred synth whose
fundamentals sit in MIDI 60-96 (262-2093 Hz); kick and bass live below 200 Hz, hats above 7 kHz,
pads and reverb are wide. One soft time-frequency mask, applied to every channel's STFT
(Hann window of ~46 ms, 75 % overlap; 2048 / 512 samples at 44.1 kHz), is the product of:

1. **Centre emphasis** (stereo input only): mid M = (L+R)/2 and side S = (L-R)/2 per STFT bin; with
   r = |S| / (|M| + eps) (powers smoothed over 3 frames), the weight is 1 / (1 + (r / 1.5)^2), so
   mid-dominated bins pass and clearly side-dominated ones (wide pads, stereo reverb, r >> 1) are
   attenuated. It is deliberately mild: a supersaw lead is itself wide (detuned voices panned
   left and right), and a steeper weight removed lead partials along with the pads in tests.
2. **Harmonic-percussive separation** (Fitzgerald's median filtering, as `librosa.decompose.hpss`
   does it) on |M|: H = median over ~0.2 s along time, P = median over ~400 Hz along frequency;
   soft mask H^2 / (H^2 + (margin * P)^2) with margin 2, which drops kick and hat transients.
   Computed for bins up to 8 kHz only (above, the band weight below is already < -39 dB, and the
   lead keeps nothing there) - this halves the cost of the median filters.
3. **Melodic-band weight**, a smooth function of frequency: a 4th-order Butterworth-shaped high-pass
   magnitude at 200 Hz (-24 dB at 100 Hz, -0.05 dB at 262 Hz) times a 6th-order low-pass magnitude
   at 5.5 kHz, i.e. roughly 250 Hz - 6 kHz: the lead's fundamentals and first harmonics.

lead = ISTFT(mask * STFT(channel)) per channel; residual = mix - lead exactly, so lead + residual
reconstructs the input bit-for-bit up to float32 rounding. The output keeps the input's sample rate
and shape ((n,) mono or (n, channels)).

Long inputs are processed in chunks (default 30 s) so memory stays bounded for a 10-minute track:
each chunk is analysed with `overlap` seconds (default 1 s) of context on both sides and chunks are
joined by linear crossfades `overlap` seconds long centred on the chunk boundaries. Chunk starts lie
on the STFT hop grid and every mask stage is local (< 0.25 s reach), so away from the ends of the
track chunked output equals one-chunk output up to float rounding whenever overlap >= 0.5 s.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DSP_VERSION = "1"
DSP_NAME = "dsp:hpss-band-centre"
DOWNLOAD_ENV = "TRANCE_SEPARATOR_DOWNLOAD"
METHODS = ("auto", "demucs", "dsp")
LEAD_SOURCE = "other"
UNITTEST_MODEL = "demucs_unittest"  # demucs's tiny random model: built locally, never downloaded

# ---- DSP parameters (part of DSP_VERSION: change them, bump the version) ----------------------
_REF_SR = 44100
_REF_NFFT = 2048  # at 44.1 kHz; scaled to the nearest power of two for other rates
_HARMONIC_SECONDS = 0.2  # HPSS time-direction median length
_PERCUSSIVE_HZ = 400.0  # HPSS frequency-direction median length
_HPSS_MARGIN = 2.0
_HPSS_MAX_HZ = 8000.0
_HIGHPASS_HZ, _HIGHPASS_ORDER = 200.0, 4
_LOWPASS_HZ, _LOWPASS_ORDER = 5500.0, 6
_CENTRE_RATIO = 1.5  # side/mid ratio at which the centre weight is 0.5
_CENTRE_SMOOTH_FRAMES = 3
_EPS = 1e-10


# ---- configuration and results ----------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SeparatorConfig:
    """How to separate. The defaults never touch the network: Demucs if its weights are cached."""

    method: str = "auto"  # "auto": Demucs when its weights load, else DSP; "demucs": Demucs or fail; "dsp"
    model: str = "htdemucs"  # demucs model name / signature
    repo: str | None = None  # local folder with *.th / *.yaml (demucs LocalRepo); None: the caches
    allow_download: bool = False  # may the hub be contacted? False: caches / local repo only, fail fast
    device: str = "auto"  # "auto" (cuda if available else cpu) | "cpu" | "cuda" | "cuda:N"
    segment: float | None = None  # seconds per Demucs chunk (None: the model's default)
    overlap: float = 0.25  # Demucs chunk overlap, 0..1
    shifts: int = 0  # Demucs random time shifts (0: deterministic)
    threads: int = 2  # torch.set_num_threads during separation

    def validate(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"SeparatorConfig.{name}={getattr(self, name)!r} is invalid: {why}")

        if self.method not in METHODS:
            bad("method", f"must be one of {', '.join(METHODS)}")
        if not isinstance(self.model, str) or not self.model.strip():
            bad("model", "must be a non-empty demucs model name or signature")
        if self.repo is not None and (not isinstance(self.repo, (str, os.PathLike)) or not str(self.repo).strip()):
            bad("repo", "must be None or a folder path")
        if not isinstance(self.allow_download, bool):
            bad("allow_download", "must be a bool")
        dev = self.device
        if not isinstance(dev, str) or not (
            dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        ):
            bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.segment is not None:
            if isinstance(self.segment, bool) or not isinstance(self.segment, (int, float)):
                bad("segment", "must be None or a number of seconds")
            if not (math.isfinite(self.segment) and self.segment > 0):
                bad("segment", "must be None or > 0 seconds")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 1:
            bad("overlap", "must be within [0, 1)")
        if isinstance(self.shifts, bool) or not isinstance(self.shifts, int) or self.shifts < 0:
            bad("shifts", "must be an int >= 0")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            bad("threads", "must be an int >= 1")

    @classmethod
    def from_env(cls, **overrides: Any) -> SeparatorConfig:
        """Defaults overridden by TRANCE_SEPARATOR_{METHOD,MODEL,REPO,DOWNLOAD,DEVICE,THREADS}, then by `overrides`."""
        values: dict[str, Any] = {}
        env = os.environ
        for key in ("method", "model", "repo", "device"):
            if env.get(f"TRANCE_SEPARATOR_{key.upper()}"):
                values[key] = env[f"TRANCE_SEPARATOR_{key.upper()}"].strip()
        if env.get(DOWNLOAD_ENV):
            values["allow_download"] = _env_flag(DOWNLOAD_ENV)
        if env.get("TRANCE_SEPARATOR_THREADS"):
            values["threads"] = int(env["TRANCE_SEPARATOR_THREADS"])
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config


class SeparatorUnavailable(RuntimeError):
    """The Demucs weights (or the requested device) cannot be had; the message says how to fix it."""


@dataclass(frozen=True)
class Separation:
    lead: np.ndarray  # float32 (n, channels) at sample_rate ((n,) for mono DSP input)
    residual: np.ndarray  # float32, same shape: the mix minus the lead
    sample_rate: int
    separator: str  # "demucs:<model>" or DSP_NAME
    separator_version: str  # demucs.__version__ or DSP_VERSION
    fallback_reason: str | None  # why "auto" fell back to DSP (None when it did not)
    seconds: float  # wall time of the call, model loading included
    sources: tuple[str, ...] = field(default=())  # the Demucs model's stems (empty for DSP)


# ---- audio helpers ----------------------------------------------------------------------------


def _resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling along axis 0 (scipy.signal.resample_poly), float32."""
    if sr == target_sr:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(x, int(target_sr) // g, int(sr) // g, axis=0).astype(np.float32)


def read_audio(path: str | os.PathLike, *, target_sr: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode with soundfile: float32 (n, channels), or (n,) with `mono=True` (channel mean).

    `target_sr` resamples with scipy.signal.resample_poly; returns (audio, sample_rate).
    """
    import soundfile as sf

    if target_sr is not None and (isinstance(target_sr, bool) or int(target_sr) <= 0):
        raise ValueError(f"target_sr must be a positive sample rate, got {target_sr!r}")
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if mono:
        data = data.mean(axis=1, dtype=np.float32)
    if target_sr is not None and int(target_sr) != sr:
        data = _resample(data, sr, int(target_sr))
        sr = int(target_sr)
    return np.ascontiguousarray(data, dtype=np.float32), int(sr)


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validated float32 copy-free view of (n,) or (n, channels) audio."""
    x = np.asarray(audio)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must have shape (n,) or (n, channels), got {x.shape}")
    if x.ndim == 2 and not 1 <= x.shape[1] <= 16:
        raise ValueError(f"audio must have shape (n, channels) with 1-16 channels, got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("audio is empty")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    return x


# ---- DSP fallback -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _StftPlan:
    sr: int
    n_fft: int
    hop: int
    window: np.ndarray  # periodic Hann, float32
    band: np.ndarray  # (bins,) melodic-band weight
    hpss_bins: int  # bins [0, hpss_bins) get HPSS; the rest get 0
    k_harm: int
    k_perc: int

    @classmethod
    def for_rate(cls, sr: int) -> _StftPlan:
        n_fft = int(2 ** round(math.log2(_REF_NFFT * sr / _REF_SR)))
        n_fft = max(n_fft, 64)
        hop = n_fft // 4
        window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
        freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
        with np.errstate(divide="ignore"):
            hp = 1.0 / np.sqrt(1.0 + (_HIGHPASS_HZ / np.maximum(freqs, 1e-9)) ** (2 * _HIGHPASS_ORDER))
        lp = 1.0 / np.sqrt(1.0 + (freqs / _LOWPASS_HZ) ** (2 * _LOWPASS_ORDER))
        band = (hp * lp).astype(np.float32)
        hpss_bins = int(np.searchsorted(freqs, _HPSS_MAX_HZ, side="right"))
        band[hpss_bins:] = 0.0

        def odd(v: float) -> int:
            k = max(3, int(round(v)))
            return k if k % 2 else k + 1

        k_harm = odd(_HARMONIC_SECONDS * sr / hop)
        k_perc = odd(_PERCUSSIVE_HZ / (sr / n_fft))
        return cls(sr, n_fft, hop, window, band, hpss_bins, k_harm, k_perc)


def _stft(x: np.ndarray, plan: _StftPlan) -> np.ndarray:
    """(channels, n) float32 -> (channels, bins, frames) complex64; centred frames, zero padding."""
    pad = plan.n_fft // 2
    xp = np.pad(x, ((0, 0), (pad, pad)))
    if xp.shape[1] < plan.n_fft:
        xp = np.pad(xp, ((0, 0), (0, plan.n_fft - xp.shape[1])))
    frames = np.lib.stride_tricks.sliding_window_view(xp, plan.n_fft, axis=1)[:, :: plan.hop]
    spec = np.fft.rfft(frames * plan.window, axis=-1)  # (channels, frames, bins)
    return np.ascontiguousarray(spec.transpose(0, 2, 1)).astype(np.complex64, copy=False)


def _istft(spec: np.ndarray, plan: _StftPlan, length: int) -> np.ndarray:
    """Inverse of `_stft` (weighted overlap-add, window-square normalised), (channels, length) float32."""
    c, _, t = spec.shape
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=plan.n_fft, axis=-1).astype(np.float32)
    frames *= plan.window  # (c, t, n_fft)
    hop, n_fft = plan.hop, plan.n_fft
    parts = n_fft // hop
    total = n_fft + hop * (t - 1)
    y = np.zeros((c, total), dtype=np.float32)
    wss = np.zeros(total, dtype=np.float32)
    w2 = plan.window**2
    for r in range(parts):  # frames t and t+parts never overlap inside one part: add them as one strip
        piece = frames[:, :, r * hop : (r + 1) * hop].reshape(c, t * hop)
        y[:, r * hop : r * hop + t * hop] += piece
        wss[r * hop : r * hop + t * hop] += np.tile(w2[r * hop : (r + 1) * hop], t)
    y /= np.where(wss > 1e-6, wss, 1.0)
    pad = n_fft // 2
    out = y[:, pad : pad + length]
    if out.shape[1] < length:
        out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
    return out


def _lead_mask(spec: np.ndarray, plan: _StftPlan) -> np.ndarray:
    """The soft lead mask (bins, frames), float32, for a (channels, bins, frames) STFT."""
    from scipy.ndimage import median_filter, uniform_filter1d

    c, n_bins, n_frames = spec.shape
    kb = plan.hpss_bins
    if c == 2:
        mid = 0.5 * (spec[0, :kb] + spec[1, :kb])
        side = 0.5 * (spec[0, :kb] - spec[1, :kb])
        mag = np.abs(mid)
        p_mid = uniform_filter1d(mag**2, _CENTRE_SMOOTH_FRAMES, axis=1, mode="nearest")
        p_side = uniform_filter1d(np.abs(side) ** 2, _CENTRE_SMOOTH_FRAMES, axis=1, mode="nearest")
        ratio2 = p_side / (p_mid + _EPS)
        centre = 1.0 / (1.0 + ratio2 / _CENTRE_RATIO**2)
    else:
        mag = np.abs(spec[:, :kb].mean(axis=0))
        centre = None
    harm = median_filter(mag, size=(1, plan.k_harm), mode="reflect")
    perc = median_filter(mag, size=(plan.k_perc, 1), mode="reflect")
    h2 = harm * harm
    p2 = (_HPSS_MARGIN * perc) ** 2
    mask_h = h2 / (h2 + p2 + _EPS)
    mask = np.zeros((n_bins, n_frames), dtype=np.float32)
    m = mask_h * plan.band[:kb, None]
    if centre is not None:
        m *= centre
    mask[:kb] = m
    return mask


def _lead_chunk(x: np.ndarray, plan: _StftPlan) -> np.ndarray:
    """Lead of one chunk, x (channels, n) float32 -> (channels, n) float32."""
    spec = _stft(x, plan)
    mask = _lead_mask(spec, plan)
    spec *= mask[None]
    return _istft(spec, plan, x.shape[1])


def dsp_isolate_lead(
    audio: np.ndarray,
    sample_rate: int,
    *,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(lead, residual) of a trance mix without any model weights; see the module docstring.

    Both float32 with the input's shape ((n,) or (n, channels)) and sample rate; lead + residual == audio
    up to float32 rounding. Chunks of `chunk_seconds` with `overlap_seconds` of context / crossfade.
    """
    x = _check_audio(audio, sample_rate)
    if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")
    if not (math.isfinite(overlap_seconds) and 0 <= overlap_seconds <= chunk_seconds):
        raise ValueError(f"overlap_seconds must be within [0, chunk_seconds], got {overlap_seconds!r}")
    mono = x.ndim == 1
    xc = np.ascontiguousarray((x[:, None] if mono else x).T)  # (channels, n)
    n = xc.shape[1]
    plan = _StftPlan.for_rate(int(sample_rate))
    hop = plan.hop
    core = max(hop, int(round(chunk_seconds * sample_rate / hop)) * hop)
    ov = int(round(overlap_seconds * sample_rate / hop)) * hop
    half = ov // 2

    if n <= core + ov:
        lead = _lead_chunk(xc, plan)
    else:
        lead = np.zeros_like(xc)
        starts = list(range(0, n, core))
        if n - starts[-1] < max(ov, hop):  # no tiny last chunk: merge it into the previous one
            starts.pop()
        ramp = ((np.arange(2 * half) + 0.5) / max(2 * half, 1)).astype(np.float32)
        for i, a in enumerate(starts):
            b = starts[i + 1] if i + 1 < len(starts) else n
            p0, p1 = max(0, a - ov), min(n, b + ov)  # analysed span (context on both sides)
            o0 = a - half if i > 0 else 0  # output span (with crossfades)
            o1 = b + half if i + 1 < len(starts) else n
            y = _lead_chunk(xc[:, p0:p1], plan)[:, o0 - p0 : o1 - p0]
            w = np.ones(o1 - o0, dtype=np.float32)
            if i > 0 and half:
                w[: 2 * half] = ramp
            if i + 1 < len(starts) and half:
                w[-2 * half :] = ramp[::-1]
            lead[:, o0:o1] += y * w
    residual = np.subtract(xc, lead, dtype=np.float32)  # exact up to one float32 rounding
    if mono:
        return lead[0].copy(), residual[0].copy()
    return np.ascontiguousarray(lead.T), np.ascontiguousarray(residual.T)


# ---- Demucs -----------------------------------------------------------------------------------


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a demucs dependency
        return "~/.cache/huggingface/hub"


def _howto(name: str) -> str:
    return (
        "To provide the weights, either:\n"
        f"  - run once with allow_download=True ({DOWNLOAD_ENV}=1) on a machine with internet access, so the "
        f"Hugging Face hub cache (~/.cache/huggingface, or $HF_HOME; now {_hf_cache_dir()}) holds {name!r} "
        "(or copy that cache folder over from a machine that has it);\n"
        f"  - or point `repo` (SeparatorConfig.repo, TRANCE_SEPARATOR_REPO) at a folder holding {name}.th "
        f"and/or {name}.yaml plus the .th files it lists (demucs LocalRepo layout; "
        "trance_assets.audio.separation.export_to_repo writes one from a loaded model, e.g. on a machine that "
        "has the weights);\n"
        "  - or use method='dsp' (no weights needed)."
    )


def _unavailable(name: str, first_line: str) -> SeparatorUnavailable:
    return SeparatorUnavailable(f"{first_line}\n{_howto(name)}")


def _load_from_hf_cache(name: str):
    """The model from the Hugging Face cache without any network access, or None when not cached.

    Uses `try_to_load_from_cache` (a pure file-system lookup), not `hf_hub_download(local_files_only=True)`:
    in huggingface_hub 2.4 the latter still builds HTTP headers, whose agent detection fetches a registry
    from huggingface.co (3 s timeout) on its first call in a process.
    """
    from demucs.apply import BagOfModels
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name, load_safetensors_model
    from huggingface_hub import try_to_load_from_cache

    import yaml

    namespace, bare = name.split("/", 1) if "/" in name else (DEFAULT_NAMESPACE, name)
    repo_id = f"{namespace}/{hf_repo_name(bare)}"

    def cached(filename: str) -> str | None:
        path = try_to_load_from_cache(repo_id, filename)
        return path if isinstance(path, str) and os.path.isfile(path) else None

    bag_file = cached(f"{bare}.yaml")
    if bag_file is None:
        return None
    with open(bag_file) as fh:
        bag = yaml.safe_load(fh)
    files = [cached(f"{sig}.safetensors") for sig in bag["models"]]
    if any(f is None for f in files):
        return None
    models = [load_safetensors_model(f) for f in files]
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _load_from_torch_hub_cache(name: str):
    """The model from demucs's legacy download cache (torch hub), or None unless all its files are there."""
    import torch
    import yaml
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files
    from demucs.repo import AnyModelRepo, BagOnlyRepo, RemoteRepo

    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    bag_file = REMOTE_ROOT / f"{name}.yaml"
    if name in urls:
        sigs = [name]
    elif bag_file.is_file():
        sigs = list(yaml.safe_load(bag_file.read_text())["models"])
    else:
        return None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if not all(sig in urls and (cache / urls[sig].rsplit("/", 1)[-1]).is_file() for sig in sigs):
        return None
    model_repo = RemoteRepo(urls)
    return AnyModelRepo(model_repo, BagOnlyRepo(REMOTE_ROOT, model_repo)).get_model(name)


def load_demucs(config: SeparatorConfig = SeparatorConfig()):
    """The Demucs model (a BagOfModels or a single model) in eval mode; raises SeparatorUnavailable.

    Never touches the network unless `config.allow_download`; see the module docstring for the order.
    """
    config.validate()
    name = config.model.strip()
    try:
        if name == UNITTEST_MODEL:
            from demucs.pretrained import get_model

            model = get_model(name)
        elif config.repo is not None:
            from demucs.pretrained import get_model
            from demucs.repo import BagOnlyRepo, LocalRepo

            folder = Path(config.repo).expanduser()
            if not folder.is_dir():
                raise _unavailable(name, f"demucs model {name!r}: repo folder {str(folder)!r} does not exist.")
            local = LocalRepo(folder)
            bags = BagOnlyRepo(folder, local)
            if not (local.has_model(name) or bags.has_model(name)):
                found = sorted(set(local.list_model()) | set(bags.list_model()))
                raise _unavailable(
                    name,
                    f"demucs model {name!r} is not in repo folder {str(folder)!r} "
                    f"(it holds: {', '.join(found) if found else 'no .th / .yaml files'}).",
                )
            model = get_model(name, repo=folder)
        elif config.allow_download:
            from demucs.pretrained import get_model

            model = get_model(name)
        else:
            model = _load_from_hf_cache(name)
            if model is None:
                model = _load_from_torch_hub_cache(name)
            if model is None:
                raise _unavailable(
                    name,
                    f"demucs model {name!r} is not available offline: it is not in the Hugging Face hub cache "
                    f"({_hf_cache_dir()}) nor demucs's torch-hub cache, no `repo` folder is set and "
                    f"allow_download is False.",
                )
    except SeparatorUnavailable:
        raise
    except (Exception, SystemExit) as exc:  # demucs calls sys.exit() on some errors (e.g. diffq missing)
        where = f"repo folder {config.repo!r}" if config.repo is not None else (
            "the network" if config.allow_download else "the local caches"
        )
        cause = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        raise _unavailable(name, f"demucs model {name!r} could not be loaded from {where}: {cause}") from exc
    model.eval()
    model._trance_separator_name = name  # type: ignore[attr-defined]  # provenance for `separate`
    return model


def export_to_repo(model, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write a loaded demucs model into `folder` in the LocalRepo layout, loadable as `name`.

    A single model becomes `<name>-<sha8>.th`; a BagOfModels becomes `<name>_<k>-<sha8>.th` per member
    plus `<name>.yaml` (models, weights, and segment when the members share one). Returns the files.
    """
    from demucs.apply import BagOfModels
    from demucs.states import get_state, save_with_checksum

    import yaml

    if not name or "/" in name or name.endswith(".th"):
        raise ValueError(f"invalid model name {name!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())

    def save(single, sig: str) -> None:
        args, kwargs = single._init_args_kwargs
        package = {
            "klass": single.__class__,
            "args": args,
            "kwargs": kwargs,
            "state": get_state(single, None, half=False),
        }
        save_with_checksum(package, out / f"{sig}.th")

    if isinstance(model, BagOfModels):
        sigs = [f"{name}_{k}" for k in range(len(model.models))]
        for sub, sig in zip(model.models, sigs):
            save(sub, sig)
        bag: dict[str, Any] = {"models": sigs, "weights": [list(map(float, w)) for w in model.weights]}
        segments = {float(m.segment) for m in model.models if getattr(m, "segment", None) is not None}
        if len(segments) == 1:
            bag["segment"] = segments.pop()
        (out / f"{name}.yaml").write_text(yaml.safe_dump(bag))
    else:
        save(model, name)
    return sorted(set(out.iterdir()) - before)


def _resolve_device(config: SeparatorConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise SeparatorUnavailable(
            f"device {config.device!r} requested but torch.cuda.is_available() is False; "
            "use device='cpu' or 'auto'."
        )
    return config.device


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _max_segment(model) -> float:
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    if isinstance(model, BagOfModels):
        return float(model.max_allowed_segment)
    if isinstance(model, HTDemucs):
        return float(model.segment)
    return float("inf")


def _demucs_separate(x: np.ndarray, sample_rate: int, config: SeparatorConfig, model, device: str):
    """(lead, residual, model_sr) with Demucs; x is validated (n,) or (n, channels) float32."""
    import torch
    from demucs.apply import apply_model
    from demucs.audio import convert_audio_channels

    sources = list(model.sources)
    if LEAD_SOURCE not in sources:
        raise ValueError(f"demucs model has no {LEAD_SOURCE!r} source to take the lead from; its sources: {sources}")
    if config.segment is not None and config.segment > _max_segment(model):
        raise ValueError(
            f"SeparatorConfig.segment={config.segment} exceeds this model's maximum of {_max_segment(model):g} s"
        )
    lead_idx = sources.index(LEAD_SOURCE)
    wav = torch.from_numpy(np.ascontiguousarray((x[:, None] if x.ndim == 1 else x).T))  # (channels, n)
    with _torch_threads(config.threads), torch.no_grad():
        wav = convert_audio_channels(wav, model.audio_channels)
        model_sr = int(model.samplerate)
        if int(sample_rate) != model_sr:
            import julius

            wav = julius.resample_frac(wav, int(sample_rate), model_sr)
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        stems = apply_model(
            model,
            ((wav - mean) / std)[None],
            shifts=config.shifts,
            split=True,
            overlap=config.overlap,
            segment=config.segment,
            device=device,
            progress=False,
        )[0]
        stems = stems * std + mean  # (sources, channels, n)
        lead = stems[lead_idx]
        residual = stems[[i for i in range(len(sources)) if i != lead_idx]].sum(0)
    as_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy().T, dtype=np.float32)  # noqa: E731
    return as_np(lead), as_np(residual), model_sr, tuple(sources)


def separate(
    audio: np.ndarray,
    sample_rate: int,
    config: SeparatorConfig = SeparatorConfig(),
    *,
    model=None,
) -> Separation:
    """Isolate the lead synth of a mix: audio float32 (n,) or (n, channels) at `sample_rate`.

    Demucs output is at the model's sample rate with its channel count; DSP output keeps the input's.
    A given `model` skips loading (method "auto" / "demucs"); `separator` then names it by the name
    `load_demucs` loaded it under, else by `config.model`.
    """
    t0 = time.perf_counter()
    config.validate()
    x = _check_audio(audio, sample_rate)

    def dsp(reason: str | None) -> Separation:
        lead, residual = dsp_isolate_lead(x, int(sample_rate))
        return Separation(
            lead, residual, int(sample_rate), DSP_NAME, DSP_VERSION, reason, time.perf_counter() - t0
        )

    if config.method == "dsp":
        return dsp(None)
    try:
        device = _resolve_device(config)
        if model is None:
            model = load_demucs(config)
    except SeparatorUnavailable as exc:
        if config.method == "demucs":
            raise
        return dsp(str(exc).splitlines()[0])
    import demucs

    lead, residual, model_sr, sources = _demucs_separate(x, sample_rate, config, model, device)
    name = getattr(model, "_trance_separator_name", None) or config.model
    return Separation(
        lead,
        residual,
        model_sr,
        f"demucs:{name}",
        str(demucs.__version__),
        None,
        time.perf_counter() - t0,
        sources,
    )
