"""MusicVAE (trance_assets.models.musicvae): tiny sizes, CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trance_assets.models.musicvae import (
    DEPTH,
    LSTMBlockLayer,
    MusicVAE,
    MusicVAEConfig,
    classes_to_events,
    events_to_classes,
    kl_standard_normal,
    make_optimizer,
    one_hot,
    slerp,
    train_step,
)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_config(**kw) -> MusicVAEConfig:
    base = dict(
        steps_per_bar=4,
        bars=2,
        enc_sizes=(16, 12),
        z_size=6,
        conductor_sizes=(10, 8),
        dec_sizes=(12, 10),
        free_bits=0.0,
    )
    base.update(kw)
    return MusicVAEConfig(**base)


def tiny_model(seed: int = 0, **kw) -> MusicVAE:
    torch.manual_seed(seed)
    m = MusicVAE(tiny_config(**kw))
    # non-zero biases so that bias handling is exercised everywhere
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.3, 0.3)
    return m.eval()


def random_classes(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, DEPTH, (b, t), generator=g)


# ----------------------------------------------------------------------------- encoding


def test_events_classes_round_trip_and_one_hot():
    events = [-2, -1, 21, 60, 108, -2]
    cl = events_to_classes(events)
    assert cl.tolist() == [0, 1, 2, 41, 89, 0]
    assert classes_to_events(cl) == events
    oh = one_hot(cl)
    assert oh.shape == (6, 90) and oh.dtype == torch.float32
    assert oh.sum().item() == 6 and oh[3, 41] == 1
    with pytest.raises(ValueError):
        events_to_classes([20])
    with pytest.raises(ValueError):
        events_to_classes([109])


def test_config_defaults_and_dict_round_trip():
    c = MusicVAEConfig()
    assert (c.depth, c.steps, c.bars, c.z_size) == (90, 256, 16, 512)
    assert c.enc_sizes == (2048, 2048) and c.conductor_sizes == (1024, 1024) and c.dec_sizes == (1024, 1024)
    assert c.free_bits == 256 and c.max_beta == 0.2
    c2 = MusicVAEConfig.from_dict(c.to_dict())
    assert c2 == c
    t = tiny_config()
    assert MusicVAEConfig.from_dict(t.to_dict()) == t


# ----------------------------------------------------------------------------- schedules


def test_beta_schedule():
    c = MusicVAEConfig()
    assert c.beta(0) == 0.0
    assert c.beta(2500) == pytest.approx(0.05)
    assert c.beta(5000) == pytest.approx(0.1)
    assert c.beta(10000) == pytest.approx(0.1)
    assert MusicVAEConfig(beta_anneal_steps=0, beta_max=0.2).beta(0) == 0.2


def test_lr_schedule():
    c = MusicVAEConfig()
    assert c.lr(0) == pytest.approx(1e-3)
    assert c.lr(10000) == pytest.approx((1e-3 - 1e-5) * 0.9999**10000 + 1e-5)
    assert c.lr(10000) == pytest.approx(0.99e-3 * math.exp(10000 * math.log(0.9999)) + 1e-5)
    assert c.lr(10**7) == pytest.approx(1e-5)


# ----------------------------------------------------------------------------- shapes


def test_encode_sample_shapes_default_length():
    # 256 steps (16 bars x 16), tiny hidden sizes
    torch.manual_seed(0)
    m = MusicVAE(MusicVAEConfig(enc_sizes=(8,), z_size=4, conductor_sizes=(8,), dec_sizes=(8,))).eval()
    x = one_hot(random_classes(2, 256))
    mu, sigma = m.encode(x)
    assert mu.shape == (2, 4) and sigma.shape == (2, 4)
    assert torch.all(sigma > 0)
    s = m.sample(mu)
    assert s.shape == (2, 256) and s.dtype == torch.int64
    assert int(s.min()) >= 0 and int(s.max()) < 90
    assert m.decode_logits(mu, x).shape == (2, 256, 90)


def test_sigma_positive_and_classes_input_accepted():
    m = tiny_model()
    cl = random_classes(3, 8)
    mu1, s1 = m.encode(cl)
    mu2, s2 = m.encode(one_hot(cl))
    assert torch.all(s1 > 0)
    assert torch.equal(mu1, mu2) and torch.equal(s1, s2)


def test_teacher_forced_logits_match_step_by_step_decoding():
    """decode_logits (bars batched) equals feeding the targets step by step with the cell API."""
    for carry in (True, False):
        m = tiny_model(carry_across_bars=carry)
        cfg = m.config
        cl = random_classes(2, cfg.steps, seed=3)
        x = one_hot(cl)
        z = torch.randn(2, cfg.z_size)
        with torch.no_grad():
            logits = m.decode_logits(z, x)
            cond = m._conductor(z)
            prev = torch.zeros(2, DEPTH)
            ref = []
            for bar in range(cfg.bars):
                emb = cond[:, bar]
                state = m.core.split_state(torch.tanh(m.core_init(emb)))
                if bar > 0 and not carry:
                    prev = torch.zeros(2, DEPTH)
                for k in range(cfg.steps_per_bar):
                    out, state = m.core.step(torch.cat([prev, emb], -1), state)
                    ref.append(m.output_projection(out))
                    prev = x[:, bar * cfg.steps_per_bar + k]
            ref = torch.stack(ref, 1)
        torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_greedy_sample_deterministic_and_consistent_with_teacher_forcing():
    m = tiny_model()
    z = torch.randn(3, m.config.z_size)
    a = m.sample(z)
    b = m.sample(z)
    assert torch.equal(a, b)
    # greedy samples are the argmax of the teacher-forced logits on themselves
    with torch.no_grad():
        logits = m.decode_logits(z, a)
    assert torch.equal(logits.argmax(-1), a)


def test_stochastic_sample_reproducible_with_generator():
    m = tiny_model()
    z = torch.randn(2, m.config.z_size)
    a = m.sample(z, greedy=False, temperature=0.5, generator=torch.Generator().manual_seed(7))
    b = m.sample(z, greedy=False, temperature=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    # very low temperature -> greedy
    c = m.sample(z, greedy=False, temperature=1e-4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, m.sample(z))


# ----------------------------------------------------------------------------- loss


def test_kl_hand_values():
    mu = torch.zeros(2, 5)
    sigma = torch.ones(2, 5)
    assert torch.allclose(kl_standard_normal(mu, sigma), torch.zeros(2))
    # mu=1, sigma=1 per dim: 0.5 each
    assert kl_standard_normal(torch.ones(1, 4), torch.ones(1, 4)).item() == pytest.approx(2.0)
    # sigma=e, mu=0: 0.5(e^2 - 1) - 1
    v = kl_standard_normal(torch.zeros(1, 1), torch.full((1, 1), math.e)).item()
    assert v == pytest.approx(0.5 * (math.e**2 - 1) - 1)


def _fixed_posterior(m: MusicVAE, mu_val: float, sigma_val: float):
    """Make the encoder output a constant (mu, sigma) regardless of input."""
    with torch.no_grad():
        m.mu.kernel.zero_()
        m.mu.bias.fill_(mu_val)
        m.sigma.kernel.zero_()
        m.sigma.bias.fill_(math.log(math.expm1(sigma_val)))  # softplus^-1


def test_loss_terms_hand_checkable():
    m = tiny_model(free_bits=0.0)
    cl = random_classes(2, m.config.steps, seed=5)
    x = one_hot(cl)
    # mu=0, sigma=1 -> KL 0; total = reconstruction
    _fixed_posterior(m, 0.0, 1.0)
    out = m.loss(x, step=5000, generator=torch.Generator().manual_seed(0))
    assert out["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["beta"] == pytest.approx(0.1)
    assert out["total"].item() == pytest.approx(out["reconstruction"].item(), rel=1e-6)
    # reconstruction = mean over batch of the SUM over steps of CE (recompute by hand with same z)
    g = torch.Generator().manual_seed(0)
    mu, sigma = m.encode(x)
    z = mu + sigma * torch.randn(mu.shape, generator=g)
    logits = m.decode_logits(z, x)
    logp = torch.log_softmax(logits, -1)
    ce = -logp.gather(-1, cl.unsqueeze(-1)).squeeze(-1)
    assert out["reconstruction"].item() == pytest.approx(ce.sum(1).mean().item(), rel=1e-5)

    # mu=1 per dim (z=6 dims), sigma=1 -> KL = 3 nats; beta at step 2500 = 0.05
    _fixed_posterior(m, 1.0, 1.0)
    out = m.loss(x, step=2500)
    assert out["kl"].item() == pytest.approx(3.0, rel=1e-5)
    assert out["kl_cost"].item() == pytest.approx(3.0, rel=1e-5)
    assert out["total"].item() == pytest.approx(out["reconstruction"].item() + 0.05 * 3.0, rel=1e-5)
    # step 0 -> beta 0
    out0 = m.loss(x, step=0)
    assert out0["beta"] == 0.0
    assert out0["total"].item() == pytest.approx(out0["reconstruction"].item(), rel=1e-6)


def test_free_bits_hinge():
    # KL = 3 nats; free_bits 5 bits = 3.47 nats -> hinge 0
    m = tiny_model(free_bits=5.0)
    x = one_hot(random_classes(2, m.config.steps))
    _fixed_posterior(m, 1.0, 1.0)
    out = m.loss(x, step=5000)
    assert out["kl"].item() == pytest.approx(3.0, rel=1e-5)
    assert out["kl_cost"].item() == 0.0
    assert out["free_bits"] == 5.0
    assert out["total"].item() == pytest.approx(out["reconstruction"].item(), rel=1e-6)
    # free_bits 2 bits = 2 ln 2 nats -> hinge 3 - 1.386
    m.config.free_bits = 2.0
    out = m.loss(x, step=5000)
    assert out["kl_cost"].item() == pytest.approx(3.0 - 2 * math.log(2), rel=1e-5)


# ----------------------------------------------------------------------------- training


def test_huge_gradient_step_is_zeroed(monkeypatch):
    m = tiny_model()
    opt = make_optimizer(m)
    x = one_hot(random_classes(2, m.config.steps))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    orig = m.loss

    def huge_loss(x, step=0, generator=None):
        out = orig(x, step, generator)
        out["total"] = out["total"] * 1e9
        return out

    monkeypatch.setattr(m, "loss", huge_loss)
    res = train_step(m, opt, x, step=0)
    assert res["zeroed"] and res["grad_norm"] >= 1e4
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a normal step moves the weights and sets the scheduled lr
    monkeypatch.setattr(m, "loss", orig)
    res = train_step(m, opt, x, step=10)
    assert not res["zeroed"]
    assert res["lr"] == pytest.approx(m.config.lr(10))
    assert opt.param_groups[0]["lr"] == pytest.approx(m.config.lr(10))
    assert any(not torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_gradient_clipped_to_global_norm():
    from trance_assets.models.musicvae import clip_gradients

    p1 = torch.nn.Parameter(torch.zeros(2))
    p2 = torch.nn.Parameter(torch.zeros(1))
    p1.grad = torch.tensor([3.0, 0.0])
    p2.grad = torch.tensor([4.0])
    norm, zeroed = clip_gradients([p1, p2], 1.0, 1e4)
    assert norm == pytest.approx(5.0) and not zeroed
    torch.testing.assert_close(p1.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(p2.grad, torch.tensor([0.8]))
    p1.grad = torch.tensor([1e4, 0.0])
    norm, zeroed = clip_gradients([p1, p2], 1.0, 1e4)
    assert zeroed and torch.count_nonzero(p1.grad) == 0 and torch.count_nonzero(p2.grad) == 0


def test_training_reduces_loss_and_improves_reconstruction():
    torch.manual_seed(0)
    cfg = tiny_config(
        enc_sizes=(32,), z_size=8, conductor_sizes=(32,), dec_sizes=(48,), learning_rate=1e-2, min_learning_rate=1e-4
    )
    m = MusicVAE(cfg)
    # 4 tiny melodies of 8 steps: repeated simple figures
    mel = [
        [60, -2, 62, -2, 64, -2, 65, -1],
        [72, -2, -2, -2, 71, -2, -2, -1],
        [48, 52, 55, 60, 55, 52, 48, -1],
        [67, -1, 67, -1, 69, -2, 67, -2],
    ]
    x = one_hot(np.stack([events_to_classes(e) for e in mel]))
    target = x.argmax(-1)

    def recon_acc() -> float:
        m.eval()
        return (m.reconstruct(x) == target).float().mean().item()

    g = torch.Generator().manual_seed(0)
    opt = make_optimizer(m)
    acc0 = recon_acc()
    losses = []
    for step in range(120):
        losses.append(train_step(m, opt, x, step, generator=g)["total"])
    acc1 = recon_acc()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert acc1 > acc0
    assert acc1 >= 0.75


# ----------------------------------------------------------------------------- latent ops


def test_slerp_endpoints_and_right_angle():
    z0 = torch.tensor([[1.0, 0.0]])
    z1 = torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    h = math.sqrt(0.5)
    torch.testing.assert_close(slerp(z0, z1, 0.5), torch.tensor([[h, h]]))
    c = math.cos(math.pi / 6)
    torch.testing.assert_close(slerp(z0, z1, 1.0 / 3.0), torch.tensor([[c, 0.5]]))
    # different norms: endpoints still exact
    a, b = torch.randn(3, 5), torch.randn(3, 5) * 3
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    # parallel vectors fall back to lerp (no NaN)
    out = slerp(a, 2 * a, 0.5)
    torch.testing.assert_close(out, 1.5 * a)


def test_interpolate_endpoints_are_reconstructions():
    m = tiny_model()
    x0 = one_hot(random_classes(1, m.config.steps, seed=1))
    x1 = one_hot(random_classes(1, m.config.steps, seed=2))
    out = m.interpolate(x0, x1, 5)
    assert out.shape == (5, m.config.steps)
    assert torch.equal(out[0], m.reconstruct(x0)[0])
    assert torch.equal(out[-1], m.reconstruct(x1)[0])


def test_variations_zero_noise_equal_mean_decode():
    m = tiny_model()
    x = one_hot(random_classes(1, m.config.steps, seed=4))
    v = m.variations(x, 3, noise_scale=0.0, generator=torch.Generator().manual_seed(0))
    r = m.reconstruct(x)
    assert v.shape == (3, m.config.steps)
    for row in v:
        assert torch.equal(row, r[0])
    v1 = m.variations(x, 3, noise_scale=5.0, generator=torch.Generator().manual_seed(0))
    v2 = m.variations(x, 3, noise_scale=5.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(v1, v2)


# ----------------------------------------------------------------------------- TF compatibility


def _np_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_lstm_block_cell(xs, kernel, bias, h0, c0, forget_bias=1.0):
    """Independent NumPy LSTMBlockCell: [x, h] @ kernel + bias, gates (i, ci, f, o)."""
    h, c = h0.astype(np.float64), c0.astype(np.float64)
    kernel = kernel.astype(np.float64)
    bias = bias.astype(np.float64)
    hs = []
    n = kernel.shape[1] // 4
    for t in range(xs.shape[1]):
        g = np.concatenate([xs[:, t].astype(np.float64), h], axis=1) @ kernel + bias
        i, ci, f, o = g[:, :n], g[:, n : 2 * n], g[:, 2 * n : 3 * n], g[:, 3 * n :]
        c = _np_sigmoid(f + forget_bias) * c + _np_sigmoid(i) * np.tanh(ci)
        h = _np_sigmoid(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), h, c


def test_lstm_block_cell_matches_numpy_reference():
    rng = np.random.default_rng(0)
    b, t, i_size, h_size = 3, 7, 5, 4
    kernel = rng.normal(0, 0.7, (i_size + h_size, 4 * h_size)).astype(np.float32)
    bias = rng.normal(0, 0.5, (4 * h_size,)).astype(np.float32)
    xs = rng.normal(0, 1, (b, t, i_size)).astype(np.float32)
    h0 = rng.normal(0, 0.5, (b, h_size)).astype(np.float32)
    c0 = rng.normal(0, 0.5, (b, h_size)).astype(np.float32)
    layer = LSTMBlockLayer(i_size, h_size)
    with torch.no_grad():
        layer.kernel.copy_(torch.from_numpy(kernel))
        layer.bias.copy_(torch.from_numpy(bias))
    ref_out, ref_h, ref_c = np_lstm_block_cell(xs, kernel, bias, h0, c0)
    with torch.no_grad():
        out, (c, h) = layer(torch.from_numpy(xs), (torch.from_numpy(c0), torch.from_numpy(h0)))
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-5)
    np.testing.assert_allclose(h.numpy(), ref_h, atol=1e-5)
    np.testing.assert_allclose(c.numpy(), ref_c, atol=1e-5)
    # single-step API agrees
    with torch.no_grad():
        h1, (c1, _) = layer.step(torch.from_numpy(xs[:, 0]), (torch.from_numpy(c0), torch.from_numpy(h0)))
    np.testing.assert_allclose(h1.numpy(), ref_out[:, 0], atol=1e-5)
    # reverse direction = forward over the time-reversed input
    ref_rev, _, _ = np_lstm_block_cell(xs[:, ::-1], kernel, bias, h0, c0)
    with torch.no_grad():
        out_r, _ = layer(torch.from_numpy(xs), (torch.from_numpy(c0), torch.from_numpy(h0)), reverse=True)
    np.testing.assert_allclose(out_r.numpy()[:, ::-1], ref_rev, atol=1e-5)


def test_encoder_matches_numpy_bidirectional_reference():
    m = tiny_model()
    tf = m.export_tf_weights()
    cl = random_classes(2, m.config.steps, seed=9)
    x = one_hot(cl).numpy()
    h = x
    for k in range(len(m.config.enc_sizes)):
        outs = {}
        for d in ("fw", "bw"):
            p = f"encoder/cell_{k}/bidirectional_rnn/{d}/multi_rnn_cell/cell_0/lstm_cell"
            n = tf[p + "/kernel"].shape[1] // 4
            z = np.zeros((2, n))
            seq = h if d == "fw" else h[:, ::-1]
            o, hf, _ = np_lstm_block_cell(seq, tf[p + "/kernel"], tf[p + "/bias"], z, z)
            outs[d] = (o if d == "fw" else o[:, ::-1], hf)
        h = np.concatenate([outs["fw"][0], outs["bw"][0]], -1)
    final = np.concatenate([outs["fw"][1], outs["bw"][1]], -1)
    mu_ref = final @ tf["encoder/mu/kernel"] + tf["encoder/mu/bias"]
    pre = final @ tf["encoder/sigma/kernel"] + tf["encoder/sigma/bias"]
    sigma_ref = np.log1p(np.exp(pre))
    mu, sigma = m.encode(torch.from_numpy(x))
    np.testing.assert_allclose(mu.detach().numpy(), mu_ref, atol=1e-5)
    np.testing.assert_allclose(sigma.detach().numpy(), sigma_ref, atol=1e-5)


def test_tf_export_import_round_trip_and_shapes():
    m = tiny_model()
    tf = m.export_tf_weights()
    assert "encoder/cell_1/bidirectional_rnn/bw/multi_rnn_cell/cell_0/lstm_cell/kernel" in tf
    assert tf["encoder/cell_0/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/kernel"].shape == (90 + 16, 64)
    assert tf["encoder/cell_1/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/kernel"].shape == (32 + 12, 48)
    assert tf["encoder/mu/kernel"].shape == (24, 6)
    assert tf["decoder/hierarchical_level_0/initial_state/kernel"].shape == (6, 2 * (10 + 8))
    assert tf["decoder/hierarchical_level_0/multi_rnn_cell/cell_0/lstm_cell/kernel"].shape == (1 + 10, 40)
    assert tf["core_decoder/decoder/z_to_initial_state/kernel"].shape == (8, 2 * (12 + 10))
    assert tf["core_decoder/decoder/multi_rnn_cell/cell_0/lstm_cell/kernel"].shape == (90 + 8 + 12, 48)
    assert tf["core_decoder/decoder/output_projection/kernel"].shape == (10, 90)

    cfg = MusicVAEConfig.from_tf_shapes({k: v.shape for k, v in tf.items()}, steps_per_bar=4, bars=2)
    for f in ("depth", "enc_sizes", "z_size", "conductor_sizes", "conductor_input_size", "dec_sizes"):
        assert getattr(cfg, f) == getattr(m.config, f), f

    # aliases and unrelated variables (global_step, Adam slots) are accepted / ignored
    aliased = {}
    for k, v in tf.items():
        k2 = k.replace("decoder/hierarchical_level_0/multi_rnn_cell/", "decoder/hierarchical_level_0/")
        if k2.startswith("core_decoder/"):
            k2 = "decoder/" + k2
        aliased[k2] = v
    aliased["global_step"] = np.array(7)
    aliased["encoder/mu/kernel/Adam"] = np.zeros_like(tf["encoder/mu/kernel"])
    m2 = MusicVAE.from_tf_weights(aliased, steps_per_bar=4, bars=2, free_bits=0.0).eval()
    for k, v in m2.export_tf_weights().items():
        assert np.array_equal(v, tf[k]), k
    x = one_hot(random_classes(2, m.config.steps, seed=11))
    z = torch.randn(2, m.config.z_size)
    with torch.no_grad():
        assert torch.equal(m.encode(x)[0], m2.encode(x)[0])
        assert torch.equal(m.encode(x)[1], m2.encode(x)[1])
        assert torch.equal(m.decode_logits(z, x), m2.decode_logits(z, x))
    assert torch.equal(m.sample(z), m2.sample(z))

    # missing / mis-shaped tensors are rejected
    broken = dict(tf)
    del broken["encoder/mu/bias"]
    with pytest.raises(ValueError, match="missing"):
        MusicVAE(m.config).load_tf_weights(broken)
    bad = dict(tf)
    bad["encoder/mu/bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="shape"):
        MusicVAE(m.config).load_tf_weights(bad)


def test_save_load_round_trip(tmp_path):
    m = tiny_model()
    d = m.save(tmp_path / "vae")
    assert (d / "config.json").exists()
    m2 = MusicVAE.load(d).eval()
    assert m2.config == m.config
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    x = one_hot(random_classes(2, m.config.steps, seed=12))
    assert torch.equal(m.reconstruct(x), m2.reconstruct(x))
