"""Tests of lead isolation: the DSP fallback on a rendered arrangement, and the Demucs path with small
locally built models (demucs's `demucs_unittest`, a tiny HTDemucs saved to a LocalRepo folder and to a
fake Hugging Face cache). Nothing here downloads: a socket guard fails any attempt to connect.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import butter, sosfiltfilt, stft

from trance_assets.audio.separation import (
    DSP_NAME,
    DSP_VERSION,
    Separation,
    SeparatorConfig,
    SeparatorUnavailable,
    dsp_isolate_lead,
    export_to_repo,
    load_demucs,
    read_audio,
    separate,
)
from trance_assets.audio.synth import render_arrangement, render_lead
from trance_assets.music.rules import generate

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def melody():
    return generate(key="Am", bpm=140, chord_progression=["Am", "F", "C", "G"], bars=16, seed=3)


@pytest.fixture(scope="module")
def mix(melody) -> np.ndarray:
    return render_arrangement(melody, sr=SR, seed=0)


@pytest.fixture(scope="module")
def dsp_result(mix):
    return dsp_isolate_lead(mix, SR)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (and is recorded)."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a, **k))
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture()
def empty_caches(monkeypatch, tmp_path):
    """Empty Hugging Face and torch-hub caches, so results do not depend on this machine's caches."""
    import huggingface_hub.constants

    hf = tmp_path / "hf-cache"
    hf.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch-hub"))
    return hf


def tiny_htdemucs(sources=SOURCES, seed: int = 0):
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    return HTDemucs(sources=list(sources), channels=8, depth=4, t_layers=1, segment=2).eval()


def noise(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    x = 0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))
    return x.astype(np.float32)


# ---- analysis helpers -------------------------------------------------------------------------


def band_spectrogram_corr(x: np.ndarray, ref: np.ndarray, lo: float = 250.0, hi: float = 4000.0) -> float:
    """Pearson correlation of sqrt-magnitude spectrograms (mono) restricted to lo..hi Hz."""
    n = min(len(x), len(ref))
    f, _, a = stft(x[:n], fs=SR, nperseg=2048, noverlap=1536)
    _, _, b = stft(ref[:n], fs=SR, nperseg=2048, noverlap=1536)
    band = (f >= lo) & (f <= hi)
    return float(np.corrcoef(np.sqrt(np.abs(a[band])).ravel(), np.sqrt(np.abs(b[band])).ravel())[0, 1])


def kick_energy(x: np.ndarray, melody) -> float:
    """Energy below 150 Hz in the first 80 ms after every beat (where the kick hits)."""
    low = sosfiltfilt(butter(4, 150.0, fs=SR, output="sos"), x.astype(np.float64))
    spb = 60.0 / melody.bpm
    starts = (np.arange(int(melody.length_beats)) * spb * SR).astype(int)
    return float(sum(np.sum(low[s : s + int(0.08 * SR)] ** 2) for s in starts))


# ---- DSP fallback -----------------------------------------------------------------------------


def test_dsp_shapes_dtypes_and_exact_reconstruction(mix, dsp_result):
    lead, residual = dsp_result
    assert lead.shape == residual.shape == mix.shape
    assert lead.dtype == residual.dtype == np.float32
    np.testing.assert_allclose(lead + residual, mix, atol=1e-5, rtol=0)
    assert np.sqrt(np.mean(lead**2)) > 0.05 * np.sqrt(np.mean(mix**2))  # not silence

    mono_lead, mono_res = dsp_isolate_lead(mix[: 5 * SR].mean(axis=1), SR)
    assert mono_lead.shape == mono_res.shape == (5 * SR,)
    assert mono_lead.dtype == np.float32
    np.testing.assert_allclose(mono_lead + mono_res, mix[: 5 * SR].mean(axis=1), atol=1e-5, rtol=0)


def test_dsp_lead_resembles_the_true_lead_better_than_the_mix(melody, mix, dsp_result):
    lead, residual = dsp_result
    true_lead = render_lead(melody, sr=SR)
    c_mix = band_spectrogram_corr(mix.mean(axis=1), true_lead)
    c_lead = band_spectrogram_corr(lead.mean(axis=1), true_lead)
    c_res = band_spectrogram_corr(residual.mean(axis=1), true_lead)
    print(f"band spectrogram correlation with the true lead: mix {c_mix:.3f}, lead {c_lead:.3f}, residual {c_res:.3f}")
    assert c_lead > c_mix + 0.04
    assert c_res < c_mix - 0.1  # the residual lost much of the lead


def test_dsp_suppresses_the_kick(melody, mix, dsp_result):
    lead, _ = dsp_result
    ratio_db = 10 * np.log10(kick_energy(mix.mean(axis=1), melody) / kick_energy(lead.mean(axis=1), melody))
    print(f"kick (< 150 Hz at beats) suppressed by {ratio_db:.1f} dB")
    assert ratio_db >= 12.0


def test_dsp_chunked_equals_one_chunk(mix):
    long = np.concatenate([mix, mix[::-1], mix])[: 70 * SR]  # 70 s, not periodic at the chunk size
    whole, _ = dsp_isolate_lead(long, SR, chunk_seconds=1000.0)
    chunked, chunked_res = dsp_isolate_lead(long, SR, chunk_seconds=7.0, overlap_seconds=1.0)
    default, _ = dsp_isolate_lead(long, SR)  # 30 s chunks
    assert np.max(np.abs(chunked - whole)) < 1e-4
    assert np.max(np.abs(default - whole)) < 1e-4
    np.testing.assert_allclose(chunked + chunked_res, long, atol=1e-5, rtol=0)
    # Without context / crossfade the chunk seams are visible: proves the chunked path really ran.
    seams, _ = dsp_isolate_lead(long, SR, chunk_seconds=7.0, overlap_seconds=0.0)
    assert np.max(np.abs(seams - whole)) > 1e-3


def test_dsp_other_rates_and_short_input():
    x = noise(0.01, sr=22050)  # shorter than one STFT frame
    lead, res = dsp_isolate_lead(x, 22050)
    assert lead.shape == x.shape
    np.testing.assert_allclose(lead + res, x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="chunk_seconds"):
        dsp_isolate_lead(x, 22050, chunk_seconds=0)
    with pytest.raises(ValueError, match="shape"):
        dsp_isolate_lead(np.zeros((2, 3, 4), np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        dsp_isolate_lead(np.full(100, np.nan, np.float32), SR)


def test_separate_dsp_method(mix):
    x = mix[: 3 * SR]
    sep = separate(x, SR, SeparatorConfig(method="dsp"))
    assert isinstance(sep, Separation)
    assert (sep.separator, sep.separator_version, sep.fallback_reason) == (DSP_NAME, DSP_VERSION, None)
    assert sep.sample_rate == SR and sep.seconds > 0
    expected, _ = dsp_isolate_lead(x, SR)
    np.testing.assert_array_equal(sep.lead, expected)


# ---- Demucs: demucs_unittest ------------------------------------------------------------------


def reference_demucs(model, x: np.ndarray, overlap: float = 0.25) -> torch.Tensor:
    """Stems (S, C, n) computed directly with apply_model, normalised like demucs's API does."""
    from demucs.apply import apply_model

    wav = torch.from_numpy(np.ascontiguousarray(x.T))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    out = apply_model(model, ((wav - mean) / std)[None], shifts=0, split=True, overlap=overlap, progress=False)
    return out[0] * std + mean


def test_demucs_unittest_model_separates(no_network):
    from demucs.pretrained import get_model

    model = get_model("demucs_unittest").eval()
    x = noise(0.75)
    cfg = SeparatorConfig(method="demucs", model="demucs_unittest", device="cpu")
    sep = separate(x, SR, cfg, model=model)
    assert sep.separator == "demucs:demucs_unittest"
    assert sep.sample_rate == model.samplerate == SR
    assert sep.lead.shape == sep.residual.shape == x.shape
    assert sep.lead.dtype == sep.residual.dtype == np.float32
    assert sep.fallback_reason is None and sep.sources == tuple(SOURCES)

    stems = reference_demucs(model, x).numpy()  # (S, C, n)
    other = SOURCES.index("other")
    np.testing.assert_allclose(sep.lead, stems[other].T, atol=1e-5)
    rest = stems[[i for i in range(len(SOURCES)) if i != other]].sum(axis=0)
    np.testing.assert_allclose(sep.residual, rest.T, atol=1e-5)
    np.testing.assert_allclose(sep.lead + sep.residual, stems.sum(axis=0).T, atol=1e-5)
    assert np.max(np.abs(sep.lead)) > 0  # random weights, but not a zero output

    again = separate(x, SR, cfg, model=model)  # shifts=0: deterministic
    np.testing.assert_array_equal(again.lead, sep.lead)
    np.testing.assert_array_equal(again.residual, sep.residual)
    assert no_network == []


def test_demucs_unittest_loads_by_name_and_converts_input(no_network):
    cfg = SeparatorConfig(method="demucs", model="demucs_unittest", device="cpu")
    model = load_demucs(cfg)
    assert not model.training and list(model.sources) == SOURCES
    x = noise(0.5, sr=22050, channels=1)[:, 0]  # mono at 22.05 kHz: duplicated and resampled
    sep = separate(x, 22050, cfg, model=model)
    assert sep.separator == "demucs:demucs_unittest"
    assert sep.sample_rate == SR
    assert sep.lead.shape == sep.residual.shape == (2 * len(x), 2)
    import julius

    stereo_44k = julius.resample_frac(torch.from_numpy(np.stack([x, x])), 22050, SR).numpy().T
    stems = reference_demucs(model, np.ascontiguousarray(stereo_44k)).numpy()
    np.testing.assert_allclose(sep.lead, stems[2].T, atol=1e-5)
    np.testing.assert_allclose(sep.residual, stems[[0, 1, 3]].sum(axis=0).T, atol=1e-5)
    assert no_network == []


def test_model_without_other_source_is_rejected():
    model = tiny_htdemucs(sources=["drums", "bass", "vocals"])
    with pytest.raises(ValueError, match=r"other.*drums.*bass.*vocals"):
        separate(noise(0.2), SR, SeparatorConfig(method="demucs", device="cpu"), model=model)


def test_segment_longer_than_the_model_allows_is_rejected():
    with pytest.raises(ValueError, match="segment"):
        separate(noise(0.2), SR, SeparatorConfig(method="demucs", device="cpu", segment=5.0), model=tiny_htdemucs())


# ---- Demucs: local repo, fake HF cache, export --------------------------------------------------


def save_like_demucs(model, folder: Path, sig: str) -> None:
    """A `<sig>-<sha8>.th` file as demucs writes them (states.save_with_checksum of a model package)."""
    from demucs.states import save_with_checksum

    args, kwargs = model._init_args_kwargs
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": model.state_dict()}
    save_with_checksum(package, folder / f"{sig}.th")


def assert_same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_load_tiny_htdemucs_from_local_repo(tmp_path, no_network):
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    original = tiny_htdemucs(seed=1)
    save_like_demucs(original, tmp_path, "tiny_ht")
    (tmp_path / "tiny_bag.yaml").write_text("models: ['tiny_ht', 'tiny_ht']\nweights: [[1, 1, 1, 1], [1, 0, 1, 0]]\n")

    cfg = SeparatorConfig(method="demucs", model="tiny_ht", repo=str(tmp_path), device="cpu")
    loaded = load_demucs(cfg)
    assert isinstance(loaded, HTDemucs)
    assert list(loaded.sources) == SOURCES and not loaded.training
    assert_same_state(loaded, original)

    x = noise(1.0)
    sep = separate(x, SR, cfg, model=loaded)
    assert sep.separator == "demucs:tiny_ht"
    assert sep.lead.shape == sep.residual.shape == x.shape
    stems = reference_demucs(original, x).numpy()
    np.testing.assert_allclose(sep.lead, stems[2].T, atol=1e-5)

    via_load = separate(x, SR, cfg)  # separate() loads it itself
    np.testing.assert_allclose(via_load.lead, sep.lead, atol=1e-6)

    bag = load_demucs(SeparatorConfig(method="demucs", model="tiny_bag", repo=str(tmp_path)))
    assert isinstance(bag, BagOfModels) and len(bag.models) == 2
    assert bag.weights == [[1, 1, 1, 1], [1, 0, 1, 0]]
    assert no_network == []


def test_export_to_repo_round_trip(tmp_path):
    from demucs.apply import BagOfModels

    bag = BagOfModels([tiny_htdemucs(seed=2), tiny_htdemucs(seed=3)], weights=[[1, 1, 1, 1], [0.5, 1, 2, 1]])
    files = export_to_repo(bag, tmp_path, "my_bag")
    assert sorted(p.suffix for p in files) == [".th", ".th", ".yaml"]
    loaded = load_demucs(SeparatorConfig(method="demucs", model="my_bag", repo=str(tmp_path)))
    assert isinstance(loaded, BagOfModels)
    assert loaded.weights == [[1, 1, 1, 1], [0.5, 1, 2, 1]]
    for a, b in zip(loaded.models, bag.models):
        assert_same_state(a, b)

    single = tiny_htdemucs(seed=4)
    export_to_repo(single, tmp_path, "one")
    assert_same_state(load_demucs(SeparatorConfig(method="demucs", model="one", repo=str(tmp_path))), single)


def test_load_from_hugging_face_cache_without_network(empty_caches, no_network):
    """A model present in the HF cache (layout of hf_hub_download) loads with allow_download=False."""
    from demucs.htdemucs import HTDemucs
    from safetensors.torch import save_file

    original = tiny_htdemucs(seed=5)
    args, kwargs = original._init_args_kwargs
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = empty_caches / "models--someone--HTDemucs-tiny"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    (snap / "htdemucs_tiny.yaml").write_text("models: ['abcd1234']\n")
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": json.dumps(list(args)), "kwargs": json.dumps(kwargs)}
    state = {k: v.contiguous() for k, v in original.state_dict().items()}
    save_file(state, str(snap / "abcd1234.safetensors"), metadata=metadata)

    bag = load_demucs(SeparatorConfig(method="demucs", model="someone/htdemucs_tiny"))
    assert len(bag.models) == 1 and isinstance(bag.models[0], HTDemucs)
    assert_same_state(bag.models[0], original)
    sep = separate(noise(0.5), SR, SeparatorConfig(method="auto", model="someone/htdemucs_tiny", device="cpu"))
    assert sep.separator == "demucs:someone/htdemucs_tiny" and sep.fallback_reason is None
    assert no_network == []


# ---- missing weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["htdemucs", "no_such_model"])
def test_missing_model_fails_fast_without_network(name, empty_caches, no_network):
    t0 = time.perf_counter()
    with pytest.raises(SeparatorUnavailable) as info:
        load_demucs(SeparatorConfig(method="demucs", model=name))
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert name in message.splitlines()[0]
    assert "repo" in message and "allow_download" in message and "TRANCE_SEPARATOR_DOWNLOAD" in message
    assert "method='dsp'" in message
    assert elapsed < 10.0  # a generous bound: what it guards against is a network timeout
    assert no_network == []

    with pytest.raises(SeparatorUnavailable):
        separate(noise(0.2), SR, SeparatorConfig(method="demucs", model=name))


def test_auto_falls_back_to_dsp(empty_caches, no_network):
    x = noise(1.0)
    sep = separate(x, SR, SeparatorConfig(method="auto", model="htdemucs"))
    assert sep.separator.startswith("dsp:") and sep.separator_version == DSP_VERSION
    assert sep.fallback_reason and "htdemucs" in sep.fallback_reason and "\n" not in sep.fallback_reason
    with pytest.raises(SeparatorUnavailable) as info:
        load_demucs(SeparatorConfig(model="htdemucs"))
    assert sep.fallback_reason == str(info.value).splitlines()[0]
    np.testing.assert_allclose(sep.lead + sep.residual, x, atol=1e-5, rtol=0)
    assert no_network == []


def test_bad_repo_folders(tmp_path):
    with pytest.raises(SeparatorUnavailable, match="does not exist"):
        load_demucs(SeparatorConfig(model="htdemucs", repo=str(tmp_path / "nope")))
    save_like_demucs(tiny_htdemucs(), tmp_path, "present")
    with pytest.raises(SeparatorUnavailable, match=r"'htdemucs' is not in repo.*present"):
        load_demucs(SeparatorConfig(model="htdemucs", repo=str(tmp_path)))
    (tmp_path / "broken.th").write_bytes(b"not a torch file")
    with pytest.raises(SeparatorUnavailable, match="could not be loaded"):
        load_demucs(SeparatorConfig(model="broken", repo=str(tmp_path)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu():
    with pytest.raises(SeparatorUnavailable, match="cuda"):
        separate(noise(0.2), SR, SeparatorConfig(method="demucs", model="demucs_unittest", device="cuda"))
    sep = separate(noise(0.2), SR, SeparatorConfig(method="auto", model="demucs_unittest", device="cuda"))
    assert sep.separator == DSP_NAME and "cuda" in sep.fallback_reason


# ---- config, env, reading audio ----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("method", "two-stems"),
        ("model", ""),
        ("repo", ""),
        ("allow_download", "yes"),
        ("device", "tpu"),
        ("segment", 0.0),
        ("segment", float("nan")),
        ("overlap", 1.0),
        ("overlap", -0.1),
        ("shifts", -1),
        ("shifts", 1.5),
        ("threads", 0),
    ],
)
def test_config_validation(field, value):
    cfg = SeparatorConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"SeparatorConfig\.{field}="):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        separate(noise(0.1), SR, cfg)


def test_valid_configs():
    for cfg in (SeparatorConfig(), SeparatorConfig(method="dsp", device="cuda:1", segment=7.5, shifts=2, threads=1)):
        cfg.validate()


def test_config_from_env(monkeypatch):
    monkeypatch.setenv("TRANCE_SEPARATOR_DOWNLOAD", "1")
    monkeypatch.setenv("TRANCE_SEPARATOR_METHOD", "dsp")
    monkeypatch.setenv("TRANCE_SEPARATOR_REPO", "/models")
    cfg = SeparatorConfig.from_env(threads=3)
    assert (cfg.allow_download, cfg.method, cfg.repo, cfg.threads) == (True, "dsp", "/models", 3)
    monkeypatch.setenv("TRANCE_SEPARATOR_DOWNLOAD", "0")
    assert SeparatorConfig.from_env().allow_download is False


def test_read_audio(tmp_path):
    x = noise(0.5, sr=48000)
    path = tmp_path / "a.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    y, sr = read_audio(path)
    assert sr == 48000 and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    m, sr = read_audio(path, target_sr=SR, mono=True)
    assert sr == SR and m.dtype == np.float32 and m.shape == (int(0.5 * SR),)
    with pytest.raises(ValueError, match="target_sr"):
        read_audio(path, target_sr=0)
