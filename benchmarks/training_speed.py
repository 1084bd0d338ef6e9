"""Training speed of the two model families on this machine: optimiser steps per second, CPU, torch
threads = 2, plus generation latency.

What is timed (each after 2 warm-up steps, then >= 10 timed steps, wall clock, mean steps/s):

- Melody RNN (`attention_rnn`, `models.melody_rnn.train_step`: forward over every time step with the
  TF-exact cell + attention, masked cross-entropy, backward, per-tensor clip 3.0, Adam step) at the
  real size (74 inputs, layers 128/128, 40 classes, attention length 40) on batches of 32 x 128
  steps and of the plan's batch (64) x 128 steps, and at a tiny size (layers 32/32, attention 8,
  batch 32 x 128).
- MusicVAE (`models.musicvae.train_step`: bidirectional encoder, sampled z, conductor, teacher-
  forced decoder, loss with free bits, backward, global-norm clip, Adam step) at a small CPU size
  (encoder (256,), z 128, conductor (256,), decoder (256,)) on batches of 8 x 256 steps. The
  published `hierdec-mel_16bar` size (encoder 2048x2, conductor / decoder 1024x2, z 512, ~176 M
  parameters) is a GPU model; it is timed only when CUDA is available.

Baseline, measured in the same run on the same batches: the same topology built from the fused
`torch.nn.LSTM` op (one call per layer over the whole sequence, no attention), forward + loss +
backward + Adam step. The ratio ours / fused (steps/s) is the number that travels between machines:
it is the price of the step-by-step, TF-exact cells (and, for the Melody RNN, of attention, which
the fused baseline does not have).

Inputs are real: rule-engine melodies (`music.rules.generate`) -> NoteSequences
(`formats.notesequence.melody_to_notesequence`) -> `models.datasets.melody_rnn_examples` /
`musicvae_examples` -> `pad_batch`.

Generation latency (mean of 5, one melody each): `melody_rnn.sample` of 256 steps (16 bars) after a
1-bar primer at the real size, with the encoder computing each next input; `MusicVAE.sample` (16
bars, 256 steps, temperature 1) from a random z at the small size.

Run: `.venv/bin/python benchmarks/training_speed.py` (writes benchmarks/results/training_speed.json).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from trance_assets.formats.notesequence import melody_to_notesequence  # noqa: E402
from trance_assets.models import melody_rnn as mr  # noqa: E402
from trance_assets.models import musicvae as mv  # noqa: E402
from trance_assets.models.datasets import melody_rnn_examples, musicvae_examples, pad_batch  # noqa: E402
from trance_assets.generation.models import sample_rnn_events  # noqa: E402
from trance_assets.models.melody_encoding import KeyMelodyEncoderDecoder, squash  # noqa: E402
from trance_assets.music.rules import generate  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "training_speed.json"
THREADS = 2
WARMUP = 2
TIMED = 10
KEYS = ["Am", "Em", "Dm", "Cm", "Gm", "F#m", "Bm", "C", "G", "F"]


def timed_steps(step_fn, warmup: int = WARMUP, timed: int = TIMED, sync=None) -> dict:
    for _ in range(warmup):
        step_fn()
    if sync:
        sync()
    t0 = time.perf_counter()
    for _ in range(timed):
        step_fn()
    if sync:
        sync()
    dt = time.perf_counter() - t0
    return {"timed_steps": timed, "seconds": round(dt, 3), "steps_per_s": round(timed / dt, 3), "seconds_per_step": round(dt / timed, 4)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ data
def notesequences(n: int, bars: int) -> list:
    out = []
    for i in range(n):
        m = generate(key=KEYS[i % len(KEYS)], bpm=138, bars=bars, seed=1000 + i)
        out.append(melody_to_notesequence(m, id=f"rules-{i}"))
    return out


def melody_rnn_batch(examples: list[dict], batch: int, steps: int, device=None) -> dict:
    long = [e for e in examples if e["length"] >= steps]
    if len(long) < batch:
        long = sorted(examples, key=lambda e: -e["length"])
    picked = [long[i % len(long)] for i in range(batch)]
    return pad_batch(picked, max_len=steps, device=device)


# ------------------------------------------------------------------------------------ fused baselines
class FusedMelodyRNN(nn.Module):
    """Same layer sizes as the Melody RNN, fused `nn.LSTM`, no attention."""

    def __init__(self, cfg: mr.MelodyRNNConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(cfg.first_input_size, cfg.layers[0], num_layers=len(cfg.layers), batch_first=True)
        self.out = nn.Linear(cfg.layers[-1], cfg.num_classes)

    def forward(self, x):
        return self.out(self.lstm(x)[0])


def fused_melody_step(model: FusedMelodyRNN, opt, batch: dict) -> float:
    opt.zero_grad(set_to_none=True)
    x = torch.cat([batch["inputs"], batch["chords"]], dim=-1) if "chords" in batch else batch["inputs"]
    loss = mr.masked_cross_entropy(model(x), batch["labels"], batch["lengths"])
    loss.backward()
    opt.step()
    return float(loss.detach())


class FusedMusicVAE(nn.Module):
    """Same sizes as MusicVAE (bi-encoder, conductor, per-bar decoder), fused `nn.LSTM` ops."""

    def __init__(self, cfg: mv.MusicVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc = nn.LSTM(cfg.depth, cfg.enc_sizes[0], num_layers=len(cfg.enc_sizes), batch_first=True, bidirectional=True)
        self.mu = nn.Linear(2 * cfg.enc_sizes[-1], cfg.z_size)
        self.sigma = nn.Linear(2 * cfg.enc_sizes[-1], cfg.z_size)
        self.cond_init = nn.Linear(cfg.z_size, 2 * sum(cfg.conductor_sizes))
        self.conductor = nn.LSTM(cfg.conductor_input_size, cfg.conductor_sizes[0], num_layers=len(cfg.conductor_sizes), batch_first=True)
        self.core_init = nn.Linear(cfg.conductor_sizes[-1], 2 * sum(cfg.dec_sizes))
        self.core = nn.LSTM(cfg.depth + cfg.conductor_sizes[-1], cfg.dec_sizes[0], num_layers=len(cfg.dec_sizes), batch_first=True)
        self.out = nn.Linear(cfg.dec_sizes[-1], cfg.depth)

    @staticmethod
    def _state(flat, n_layers, h):
        s = flat.view(flat.shape[0], n_layers, 2, h).permute(2, 1, 0, 3).contiguous()
        return s[0], s[1]

    def loss(self, classes: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = F.one_hot(classes, cfg.depth).float()
        b = x.shape[0]
        _, (h, _) = self.enc(x)
        final = torch.cat([h[-2], h[-1]], dim=-1)
        mu, sigma = self.mu(final), F.softplus(self.sigma(final))
        z = mu + sigma * torch.randn_like(mu)
        st = self._state(torch.tanh(self.cond_init(z)), len(cfg.conductor_sizes), cfg.conductor_sizes[0])
        cond, _ = self.conductor(z.new_zeros(b, cfg.bars, cfg.conductor_input_size), st)
        prev = torch.cat([x.new_zeros(b, 1, cfg.depth), x[:, :-1]], dim=1).view(b, cfg.bars, cfg.steps_per_bar, cfg.depth)
        emb = cond.unsqueeze(2).expand(b, cfg.bars, cfg.steps_per_bar, cond.shape[-1])
        inp = torch.cat([prev, emb], dim=-1).reshape(b * cfg.bars, cfg.steps_per_bar, -1)
        st = self._state(torch.tanh(self.core_init(cond.reshape(b * cfg.bars, -1))), len(cfg.dec_sizes), cfg.dec_sizes[0])
        out, _ = self.core(inp, st)
        logits = self.out(out).reshape(b, cfg.steps, cfg.depth)
        recon = F.cross_entropy(logits.reshape(-1, cfg.depth), classes.reshape(-1), reduction="none").view(b, -1).sum(-1).mean()
        kl = mv.kl_standard_normal(mu, sigma)
        return recon + 0.1 * torch.clamp(kl - cfg.free_bits * np.log(2.0), min=0.0).mean()


def fused_vae_step(model: FusedMusicVAE, opt, x: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = model.loss(x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


# ------------------------------------------------------------------------------------ families
def bench_melody_rnn(examples: list[dict], cfg: mr.MelodyRNNConfig, batch: int, steps: int, label: str, device="cpu", sync=None) -> dict:
    torch.manual_seed(0)
    data = melody_rnn_batch(examples, batch, steps, device=device)
    model = mr.MelodyRNN(cfg).to(device)
    opt = mr.make_optimizer(model)
    ours = timed_steps(lambda: mr.train_step(model, opt, data), sync=sync)
    base = FusedMelodyRNN(cfg).to(device)
    bopt = torch.optim.Adam(base.parameters(), lr=1e-3)
    fused = timed_steps(lambda: fused_melody_step(base, bopt, data), sync=sync)
    return {
        "label": label,
        "config": cfg.to_dict(),
        "params": n_params(model),
        "batch": batch,
        "steps_per_example": int(data["inputs"].shape[1]),
        "device": str(device),
        "ours_tf_exact_step_by_step": ours,
        "baseline_fused_nn_lstm": {**fused, "params": n_params(base)},
        "ratio_ours_over_fused": round(ours["steps_per_s"] / fused["steps_per_s"], 4),
        "fused_speedup_over_ours": round(fused["steps_per_s"] / ours["steps_per_s"], 2),
    }


def bench_musicvae(x: torch.Tensor, cfg: mv.MusicVAEConfig, label: str, device="cpu", sync=None) -> dict:
    torch.manual_seed(0)
    x = x.to(device)
    model = mv.MusicVAE(cfg).to(device)
    opt = mv.make_optimizer(model)
    gen = torch.Generator().manual_seed(0) if str(device) == "cpu" else None
    counter = iter(range(10**9))
    ours = timed_steps(lambda: mv.train_step(model, opt, x, next(counter), generator=gen), sync=sync)
    base = FusedMusicVAE(cfg).to(device)
    bopt = torch.optim.Adam(base.parameters(), lr=1e-3)
    fused = timed_steps(lambda: fused_vae_step(base, bopt, x), sync=sync)
    return {
        "label": label,
        "config": cfg.to_dict(),
        "params": n_params(model),
        "batch": int(x.shape[0]),
        "steps_per_example": int(x.shape[1]),
        "device": str(device),
        "ours_tf_exact_step_by_step": ours,
        "baseline_fused_nn_lstm": {**fused, "params": n_params(base)},
        "ratio_ours_over_fused": round(ours["steps_per_s"] / fused["steps_per_s"], 4),
        "fused_speedup_over_ours": round(fused["steps_per_s"] / ours["steps_per_s"], 2),
    }


def small_vae_config() -> mv.MusicVAEConfig:
    return mv.MusicVAEConfig(enc_sizes=(256,), z_size=128, conductor_sizes=(256,), dec_sizes=(256,), batch_size=8)


# ------------------------------------------------------------------------------------ latency
def melody_rnn_latency(ns_list: list, runs: int = 5, steps: int = 256) -> dict:
    torch.manual_seed(0)
    model = mr.MelodyRNN(mr.MelodyRNNConfig())
    enc = KeyMelodyEncoderDecoder()
    # 1-bar primer: the first 16 squashed events of a real melody.
    from trance_assets.models.melody_encoding import extract_melodies, quantize_notesequence

    mel = extract_melodies(quantize_notesequence(ns_list[0]), min_bars=7, max_steps=512, min_unique_pitches=5, gap_bars=1)[0]
    primer_events, _ = squash(mel.events)
    primer_events = [int(e) for e in primer_events[:16]]
    primer = torch.from_numpy(enc._inputs(np.asarray(primer_events, dtype=np.int64), len(primer_events)))
    times, fast_times = [], []
    for r in range(runs):
        events = list(primer_events)

        def next_input(labels, events=events):
            events.append(enc.class_to_event(labels[-1], events))
            return enc.events_to_input(events, len(events) - 1)

        g = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        labels = mr.sample(model, primer, next_input, steps, generator=g)
        times.append(time.perf_counter() - t0)
        assert len(labels) == steps
        t0 = time.perf_counter()
        out = sample_rnn_events(model, primer_events, len(primer_events) + steps, None, 1.0, [r])
        fast_times.append(time.perf_counter() - t0)
        assert len(out[0]) == len(primer_events) + steps
    base, fast = float(np.mean(times)), float(np.mean(fast_times))
    return {
        "model": "Melody RNN attention_rnn, real size (74/128x2/40, attn 40), untrained weights",
        "what": f"{steps} steps (16 bars) after a 16-step primer, one melody",
        "runs": runs,
        "baseline_full_prefix": {
            "how": "melody_rnn.sample with KeyMelodyEncoderDecoder.events_to_input (re-encodes the whole prefix every step)",
            "seconds_per_melody_mean": round(base, 4),
            "ms_per_step": round(1000 * base / steps, 3),
        },
        "incremental": {
            "how": "generation.models.sample_rnn_events (IncrementalInputs: one push per event; what the generators use)",
            "seconds_per_melody_mean": round(fast, 4),
            "ms_per_step": round(1000 * fast / steps, 3),
        },
        "speedup_incremental_over_full_prefix": round(base / fast, 2) if fast > 0 else None,
    }


def demo_profile_training() -> list[dict]:
    """Steps/s at the sizes `make demo` trains (profile "demo"), torch threads as the profile sets."""
    from trance_assets.profiles import get_profile

    p = get_profile("demo")
    out = []
    for threads in (p.model_threads or THREADS, THREADS):
        torch.set_num_threads(threads)
        ns = notesequences(48, bars=20)
        rnn_cfg = mr.MelodyRNNConfig.from_dict(p.model_config("melody_rnn"))
        ex = melody_rnn_examples(ns, chord_conditioned=rnn_cfg.chord_dim > 0)
        r = bench_melody_rnn(ex, rnn_cfg, p.melody_rnn_batch_size, p.melody_rnn_max_seq_len or 128,
                             f"demo profile, batch {p.melody_rnn_batch_size} x {p.melody_rnn_max_seq_len} steps, {threads} thread(s)")
        vae_cfg = mv.MusicVAEConfig.from_dict(p.model_config("musicvae"))
        x = torch.from_numpy(musicvae_examples(ns, bars=16, max_per_sequence=5))[: p.musicvae_batch_size]
        v = bench_musicvae(x, vae_cfg, f"demo profile, batch {p.musicvae_batch_size} x 256 steps, {threads} thread(s)")
        steps = {"melody_rnn": sum(p.melody_rnn_steps), "musicvae": sum(p.musicvae_steps)}
        out.append({
            "threads": threads, "melody_rnn": r, "musicvae": v,
            "demo_steps": steps,
            "estimated_training_seconds_without_evaluation": {
                "melody_rnn": round(steps["melody_rnn"] / r["ours_tf_exact_step_by_step"]["steps_per_s"], 1),
                "musicvae": round(steps["musicvae"] / v["ours_tf_exact_step_by_step"]["steps_per_s"], 1),
            },
        })
    torch.set_num_threads(THREADS)
    return out


def hybrid_latency(runs: int = 5) -> dict:
    """One 16-bar melody from the hybrid at demo sizes (default candidate counts), untrained weights."""
    import tempfile

    from trance_assets.generation.base import get_generator
    from trance_assets.profiles import get_profile

    p = get_profile("demo")
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        mr.MelodyRNN(mr.MelodyRNNConfig.from_dict(p.model_config("melody_rnn"))).save(f"{d}/rnn")
        mv.MusicVAE(mv.MusicVAEConfig.from_dict(p.model_config("musicvae"))).save(f"{d}/vae")
        gen = get_generator("hybrid", melody_rnn=f"{d}/rnn", musicvae=f"{d}/vae")
        rules = get_generator("rules")
        times, rule_times = [], []
        for r in range(runs):
            t0 = time.perf_counter()
            m = gen.generate("Am", 140, ["Am", "F", "C", "G"], 16, r)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rules.generate("Am", 140, ["Am", "F", "C", "G"], 16, r)
            rule_times.append(time.perf_counter() - t0)
        candidates = len(m.attributes["candidates"])
    return {
        "what": f"HybridGenerator.generate, 16 bars, {candidates} candidates (rule layout, 4 RNN continuations, 2 VAE samples, "
        "2 variations), each checked and scored; demo-profile model sizes",
        "runs": runs,
        "seconds_per_melody_mean": round(float(np.mean(times)), 4),
        "baseline_rules_seconds_per_melody_mean": round(float(np.mean(rule_times)), 4),
        "ratio_hybrid_over_rules": round(float(np.mean(times)) / float(np.mean(rule_times)), 1),
    }


def musicvae_latency(runs: int = 5) -> dict:
    torch.manual_seed(0)
    cfg = small_vae_config()
    model = mv.MusicVAE(cfg).eval()
    times = []
    for r in range(runs):
        g = torch.Generator().manual_seed(r)
        z = torch.randn(1, cfg.z_size, generator=g)
        t0 = time.perf_counter()
        out = model.sample(z, greedy=False, temperature=1.0, generator=g)
        times.append(time.perf_counter() - t0)
        assert out.shape == (1, cfg.steps)
    return {
        "model": "MusicVAE small CPU size (enc (256,), z 128, conductor (256,), dec (256,)), untrained weights",
        "what": "MusicVAE.sample(z ~ N(0, I), greedy=False, temperature 1): 16 bars, 256 steps, one melody",
        "runs": runs,
        "seconds_per_melody_mean": round(float(np.mean(times)), 4),
        "seconds_per_melody_each": [round(t, 4) for t in times],
        "ms_per_step": round(1000 * float(np.mean(times)) / cfg.steps, 3),
    }


# ------------------------------------------------------------------------------------ main
def main() -> None:
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "method": {
            "warmup_steps": WARMUP,
            "timed_steps": TIMED,
            "steps_per_s": "optimiser steps (forward + loss + backward + clip + Adam) per wall-clock second, mean over the timed steps",
            "baseline": "same topology on fused torch.nn.LSTM (no attention for the Melody RNN), same batch, same run",
            "ratio_ours_over_fused": "ours steps/s divided by fused steps/s (< 1: ours is slower)",
        },
    }

    t0 = time.perf_counter()
    ns_list = notesequences(96, bars=20)
    rnn_examples = melody_rnn_examples(ns_list)
    vae_x = torch.from_numpy(musicvae_examples(ns_list, bars=16, max_per_sequence=5))
    results["data"] = {
        "source": "music.rules.generate (20 bars, 138 BPM, 10 keys, seeds 1000..1095) -> melody_to_notesequence",
        "notesequences": len(ns_list),
        "melody_rnn_examples": len(rnn_examples),
        "melody_rnn_example_lengths": {"min": min(e["length"] for e in rnn_examples), "max": max(e["length"] for e in rnn_examples)},
        "musicvae_examples": int(vae_x.shape[0]),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    vae_batch = vae_x[:8]

    real = mr.MelodyRNNConfig()
    tiny = mr.MelodyRNNConfig(layers=(32, 32), attn_length=8)
    results["melody_rnn"] = [
        bench_melody_rnn(rnn_examples, real, 32, 128, "real size, batch 32 x 128 steps"),
        bench_melody_rnn(rnn_examples, real, 64, 128, "real size, plan's batch 64 (phase-2 plan) x 128 steps"),
        bench_melody_rnn(rnn_examples, tiny, 32, 128, "tiny size (32/32, attn 8), batch 32 x 128 steps"),
    ]
    results["musicvae"] = [bench_musicvae(vae_batch, small_vae_config(), "small CPU size, batch 8 x 256 steps")]
    results["musicvae_published_size_note"] = (
        f"The published hierdec-mel_16bar size (enc 2048x2, z 512, conductor/dec 1024x2, "
        f"{n_params(mv.MusicVAE(mv.MusicVAEConfig())) / 1e6:.1f} M params, plan batch 32) is a GPU model; not timed on CPU."
    )

    results["demo_profile"] = demo_profile_training()
    results["generation_latency"] = {
        "melody_rnn": melody_rnn_latency(ns_list),
        "musicvae": musicvae_latency(),
        "hybrid": hybrid_latency(),
    }

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        sync = torch.cuda.synchronize
        results["gpu"] = {
            "device": torch.cuda.get_device_name(0),
            "melody_rnn": [bench_melody_rnn(rnn_examples, real, 64, 128, "real (published) size, batch 64 x 128, GPU", dev, sync)],
            "musicvae": [bench_musicvae(vae_x[:32] if vae_x.shape[0] >= 32 else vae_x.repeat(32 // vae_x.shape[0] + 1, 1)[:32], mv.MusicVAEConfig(), "published size, batch 32 x 256, GPU", dev, sync)],
        }
    else:
        results["gpu"] = "no GPU"

    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
