"""A SkyTNT midi-model–compatible transformer in PyTorch + transformers (no Dagster).

Two stock Llama decoders (facts: ../shared/docs/MIDI-MODEL-FACTS.md; re-implemented, not copied):

- ``net`` runs over *events*. An event is a row of 8 token ids (``formats.midi_tokenizer``); its
  input embedding is the **sum** of ``net.embed_tokens`` over the 8 ids (row 0, the pad id, is
  zero). The hidden state at event t predicts event t+1.
- ``net_token`` runs *inside* one event with its own embedding table: input
  ``[hidden_t, emb(tok_0) … emb(tok_6)]``; position 0 predicts the event type, position k its k-th
  parameter. One untied ``lm_head`` (hidden -> vocab, no bias) reads ``net_token``'s outputs.

Parameter names are the published ones (``net.*``, ``net_token.*``, ``lm_head.weight``), so a
published state dict loads with no missing or unexpected keys. ``config.json`` holds
``model_type "midi_model"``, ``n_embd``, ``net_config`` / ``net_token_config`` (non-default Llama
fields only) and the ``tokenizer`` block; weights come from ``model.safetensors``,
``pytorch_model.bin`` or a Lightning ``model.ckpt`` (``state_dict`` inside), never unpickling
anything but tensors.

The public methods mirror upstream's: ``forward(x[B, L, 8]) -> hidden[B, L, H]`` and
``forward_token(hidden, x) -> logits``; ``loss(seq)`` is the training objective (x = seq[:, :-1],
y = seq[:, 1:], cross-entropy over all 8 slots, pad ignored).
"""

from __future__ import annotations

import abc
import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.midi_tokenizer import MidiTokenizer

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_FILE = "pytorch_model.bin"
CKPT_FILE = "model.ckpt"
MODEL_TYPE = "midi_model"
HUB_MEDIUM = "skytnt/midi-model-tv2o-medium"

# Llama fields a checkpoint's net configs may carry that are not model hyper-parameters.
_IGNORED_LLAMA_KEYS = {"transformers_version", "model_type", "architectures", "_name_or_path", "torch_dtype", "dtype",
                       "_attn_implementation_autoset", "_commit_hash"}

# The published sizes (net, net_token): hidden, intermediate, heads, layers. "tiny" is for tests.
SIZES: dict[str, dict] = {
    "medium": {"n_embd": 1024, "net": (1024, 4096, 16, 12), "net_token": (1024, 1024, 4, 3)},
    "large": {"n_embd": 1024, "net": (1024, 4096, 16, 24), "net_token": (1024, 1024, 4, 6)},
    "small": {"n_embd": 128, "net": (128, 512, 4, 4), "net_token": (128, 256, 2, 1)},  # the demo profile (CPU)
    "tiny": {"n_embd": 32, "net": (32, 64, 2, 2), "net_token": (32, 32, 2, 1)},
}


def _llama_fields(hidden: int, intermediate: int, heads: int, layers: int, vocab: int, max_positions: int) -> dict:
    """The non-default Llama fields the published configs carry."""
    return {"hidden_size": hidden, "intermediate_size": intermediate, "num_attention_heads": heads,
            "num_key_value_heads": heads, "num_hidden_layers": layers, "max_position_embeddings": max_positions,
            "pad_token_id": 0, "use_cache": False, "vocab_size": vocab}


@dataclass
class MidiModelConfig:
    """config.json of a midi-model checkpoint."""

    tokenizer: dict
    net_config: dict
    net_token_config: dict
    n_embd: int = 1024
    extra: dict = field(default_factory=dict)  # other top-level keys, written back unchanged

    @classmethod
    def from_size(cls, size: str = "medium", tokenizer_version: str = "v2", optimise_midi: bool = True) -> "MidiModelConfig":
        if size not in SIZES:
            raise ValueError(f"unknown midi-model size {size!r}; known: {sorted(SIZES)}")
        s = SIZES[size]
        tok = MidiTokenizer(tokenizer_version, optimise_midi=optimise_midi)
        return cls(
            tokenizer=tok.to_config(),
            net_config=_llama_fields(*s["net"], vocab=tok.vocab_size, max_positions=4096),
            net_token_config=_llama_fields(*s["net_token"], vocab=tok.vocab_size, max_positions=tok.max_token_seq + 8),
            n_embd=s["n_embd"],
        )

    @classmethod
    def from_dict(cls, d: dict) -> "MidiModelConfig":
        d = dict(d)
        mt = d.pop("model_type", MODEL_TYPE)
        if mt != MODEL_TYPE:
            raise ValueError(f"config.json has model_type {mt!r}, expected {MODEL_TYPE!r}")
        try:
            tok, net, net_token = d.pop("tokenizer"), d.pop("net_config"), d.pop("net_token_config")
        except KeyError as e:
            raise ValueError(f"config.json lacks {e.args[0]!r} (needs tokenizer, net_config, net_token_config)") from None
        n_embd = int(d.pop("n_embd", net.get("hidden_size", 1024)))
        return cls(tokenizer=tok, net_config=net, net_token_config=net_token, n_embd=n_embd, extra=d)

    def to_dict(self) -> dict:
        return {**self.extra, "model_type": MODEL_TYPE, "n_embd": self.n_embd, "net_config": self.net_config,
                "net_token_config": self.net_token_config, "tokenizer": self.tokenizer}

    def llama(self, which: str):
        from transformers import LlamaConfig

        fields = {k: v for k, v in (self.net_config if which == "net" else self.net_token_config).items() if k not in _IGNORED_LLAMA_KEYS}
        return LlamaConfig(**fields)

    @property
    def size_name(self) -> str:
        for name, s in SIZES.items():
            if (self.net_config.get("hidden_size"), self.net_config.get("intermediate_size"), self.net_config.get("num_attention_heads"),
                    self.net_config.get("num_hidden_layers")) == s["net"] and self.net_token_config.get("num_hidden_layers") == s["net_token"][3]:
                return name
        return "custom"


class MidiModel(nn.Module):
    def __init__(self, config: MidiModelConfig):
        super().__init__()
        from transformers import LlamaModel

        self.config = config
        self.tokenizer = MidiTokenizer.from_config(config.tokenizer)
        self.net = LlamaModel(config.llama("net"))
        self.net_token = LlamaModel(config.llama("net_token"))
        self.lm_head = nn.Linear(config.n_embd, self.tokenizer.vocab_size, bias=False)
        if self.net.config.hidden_size != config.n_embd or self.net_token.config.hidden_size != config.n_embd:
            raise ValueError("net, net_token and n_embd must have the same hidden size")

    # ---- upstream's interface ----------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """x [B, L, 8] token ids -> hidden [B, L, H]. With a transformers Cache as `cache`, the L
        events are appended to it (incremental generation)."""
        emb = self.net.embed_tokens(x).sum(dim=-2)
        out = self.net(inputs_embeds=emb, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def forward_token(self, hidden_state: torch.Tensor, x: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """hidden [B, H] (one event's hidden state) and x [B, k] (the event's first k tokens) ->
        logits [B, 1 + k, V]; with `cache`, only the new positions are run (hidden_state None after
        the first call)."""
        parts = []
        if hidden_state is not None:
            parts.append(hidden_state.unsqueeze(1))
        if x is not None and x.shape[-1] > 0:
            parts.append(self.net_token.embed_tokens(x))
        out = self.net_token(inputs_embeds=torch.cat(parts, dim=1), past_key_values=cache, use_cache=cache is not None)
        return self.lm_head(out.last_hidden_state)

    # ---- training ------------------------------------------------------------------------------
    def loss(self, seq: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every non-pad token of events 1..L-1 of `seq` [B, L, 8]."""
        x, y = seq[:, :-1], seq[:, 1:]
        hidden = self.forward(x)
        b, l, h = hidden.shape
        y = y.reshape(b * l, -1)
        logits = self.forward_token(hidden.reshape(b * l, h), y[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=self.tokenizer.pad_id)

    # ---- files ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, *, revision: str | None = None, token: str | None = None,
                        dtype: torch.dtype = torch.float32) -> "MidiModel":
        """A folder (config.json + model.safetensors / pytorch_model.bin / model.ckpt) or a Hugging
        Face hub id such as ``skytnt/midi-model-tv2o-medium`` (downloaded with huggingface_hub)."""
        folder = Path(source)
        if not folder.is_dir():
            folder = _download(str(source), revision=revision, token=token)
        cfg_file = folder / CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: not a midi-model checkpoint folder")
        try:
            config = MidiModelConfig.from_dict(json.loads(cfg_file.read_text()))
        except (json.JSONDecodeError, ValueError) as e:
            raise ValueError(f"{cfg_file}: {e}") from e
        model = cls(config)
        state = read_state_dict(folder)
        model.load_published_state_dict(state, source=str(folder))
        return model.to(dtype).eval()

    def load_published_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a published state dict; any missing or unexpected key is an error naming them (the
        rotary `inv_freq` buffers some exports carry are recomputed, not loaded)."""
        state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{source}: state dict does not match the config: missing {missing[:8]}"
                             f"{'…' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)

    def save_pretrained(self, folder: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        """config.json + model.safetensors, the published layout (written into `folder` as given;
        callers that need atomicity write into a temporary folder and rename it)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
        state = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})
        return folder

    def copy(self) -> "MidiModel":
        return copy.deepcopy(self)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def read_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint folder: model.safetensors, else pytorch_model.bin, else a
    Lightning model.ckpt (its "state_dict"), loaded with weights_only=True (tensors only)."""
    folder = Path(folder)
    if (folder / SAFETENSORS_FILE).is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / SAFETENSORS_FILE))
    for name in (BIN_FILE, CKPT_FILE):
        f = folder / name
        if f.is_file():
            try:
                obj = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 — pickles with anything but tensors are refused here
                raise ValueError(f"{f}: cannot be read as tensors only (weights_only=True): {e}") from e
            state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
            if not isinstance(state, dict):
                raise ValueError(f"{f}: no state dict inside")
            return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise FileNotFoundError(f"{folder} has none of {SAFETENSORS_FILE}, {BIN_FILE}, {CKPT_FILE}")


def _download(repo_id: str, *, revision: str | None, token: str | None) -> Path:
    """Fetch config.json and the first weights file the hub repo has (huggingface_hub)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cfg = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, token=token))
    except Exception as e:  # noqa: BLE001 — offline, gated or a typo: say which source failed
        raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a reachable Hugging Face hub repo: {e}") from e
    for name in (SAFETENSORS_FILE, BIN_FILE, CKPT_FILE):
        try:
            hf_hub_download(repo_id, name, revision=revision, token=token)
            break
        except EntryNotFoundError:
            continue
    else:
        raise FileNotFoundError(f"hub repo {repo_id!r} has none of {SAFETENSORS_FILE}, {BIN_FILE}, {CKPT_FILE}")
    return cfg.parent


# ---- stepping with KV caches (what generation drives; the ONNX runtime mirrors it) -------------
class EventStepper(abc.ABC):
    """A midi-model stepped one event / one token at a time with KV caches, numpy in and out.

    The interface every backend implements (``TorchStepper`` here, ``OnnxStepper`` in
    ``models.midi_model_onnx``)::

        start(batch)                  forget the event cache (a new sequence per batch row)
        net_step(x [B, L, 8] int64)   append L events to the event cache -> hidden of the last one [B, H] float32
        token_start(hidden [B, H], rows=None)  a fresh token cache; position 0 -> logits [B, V] (the event type)
        token_next(ids [B] int64, rows=None)   append the token just chosen -> logits [B, V] (the next parameter)

    ``rows`` (a slice, range or id list; backends with ``supports_rows``) returns only those columns of
    the logits, computing just those rows of ``lm_head``: identical values, a fraction of the work when
    a slot's mask allows one parameter block (generation always knows it).
    """

    hidden_size: int
    vocab_size: int
    supports_rows: bool = False

    @abc.abstractmethod
    def start(self, batch: int) -> None: ...

    @abc.abstractmethod
    def net_step(self, x): ...

    @abc.abstractmethod
    def token_start(self, hidden, rows=None): ...

    @abc.abstractmethod
    def token_next(self, ids, rows=None): ...


class TorchStepper(EventStepper):
    """Eager PyTorch: `net` keeps a transformers DynamicCache across events, `net_token` gets a
    fresh one per event."""

    supports_rows = True

    def __init__(self, model: MidiModel, device: str | torch.device = "cpu"):
        self.model = model.eval()
        self.device = torch.device(device)
        self.hidden_size = model.config.n_embd
        self.vocab_size = model.tokenizer.vocab_size
        self._cache = None
        self._token_cache = None

    def start(self, batch: int) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache()
        self._batch = batch

    @torch.inference_mode()
    def net_step(self, x):
        x = torch.as_tensor(x, dtype=torch.long, device=self.device)
        hidden = self.model.forward(x, cache=self._cache)
        return hidden[:, -1].float().cpu().numpy()

    @torch.inference_mode()
    def token_start(self, hidden, rows=None):
        from transformers import DynamicCache

        self._token_cache = DynamicCache()
        h = torch.as_tensor(hidden, device=self.device, dtype=next(self.model.parameters()).dtype)
        return self._logits(h.unsqueeze(1), rows)

    @torch.inference_mode()
    def token_next(self, ids, rows=None):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(-1, 1)
        return self._logits(self.model.net_token.embed_tokens(ids), rows)

    def _logits(self, embeds: torch.Tensor, rows):
        """net_token one step on the cache, then lm_head (all rows, or just `rows`)."""
        out = self.model.net_token(inputs_embeds=embeds, past_key_values=self._token_cache, use_cache=True).last_hidden_state[:, -1]
        weight = self.model.lm_head.weight
        if rows is not None:
            weight = weight[rows] if isinstance(rows, slice) else weight[torch.as_tensor(list(rows), dtype=torch.long, device=weight.device)]
        return (out @ weight.T).float().cpu().numpy()
