"""ONNX export, INT8 quantisation and an onnxruntime stepper for ``models.midi_model.MidiModel``.

No Dagster here: torch, onnx, onnxruntime and numpy only.

Graphs (``export_onnx``; TorchScript exporter, opset 17 by default, fp32)
-------------------------------------------------------------------------
Both are traced from a small *functional* Llama forward (``FunctionalLlama``) that takes explicit
past key/value tensors and uses the ``LlamaModel``'s own weights (RMSNorm with the config's eps,
rotary embedding from the model's own ``inv_freq`` / ``attention_scaling`` — i.e. the config's rope
parameters —, positions = past length + arange(L), GQA via repeated kv heads, causal mask for L > 1
on top of the past, SiLU MLP). transformers' ``DynamicCache`` is never traced.

``model_base.onnx`` — the event decoder ``net``::

    inputs   x                          int64   [batch, events, 8]
             past_key_values.{i}.key    float32 [batch, kv_heads, past, head_dim]   i < net layers
             past_key_values.{i}.value  float32 [batch, kv_heads, past, head_dim]
    outputs  hidden                     float32 [batch, events, H]   (after the final norm)
             present.{i}.key / .value   float32 [batch, kv_heads, past + events, head_dim]

``model_token.onnx`` — the in-event decoder ``net_token`` + ``lm_head``::

    inputs   hidden                     float32 [batch, hidden_len, H]   hidden_len 1 (first call) or 0
             x                          int64   [batch, tokens]          tokens >= 0
             rows                       int64   [rows]                   vocab ids whose logits to compute
             past_key_values.{i}.key / .value   float32 [batch, kv_heads, past, head_dim]
    outputs  logits                     float32 [batch, hidden_len + tokens, rows]
             present.{i}.key / .value   float32 [batch, kv_heads, past + hidden_len + tokens, head_dim]

The token graph's input sequence is ``concat(hidden, net_token.embed_tokens(x))`` along the
sequence axis, so one graph serves every call: the first step of an event passes ``hidden``
[B, 1, H] and ``x`` [B, 0]; each later step ``hidden`` [B, 0, H] and ``x`` [B, 1] (the token just
chosen) with the cache; teacher forcing passes ``hidden`` [B, 1, H] and ``x`` [B, 7] at once.
``logits[..., j]`` is the logit of vocab id ``rows[j]`` (``lm_head.weight`` rows gathered in the
graph); pass ``arange(vocab)`` for the full logits. Restricting ``rows`` to the ids the slot's mask
allows (a few to 2,048 of 3,406) makes the ``lm_head`` ~10x cheaper per event without changing
those logits. Every axis named above is dynamic (0-length past / hidden / x included).

Files: ``model_base.onnx``, ``model_token.onnx``, ``config.json`` (the model's config) and
``export.json`` (opset, input/output names and shapes, sizes, versions). The folder is written
into a temporary sibling and renamed into place, so a failed export leaves nothing behind.

``quantize_int8`` runs onnxruntime dynamic quantisation (MatMul weights -> int8, activations
quantised per call; on x86 the fused ``DynamicQuantizeMatMul`` kernel uses u8 x s8 VNNI). The
``lm_head`` stays fp32 (its weight feeds a Gather, not a MatMul), so restricted-row logits stay
cheap and exact given net_token's hidden state.

``OnnxStepper`` implements ``midi_model.EventStepper`` on onnxruntime, keeping both KV caches as
OrtValues between calls (no numpy round trips). It extends the interface backwards-compatibly:
``token_start(hidden, rows=None)`` / ``token_next(ids, rows=None)`` return logits only for
``rows`` (a slice, or int ids) when given; the reference is ``TorchStepper``'s full logits
indexed by ``rows`` (``select_rows``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .midi_model import EventStepper, MidiModel, MidiModelConfig

BASE_FILE = "model_base.onnx"
TOKEN_FILE = "model_token.onnx"
EXPORT_FILE = "export.json"
CONFIG_FILE = "config.json"
GRAPHS = (BASE_FILE, TOKEN_FILE)


# ---------------------------------------------------------------------------------------------
# functional Llama forward with explicit past k/v (what is exported)
# ---------------------------------------------------------------------------------------------
def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FunctionalLlama(nn.Module):
    """A transformers ``LlamaModel`` run on ``inputs_embeds`` with explicit past k/v tensors.

    ``forward(h [B, L, H], past [(k, v)] * layers) -> (hidden [B, L, H], presents)``, where each
    k / v is [B, kv_heads, P, head_dim] and each present is the past with the L new positions
    appended. Uses the wrapped model's own weights (shared, not copied)."""

    def __init__(self, llama) -> None:
        super().__init__()
        cfg = llama.config
        self.llama = llama
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads)
        self.eps = float(cfg.rms_norm_eps)
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"FunctionalLlama supports hidden_act 'silu' only, got {act!r}")
        if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            raise ValueError("FunctionalLlama supports Llama configs without biases only")
        rot = llama.rotary_emb
        # inv_freq / attention_scaling as transformers computed them from the config's rope parameters
        self.register_buffer("inv_freq", rot.inv_freq.detach().to(torch.float32).clone(), persistent=False)
        self.attention_scaling = float(getattr(rot, "attention_scaling", 1.0))
        self.scaling = self.head_dim ** -0.5

    def empty_past(self, batch: int, dtype=torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        z = torch.zeros(batch, self.n_kv, 0, self.head_dim, dtype=dtype)
        return [(z, z) for _ in range(self.n_layers)]

    def forward(self, h: torch.Tensor, past: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        b, l = h.shape[0], h.shape[1]
        p = past[0][0].shape[2]
        pos = (torch.arange(l) + p).to(torch.float32)  # positions of the new entries
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(h.dtype)[None, None]
        sin = (emb.sin() * self.attention_scaling).to(h.dtype)[None, None]
        kpos = torch.arange(p + l)
        masked = kpos[None, :] > (torch.arange(l) + p)[:, None]  # [L, P + L]: future keys
        rep = self.n_heads // self.n_kv
        presents = []
        for layer, (pk, pv) in zip(self.llama.layers, past):
            attn, mlp = layer.self_attn, layer.mlp
            x = _rms_norm(h, layer.input_layernorm.weight, self.eps)
            q = attn.q_proj(x).reshape(b, l, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).reshape(b, l, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).reshape(b, l, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k = torch.cat((pk, k), dim=2)
            v = torch.cat((pv, v), dim=2)
            presents.append((k, v))
            if rep > 1:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            scores = torch.matmul(q, k.transpose(2, 3)).to(torch.float32) * self.scaling
            scores = scores.masked_fill(masked, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(q.dtype)
            o = torch.matmul(probs, v).transpose(1, 2).reshape(b, l, self.n_heads * self.head_dim)
            h = h + attn.o_proj(o)
            x = _rms_norm(h, layer.post_attention_layernorm.weight, self.eps)
            h = h + mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
        return _rms_norm(h, self.llama.norm.weight, self.eps), presents


def _pairs(flat: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]


class BaseGraph(nn.Module):
    """x [B, L, 8] + flat past -> hidden [B, L, H] + flat presents (exported as model_base)."""

    def __init__(self, model: MidiModel) -> None:
        super().__init__()
        self.embed = model.net.embed_tokens
        self.f = FunctionalLlama(model.net)

    def forward(self, x: torch.Tensor, *past: torch.Tensor):
        hidden, presents = self.f(self.embed(x).sum(dim=-2), _pairs(past))
        return (hidden, *[t for kv in presents for t in kv])


class TokenGraph(nn.Module):
    """hidden [B, Lh, H], x [B, Lx], rows [R] + flat past -> logits [B, Lh + Lx, R] + presents
    (exported as model_token)."""

    def __init__(self, model: MidiModel) -> None:
        super().__init__()
        self.embed = model.net_token.embed_tokens
        self.lm_head = model.lm_head
        self.f = FunctionalLlama(model.net_token)

    def forward(self, hidden: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, *past: torch.Tensor):
        h = torch.cat((hidden, self.embed(x)), dim=1)
        out, presents = self.f(h, _pairs(past))
        w = self.lm_head.weight.index_select(0, rows)
        logits = torch.matmul(out, w.t())
        return (logits, *[t for kv in presents for t in kv])


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def _kv_names(n_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def _atomic_folder(folder: Path, write) -> Path:
    """Run write(tmp) in a temporary sibling of `folder`, then rename it into place; on any
    exception the temporary folder is removed and nothing is left behind."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _io_spec(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    return {"inputs": [spec(v) for v in m.graph.input], "outputs": [spec(v) for v in m.graph.output],
            "nodes": len(m.graph.node), "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))}


def _export_graph(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes, opset: int) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer warnings
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True)


def export_onnx(model: MidiModel, folder: str | os.PathLike, *, opset: int = 17) -> dict:
    """Write model_base.onnx, model_token.onnx, config.json and export.json into `folder`
    (atomically) and return export.json's content."""
    if opset < 14:
        raise ValueError(f"opset must be >= 14, got {opset}")
    model = model.float().eval()
    folder = Path(folder)
    info: dict = {}

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        base, token = BaseGraph(model).eval(), TokenGraph(model).eval()
        nb, nt = base.f.n_layers, token.f.n_layers
        kv = {0: "batch", 2: "past"}
        kvo = {0: "batch", 2: "total"}
        H = model.config.n_embd
        with torch.no_grad():
            # base: B=2, L=3 events, past 2 (non-trivial sizes so nothing is specialised by the trace)
            x = torch.randint(0, model.tokenizer.vocab_size, (2, 3, 8))
            past = [torch.randn(2, base.f.n_kv, 2, base.f.head_dim) for _ in range(2 * nb)]
            in_names = ["x", *_kv_names(nb, "past_key_values")]
            out_names = ["hidden", *_kv_names(nb, "present")]
            axes = {"x": {0: "batch", 1: "events"}, "hidden": {0: "batch", 1: "events"},
                    **{n: kv for n in in_names[1:]}, **{n: kvo for n in out_names[1:]}}
            _export_graph(base, (x, *past), tmp / BASE_FILE, in_names, out_names, axes, opset)
            # token: hidden [2, 1, H], x [2, 2], rows [5], past 1
            hid = torch.randn(2, 1, H)
            xt = torch.randint(0, model.tokenizer.vocab_size, (2, 2))
            rows = torch.tensor([0, 3, 5, 7, 9])
            past = [torch.randn(2, token.f.n_kv, 1, token.f.head_dim) for _ in range(2 * nt)]
            tin = ["hidden", "x", "rows", *_kv_names(nt, "past_key_values")]
            tout = ["logits", *_kv_names(nt, "present")]
            taxes = {"hidden": {0: "batch", 1: "hidden_len"}, "x": {0: "batch", 1: "tokens"}, "rows": {0: "rows"},
                     "logits": {0: "batch", 1: "positions", 2: "rows"},
                     **{n: kv for n in tin[3:]}, **{n: kvo for n in tout[1:]}}
            _export_graph(token, (hid, xt, rows, *past), tmp / TOKEN_FILE, tin, tout, taxes, opset)
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
        import onnx

        info.update({
            "format": "trance_assets midi-model onnx export",
            "precision": "fp32",
            "opset": opset,
            "exporter": "torch.onnx.export(dynamo=False) of models.midi_model_onnx.FunctionalLlama",
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
            "model": {"size": model.config.size_name, "params": model.n_params, "hidden": H,
                      "vocab": model.tokenizer.vocab_size,
                      "net": {"layers": nb, "heads": base.f.n_heads, "kv_heads": base.f.n_kv, "head_dim": base.f.head_dim},
                      "net_token": {"layers": nt, "heads": token.f.n_heads, "kv_heads": token.f.n_kv, "head_dim": token.f.head_dim}},
            "graphs": {BASE_FILE: _io_spec(tmp / BASE_FILE), TOKEN_FILE: _io_spec(tmp / TOKEN_FILE)},
            "token_graph_usage": "sequence = concat(hidden [B,0|1,H], embed(x) [B,T,H]); logits[..., j] is vocab id rows[j]; "
                                 "rows = arange(vocab) for full logits",
            "file_bytes": {f: (tmp / f).stat().st_size for f in GRAPHS},
            "export_seconds": round(time.perf_counter() - t0, 2),
        })
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2))

    _atomic_folder(folder, write)
    return info


# ---------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------
def quantize_int8(folder: str | os.PathLike, out_folder: str | os.PathLike, *, weight_type: str = "QInt8",
                  per_channel: bool = False) -> dict:
    """Dynamic INT8 quantisation (onnxruntime.quantization.quantize_dynamic, MatMul weights) of
    both graphs of an fp32 export in `folder` into `out_folder` (atomically); returns the sizes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder, out_folder = Path(folder), Path(out_folder)
    src_info = json.loads((folder / EXPORT_FILE).read_text())
    result: dict = {}

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        for f in GRAPHS:
            quantize_dynamic(str(folder / f), str(tmp / f), op_types_to_quantize=["MatMul"], per_channel=per_channel,
                             weight_type=getattr(QuantType, weight_type), extra_options={"MatMulConstBOnly": True})
        shutil.copy2(folder / CONFIG_FILE, tmp / CONFIG_FILE)
        before = {f: (folder / f).stat().st_size for f in GRAPHS}
        after = {f: (tmp / f).stat().st_size for f in GRAPHS}
        result.update({
            "precision": "int8-dynamic",
            "quantization": {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ["MatMul"],
                             "weight_type": weight_type, "activation_type": "QUInt8 (dynamic, per call)",
                             "per_channel": per_channel, "MatMulConstBOnly": True,
                             "not_quantized": "lm_head (gathered rows), embeddings, attention matmuls"},
            "file_bytes_before": before, "file_bytes_after": after,
            "total_bytes_before": sum(before.values()), "total_bytes_after": sum(after.values()),
            "ratio": round(sum(after.values()) / sum(before.values()), 4),
            "quantize_seconds": round(time.perf_counter() - t0, 2),
        })
        info = {**src_info, "precision": "int8-dynamic", "source_folder": str(folder), "quantization": result["quantization"],
                "graphs": {f: _io_spec(tmp / f) for f in GRAPHS}, "file_bytes": after}
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2))

    _atomic_folder(out_folder, write)
    return result


# ---------------------------------------------------------------------------------------------
# onnxruntime stepper
# ---------------------------------------------------------------------------------------------
def select_rows(logits: np.ndarray, rows) -> np.ndarray:
    """The reference meaning of `rows`: full logits [B, V] indexed on the last axis."""
    return logits if rows is None else logits[..., _rows_array(rows, logits.shape[-1])]


def _rows_array(rows, vocab: int) -> np.ndarray:
    if isinstance(rows, slice):
        return np.arange(vocab, dtype=np.int64)[rows]
    if isinstance(rows, range):
        return np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
    return np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)


def session_options(threads: int | None = None, spin: bool | None = None):
    """ORT session options: all graph optimisations, sequential execution, `threads` intra-op
    threads. `spin` (default: off, env MIDI_ORT_SPIN=1 turns it on): whether idle intra-op workers
    busy-wait for more work. The stepper alternates between two sessions, so a spinning pool of the
    session that just ran steals a core from the other one (measured 2-3x slower on 2 cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if spin is None:
        spin = os.environ.get("MIDI_ORT_SPIN", "0") == "1"
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return so


class OnnxStepper(EventStepper):
    """``EventStepper`` on onnxruntime over an export folder (fp32 or INT8).

    The event cache and the token cache are kept as OrtValues (the previous call's ``present``
    outputs bound as the next call's ``past``), so nothing is copied through numpy between steps.
    ``token_start(hidden, rows=None)`` / ``token_next(ids, rows=None)``: with ``rows`` (a slice,
    range or int ids) only those logits are computed and returned ([B, len(rows)]), equal to the
    full logits indexed by ``rows``.
    """

    supports_rows = True

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.info = json.loads((self.folder / EXPORT_FILE).read_text())
        self.config = MidiModelConfig.from_dict(json.loads((self.folder / CONFIG_FILE).read_text()))
        so = session_options(threads)
        self.base = ort.InferenceSession(str(self.folder / BASE_FILE), so, providers=list(providers))
        self.token = ort.InferenceSession(str(self.folder / TOKEN_FILE), so, providers=list(providers))
        m = self.info["model"]
        self.hidden_size = int(m["hidden"])
        self.vocab_size = int(m["vocab"])
        self._net = m["net"]
        self._tok = m["net_token"]
        self._base_in = [i.name for i in self.base.get_inputs()]
        self._base_out = [o.name for o in self.base.get_outputs()]
        self._tok_in = [i.name for i in self.token.get_inputs()]
        self._tok_out = [o.name for o in self.token.get_outputs()]
        self._all_rows = np.arange(self.vocab_size, dtype=np.int64)
        self._ro = ort.RunOptions()
        self._past = None
        self._tpast = None
        self._batch = 0

    @staticmethod
    def _ov(a: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(a)

    def _empty(self, batch: int, spec: dict) -> list:
        z = self._ov(np.zeros((batch, spec["kv_heads"], 0, spec["head_dim"]), dtype=np.float32))
        return [z] * (2 * spec["layers"])

    def start(self, batch: int) -> None:
        self._batch = int(batch)
        self._past = self._empty(self._batch, self._net)
        self._tpast = None

    def net_step(self, x):
        x = np.ascontiguousarray(x, dtype=np.int64)
        if x.ndim == 2:
            x = x[None]
        if self._past is None or x.shape[0] != self._batch:
            self.start(x.shape[0])
        feeds = {"x": self._ov(x)}
        feeds.update(zip(self._base_in[1:], self._past))
        outs = self.base.run_with_ort_values(self._base_out, feeds, self._ro)
        self._past = list(outs[1:])
        return np.ascontiguousarray(outs[0].numpy()[:, -1], dtype=np.float32)

    def _token_run(self, hidden: np.ndarray, ids: np.ndarray, past: list, rows) -> np.ndarray:
        r = self._all_rows if rows is None else _rows_array(rows, self.vocab_size)
        feeds = {"hidden": self._ov(hidden), "x": self._ov(ids), "rows": self._ov(r)}
        feeds.update(zip(self._tok_in[3:], past))
        outs = self.token.run_with_ort_values(self._tok_out, feeds, self._ro)
        self._tpast = list(outs[1:])
        return outs[0].numpy()[:, -1]

    def token_start(self, hidden, rows=None):
        h = np.ascontiguousarray(hidden, dtype=np.float32).reshape(-1, 1, self.hidden_size)
        b = h.shape[0]
        return self._token_run(h, np.zeros((b, 0), dtype=np.int64), self._empty(b, self._tok), rows)

    def token_next(self, ids, rows=None):
        if self._tpast is None:
            raise RuntimeError("token_next before token_start")
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1, 1)
        return self._token_run(np.zeros((ids.shape[0], 0, self.hidden_size), dtype=np.float32), ids, self._tpast, rows)

    # ---- teacher-forced evaluation --------------------------------------------------------------
    def teacher_forced_logits(self, seq: np.ndarray, rows=None) -> np.ndarray:
        """seq [N, 8] -> logits [N - 1, 8, R]: net over events 0..N-2, net_token over each next
        event's first 7 tokens (row t predicts event t + 1)."""
        seq = np.asarray(seq, dtype=np.int64)
        self.start(1)
        hidden = self.base.run(["hidden"], {"x": seq[None, :-1], **{n: v.numpy() for n, v in zip(self._base_in[1:], self._past)}})[0][0]
        n = hidden.shape[0]
        r = self._all_rows if rows is None else _rows_array(rows, self.vocab_size)
        feeds = {"hidden": hidden[:, None].astype(np.float32), "x": seq[1:, :-1], "rows": r}
        z = np.zeros((n, self._tok["kv_heads"], 0, self._tok["head_dim"]), dtype=np.float32)
        feeds.update({name: z for name in self._tok_in[3:]})
        return self.token.run(["logits"], feeds)[0]


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def parity(model: MidiModel, folder: str | os.PathLike, *, batch: int = 2, events: int = 5, seed: int = 0,
           threads: int | None = 1) -> dict:
    """Max abs differences between PyTorch (transformers, DynamicCache) and the ONNX export on
    random valid inputs: a prefix of `events` events, then one cached event; the token graph on the
    first step (hidden only), a cached multi-token step and a cached single-token step."""
    import onnxruntime as ort
    from transformers import DynamicCache

    model = model.float().eval()
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    V = model.tokenizer.vocab_size
    x = rng.integers(0, V, size=(batch, events + 1, 8)).astype(np.int64)
    so = session_options(threads)
    base = ort.InferenceSession(str(folder / BASE_FILE), so, providers=["CPUExecutionProvider"])
    token = ort.InferenceSession(str(folder / TOKEN_FILE), so, providers=["CPUExecutionProvider"])
    bin_ = [i.name for i in base.get_inputs()]
    tin = [i.name for i in token.get_inputs()]
    bout = [o.name for o in base.get_outputs()]
    tout = [o.name for o in token.get_outputs()]
    fb, ft = FunctionalLlama(model.net), FunctionalLlama(model.net_token)
    out: dict = {"batch": batch, "events": events, "seed": seed}
    with torch.inference_mode():
        cache = DynamicCache()
        ref_h1 = model.forward(torch.from_numpy(x[:, :events]), cache=cache).numpy()
        ref_h2 = model.forward(torch.from_numpy(x[:, events:]), cache=cache).numpy()
        past = {n: np.zeros((batch, fb.n_kv, 0, fb.head_dim), np.float32) for n in bin_[1:]}
        o1 = base.run(bout, {"x": x[:, :events], **past})
        o2 = base.run(bout, {"x": x[:, events:], **dict(zip(bin_[1:], o1[1:]))})
        out["hidden_max_abs_diff"] = float(max(np.abs(o1[0] - ref_h1).max(), np.abs(o2[0] - ref_h2).max()))
        # token graph: first call (hidden only), then 3 tokens at once, then 1 token, all cached
        hid = ref_h2[:, -1]
        toks = rng.integers(0, V, size=(batch, 4)).astype(np.int64)
        tcache = DynamicCache()
        ref = [model.forward_token(torch.from_numpy(hid), None, cache=tcache).numpy(),
               model.forward_token(None, torch.from_numpy(toks[:, :3]), cache=tcache).numpy(),
               model.forward_token(None, torch.from_numpy(toks[:, 3:]), cache=tcache).numpy()]
        rows = np.arange(V, dtype=np.int64)
        tpast = {n: np.zeros((batch, ft.n_kv, 0, ft.head_dim), np.float32) for n in tin[3:]}
        e0 = np.zeros((batch, 0), np.int64)
        eh = np.zeros((batch, 0, hid.shape[-1]), np.float32)
        r1 = token.run(tout, {"hidden": hid[:, None], "x": e0, "rows": rows, **tpast})
        r2 = token.run(tout, {"hidden": eh, "x": toks[:, :3], "rows": rows, **dict(zip(tin[3:], r1[1:]))})
        r3 = token.run(tout, {"hidden": eh, "x": toks[:, 3:], "rows": rows, **dict(zip(tin[3:], r2[1:]))})
        diffs = [float(np.abs(a[0] - b).max()) for a, b in zip((r1, r2, r3), ref)]
        # restricted rows equal the full logits' columns
        sub = np.array([2, 3, 100, V - 1], dtype=np.int64)
        r4 = token.run(["logits"], {"hidden": eh, "x": toks[:, 3:], "rows": sub, **dict(zip(tin[3:], r2[1:]))})[0]
        out["logits_max_abs_diff"] = max(diffs)
        out["logits_max_abs_diff_steps"] = diffs
        out["rows_subset_max_abs_diff"] = float(np.abs(r4 - r3[0][..., sub]).max())
        out["logits_scale"] = float(np.abs(ref[0]).max())
    return out


def top1_agreement(fp32_folder: str | os.PathLike, int8_folder: str | os.PathLike, sequences: list[np.ndarray],
                   *, threads: int | None = None) -> dict:
    """Teacher-forced comparison of two exports (e.g. fp32 vs INT8) on held-out token sequences
    [N, 8]: net over each sequence, net_token over each next event's tokens (row t predicts event
    t + 1). Returns the fraction of token positions (those whose target is not pad) where the argmax
    of the full logits agrees, the number of positions, each model's top-1 accuracy against the
    targets and the largest logit difference."""
    a, b = OnnxStepper(fp32_folder, threads=threads), OnnxStepper(int8_folder, threads=threads)
    agree = positions = hit_a = hit_b = 0
    max_diff = 0.0
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        la, lb = a.teacher_forced_logits(seq), b.teacher_forced_logits(seq)
        target = seq[1:]
        mask = target != a.config.tokenizer.get("pad_id", 0)
        pa, pb = la.argmax(-1), lb.argmax(-1)
        agree += int((pa == pb)[mask].sum())
        hit_a += int((pa == target)[mask].sum())
        hit_b += int((pb == target)[mask].sum())
        positions += int(mask.sum())
        max_diff = max(max_diff, float(np.abs(la - lb).max()))
    return {"positions": positions, "sequences": len(sequences), "top1_agreement": agree / positions if positions else float("nan"),
            "top1_accuracy_a": hit_a / positions if positions else float("nan"),
            "top1_accuracy_b": hit_b / positions if positions else float("nan"),
            "logits_max_abs_diff": max_diff}
