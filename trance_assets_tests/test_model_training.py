"""Datasets and resumable training for the Melody RNN and MusicVAE (tiny models, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trance_assets.formats.notesequence import melody_to_notesequence
from trance_assets.formats.tfrecord import write_tfrecord
from trance_assets.models import datasets as ds
from trance_assets.models.melody_rnn import MelodyRNN, MelodyRNNConfig
from trance_assets.models.musicvae import MusicVAE, MusicVAEConfig
from trance_assets.models.training import (
    TrainConfig,
    learning_curve_png,
    train_melody_rnn,
    train_musicvae,
)
from trance_assets.music.rules import generate

N_SEQ = 8
BARS = 24


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train" / "notesequences.tfrecord"
    nss = [melody_to_notesequence(generate(seed=s, bars=BARS), id=f"rule-{s}") for s in range(N_SEQ)]
    assert write_tfrecord(path, (ns.SerializeToString() for ns in nss)) == N_SEQ
    back = ds.read_notesequences(path)
    assert [ns.id for ns in back] == [f"rule-{s}" for s in range(N_SEQ)]
    assert back[0] == nss[0]
    return back


@pytest.fixture(scope="module")
def rnn_examples(sequences):
    return ds.melody_rnn_examples(sequences, chord_conditioned=True)


@pytest.fixture(scope="module")
def vae_data(sequences):
    return ds.musicvae_examples(sequences, return_ids=True)


def _tiny_rnn(chord_dim: int = 0) -> MelodyRNN:
    torch.manual_seed(0)
    return MelodyRNN(MelodyRNNConfig(layers=(16, 16), attn_length=8, chord_dim=chord_dim))


def _tiny_vae() -> MusicVAE:
    torch.manual_seed(0)
    return MusicVAE(MusicVAEConfig(enc_sizes=(16,), z_size=8, conductor_sizes=(16,), dec_sizes=(16,),
                                   free_bits=0.0, learning_rate=3e-3))


# ------------------------------------------------------------------------------------ datasets
def test_melody_rnn_examples_shapes_and_chords(sequences, rnn_examples):
    assert len(rnn_examples) >= N_SEQ  # every 24-bar rule melody yields at least one melody >= 7 bars
    assert {e["sequence_id"] for e in rnn_examples} == {ns.id for ns in sequences}
    for e in rnn_examples:
        t = e["length"]
        assert e["inputs"].shape == (t, 74) and e["inputs"].dtype == np.float32
        assert e["labels"].shape == (t,) and e["labels"].min() >= 0 and e["labels"].max() < 40
        assert e["chords"].shape == (t, 25)
        assert np.all(e["chords"].sum(1) == 1)
        assert t <= 511 and t + 1 >= 7 * 16
    # the chord one-hot follows the annotations, transposed with the melody: the rule engine's first
    # chord is at beat 0, so the step predicted by input 0 (step 1) is under the first chord.
    from trance_assets.models.melody_encoding import chord_one_hot

    e = rnn_examples[0]
    ns = next(s for s in sequences if s.id == e["sequence_id"])
    first = min(ns.text_annotations, key=lambda a: a.time).text
    if e["start_step"] == 0:
        np.testing.assert_array_equal(e["chords"][0], chord_one_hot(first, e["transpose"]))
    plain = ds.melody_rnn_examples(sequences[:2])
    assert "chords" not in plain[0]
    np.testing.assert_array_equal(plain[0]["inputs"], rnn_examples[0]["inputs"])


def test_musicvae_examples_slices_dedup_and_cap(sequences, vae_data):
    x, ids = vae_data
    assert x.ndim == 2 and x.shape[1] == 256 and x.dtype == np.int64
    assert x.min() >= 0 and x.max() < 90
    counts = {i: ids.count(i) for i in set(ids)}
    assert max(counts.values()) <= 5
    # 24-bar melodies give up to 9 distinct 16-bar windows: the cap binds
    uncapped = ds.musicvae_slices(sequences[0], max_per_sequence=None)
    assert len(uncapped) > 5 and counts[sequences[0].id] == 5
    assert len({w.tobytes() for w in uncapped}) == len(uncapped)  # de-duplicated
    # reproducible choice
    again = ds.musicvae_examples(sequences[:1])
    np.testing.assert_array_equal(again, x[: len(again)])
    # highest note kept on polyphony: add a lower note under the first note
    ns2 = type(sequences[0])()
    ns2.CopyFrom(sequences[0])
    n0 = ns2.notes[0]
    ns2.notes.add(pitch=n0.pitch - 7, velocity=80, start_time=n0.start_time, end_time=n0.end_time)
    w0 = ds.musicvae_slices(sequences[0], max_per_sequence=None)[0]
    w1 = ds.musicvae_slices(ns2, max_per_sequence=None)[0]
    np.testing.assert_array_equal(w0, w1)


def test_pad_batch(rnn_examples):
    b = ds.pad_batch(rnn_examples[:3], max_len=64)
    assert b["inputs"].shape == (3, 64, 74) and b["chords"].shape == (3, 64, 25)
    assert b["lengths"].tolist() == [min(e["length"], 64) for e in rnn_examples[:3]]
    b = ds.pad_batch(rnn_examples[:2], with_chords=False)
    assert "chords" not in b and b["inputs"].shape[1] == max(e["length"] for e in rnn_examples[:2])


# ------------------------------------------------------------------------------------ training
def _rnn_cfg(**kw) -> TrainConfig:
    base = dict(max_steps=30, batch_size=4, eval_every=10, patience=None, seed=3, device="cpu",
                max_seq_len=48, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def test_melody_rnn_learns_and_saves_best(rnn_examples, tmp_path):
    train, val = rnn_examples[:-2], rnn_examples[-2:]
    model = _tiny_rnn(chord_dim=25)
    res = train_melody_rnn(model, train, val, _rnn_cfg(), tmp_path, log=_quiet)
    vals = [c[2] for c in res.curve]
    assert [c[0] for c in res.curve] == [0, 10, 20, 30]
    assert res.best_val_loss < vals[0] - 0.3  # clearly below the untrained ln(40) ≈ 3.7 level
    assert res.steps == 30 and not res.stopped_early and res.resumed_from is None
    loaded = MelodyRNN.load(tmp_path / "best")
    assert loaded.config.chord_dim == 25
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])  # model holds the best weights
    assert res.steps_per_second > 0 and res.device == "cpu"


def test_melody_rnn_early_stopping(rnn_examples, tmp_path):
    """Force it: the validation labels are uniform random, so every gain on the training data makes
    the model more confident about patterns the validation set does not have, and the validation
    loss (at ~ln 40 for the near-uniform untrained model) rises; patience 1 stops at the first eval."""
    rng = np.random.default_rng(0)
    val = []
    for e in rnn_examples[-2:]:
        e = dict(e)
        e["labels"] = rng.integers(0, 40, size=e["length"])
        val.append(e)
    model = _tiny_rnn()
    res = train_melody_rnn(model, rnn_examples[:-2], val, _rnn_cfg(max_steps=200, patience=1), tmp_path,
                           log=_quiet)
    assert res.stopped_early
    assert res.steps < 200
    assert res.best_step == 0 or res.curve[-1][2] >= res.best_val_loss


class _Kill(Exception):
    pass


def _kill_at(n):
    def cb(step, loss):
        if step == n:
            raise _Kill()
    return cb


def _weights(path):
    return load_file(str(path / "last" / "model.safetensors"))


def test_melody_rnn_resume_is_exact(rnn_examples, tmp_path):
    train, val = rnn_examples[:-2], rnn_examples[-2:]
    cfg = _rnn_cfg(max_steps=16, eval_every=4)
    full = train_melody_rnn(_tiny_rnn(), train, val, cfg, tmp_path / "full", log=_quiet)

    with pytest.raises(_Kill):  # killed at step 10: the last checkpoint is step 8
        train_melody_rnn(_tiny_rnn(), train, val, cfg, tmp_path / "cut", log=_quiet, on_step=_kill_at(10))
    st = json.loads((tmp_path / "cut" / "last" / "state.json").read_text())
    assert st["step"] == 8 and [c[0] for c in st["curve"]] == [0, 4, 8]
    # a fresh process would build a fresh model: different init seed to prove weights are restored
    torch.manual_seed(123)
    fresh = MelodyRNN(MelodyRNNConfig(layers=(16, 16), attn_length=8))
    res = train_melody_rnn(fresh, train, val, cfg, tmp_path / "cut", log=_quiet)
    assert res.resumed_from == 8 and res.steps == 16
    assert res.curve[:3] == full.curve[:3]
    assert res.curve == full.curve
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a finished run resumed again does nothing more
    again = train_melody_rnn(fresh, train, val, cfg, tmp_path / "cut", log=_quiet)
    assert again.resumed_from == 16 and again.steps == 16 and again.curve == full.curve


def test_musicvae_learns_resumes_and_plots(vae_data, tmp_path):
    x, _ = vae_data
    train, val = x[:-4], x[-4:]
    cfg = TrainConfig(max_steps=16, batch_size=4, eval_every=4, patience=None, seed=1, device="cpu")
    full = train_musicvae(_tiny_vae(), train, val, cfg, tmp_path / "full", log=_quiet)
    vals = [c[2] for c in full.curve]
    assert [c[0] for c in full.curve] == [0, 4, 8, 12, 16]
    assert vals[-1] < vals[0] and full.best_val_loss < vals[0]
    loaded = MusicVAE.load(tmp_path / "full" / "best")
    assert loaded.config.z_size == 8

    with pytest.raises(_Kill):
        train_musicvae(_tiny_vae(), train, val, cfg, tmp_path / "cut", log=_quiet, on_step=_kill_at(10))
    res = train_musicvae(_tiny_vae(), train, val, cfg, tmp_path / "cut", log=_quiet)
    assert res.resumed_from == 8 and res.curve == full.curve
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k

    png = learning_curve_png(full.curve)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_musicvae_early_stopping(vae_data, tmp_path):
    """Forced as for the RNN: validation rows of uniform random classes cannot be fitted, and the
    reconstruction loss on them rises as the model learns the (very repetitive) training melodies."""
    x, _ = vae_data
    val = np.random.default_rng(0).integers(0, 90, size=(4, 256))
    cfg = TrainConfig(max_steps=120, batch_size=8, eval_every=6, patience=1, seed=1, device="cpu")
    res = train_musicvae(_tiny_vae(), x, val, cfg, tmp_path, log=_quiet)
    assert res.stopped_early and res.steps < 120
