"""MusicVAE ``hierdec-mel_16bar`` in PyTorch (domain core, no Dagster imports).

Re-implemented from the public facts in ``shared/docs/MAGENTA-FACTS.md`` (section "MusicVAE");
no Magenta code is copied and TensorFlow is not needed.

Data encoding (Magenta's ``OneHotMelodyConverter``, depth 90)
    class 0 = no-event (melody event -2), class 1 = note-off (event -1),
    class 2 + (p - 21) = note-on of MIDI pitch p, 21 <= p <= 108.  No end token.

Architecture (sizes configurable through :class:`MusicVAEConfig`)
    * Encoder: stacked bidirectional LSTM over all ``steps`` (256) steps.  Layer ``k+1`` reads the
      concatenation ``[fw_out, bw_out]`` of layer ``k`` (TF ``stack_bidirectional_dynamic_rnn``).
      All sequences are full length (no masking).  The final ``h`` of the last layer's forward and
      backward directions are concatenated (fw first) -> ``mu = Dense(z)``,
      ``sigma = softplus(Dense(z))``.
    * Conductor: LSTM stack, initial state ``tanh(Dense(z))``, ``bars`` (16) steps on an all-zero
      input of width ``conductor_input_size`` (default 1; read from the kernel shape when loading).
    * Core decoder: per bar an LSTM stack with initial state ``tanh(Dense(conductor_out))``,
      ``steps_per_bar`` (16) steps, input ``[previous one-hot (depth), conductor_out]`` (in that
      order), output projection ``Dense(depth)``.
    * Initial-state Dense layout (``initial_state`` / ``z_to_initial_state``): ONE Dense whose output
      is split, in order, into ``[c_0, h_0, c_1, h_1, ...]`` (layer by layer, ``c`` before ``h``) --
      the flattening order of a TF ``MultiRNNCell`` state of ``LSTMStateTuple(c, h)``.

"Previous one-hot" across bar boundaries (documented choice)
    Step 0 of bar 0 reads an all-zero vector.  With ``carry_across_bars=True`` (default) step 0 of
    bar ``b > 0`` reads the one-hot of the last step of bar ``b-1`` (the target under teacher forcing,
    the sampled class when sampling); with ``False`` every bar starts from zeros.  Training and
    sampling use the same rule, so either choice is self-consistent.  Within a bar, step ``t`` reads
    the (target / sampled) one-hot of step ``t-1``.

LSTM cells (TF ``LSTMBlockCell`` compatible, own implementation, not ``torch.nn.LSTM``)
    Each layer stores exactly TF's parameters: ``kernel [input + hidden, 4*hidden]`` over ``[x, h]``
    and ``bias [4*hidden]``, gate blocks in order ``i, ci, f, o``.  A step computes
    ``g = [x, h] @ kernel + bias``; ``c' = sig(f + 1.0) * c + sig(i) * tanh(ci)``;
    ``h' = sig(o) * tanh(c')`` (forget bias 1.0 added at run time, no peepholes, no cell clip).
    Storing the TF layout makes TF import / export bit-exact.  Dense layers likewise store TF's
    ``kernel [in, out]`` / ``bias [out]`` and compute ``x @ kernel + bias``.

TF variable names (see :func:`tf_variable_names`).  Names the facts pin are used verbatim; where they
abbreviate, this module chooses (and ``export_tf_weights`` writes) the following, and
``load_tf_weights`` also accepts the listed aliases:

    encoder/cell_{k}/bidirectional_rnn/{fw,bw}/multi_rnn_cell/cell_0/lstm_cell/{kernel,bias}
    encoder/{mu,sigma}/{kernel,bias}
    decoder/hierarchical_level_0/initial_state/{kernel,bias}
    decoder/hierarchical_level_0/multi_rnn_cell/cell_{i}/lstm_cell/{kernel,bias}
        alias: decoder/hierarchical_level_0/cell_{i}/lstm_cell/...
    core_decoder/decoder/z_to_initial_state/{kernel,bias}
    core_decoder/decoder/multi_rnn_cell/cell_{i}/lstm_cell/{kernel,bias}
    core_decoder/decoder/output_projection/{kernel,bias}
        alias for the three core_decoder entries: prefix "decoder/" (decoder/core_decoder/decoder/...)

Other checkpoint variables (``global_step``, optimizer slots ``.../Adam``, ``beta1_power`` ...) are
ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint_io import load_model_dir, save_model_dir

# --------------------------------------------------------------------------------------------
# Data encoding
# --------------------------------------------------------------------------------------------

MELODY_NO_EVENT = -2
MELODY_NOTE_OFF = -1
MIN_PITCH = 21
MAX_PITCH = 108
NUM_SPECIAL_CLASSES = 2
DEPTH = NUM_SPECIAL_CLASSES + MAX_PITCH - MIN_PITCH + 1  # 90


def events_to_classes(events: Sequence[int]) -> np.ndarray:
    """Melody events (-2 no-event, -1 note-off, 21..108 note-on) -> classes 0..89 (int64)."""
    ev = np.asarray(list(events), dtype=np.int64)
    out = np.empty_like(ev)
    special = ev < 0
    if np.any((ev < MELODY_NO_EVENT)):
        raise ValueError("melody events must be >= -2")
    if np.any(~special & ((ev < MIN_PITCH) | (ev > MAX_PITCH))):
        raise ValueError(f"note-on pitch outside [{MIN_PITCH}, {MAX_PITCH}]")
    out[special] = ev[special] - MELODY_NO_EVENT
    out[~special] = ev[~special] - MIN_PITCH + NUM_SPECIAL_CLASSES
    return out


def classes_to_events(classes: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
    """Inverse of :func:`events_to_classes`."""
    if isinstance(classes, torch.Tensor):
        classes = classes.detach().cpu().numpy()
    cl = np.asarray(classes, dtype=np.int64).reshape(-1)
    if np.any((cl < 0) | (cl >= DEPTH)):
        raise ValueError(f"classes must lie in [0, {DEPTH})")
    return [
        int(c + MELODY_NO_EVENT) if c < NUM_SPECIAL_CLASSES else int(c - NUM_SPECIAL_CLASSES + MIN_PITCH)
        for c in cl
    ]


def one_hot(classes: Any, depth: int = DEPTH) -> torch.Tensor:
    """Classes (list / ndarray / LongTensor, any shape) -> float32 one-hot ``[..., depth]``."""
    t = torch.as_tensor(np.asarray(classes) if not isinstance(classes, torch.Tensor) else classes)
    return F.one_hot(t.long(), depth).to(torch.float32)


# --------------------------------------------------------------------------------------------
# Config and schedules
# --------------------------------------------------------------------------------------------


@dataclass
class MusicVAEConfig:
    """Hyper-parameters.  Defaults = published ``hierdec-mel_16bar`` sizes + the plan's β schedule."""

    depth: int = DEPTH
    steps_per_bar: int = 16
    bars: int = 16
    enc_sizes: tuple[int, ...] = (2048, 2048)  # per direction
    z_size: int = 512
    conductor_sizes: tuple[int, ...] = (1024, 1024)
    conductor_input_size: int = 1
    dec_sizes: tuple[int, ...] = (1024, 1024)
    carry_across_bars: bool = True
    # loss
    free_bits: float = 256.0
    max_beta: float = 0.2  # upstream constant β (recorded; the plan's schedule below is used)
    beta_max: float = 0.1
    beta_anneal_steps: int = 5000  # 0 -> constant beta_max
    # optimisation
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    decay_rate: float = 0.9999
    clip_norm: float = 1.0
    grad_norm_clip_to_zero: float = 1e4
    batch_size: int = 32
    forget_bias: float = 1.0

    def __post_init__(self) -> None:
        self.enc_sizes = tuple(int(s) for s in self.enc_sizes)
        self.conductor_sizes = tuple(int(s) for s in self.conductor_sizes)
        self.dec_sizes = tuple(int(s) for s in self.dec_sizes)

    @property
    def steps(self) -> int:
        return self.steps_per_bar * self.bars

    def beta(self, step: int) -> float:
        """0 -> ``beta_max`` linearly over ``beta_anneal_steps``, then constant."""
        if self.beta_anneal_steps <= 0:
            return float(self.beta_max)
        return float(self.beta_max) * min(max(float(step), 0.0) / self.beta_anneal_steps, 1.0)

    def lr(self, step: int) -> float:
        """(lr - min_lr) * decay**step + min_lr."""
        return (self.learning_rate - self.min_learning_rate) * self.decay_rate ** float(step) + (
            self.min_learning_rate
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("enc_sizes", "conductor_sizes", "dec_sizes"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MusicVAEConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown MusicVAEConfig keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_tf_shapes(cls, shapes: Mapping[str, Sequence[int]], **overrides: Any) -> "MusicVAEConfig":
        """Infer sizes from TF variable shapes (``{name: shape}``); ``overrides`` set the rest."""
        shapes = {_canonical_tf_name(k): tuple(int(s) for s in v) for k, v in shapes.items()}

        def stack(prefix_fmt: str) -> list[tuple[int, int]]:
            out = []
            i = 0
            while (key := prefix_fmt.format(i) + "/kernel") in shapes:
                rows, cols = shapes[key]
                out.append((rows, cols // 4))
                i += 1
            return out

        enc = stack("encoder/cell_{}/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell")
        cond = stack("decoder/hierarchical_level_0/multi_rnn_cell/cell_{}/lstm_cell")
        dec = stack("core_decoder/decoder/multi_rnn_cell/cell_{}/lstm_cell")
        if not enc or not cond or not dec:
            raise ValueError("shapes lack encoder / conductor / core decoder LSTM kernels")
        z_size = shapes["encoder/mu/kernel"][1]
        depth = shapes["core_decoder/decoder/output_projection/kernel"][1]
        kw: dict[str, Any] = dict(
            depth=depth,
            enc_sizes=tuple(h for _, h in enc),
            z_size=z_size,
            conductor_sizes=tuple(h for _, h in cond),
            conductor_input_size=cond[0][0] - cond[0][1],
            dec_sizes=tuple(h for _, h in dec),
        )
        kw.update(overrides)
        cfg = cls(**kw)
        expected_dec_in = cfg.depth + cfg.conductor_sizes[-1]
        if dec[0][0] - dec[0][1] != expected_dec_in:
            raise ValueError(
                f"core decoder input width {dec[0][0] - dec[0][1]} != depth + conductor ({expected_dec_in})"
            )
        return cfg


# --------------------------------------------------------------------------------------------
# Building blocks (TF layouts)
# --------------------------------------------------------------------------------------------


class TFDense(nn.Module):
    """``y = x @ kernel + bias`` with TF's ``kernel [in, out]`` layout."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (in_features + out_features))  # glorot uniform (TF default)
        self.kernel = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel + self.bias


class LSTMBlockLayer(nn.Module):
    """One TF ``LSTMBlockCell`` layer: ``kernel [in + hidden, 4*hidden]`` over ``[x, h]``, gates i, ci, f, o."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)
        bound = math.sqrt(6.0 / (input_size + hidden_size + 4 * hidden_size))
        self.kernel = nn.Parameter(
            torch.empty(input_size + hidden_size, 4 * hidden_size).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))

    def _cell(self, gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = gx + h @ self.kernel[self.input_size :]
        i, ci, f, o = g.chunk(4, dim=-1)
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(ci)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def step(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step; ``state = (c, h)``; returns ``(h, (c, h))``."""
        c, h = state
        gx = x @ self.kernel[: self.input_size] + self.bias
        h, c = self._cell(gx, h, c)
        return h, (c, h)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x [B, T, in]`` -> outputs ``[B, T, H]`` (in input time order) and final ``(c, h)``."""
        b, t, _ = x.shape
        if state is None:
            z = x.new_zeros(b, self.hidden_size)
            state = (z, z)
        c, h = state
        gx = x @ self.kernel[: self.input_size] + self.bias  # input part for all steps at once
        outs: list[torch.Tensor] = [None] * t  # type: ignore[list-item]
        order = range(t - 1, -1, -1) if reverse else range(t)
        for k in order:
            h, c = self._cell(gx[:, k], h, c)
            outs[k] = h
        return torch.stack(outs, dim=1), (c, h)


class LSTMStack(nn.Module):
    """``MultiRNNCell`` of :class:`LSTMBlockLayer`; state = list of ``(c, h)`` per layer."""

    def __init__(self, input_size: int, sizes: Sequence[int], forget_bias: float = 1.0) -> None:
        super().__init__()
        layers = []
        for s in sizes:
            layers.append(LSTMBlockLayer(input_size, s, forget_bias))
            input_size = s
        self.layers = nn.ModuleList(layers)

    @property
    def state_sizes(self) -> list[int]:
        """Flattened state sizes in TF order ``[c0, h0, c1, h1, ...]``."""
        return [s for layer in self.layers for s in (layer.hidden_size, layer.hidden_size)]

    def split_state(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        parts = torch.split(flat, self.state_sizes, dim=-1)
        return [(parts[2 * k], parts[2 * k + 1]) for k in range(len(self.layers))]

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]):
        new_state = []
        for layer, st in zip(self.layers, state):
            x, st = layer.step(x, st)
            new_state.append(st)
        return x, new_state

    def forward(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]):
        new_state = []
        for layer, st in zip(self.layers, state):
            x, st = layer(x, st)
            new_state.append(st)
        return x, new_state


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last dim; falls back to lerp for (anti)parallel vectors."""
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    n0 = z0 / z0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n1 = z1 / z1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dot = (n0 * n1).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(dot)
    so = torch.sin(omega)
    lerp = (1 - t) * z0 + t * z1
    safe = so.abs() > 1e-6
    so_safe = torch.where(safe, so, torch.ones_like(so))
    out = torch.sin((1 - t) * omega) / so_safe * z0 + torch.sin(t * omega) / so_safe * z1
    return torch.where(safe, out, lerp)


class MusicVAE(nn.Module):
    def __init__(self, config: MusicVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MusicVAEConfig()
        fb = cfg.forget_bias
        enc_fw, enc_bw = [], []
        in_size = cfg.depth
        for s in cfg.enc_sizes:
            enc_fw.append(LSTMBlockLayer(in_size, s, fb))
            enc_bw.append(LSTMBlockLayer(in_size, s, fb))
            in_size = 2 * s
        self.enc_fw = nn.ModuleList(enc_fw)
        self.enc_bw = nn.ModuleList(enc_bw)
        self.mu = TFDense(2 * cfg.enc_sizes[-1], cfg.z_size)
        self.sigma = TFDense(2 * cfg.enc_sizes[-1], cfg.z_size)
        self.conductor = LSTMStack(cfg.conductor_input_size, cfg.conductor_sizes, fb)
        self.conductor_init = TFDense(cfg.z_size, 2 * sum(cfg.conductor_sizes))
        self.core = LSTMStack(cfg.depth + cfg.conductor_sizes[-1], cfg.dec_sizes, fb)
        self.core_init = TFDense(cfg.conductor_sizes[-1], 2 * sum(cfg.dec_sizes))
        self.output_projection = TFDense(cfg.dec_sizes[-1], cfg.depth)

    # ---------------------------------------------------------------- helpers
    def _as_one_hot(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
        dev = self.mu.kernel.device
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            x = one_hot(x, self.config.depth)
        x = x.to(device=dev, dtype=torch.float32)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.shape[1:] != (self.config.steps, self.config.depth):
            raise ValueError(f"expected [B, {self.config.steps}, {self.config.depth}], got {tuple(x.shape)}")
        return x

    # ---------------------------------------------------------------- encoder
    def encode(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot ``[B, 256, 90]`` (or classes ``[B, 256]``) -> ``(mu, sigma)`` each ``[B, z]``."""
        h = self._as_one_hot(x)
        for fw, bw in zip(self.enc_fw, self.enc_bw):
            out_f, (_, h_f) = fw(h)
            out_b, (_, h_b) = bw(h, reverse=True)
            h = torch.cat([out_f, out_b], dim=-1)
        final = torch.cat([h_f, h_b], dim=-1)
        return self.mu(final), F.softplus(self.sigma(final))

    # ---------------------------------------------------------------- decoder
    def _conductor(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        state = self.conductor.split_state(torch.tanh(self.conductor_init(z)))
        zeros = z.new_zeros(z.shape[0], cfg.bars, cfg.conductor_input_size)
        out, _ = self.conductor(zeros, state)
        return out  # [B, bars, Hc]

    def decode_logits(self, z: torch.Tensor, targets: Any) -> torch.Tensor:
        """Teacher-forced logits ``[B, 256, depth]`` given targets (one-hot or classes)."""
        cfg = self.config
        tgt = self._as_one_hot(targets)
        b = z.shape[0]
        cond = self._conductor(z)  # [B, nb, Hc]
        prev = torch.cat([tgt.new_zeros(b, 1, cfg.depth), tgt[:, :-1]], dim=1)
        prev = prev.view(b, cfg.bars, cfg.steps_per_bar, cfg.depth)
        if not cfg.carry_across_bars:
            prev = prev.clone()
            prev[:, :, 0] = 0.0
        emb = cond.unsqueeze(2).expand(b, cfg.bars, cfg.steps_per_bar, cond.shape[-1])
        inp = torch.cat([prev, emb], dim=-1).reshape(b * cfg.bars, cfg.steps_per_bar, -1)
        state = self.core.split_state(torch.tanh(self.core_init(cond.reshape(b * cfg.bars, -1))))
        out, _ = self.core(inp, state)
        logits = self.output_projection(out)
        return logits.reshape(b, cfg.steps, cfg.depth)

    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Autoregressive decode -> classes ``[B, 256]`` (argmax if greedy, else categorical at T)."""
        cfg = self.config
        z = z.to(self.mu.kernel.device, torch.float32)
        if z.dim() == 1:
            z = z.unsqueeze(0)
        b = z.shape[0]
        cond = self._conductor(z)
        prev = z.new_zeros(b, cfg.depth)
        result = []
        for bar in range(cfg.bars):
            emb = cond[:, bar]
            state = self.core.split_state(torch.tanh(self.core_init(emb)))
            if bar > 0 and not cfg.carry_across_bars:
                prev = z.new_zeros(b, cfg.depth)
            for _ in range(cfg.steps_per_bar):
                out, state = self.core.step(torch.cat([prev, emb], dim=-1), state)
                logits = self.output_projection(out)
                if greedy:
                    cls = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits / float(temperature), dim=-1)
                    cls = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                result.append(cls)
                prev = F.one_hot(cls, cfg.depth).to(z.dtype)
        return torch.stack(result, dim=1)

    # ---------------------------------------------------------------- generation helpers
    @torch.no_grad()
    def reconstruct(self, x: Any) -> torch.Tensor:
        """Encoder mean -> greedy decode; classes ``[B, 256]``."""
        mu, _ = self.encode(x)
        return self.sample(mu, greedy=True)

    @staticmethod
    def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        return slerp(z0, z1, t)

    @torch.no_grad()
    def interpolate(
        self,
        x0: Any,
        x1: Any,
        n: int,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Slerp between the encoder means of two single melodies; returns classes ``[n, 256]``
        (endpoints included: t = linspace(0, 1, n))."""
        mu0, _ = self.encode(x0)
        mu1, _ = self.encode(x1)
        ts = torch.linspace(0.0, 1.0, n, device=mu0.device)
        z = torch.cat([slerp(mu0[:1], mu1[:1], t) for t in ts], dim=0)
        return self.sample(z, greedy=greedy, temperature=temperature, generator=generator)

    @torch.no_grad()
    def variations(
        self,
        x: Any,
        n: int,
        noise_scale: float = 0.1,
        generator: torch.Generator | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """``z = mu + noise_scale * N(0, I)`` for one melody -> classes ``[n, 256]``."""
        mu, _ = self.encode(x)
        mu = mu[:1]
        noise = torch.randn(n, mu.shape[-1], generator=generator).to(mu.device)
        z = mu + float(noise_scale) * noise
        return self.sample(z, greedy=greedy, temperature=temperature, generator=generator)

    # ---------------------------------------------------------------- loss
    def loss(self, x: Any, step: int = 0, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Magenta's objective with the free-bits hinge on the total KL.

        Returns ``total`` (tensor), ``reconstruction`` (mean over batch of Σ_t CE, tensor),
        ``kl`` (mean over batch of KL summed over z dims, tensor, before free bits),
        ``kl_cost`` (mean over batch of max(KL - free_bits·ln 2, 0), tensor), ``beta`` (float),
        ``free_bits`` (threshold in bits, float), ``accuracy`` (float, teacher-forced).
        """
        cfg = self.config
        x = self._as_one_hot(x)
        mu, sigma = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + sigma * eps
        logits = self.decode_logits(z, x)
        target = x.argmax(-1)
        ce = F.cross_entropy(logits.reshape(-1, cfg.depth), target.reshape(-1), reduction="none")
        recon = ce.view(x.shape[0], -1).sum(-1).mean()
        kl_per = kl_standard_normal(mu, sigma)
        kl_cost = torch.clamp(kl_per - cfg.free_bits * math.log(2.0), min=0.0).mean()
        beta = cfg.beta(step)
        total = recon + beta * kl_cost
        acc = (logits.argmax(-1) == target).float().mean().item()
        return dict(
            total=total,
            reconstruction=recon,
            kl=kl_per.mean(),
            kl_cost=kl_cost,
            beta=beta,
            free_bits=float(cfg.free_bits),
            accuracy=acc,
        )

    # ---------------------------------------------------------------- TF weights
    def _tf_params(self) -> dict[str, nn.Parameter]:
        m: dict[str, nn.Parameter] = {}
        for k, (fw, bw) in enumerate(zip(self.enc_fw, self.enc_bw)):
            for d, layer in (("fw", fw), ("bw", bw)):
                p = f"encoder/cell_{k}/bidirectional_rnn/{d}/multi_rnn_cell/cell_0/lstm_cell"
                m[p + "/kernel"], m[p + "/bias"] = layer.kernel, layer.bias
        for name, dense in (("encoder/mu", self.mu), ("encoder/sigma", self.sigma)):
            m[name + "/kernel"], m[name + "/bias"] = dense.kernel, dense.bias
        m["decoder/hierarchical_level_0/initial_state/kernel"] = self.conductor_init.kernel
        m["decoder/hierarchical_level_0/initial_state/bias"] = self.conductor_init.bias
        for i, layer in enumerate(self.conductor.layers):
            p = f"decoder/hierarchical_level_0/multi_rnn_cell/cell_{i}/lstm_cell"
            m[p + "/kernel"], m[p + "/bias"] = layer.kernel, layer.bias
        m["core_decoder/decoder/z_to_initial_state/kernel"] = self.core_init.kernel
        m["core_decoder/decoder/z_to_initial_state/bias"] = self.core_init.bias
        for i, layer in enumerate(self.core.layers):
            p = f"core_decoder/decoder/multi_rnn_cell/cell_{i}/lstm_cell"
            m[p + "/kernel"], m[p + "/bias"] = layer.kernel, layer.bias
        m["core_decoder/decoder/output_projection/kernel"] = self.output_projection.kernel
        m["core_decoder/decoder/output_projection/bias"] = self.output_projection.bias
        return m

    def export_tf_weights(self) -> dict[str, np.ndarray]:
        """All parameters under their TF names (float32 numpy, TF layouts)."""
        return {k: v.detach().cpu().numpy().astype(np.float32).copy() for k, v in self._tf_params().items()}

    @torch.no_grad()
    def load_tf_weights(self, tensors: Mapping[str, np.ndarray], strict: bool = True) -> list[str]:
        """Copy TF-named tensors in; returns the ignored names.  Missing or mis-shaped -> ValueError."""
        params = self._tf_params()
        canon: dict[str, np.ndarray] = {}
        ignored = []
        for k, v in tensors.items():
            c = _canonical_tf_name(k)
            if c in params:
                canon[c] = v
            else:
                ignored.append(k)
        missing = sorted(set(params) - set(canon))
        if missing and strict:
            raise ValueError(f"missing TF variables: {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        for name, value in canon.items():
            p = params[name]
            arr = torch.as_tensor(np.asarray(value, dtype=np.float32))
            if tuple(arr.shape) != tuple(p.shape):
                raise ValueError(f"{name}: shape {tuple(arr.shape)} != expected {tuple(p.shape)}")
            p.copy_(arr.to(p.device))
        return ignored

    @classmethod
    def from_magenta_checkpoint(cls, prefix, **overrides: Any) -> "MusicVAE":
        """A MusicVAE from a Magenta V2 checkpoint (`<prefix>.index` + data shards), read without
        TensorFlow (`tf_checkpoint.read_v2_checkpoint`); sizes come from the tensor shapes."""
        from .tf_checkpoint import read_v2_checkpoint

        return cls.from_tf_weights(read_v2_checkpoint(prefix), **overrides)

    @classmethod
    def from_tf_weights(cls, tensors: Mapping[str, np.ndarray], **overrides: Any) -> "MusicVAE":
        cfg = MusicVAEConfig.from_tf_shapes({k: np.shape(v) for k, v in tensors.items()}, **overrides)
        model = cls(cfg)
        model.load_tf_weights(tensors)
        return model

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors``."""
        return save_model_dir(directory, self, self.config.to_dict())

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "MusicVAE":
        config, state = load_model_dir(directory, map_location)
        model = cls(MusicVAEConfig.from_dict(config))
        model.load_state_dict(state)
        return model


def _canonical_tf_name(name: str) -> str:
    """Map accepted aliases onto the names this module exports (see module docstring)."""
    name = name.split(":")[0]
    if name.startswith("decoder/core_decoder/"):
        name = name[len("decoder/") :]
    prefix = "decoder/hierarchical_level_0/cell_"
    if name.startswith(prefix):
        name = "decoder/hierarchical_level_0/multi_rnn_cell/cell_" + name[len(prefix) :]
    return name


def tf_variable_names(config: MusicVAEConfig) -> list[str]:
    """The TF names ``export_tf_weights`` writes for ``config`` (builds a model; use small configs)."""
    return list(MusicVAE(config)._tf_params())


def kl_standard_normal(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma²) || N(0, I)) summed over the last dim."""
    return (0.5 * (mu.pow(2) + sigma.pow(2) - 1.0) - torch.log(sigma)).sum(-1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def clip_gradients(params: Sequence[torch.Tensor], clip_norm: float, zero_threshold: float) -> tuple[float, bool]:
    """TF ``clip_by_global_norm`` (scale = clip / max(norm, clip)); zero all grads when the global
    norm is >= ``zero_threshold`` or not finite.  Returns ``(global_norm, zeroed)``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0, False
    norm = torch.sqrt(sum((g.detach().double() ** 2).sum() for g in grads)).item()
    if not math.isfinite(norm) or norm >= zero_threshold:
        for g in grads:
            g.zero_()
        return norm, True
    scale = clip_norm / max(norm, clip_norm)
    if scale < 1.0:
        for g in grads:
            g.mul_(scale)
    return norm, False


def make_optimizer(model: MusicVAE) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=model.config.lr(0))


def train_step(
    model: MusicVAE,
    opt: torch.optim.Optimizer,
    x: Any,
    step: int,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One optimisation step: lr from the schedule, loss, global-norm clip, zero rule, ``opt.step()``.

    As in Magenta, a zeroed step is still applied (``opt.step()`` runs on all-zero gradients): with
    a fresh Adam or plain SGD the weights stay unchanged; Adam's existing moments may still move them.
    """
    cfg = model.config
    model.train()
    lr = cfg.lr(step)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=False)
    out = model.loss(x, step, generator=generator)
    out["total"].backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm, zeroed = clip_gradients(params, cfg.clip_norm, cfg.grad_norm_clip_to_zero)
    opt.step()
    res = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    res.update(lr=lr, grad_norm=norm, zeroed=zeroed, step=step)
    return res


__all__ = [
    "DEPTH",
    "LSTMBlockLayer",
    "LSTMStack",
    "MusicVAE",
    "MusicVAEConfig",
    "TFDense",
    "classes_to_events",
    "clip_gradients",
    "events_to_classes",
    "kl_standard_normal",
    "make_optimizer",
    "one_hot",
    "slerp",
    "tf_variable_names",
    "train_step",
]
