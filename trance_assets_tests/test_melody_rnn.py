"""Melody RNN (attention_rnn) port: exactness against an independent NumPy reference of the TF graph.

The reference below works on TF-layout weights directly (kernels over concatenated inputs, LSTM gate
blocks i, j, f, o, forget bias +1.0 added at run time) in float64, following the facts in
shared/docs/MAGENTA-FACTS.md, and shares no code with the module under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trance_assets.models.melody_rnn import (
    TF_VARIABLE_MAP,
    MelodyRNN,
    MelodyRNNConfig,
    clip_per_tensor,
    load,
    lr_at,
    make_optimizer,
    masked_cross_entropy,
    sample,
    save,
    train_step,
)

NEW = "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/"
OLD = "rnn/attention_cell_wrapper/"


# ------------------------------------------------------------------------------ NumPy reference
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tf_lstm(x, c, h, kernel, bias):
    z = np.concatenate([x, h], axis=1) @ kernel + bias
    n = h.shape[1]
    i, j, f, o = z[:, :n], z[:, n : 2 * n], z[:, 2 * n : 3 * n], z[:, 3 * n :]
    c_new = c * _sig(f + 1.0) + _sig(i) * np.tanh(j)
    h_new = np.tanh(c_new) * _sig(o)
    return c_new, h_new


def _attention(w, prefix, query, hist):
    k = w[prefix + "attention/attn_w"][0, 0]  # [A, A]
    v = w[prefix + "attention/attn_v"]
    feats = np.einsum("bla,ad->bld", hist, k)
    y = query @ w[prefix + "attention/kernel"] + w[prefix + "attention/bias"]
    scores = np.sum(v * np.tanh(feats + y[:, None, :]), axis=2)  # [B, L]
    scores = scores - scores.max(axis=1, keepdims=True)
    a = np.exp(scores)
    a = a / a.sum(axis=1, keepdims=True)
    return np.einsum("bl,bla->ba", a, hist)


def numpy_reference(w, inputs, layers, attn_length, first_only=True):
    """Logits [B, T, C] of the TF graph (inference: no dropout), float64."""
    x_all = np.asarray(inputs, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}
    bsz, steps, _ = x_all.shape
    a_size = layers[0] if first_only else layers[-1]
    cs = [np.zeros((bsz, n)) for n in layers]
    hs = [np.zeros((bsz, n)) for n in layers]
    attns = np.zeros((bsz, a_size))
    hist = np.zeros((bsz, attn_length, a_size))
    prefix = NEW if first_only else OLD
    if first_only:
        lstm_names = [NEW + "basic_lstm_cell/"] + [
            f"rnn/multi_rnn_cell/cell_{k}/basic_lstm_cell/" for k in range(1, len(layers))
        ]
        n_wrapped = 1
    else:
        lstm_names = [OLD + f"multi_rnn_cell/cell_{k}/basic_lstm_cell/" for k in range(len(layers))]
        n_wrapped = len(layers)
    out_logits = []
    for t in range(steps):
        x = x_all[:, t]
        inner = np.concatenate([x, attns], axis=1) @ w[prefix + "kernel"] + w[prefix + "bias"]
        for k in range(n_wrapped):
            cs[k], hs[k] = _tf_lstm(inner, cs[k], hs[k], w[lstm_names[k] + "kernel"],
                                    w[lstm_names[k] + "bias"])
            inner = hs[k]
        query = np.concatenate([a for k in range(n_wrapped) for a in (cs[k], hs[k])], axis=1)
        attns = _attention(w, prefix, query, hist)
        out = (np.concatenate([inner, attns], axis=1) @ w[prefix + "attn_output_projection/kernel"]
               + w[prefix + "attn_output_projection/bias"])
        hist = np.concatenate([hist[:, 1:], out[:, None, :]], axis=1)
        for k in range(n_wrapped, len(layers)):
            cs[k], hs[k] = _tf_lstm(out, cs[k], hs[k], w[lstm_names[k] + "kernel"],
                                    w[lstm_names[k] + "bias"])
            out = hs[k]
        out_logits.append(out @ w["fully_connected/weights"] + w["fully_connected/biases"])
    return np.stack(out_logits, axis=1)


def random_tf_weights(rng, input_size=74, layers=(128, 128), num_classes=40, first_only=True):
    """TF-layout tensors with the bundle's names and shapes (biases random too)."""
    u = lambda *shape: rng.uniform(-0.25, 0.25, size=shape).astype(np.float32)  # noqa: E731
    w = {}
    a = layers[0] if first_only else layers[-1]
    prefix = NEW if first_only else OLD
    w[prefix + "kernel"] = u(input_size + a, input_size)
    w[prefix + "bias"] = u(input_size)
    if first_only:
        w[NEW + "basic_lstm_cell/kernel"] = u(input_size + layers[0], 4 * layers[0])
        w[NEW + "basic_lstm_cell/bias"] = u(4 * layers[0])
        for k in range(1, len(layers)):
            name = f"rnn/multi_rnn_cell/cell_{k}/basic_lstm_cell/"
            w[name + "kernel"] = u(layers[k - 1] + layers[k], 4 * layers[k])
            w[name + "bias"] = u(4 * layers[k])
        q = 2 * layers[0]
    else:
        sizes = [input_size, *layers]
        for k in range(len(layers)):
            name = OLD + f"multi_rnn_cell/cell_{k}/basic_lstm_cell/"
            w[name + "kernel"] = u(sizes[k] + sizes[k + 1], 4 * sizes[k + 1])
            w[name + "bias"] = u(4 * sizes[k + 1])
        q = 2 * sum(layers)
    w[prefix + "attention/attn_w"] = u(1, 1, a, a)
    w[prefix + "attention/attn_v"] = u(a)
    w[prefix + "attention/kernel"] = u(q, a)
    w[prefix + "attention/bias"] = u(a)
    w[prefix + "attn_output_projection/kernel"] = u(layers[-1] + a, a)
    w[prefix + "attn_output_projection/bias"] = u(a)
    w["fully_connected/weights"] = u(layers[-1], num_classes)
    w["fully_connected/biases"] = u(num_classes)
    return w


# ------------------------------------------------------------------------------ exactness
@pytest.fixture(scope="module")
def real_weights():
    return random_tf_weights(np.random.default_rng(0))


def test_bundle_variable_shapes_match_the_facts(real_weights):
    model = MelodyRNN()
    exported = model.export_tf_weights()
    expected = {
        NEW + "kernel": (202, 74),
        NEW + "basic_lstm_cell/kernel": (202, 512),
        NEW + "attention/attn_w": (1, 1, 128, 128),
        NEW + "attention/attn_v": (128,),
        NEW + "attention/kernel": (256, 128),
        NEW + "attn_output_projection/kernel": (256, 128),
        "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/kernel": (256, 512),
        "fully_connected/weights": (128, 40),
    }
    for name, shape in expected.items():
        assert exported[name].shape == shape, name
    assert set(exported) == set(real_weights)
    # every torch parameter is mapped, and the map names only exported variables
    assert set(TF_VARIABLE_MAP) == {n for n, _ in model.named_parameters()}
    assert {tf for tf, _ in TF_VARIABLE_MAP.values()} == set(exported)


def test_forward_matches_numpy_reference_at_real_sizes(real_weights):
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(2, 7, 74)).astype(np.float32)
    model = MelodyRNN()
    unused = model.load_tf_weights(real_weights)
    assert unused == []
    model.eval()
    with torch.no_grad():
        logits, state = model(torch.from_numpy(inputs))
    ref = numpy_reference(real_weights, inputs, (128, 128), 40)
    assert logits.shape == (2, 7, 40)
    np.testing.assert_allclose(logits.numpy(), ref, atol=1e-5, rtol=0)
    ref_p = np.exp(ref - ref.max(-1, keepdims=True))
    ref_p /= ref_p.sum(-1, keepdims=True)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), ref_p, atol=1e-6, rtol=0)
    assert state.attn_states.shape == (2, 40, 128)


def test_old_layout_matches_numpy_reference():
    layers = (24, 16)
    w = random_tf_weights(np.random.default_rng(2), input_size=10, layers=layers, num_classes=7,
                          first_only=False)
    cfg = MelodyRNNConfig(input_size=10, num_classes=7, layers=layers, attn_length=5,
                          attention_on_first_layer_only=False)
    model = MelodyRNN(cfg)
    model.load_tf_weights(w)
    model.eval()
    inputs = np.random.default_rng(3).normal(size=(3, 9, 10)).astype(np.float32)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(inputs))
    ref = numpy_reference(w, inputs, layers, 5, first_only=False)
    np.testing.assert_allclose(logits.numpy(), ref, atol=1e-5, rtol=0)
    # round trip and config detection from the variable names
    rebuilt = MelodyRNN.from_tf_weights(w, attn_length=5)
    assert rebuilt.config.attention_on_first_layer_only is False
    assert rebuilt.config.layers == layers
    for k, v in rebuilt.export_tf_weights().items():
        np.testing.assert_array_equal(v, w[k])


def test_export_import_round_trip_is_exact(real_weights):
    model = MelodyRNN()
    model.load_tf_weights(real_weights)
    exported = model.export_tf_weights()
    assert set(exported) == set(real_weights)
    for k, v in exported.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, real_weights[k], err_msg=k)
    # and the other way: a fresh model's weights survive export -> import
    a = MelodyRNN()
    b = MelodyRNN()
    b.load_tf_weights(a.export_tf_weights())
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_forget_bias_is_added_at_run_time_not_stored(real_weights):
    model = MelodyRNN()
    model.load_tf_weights(real_weights)
    h = 128
    tf_bias = real_weights[NEW + "basic_lstm_cell/bias"]
    torch_bias = model.attn_cell.cells[0].bias.detach().numpy()
    # torch blocks (i, f, g, o) hold TF blocks (i, f, j, o) unchanged (no +1 folded in)
    np.testing.assert_array_equal(torch_bias[h : 2 * h], tf_bias[2 * h : 3 * h])
    np.testing.assert_array_equal(torch_bias[2 * h : 3 * h], tf_bias[h : 2 * h])


def test_from_tf_weights_detects_layout_and_reports_unused(real_weights):
    extra = dict(real_weights)
    extra["global_step"] = np.array(5)
    extra[NEW + "kernel/Adam"] = real_weights[NEW + "kernel"]
    model = MelodyRNN.from_tf_weights(extra)
    assert model.config == MelodyRNNConfig()
    assert model.load_tf_weights(extra) == ["global_step", NEW + "kernel/Adam"]


def test_state_carries_across_calls(real_weights):
    model = MelodyRNN()
    model.load_tf_weights(real_weights)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 7, 74)).astype(np.float32))
    with torch.no_grad():
        full, _ = model(x)
        first, st = model(x[:, :3])
        second, _ = model(x[:, 3:], st)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ errors
def test_shape_mismatch_names_the_tf_variable(real_weights):
    bad = dict(real_weights)
    name = "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"
    bad[name] = np.zeros((256, 500), np.float32)
    with pytest.raises(ValueError, match="cell_1/basic_lstm_cell/kernel.*500"):
        MelodyRNN().load_tf_weights(bad)
    missing = dict(real_weights)
    del missing[NEW + "attention/attn_v"]
    with pytest.raises(KeyError, match="attention/attn_v"):
        MelodyRNN().load_tf_weights(missing)


def test_input_size_checked():
    with pytest.raises(ValueError, match=r"\[B, T, 74\]"):
        MelodyRNN()(torch.zeros(1, 2, 73))


# ------------------------------------------------------------------------------ chords
def test_chord_dim_widens_the_first_layer_input():
    cfg = MelodyRNNConfig(chord_dim=5)
    model = MelodyRNN(cfg)
    model.eval()
    tf = model.export_tf_weights()
    assert tf[NEW + "kernel"].shape == (79 + 128, 79)
    assert tf[NEW + "basic_lstm_cell/kernel"].shape == (79 + 128, 512)
    assert tf["rnn/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"].shape == (256, 512)
    x = torch.randn(2, 4, 74, generator=torch.Generator().manual_seed(0))
    chords = torch.zeros(2, 4, 5)
    chords[:, :, 2] = 1.0
    with torch.no_grad():
        a, _ = model(x, chords=chords)
        b, _ = model(torch.cat([x, chords], -1))
        c, _ = model(x, chords=torch.roll(chords, 1, -1))
    assert a.shape == (2, 4, 40)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)  # the chord changes the output
    with pytest.raises(ValueError):
        model(x)  # melody inputs alone are too narrow
    with pytest.raises(ValueError):
        MelodyRNN()(x, chords=chords)
    # a TF-layout chord model loads and matches the reference with the widened input
    w = random_tf_weights(np.random.default_rng(5), input_size=79)
    model.load_tf_weights(w)
    inputs = torch.cat([x, chords], -1)
    with torch.no_grad():
        got, _ = model(inputs)
    np.testing.assert_allclose(got.numpy(), numpy_reference(w, inputs.numpy(), (128, 128), 40),
                               atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ training helpers
def test_clip_per_tensor_hand_case():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to 3
    b.grad = torch.tensor([1.0, 0.0])  # norm 1 -> untouched
    norms = clip_per_tensor([a, b], max_norm=3.0)
    assert norms == pytest.approx([5.0, 1.0])
    torch.testing.assert_close(a.grad, torch.tensor([1.8, 2.4]))
    torch.testing.assert_close(b.grad, torch.tensor([1.0, 0.0]))
    # global clipping would have scaled b too (global norm sqrt(26) > 3)
    a2 = torch.nn.Parameter(torch.zeros(2))
    b2 = torch.nn.Parameter(torch.zeros(2))
    a2.grad = torch.tensor([3.0, 4.0])
    b2.grad = torch.tensor([1.0, 0.0])
    torch.nn.utils.clip_grad_norm_([a2, b2], 3.0)
    assert not torch.allclose(b2.grad, b.grad)
    assert b2.grad[0] == pytest.approx(3.0 / math.sqrt(26.0))


def test_masked_cross_entropy_hand_case():
    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 1] = math.log(3.0)  # p(1) = 3 / 6
    labels = torch.tensor([[1, 0, 2], [3, 0, 0]])
    logits[1, 1, 0] = -50.0  # padded step with a huge loss: must not count
    logits[1, 2, 1] = 50.0
    lengths = torch.tensor([3, 1])
    loss = masked_cross_entropy(logits, labels, lengths)
    # valid steps: (0,0): -ln(3/6); (0,1), (0,2), (1,0): uniform, -ln(1/4) each
    expected = (math.log(2) + 3 * math.log(4)) / 4
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_lr_schedule():
    assert lr_at(0) == pytest.approx(1e-3)
    assert lr_at(999) == pytest.approx(1e-3)
    assert lr_at(1000) == pytest.approx(0.97e-3)
    assert lr_at(2500) == pytest.approx(1e-3 * 0.97**2)
    assert lr_at(1500, staircase=False) == pytest.approx(1e-3 * 0.97**1.5)


def test_make_optimizer_is_adam():
    opt = make_optimizer(MelodyRNN(MelodyRNNConfig(input_size=4, num_classes=3, layers=(8, 8),
                                                  attn_length=2)))
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-3


def _copy_task(gen, batch=16, steps=6, n=5):
    labels = torch.randint(0, n, (batch, steps), generator=gen)
    inputs = torch.nn.functional.one_hot(labels, n).float()
    lengths = torch.randint(2, steps + 1, (batch,), generator=gen)
    return {"inputs": inputs, "labels": labels, "lengths": lengths}


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    cfg = MelodyRNNConfig(input_size=5, num_classes=5, layers=(16, 16), attn_length=4,
                          dropout_keep=1.0)
    model = MelodyRNN(cfg)
    opt = make_optimizer(model, lr=3e-2)
    gen = torch.Generator().manual_seed(1)
    batch = _copy_task(gen, steps=4)
    model.eval()
    with torch.no_grad():
        before = float(masked_cross_entropy(model(batch["inputs"])[0], batch["labels"],
                                            batch["lengths"]))
    losses = [train_step(model, opt, batch, lr=lr_at(k, base_lr=3e-2)) for k in range(15)]
    model.eval()
    with torch.no_grad():
        after = float(masked_cross_entropy(model(batch["inputs"])[0], batch["labels"],
                                           batch["lengths"]))
    assert losses[0] == pytest.approx(before, rel=1e-5)
    assert after < 0.5 * before


def test_dropout_only_in_training_mode():
    cfg = MelodyRNNConfig(input_size=5, num_classes=5, layers=(16, 16), attn_length=4)
    model = MelodyRNN(cfg)
    x = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        e1, _ = model(x)
        e2, _ = model(x)
    torch.testing.assert_close(e1, e2, atol=0, rtol=0)
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        t1, _ = model(x)
        t2, _ = model(x)
    assert not torch.allclose(t1, t2)
    assert not torch.allclose(t1, e1)


# ------------------------------------------------------------------------------ persistence
def test_save_load_round_trip(tmp_path, real_weights):
    model = MelodyRNN(MelodyRNNConfig(chord_dim=3))
    model.eval()
    save(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert (tmp_path / "m" / "config.json").exists()
    loaded = load(tmp_path / "m")
    loaded.eval()
    assert loaded.config == model.config
    x = torch.randn(2, 5, 77, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)


def test_config_dict_round_trip():
    cfg = MelodyRNNConfig(layers=(64, 32, 16), attention_on_first_layer_only=False, chord_dim=12)
    d = cfg.to_dict()
    assert d["layers"] == [64, 32, 16]
    assert MelodyRNNConfig.from_dict(d) == cfg
    with pytest.raises(ValueError):
        MelodyRNNConfig.from_dict({"bogus": 1})


# ------------------------------------------------------------------------------ sampling
def test_sample_is_reproducible_with_a_generator():
    cfg = MelodyRNNConfig(input_size=5, num_classes=5, layers=(8, 8), attn_length=3)
    model = MelodyRNN(cfg)
    primer = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 5).float()
    fn = lambda labels: np.eye(5, dtype=np.float32)[labels[-1]]  # noqa: E731
    a = sample(model, primer, fn, steps=12, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = sample(model, primer, fn, steps=12, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert a == b and len(a) == 12 and all(0 <= k < 5 for k in a)
    assert model.training  # mode restored


# ---- chord inputs added to a model without them (imported attention_rnn bundles) -------------------


@pytest.mark.parametrize("first_only", [True, False])
def test_with_chord_inputs_keeps_the_outputs_and_learns_the_chords(first_only):
    torch.manual_seed(3)
    base = MelodyRNN(MelodyRNNConfig(layers=(12, 10), attn_length=4, attention_on_first_layer_only=first_only)).eval()
    wide = base.with_chord_inputs(25).eval()
    assert wide.config.chord_dim == 25 and wide.config.first_input_size == 99
    x = torch.randn(3, 9, 74)
    want, _ = base(x)
    for chords in (torch.zeros(3, 9, 25), torch.rand(3, 9, 25)):
        got, _ = wide(x, chords=chords)
        assert torch.allclose(got, want, atol=1e-5)
    wide.train()
    wide(x, chords=torch.rand(3, 9, 25))[0].sum().backward()
    assert wide.attn_cell.cells[0].weight_ih.grad[:, 74:].abs().sum() > 0  # the new inputs learn
    with pytest.raises(ValueError, match="already has chord inputs"):
        wide.with_chord_inputs(25)
