"""Melody RNN (`attention_rnn`) in PyTorch, computing exactly what Magenta's TensorFlow graph computes.

Written from the facts in shared/docs/MAGENTA-FACTS.md ("Melody RNN, attention_rnn"); no Magenta
code is copied. Only training / conversion code imports this module (it imports torch at the top).

The network, per time step (``attention_on_first_layer_only=True``, the post-2017 layout):

1. First layer = an attention wrapper around a TF ``BasicLSTMCell``:

   * ``x' = [x, attns] @ K_in + b_in``        (``attention_cell_wrapper/kernel [in+A, in]``, ``bias``)
   * ``(c, h) = LSTM(x', (c, h))``            (``attention_cell_wrapper/basic_lstm_cell/{kernel,bias}``)
   * ``query = [c, h]``                        (the new state, flattened c first, as TF's
     ``LSTMStateTuple(c, h)`` flattens)
   * ``feat_s = hist_s @ attn_w[0, 0]``       for each of the ``attn_length`` stored outputs
     (the 1×1 conv ``attention/attn_w [1,1,A,A]``, no bias)
   * ``y = query @ K_q + b_q``                 (``attention/kernel [2H, A]``, ``attention/bias``)
   * ``score_s = sum(attn_v * tanh(feat_s + y))``, ``a = softmax_s(score)``
   * ``attns = sum_s a_s · hist_s``
   * ``out = [h, attns] @ K_o + b_o``          (``attn_output_projection/{kernel [H+A, A], bias}``)
   * the FIFO drops its oldest entry and appends ``out`` (the output *before* dropout).

2. Further layers: plain ``BasicLSTMCell``s (``cell_i/basic_lstm_cell``).
3. Dropout (keep ``dropout_keep``) on each layer's output, training mode only (TF's
   ``DropoutWrapper(output_keep_prob)`` around every layer, the attention wrapper included).
4. ``logits = out @ W + b`` (``fully_connected/{weights [H, C], biases}``, no activation).

TF ``BasicLSTMCell``: one kernel over ``[x, h]`` with gate blocks ``(i, j, f, o)``; at run time
``c' = c·σ(f + 1) + σ(i)·tanh(j)``, ``h' = tanh(c')·σ(o)``. The forget bias 1.0 is a constant
added at run time (not stored in the bias variable); this module does the same, so stored biases
are TF's biases unchanged and round trips are exact.

The older layout (``attention_on_first_layer_only=False``) wraps the whole LSTM stack in the
attention wrapper: the input projection feeds the first LSTM, dropout follows each inner layer, the
query is the flattened state of all layers ``[c0, h0, c1, h1, ...]`` and the output projection
takes the last layer's (dropped-out) output; no dropout after the wrapper.

Where the facts leave room (interpretations, documented):

* concatenation orders: ``[x, attns]`` (input projection), ``[x, h]`` (LSTM kernel), ``[c, h]``
  (query), ``[cell_out, attns]`` (output projection) — the TF ``_linear`` helper concatenates
  its arguments in call order, and these are the orders the wrapper passes them in;
* the LSTM ``bias [4H]`` variables are not listed in the facts; TF's ``BasicLSTMCell`` always
  has one (``.../basic_lstm_cell/bias``), so they are required here;
* the old layout's variable names (``rnn/attention_cell_wrapper/multi_rnn_cell/cell_i/...``)
  are inferred from TF's scoping rules, not verified against a real old bundle;
* the exponential decay is staircase by default (``0.97 ** (step // 1000)``; see ``lr_at``).

Torch-side LSTM layout: ``weight_ih [4H, in]``, ``weight_hh [4H, H]``, ``bias [4H]`` with gate
blocks in PyTorch's order ``(i, f, g, o)`` (``g`` = TF's ``j``), so the weights also drop into
``torch.nn.LSTMCell`` (with 1.0 added to the forget block of the bias).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint_io import CONFIG_FILE, WEIGHTS_FILE, load_model_dir, save_model_dir  # noqa: F401  (file names re-exported)

FORGET_BIAS = 1.0

# TF gate blocks (i, j, f, o) -> torch blocks (i, f, g=j, o); the permutation is its own inverse.
_GATE_PERM = (0, 2, 1, 3)


@dataclasses.dataclass(frozen=True)
class MelodyRNNConfig:
    """Hyperparameters of the `attention_rnn` network (defaults: Magenta's bundle)."""

    input_size: int = 74
    num_classes: int = 40
    layers: tuple[int, ...] = (128, 128)
    attn_length: int = 40
    dropout_keep: float = 0.5
    attention_on_first_layer_only: bool = True
    chord_dim: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if not self.layers:
            raise ValueError("layers must not be empty")
        if self.attn_length < 1:
            raise ValueError("attn_length must be >= 1 (attention_rnn always has attention)")
        if not 0.0 < self.dropout_keep <= 1.0:
            raise ValueError("dropout_keep must be in (0, 1]")
        if self.chord_dim < 0:
            raise ValueError("chord_dim must be >= 0")

    @property
    def first_input_size(self) -> int:
        """The first layer's input size: the melody encoding plus the chord one-hot, if any."""
        return self.input_size + self.chord_dim

    @property
    def attn_size(self) -> int:
        """Size of each stored output / attention vector (the wrapped cell's output size)."""
        return self.layers[0] if self.attention_on_first_layer_only else self.layers[-1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MelodyRNNConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MelodyRNNConfig keys: {sorted(unknown)}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(d["layers"])
        return cls(**d)


class LSTMState(NamedTuple):
    c: torch.Tensor
    h: torch.Tensor


class MelodyRNNState(NamedTuple):
    """Recurrent state: one (c, h) per layer (bottom first), the last attention vector, the FIFO.

    ``attn_states[:, 0]`` is the oldest stored output, ``attn_states[:, -1]`` the newest.
    """

    lstm: tuple[LSTMState, ...]
    attns: torch.Tensor  # [B, A]
    attn_states: torch.Tensor  # [B, attn_length, A]


class TFBasicLSTMCell(nn.Module):
    """TF ``BasicLSTMCell`` with torch-ordered gate blocks (i, f, g, o) and a run-time forget bias."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        # TF default: glorot uniform over the whole kernel [in + H, 4H]; zero bias.
        limit = math.sqrt(6.0 / (input_size + hidden_size + 4 * hidden_size))
        with torch.no_grad():
            self.weight_ih.uniform_(-limit, limit)
            self.weight_hh.uniform_(-limit, limit)

    def forward(self, x: torch.Tensor, state: LSTMState) -> LSTMState:
        gates = F.linear(x, self.weight_ih) + F.linear(state.h, self.weight_hh) + self.bias
        i, f, g, o = gates.chunk(4, dim=-1)
        c = state.c * torch.sigmoid(f + FORGET_BIAS) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.tanh(c) * torch.sigmoid(o)
        return LSTMState(c, h)


def _glorot_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(in_features, out_features, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class AttentionCellWrapper(nn.Module):
    """TF ``AttentionCellWrapper`` around one LSTM (new layout) or the whole stack (old layout)."""

    def __init__(
        self, input_size: int, layer_sizes: Sequence[int], attn_length: int, dropout_keep: float
    ) -> None:
        super().__init__()
        self.attn_length = attn_length
        self.attn_size = layer_sizes[-1]
        self.dropout_keep = dropout_keep
        a = self.attn_size
        self.input_proj = _glorot_linear(input_size + a, input_size)
        sizes = [input_size, *layer_sizes]
        self.cells = nn.ModuleList(
            TFBasicLSTMCell(sizes[k], sizes[k + 1]) for k in range(len(layer_sizes))
        )
        self.attn_w = _glorot_linear(a, a, bias=False)  # the 1x1 conv, attn_vec_size = attn_size
        self.attn_v = nn.Parameter(torch.empty(a).uniform_(-math.sqrt(3.0 / a), math.sqrt(3.0 / a)))
        self.query_proj = _glorot_linear(2 * sum(layer_sizes), a)
        self.output_proj = _glorot_linear(layer_sizes[-1] + a, a)

    def forward(
        self, x: torch.Tensor, lstm: tuple[LSTMState, ...], attns: torch.Tensor,
        attn_states: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[LSTMState, ...], torch.Tensor, torch.Tensor]:
        inner = self.proj_input(x, attns)
        new_lstm = []
        multi = len(self.cells) > 1  # old layout: dropout inside, after each inner layer
        for cell, st in zip(self.cells, lstm):
            st = cell(inner, st)
            new_lstm.append(st)
            inner = st.h
            if multi and self.training and self.dropout_keep < 1.0:
                inner = F.dropout(inner, p=1.0 - self.dropout_keep, training=True)
        query = torch.cat([t for st in new_lstm for t in (st.c, st.h)], dim=-1)
        new_attns = self.attend(query, attn_states)
        out = self.output_proj(torch.cat([inner, new_attns], dim=-1))
        new_states = torch.cat([attn_states[:, 1:], out.unsqueeze(1)], dim=1)
        return out, tuple(new_lstm), new_attns, new_states

    def proj_input(self, x: torch.Tensor, attns: torch.Tensor) -> torch.Tensor:
        return self.input_proj(torch.cat([x, attns], dim=-1))

    def attention_weights(self, query: torch.Tensor, attn_states: torch.Tensor) -> torch.Tensor:
        """Softmax over the ``attn_length`` stored outputs, shape [B, attn_length]."""
        features = self.attn_w(attn_states)  # [B, L, A]
        y = self.query_proj(query).unsqueeze(1)  # [B, 1, A]
        scores = (self.attn_v * torch.tanh(features + y)).sum(-1)
        return torch.softmax(scores, dim=-1)

    def attend(self, query: torch.Tensor, attn_states: torch.Tensor) -> torch.Tensor:
        a = self.attention_weights(query, attn_states)
        return (a.unsqueeze(-1) * attn_states).sum(1)


def tf_variable_map(config: MelodyRNNConfig) -> dict[str, tuple[str, str]]:
    """Torch parameter name -> (TF variable name, transform from the TF tensor)."""
    layers = config.layers
    if config.attention_on_first_layer_only:
        wrap = "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/"
        inner = [wrap + "basic_lstm_cell/"]
        plain = [f"rnn/multi_rnn_cell/cell_{k}/basic_lstm_cell/" for k in range(1, len(layers))]
    else:
        wrap = "rnn/attention_cell_wrapper/"
        inner = [wrap + f"multi_rnn_cell/cell_{k}/basic_lstm_cell/" for k in range(len(layers))]
        plain = []
    m: dict[str, tuple[str, str]] = {
        "attn_cell.input_proj.weight": (wrap + "kernel", "transpose"),
        "attn_cell.input_proj.bias": (wrap + "bias", "identity"),
        "attn_cell.attn_w.weight": (wrap + "attention/attn_w", "[0, 0] then transpose"),
        "attn_cell.attn_v": (wrap + "attention/attn_v", "identity"),
        "attn_cell.query_proj.weight": (wrap + "attention/kernel", "transpose"),
        "attn_cell.query_proj.bias": (wrap + "attention/bias", "identity"),
        "attn_cell.output_proj.weight": (wrap + "attn_output_projection/kernel", "transpose"),
        "attn_cell.output_proj.bias": (wrap + "attn_output_projection/bias", "identity"),
        "logits.weight": ("fully_connected/weights", "transpose"),
        "logits.bias": ("fully_connected/biases", "identity"),
    }
    lstm_tf = "gate blocks (i, j, f, o) -> (i, f, g, o), then transpose"
    for prefix, torch_prefix in [
        *((p, f"attn_cell.cells.{k}.") for k, p in enumerate(inner)),
        *((p, f"cells.{k}.") for k, p in enumerate(plain)),
    ]:
        m[torch_prefix + "weight_ih"] = (prefix + "kernel", "rows [:in]; " + lstm_tf)
        m[torch_prefix + "weight_hh"] = (prefix + "kernel", "rows [in:]; " + lstm_tf)
        m[torch_prefix + "bias"] = (
            prefix + "bias", "gate blocks (i, j, f, o) -> (i, f, g, o); forget bias +1.0 stays at run time")
    return m


TF_VARIABLE_MAP: dict[str, tuple[str, str]] = tf_variable_map(MelodyRNNConfig())


def detect_attention_on_first_layer_only(names: Sequence[str]) -> bool:
    """True for the post-2017 layout (attention inside ``cell_0``), False for the old one."""
    if any("multi_rnn_cell/cell_0/attention_cell_wrapper/" in n for n in names):
        return True
    if any(n.startswith("rnn/attention_cell_wrapper/") for n in names):
        return False
    raise ValueError("no attention_cell_wrapper variables found: not an attention_rnn checkpoint")


def _gate_reorder(a: np.ndarray, axis: int) -> np.ndarray:
    blocks = np.split(a, 4, axis=axis)
    return np.concatenate([blocks[k] for k in _GATE_PERM], axis=axis)


class MelodyRNN(nn.Module):
    """The `attention_rnn` network; see the module docstring for the exact computation."""

    def __init__(self, config: MelodyRNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MelodyRNNConfig()
        layers = config.layers
        if config.attention_on_first_layer_only:
            wrapped, plain = layers[:1], layers[1:]
        else:
            wrapped, plain = layers, ()
        self.attn_cell = AttentionCellWrapper(
            config.first_input_size, wrapped, config.attn_length, config.dropout_keep
        )
        sizes = [wrapped[-1], *plain]
        self.cells = nn.ModuleList(
            TFBasicLSTMCell(sizes[k], sizes[k + 1]) for k in range(len(plain))
        )
        self.logits = _glorot_linear(layers[-1], config.num_classes)

    # ----------------------------------------------------------------------------- running
    def zero_state(self, batch_size: int, device=None, dtype=torch.float32) -> MelodyRNNState:
        z = lambda *s: torch.zeros(*s, device=device, dtype=dtype)  # noqa: E731
        a = self.config.attn_size
        return MelodyRNNState(
            lstm=tuple(LSTMState(z(batch_size, n), z(batch_size, n)) for n in self.config.layers),
            attns=z(batch_size, a),
            attn_states=z(batch_size, self.config.attn_length, a),
        )

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.config.dropout_keep
        if self.training and keep < 1.0:
            return F.dropout(x, p=1.0 - keep, training=True)
        return x

    def step(self, x: torch.Tensor, state: MelodyRNNState) -> tuple[torch.Tensor, MelodyRNNState]:
        """One time step: x [B, first_input_size] -> (logits [B, C], new state)."""
        n_wrapped = len(self.attn_cell.cells)
        out, wrapped_states, attns, attn_states = self.attn_cell(
            x, state.lstm[:n_wrapped], state.attns, state.attn_states
        )
        if self.config.attention_on_first_layer_only:
            out = self._dropout(out)
        new_lstm = list(wrapped_states)
        for cell, st in zip(self.cells, state.lstm[n_wrapped:]):
            st = cell(out, st)
            new_lstm.append(st)
            out = self._dropout(st.h)
        return self.logits(out), MelodyRNNState(tuple(new_lstm), attns, attn_states)

    def forward(
        self, inputs: torch.Tensor, state: MelodyRNNState | None = None,
        chords: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MelodyRNNState]:
        """inputs [B, T, input_size (+ chord_dim)] -> (logits [B, T, num_classes], final state).

        With ``chord_dim > 0`` pass either inputs that already end with the chord one-hot, or the
        melody inputs plus ``chords [B, T, chord_dim]`` (appended to each step's input).
        """
        cfg = self.config
        if chords is not None:
            if cfg.chord_dim == 0:
                raise ValueError("chords given but config.chord_dim == 0")
            inputs = torch.cat([inputs, chords.to(inputs.dtype)], dim=-1)
        if inputs.dim() != 3 or inputs.shape[-1] != cfg.first_input_size:
            raise ValueError(
                f"inputs must be [B, T, {cfg.first_input_size}], got {tuple(inputs.shape)}"
            )
        if state is None:
            state = self.zero_state(inputs.shape[0], inputs.device, inputs.dtype)
        outs = []
        for t in range(inputs.shape[1]):
            logits, state = self.step(inputs[:, t], state)
            outs.append(logits)
        if not outs:
            return inputs.new_zeros(inputs.shape[0], 0, cfg.num_classes), state
        return torch.stack(outs, dim=1), state

    # ----------------------------------------------------------------------------- TF weights
    def tf_variable_map(self) -> dict[str, tuple[str, str]]:
        return tf_variable_map(self.config)

    def _tf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected TF shape of every TF variable this model reads."""
        params = dict(self.named_parameters())
        shapes: dict[str, tuple[int, ...]] = {}
        for pname, (tf_name, _) in self.tf_variable_map().items():
            p = params[pname]
            if pname.endswith("weight_ih") or pname.endswith("weight_hh"):
                cell_prefix = pname.rsplit(".", 1)[0]
                ih = params[cell_prefix + ".weight_ih"]
                hh = params[cell_prefix + ".weight_hh"]
                shapes[tf_name] = (ih.shape[1] + hh.shape[1], ih.shape[0])
            elif pname.endswith("attn_w.weight"):
                shapes[tf_name] = (1, 1, p.shape[1], p.shape[0])
            elif p.dim() == 2:
                shapes[tf_name] = (p.shape[1], p.shape[0])
            else:
                shapes[tf_name] = tuple(p.shape)
        return shapes

    def load_tf_weights(self, tensors: dict[str, np.ndarray]) -> list[str]:
        """Set every parameter from TF-layout tensors (names as in the bundle's checkpoint).

        Raises KeyError naming a missing TF variable, ValueError naming one with a wrong shape.
        Returns the names in ``tensors`` that were not used (optimizer slots, global_step, ...).
        """
        expected = self._tf_shapes()
        for name, shape in expected.items():
            if name not in tensors:
                raise KeyError(f"TF variable {name!r} missing (expected shape {list(shape)})")
            got = tuple(np.shape(tensors[name]))
            if got != shape:
                raise ValueError(
                    f"TF variable {name!r} has shape {list(got)}, expected {list(shape)}"
                )
        new: dict[str, np.ndarray] = {}
        for pname, (tf_name, _) in self.tf_variable_map().items():
            t = np.asarray(tensors[tf_name], dtype=np.float32)
            if pname.endswith("weight_ih") or pname.endswith("weight_hh"):
                n_in = self.get_parameter(pname.rsplit(".", 1)[0] + ".weight_ih").shape[1]
                part = t[:n_in] if pname.endswith("weight_ih") else t[n_in:]
                new[pname] = _gate_reorder(part, axis=1).T
            elif pname.endswith(".bias") and tf_name.endswith("basic_lstm_cell/bias"):
                new[pname] = _gate_reorder(t, axis=0)
            elif pname.endswith("attn_w.weight"):
                new[pname] = t[0, 0].T
            elif t.ndim == 2:
                new[pname] = t.T
            else:
                new[pname] = t
        with torch.no_grad():
            for pname, value in new.items():
                p = self.get_parameter(pname)
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.dtype))
        return sorted(set(tensors) - set(expected))

    def export_tf_weights(self) -> dict[str, np.ndarray]:
        """Inverse of ``load_tf_weights``: TF variable name -> float32 array in TF layout."""
        params = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.named_parameters()}
        out: dict[str, np.ndarray] = {}
        for pname, (tf_name, _) in self.tf_variable_map().items():
            p = params[pname]
            if pname.endswith("weight_ih"):
                hh = params[pname[: -len("weight_ih")] + "weight_hh"]
                out[tf_name] = _gate_reorder(np.concatenate([p.T, hh.T], axis=0), axis=1)
            elif pname.endswith("weight_hh"):
                continue
            elif pname.endswith(".bias") and tf_name.endswith("basic_lstm_cell/bias"):
                out[tf_name] = _gate_reorder(p, axis=0)
            elif pname.endswith("attn_w.weight"):
                out[tf_name] = p.T[None, None]
            elif p.ndim == 2:
                out[tf_name] = p.T
            else:
                out[tf_name] = p
        return {k: np.ascontiguousarray(v) for k, v in out.items()}

    @classmethod
    def from_magenta_bundle(cls, path, attn_length: int = 40) -> "MelodyRNN":
        """The network of a Magenta `.mag` bundle (GeneratorBundle with a V1 checkpoint), read
        without TensorFlow (`tf_checkpoint.read_mag_bundle`). Called on Magenta's encoded inputs
        [B, T, 74] from a zero state it returns logits [B, T, 40]."""
        from .tf_checkpoint import read_mag_bundle

        tensors, _details = read_mag_bundle(path)
        return cls.from_tf_weights(tensors, attn_length=attn_length)

    @classmethod
    def from_tf_weights(
        cls, tensors: dict[str, np.ndarray], attn_length: int = 40, dropout_keep: float = 0.5
    ) -> "MelodyRNN":
        """Build a model whose config is read off the TF variable names and shapes.

        ``attn_length`` is not stored as a variable (it is a hyperparameter of the bundle's
        config); Magenta's ``attention_rnn`` uses 40.
        """
        names = list(tensors)
        first_only = detect_attention_on_first_layer_only(names)
        fc = np.shape(tensors["fully_connected/weights"])
        def units(name: str) -> int:
            return int(np.shape(tensors[name])[1]) // 4

        if first_only:
            wrap = "rnn/multi_rnn_cell/cell_0/attention_cell_wrapper/"
            layers = [units(wrap + "basic_lstm_cell/kernel")]
            cell = "rnn/multi_rnn_cell/cell_{}/basic_lstm_cell/kernel"
            k = 1
        else:
            wrap = "rnn/attention_cell_wrapper/"
            layers = []
            cell = wrap + "multi_rnn_cell/cell_{}/basic_lstm_cell/kernel"
            k = 0
        while cell.format(k) in tensors:
            layers.append(units(cell.format(k)))
            k += 1
        cfg = MelodyRNNConfig(
            input_size=int(np.shape(tensors[wrap + "kernel"])[1]),
            num_classes=int(fc[1]),
            layers=tuple(int(n) for n in layers),
            attn_length=attn_length,
            dropout_keep=dropout_keep,
            attention_on_first_layer_only=first_only,
        )
        model = cls(cfg)
        model.load_tf_weights(tensors)
        return model

    # ----------------------------------------------------------------------------- chords
    def with_chord_inputs(self, chord_dim: int = 25) -> "MelodyRNN":
        """A copy that also reads a chord one-hot on every step (Improv RNN style), computing
        exactly what this model computes until training changes the new weights.

        For a model without chord inputs (an imported `attention_rnn` bundle): the input projection
        of the attention wrapper gets ``chord_dim`` more inputs and outputs — the new outputs copy
        the chord inputs (identity), the old outputs ignore them (zero weights) — and the first
        LSTM cell gets zero weights for the new inputs. The logits are unchanged whatever the
        chords, and the new LSTM weights receive gradients from the first step (the chord signal
        reaches them through the identity), so fine-tuning can learn to use the chords.
        """
        cfg = self.config
        if cfg.chord_dim:
            raise ValueError(f"the model already has chord inputs (chord_dim={cfg.chord_dim})")
        if chord_dim < 1:
            raise ValueError("chord_dim must be >= 1")
        new = MelodyRNN(dataclasses.replace(cfg, chord_dim=int(chord_dim)))
        old_sd = self.state_dict()
        sd = new.state_dict()
        n_in, c = cfg.first_input_size, int(chord_dim)
        a = self.attn_cell.attn_size
        for k, v in old_sd.items():
            if k not in ("attn_cell.input_proj.weight", "attn_cell.input_proj.bias", "attn_cell.cells.0.weight_ih"):
                sd[k] = v.clone()
        w_old = old_sd["attn_cell.input_proj.weight"]  # [n_in, n_in + a]: inputs [x, attns]
        w = torch.zeros(n_in + c, n_in + c + a, dtype=w_old.dtype)
        w[:n_in, :n_in] = w_old[:, :n_in]
        w[:n_in, n_in + c:] = w_old[:, n_in:]
        w[n_in:, n_in:n_in + c] = torch.eye(c, dtype=w_old.dtype)
        sd["attn_cell.input_proj.weight"] = w
        sd["attn_cell.input_proj.bias"] = torch.cat([old_sd["attn_cell.input_proj.bias"], torch.zeros(c, dtype=w_old.dtype)])
        k_old = old_sd["attn_cell.cells.0.weight_ih"]  # [4H, n_in]
        sd["attn_cell.cells.0.weight_ih"] = torch.cat([k_old, torch.zeros(k_old.shape[0], c, dtype=k_old.dtype)], dim=1)
        new.load_state_dict(sd, strict=True)
        new.train(self.training)
        return new

    # ----------------------------------------------------------------------------- persistence
    def save(self, path_dir: str | Path) -> Path:
        """Write ``model.safetensors`` (torch parameter names) and ``config.json`` into path_dir."""
        return save_model_dir(path_dir, self, self.config.to_dict())

    @classmethod
    def load(cls, path_dir: str | Path, map_location: str = "cpu") -> "MelodyRNN":
        config, state = load_model_dir(path_dir, map_location)
        model = cls(MelodyRNNConfig.from_dict(config))
        model.load_state_dict(state, strict=True)
        return model


def save(model: MelodyRNN, path_dir: str | Path) -> Path:
    return model.save(path_dir)


def load(path_dir: str | Path) -> MelodyRNN:
    return MelodyRNN.load(path_dir)


# --------------------------------------------------------------------------------- training
def clip_per_tensor(params, max_norm: float = 3.0) -> list[float]:
    """Clip each gradient by its own L2 norm (TF ``clip_by_norm`` per variable, not global).

    ``g <- g · max_norm / max(||g||, max_norm)``. Returns the norms before clipping.
    """
    norms = []
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            n = float(torch.linalg.vector_norm(p.grad))
            norms.append(n)
            if n > max_norm:
                p.grad.mul_(max_norm / n)
    return norms


def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam with TF's defaults (betas 0.9/0.999, eps 1e-8)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)


def lr_at(
    step: int, base_lr: float = 1e-3, decay_rate: float = 0.97, decay_steps: int = 1000,
    staircase: bool = True,
) -> float:
    """Exponential decay 0.97 per 1,000 steps (the older Melody RNN configs' schedule).

    Staircase by default (``base · 0.97 ** (step // 1000)``); ``staircase=False`` gives the
    continuous ``base · 0.97 ** (step / 1000)``. The current configs use a constant 1e-3.
    """
    e = (step // decay_steps) if staircase else (step / decay_steps)
    return base_lr * decay_rate ** e


def sequence_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over the non-padded steps (step t of row b counts iff t < lengths[b])."""
    b, t, c = logits.shape
    mask = sequence_mask(torch.as_tensor(lengths, device=logits.device), t).to(logits.dtype)
    ce = F.cross_entropy(logits.reshape(b * t, c), labels.reshape(b * t).long(), reduction="none")
    denom = mask.sum()
    if denom == 0:
        raise ValueError("no non-padded steps in the batch")
    return (ce * mask.reshape(-1)).sum() / denom


def train_step(
    model: MelodyRNN, opt: torch.optim.Optimizer, batch: dict, clip_norm: float = 3.0,
    lr: float | None = None,
) -> float:
    """One update. ``batch``: ``inputs [B, T, in]``, ``labels [B, T]``, ``lengths [B]``
    (optional ``chords [B, T, chord_dim]``). Sets every group's lr to ``lr`` if given."""
    model.train()
    if lr is not None:
        for g in opt.param_groups:
            g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    logits, _ = model(batch["inputs"], chords=batch.get("chords"))
    loss = masked_cross_entropy(logits, batch["labels"], batch["lengths"])
    loss.backward()
    clip_per_tensor(model.parameters(), clip_norm)
    opt.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample(
    model: MelodyRNN,
    primer_inputs: torch.Tensor,
    next_input_fn: Callable[[list[int]], np.ndarray | torch.Tensor],
    steps: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample ``steps`` labels after a primer (beam 1, temperature scaling of the logits).

    ``primer_inputs [T0, in]`` (T0 >= 1) are run first; the label sampled from the last logits is
    appended and ``next_input_fn(labels_so_far)`` must return the next step's input vector
    (the encoder's job: pitch one-hot, lookback, counter, key features, chord one-hot, ...).
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    if primer_inputs.dim() != 2 or primer_inputs.shape[0] < 1:
        raise ValueError("primer_inputs must be [T0 >= 1, in]")
    was_training = model.training
    model.eval()
    try:
        logits, state = model(primer_inputs.unsqueeze(0).float())
        last = logits[0, -1]
        labels: list[int] = []
        for k in range(steps):
            probs = torch.softmax(last / temperature, dim=-1)
            label = int(torch.multinomial(probs, 1, generator=generator))
            labels.append(label)
            if k == steps - 1:
                break
            x = torch.as_tensor(np.asarray(next_input_fn(labels)), dtype=torch.float32)
            out, state = model.step(x.reshape(1, -1), state)
            last = out[0]
        return labels
    finally:
        model.train(was_training)
