"""The model generator backends ("melody_rnn", "musicvae") on tiny untrained-but-saved models."""

from __future__ import annotations

import hashlib

import pytest

torch = pytest.importorskip("torch")

import trance_assets.generation.models  # noqa: E402,F401  (registers the backends)
from trance_assets.generation.base import Generator, available, get_generator  # noqa: E402
from trance_assets.models.melody_rnn import MelodyRNN, MelodyRNNConfig  # noqa: E402
from trance_assets.models.musicvae import MusicVAE, MusicVAEConfig  # noqa: E402
from trance_assets.music.melody import Melody  # noqa: E402

PROG = ["Am", "F", "C", "G"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rnn_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rnn")
    MelodyRNN(MelodyRNNConfig(layers=(16, 16), attn_length=8)).save(d)
    return d


@pytest.fixture(scope="module")
def rnn_chord_dir(tmp_path_factory):
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("rnn_chord")
    MelodyRNN(MelodyRNNConfig(layers=(16, 16), attn_length=8, chord_dim=25)).save(d)
    return d


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(2)
    d = tmp_path_factory.mktemp("vae")
    cfg = MusicVAEConfig(steps_per_bar=16, bars=2, enc_sizes=(8,), z_size=4, conductor_sizes=(8,), dec_sizes=(12,))
    MusicVAE(cfg).save(d)
    return d


def _check_melody(m: Melody, key: str, bpm: float, bars: int, prog=PROG) -> None:
    assert isinstance(m, Melody)
    assert m.bpm == bpm and m.key == key and m.bars == bars
    assert len(m.notes) > 0
    assert all(n.end <= bars * 4 + 1e-9 for n in m.notes)
    assert all(0 <= n.start < bars * 4 for n in m.notes)
    assert all(60 <= n.pitch < 96 for n in m.notes)  # lead register
    # monophonic: no note starts before the previous one ends
    for a, b in zip(m.notes, m.notes[1:]):
        assert a.end <= b.start + 1e-9
    assert [c.symbol for c in m.chords] == [prog[b % len(prog)] for b in range(bars)]
    assert [c.start for c in m.chords] == [4.0 * b for b in range(bars)]
    assert all(c.duration == 4.0 for c in m.chords)


def test_registered():
    assert {"melody_rnn", "musicvae", "rules"} <= set(available())


@pytest.mark.parametrize("which", ["rnn_dir", "rnn_chord_dir"])
def test_melody_rnn_generates(which, request):
    d = request.getfixturevalue(which)
    gen = get_generator("melody_rnn", checkpoint=str(d))
    assert isinstance(gen, Generator)
    assert gen.info.name == "melody_rnn"
    assert gen.info.checkpoint == _sha256(d / "model.safetensors")
    assert gen.info.version.startswith("melody_rnn-")
    for key, bars in (("Am", 4), ("F#", 3)):
        m = gen.generate(key, 138.0, PROG, bars, seed=7)
        _check_melody(m, key, 138.0, bars)
    a = gen.generate("Am", 140, PROG, 4, seed=1)
    b = gen.generate("Am", 140, PROG, 4, seed=1)
    c = gen.generate("Am", 140, PROG, 4, seed=2)
    assert a.notes == b.notes
    assert a.notes != c.notes
    # a fresh instance from the same folder gives the same melody
    again = get_generator("melody_rnn", checkpoint=str(d)).generate("Am", 140, PROG, 4, seed=1)
    assert again.notes == a.notes


def test_melody_rnn_one_bar_and_versions(rnn_dir, rnn_chord_dir):
    gen = get_generator("melody_rnn", checkpoint=str(rnn_dir), temperature=0.7)
    _check_melody(gen.generate("C", 128, ["C"], 1, seed=3), "C", 128, 1, prog=["C"])
    other = get_generator("melody_rnn", checkpoint=str(rnn_chord_dir))
    assert gen.info.version != other.info.version
    assert gen.info.options["temperature"] == 0.7


def test_melody_rnn_chord_inputs(rnn_chord_dir):
    """Each input carries the chord of the bar of the step it predicts, in the C frame."""
    import numpy as np

    gen = get_generator("melody_rnn", checkpoint=str(rnn_chord_dir))
    seen = []
    real_step = gen.model.step

    def spy(x, state):
        seen.append(x.detach().numpy()[0].copy())
        return real_step(x, state)

    gen.model.step = spy
    # Bm: frame D major, so the chords move down 2 semitones: Bm -> Am (13 + 9), G -> F (1 + 5)
    gen.generate("Bm", 140, ["Bm", "G"], 2, seed=0)
    assert len(seen) == 31  # primer input + 30 fed-back inputs (the last sample is not fed back)
    chords = np.stack(seen)[:, -25:]
    assert (chords.sum(1) == 1).all()
    assert (np.argmax(chords[:15], 1) == 22).all()  # inputs 0..14 predict steps 1..15 (bar 0)
    assert (np.argmax(chords[15:], 1) == 6).all()  # inputs 15..30 predict steps 16..31 (bar 1)
    first = np.stack(seen)[0, :36]
    assert np.argmax(first) == 69 - 48  # the primer: A4 (the minor tonic in the C frame)


def test_musicvae_generates(vae_dir):
    gen = get_generator("musicvae", checkpoint=str(vae_dir))
    assert isinstance(gen, Generator)
    assert gen.info.name == "musicvae"
    assert gen.info.checkpoint == _sha256(vae_dir / "model.safetensors")
    assert gen.info.version.startswith("musicvae-")
    for key, bars in (("Am", 4), ("Eb", 1), ("C#m", 2)):  # repeat (4 > 2 model bars), take, exact
        m = gen.generate(key, 140.0, PROG, bars, seed=11)
        _check_melody(m, key, 140.0, bars)
    a = gen.generate("Am", 140, PROG, 2, seed=1)
    assert a.notes == gen.generate("Am", 140, PROG, 2, seed=1).notes
    assert a.notes != gen.generate("Am", 140, PROG, 2, seed=2).notes


def test_musicvae_key_transposition(vae_dir):
    from trance_assets.models.melody_encoding import best_major_key

    gen = get_generator("musicvae", checkpoint=str(vae_dir))
    for key, frame in (("Am", 0), ("D", 2), ("Bm", 2), ("F", 5)):
        m = gen.generate(key, 140, PROG, 2, seed=4)
        # the melody's estimated major key is the prompt's major frame (a pure transposition
        # keeps the note-on histogram, so the estimate moves with it)
        assert best_major_key(m.pitches) == frame
        assert m.attributes["transpose"] in range(-5, 7)


@pytest.mark.parametrize("backend,fixture", [("melody_rnn", "rnn_dir"), ("musicvae", "vae_dir")])
def test_bad_inputs(backend, fixture, request, tmp_path):
    d = request.getfixturevalue(fixture)
    gen = get_generator(backend, checkpoint=str(d))
    with pytest.raises(ValueError):
        gen.generate("H minor", 140, PROG, 4, seed=0)
    with pytest.raises(ValueError):
        gen.generate("Am", 140, ["Xq7"], 4, seed=0)
    with pytest.raises(ValueError):
        gen.generate("Am", 140, "Am F C G", 4, seed=0)
    with pytest.raises(ValueError):
        gen.generate("Am", 140, PROG, 0, seed=0)
    with pytest.raises(ValueError):
        gen.generate("Am", 0, PROG, 4, seed=0)
    with pytest.raises(ValueError):
        get_generator(backend, checkpoint=str(d), temperature=0)
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        get_generator(backend, checkpoint=str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        get_generator(backend, checkpoint=str(empty))
