"""Magenta checkpoints in, PyTorch modules out: `.mag` bundles for the Melody RNN and V2 checkpoints
for MusicVAE, written by the tests in those formats (no TensorFlow) and read back through the public
entry points; the imported modules compute exactly what the exporting ones did."""

import numpy as np
import torch

from trance_assets.models.melody_rnn import MelodyRNN, MelodyRNNConfig
from trance_assets.models.musicvae import MusicVAE, MusicVAEConfig, one_hot
from trance_assets.models.tf_checkpoint import write_mag_bundle, write_v2_checkpoint


def test_melody_rnn_from_a_mag_bundle(tmp_path):
    torch.manual_seed(0)
    source = MelodyRNN(MelodyRNNConfig(layers=(16, 16), attn_length=8)).eval()
    tensors = source.export_tf_weights()
    tensors["global_step"] = np.array(1234, dtype=np.int64)  # bundles carry it; it is ignored
    path = tmp_path / "attention_rnn.mag"
    write_mag_bundle(path, tensors, "attention_rnn", description="test bundle")
    imported = MelodyRNN.from_magenta_bundle(path, attn_length=8).eval()
    assert imported.config.layers == (16, 16)
    x = torch.randn(2, 9, 74, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _ = source(x)
        got, _ = imported(x)
    assert got.shape == (2, 9, 40)
    assert torch.equal(want, got)
    assert torch.allclose(torch.softmax(got, -1), torch.softmax(want, -1))


def test_musicvae_from_a_v2_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = MusicVAEConfig(bars=2, enc_sizes=(12,), z_size=6, conductor_sizes=(10,), dec_sizes=(10,))
    source = MusicVAE(cfg).eval()
    prefix = tmp_path / "model.ckpt-3000"
    write_v2_checkpoint(prefix, source.export_tf_weights())
    imported = MusicVAE.from_magenta_checkpoint(prefix, bars=2).eval()
    assert imported.config.z_size == 6 and imported.config.enc_sizes == (12,)
    classes = torch.randint(0, 90, (3, 32), generator=torch.Generator().manual_seed(2))
    x = one_hot(classes)
    with torch.no_grad():
        mu_a, sigma_a = source.encode(x)
        mu_b, sigma_b = imported.encode(x)
        assert torch.equal(mu_a, mu_b) and torch.equal(sigma_a, sigma_b)
        assert torch.equal(source.sample(mu_a, greedy=True), imported.sample(mu_b, greedy=True))
