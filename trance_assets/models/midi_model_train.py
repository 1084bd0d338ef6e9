"""Training the SkyTNT-compatible midi-model (`models.midi_model`): full fine-tuning and (Q)LoRA
adapters, staged over the corpus tiers. Torch + peft + numpy; no Dagster imports.

Data. Each example is a token matrix [n_events, 8] (`corpus.midi_model_tokens`; bos row first, eos
row last, pad id 0). A training minibatch is ``config.batch_size`` sequences chosen by
``training._batch_indices`` (epochs of permutations, a function of ``(config.seed, step)``); from
each a random window of up to ``max_events`` consecutive events is taken (the window start drawn
from ``default_rng([seed, step, 1])``), rows right-padded with pad rows (all 0) to the longest
window. The objective is ``MidiModel.loss`` (x = seq[:, :-1], y = seq[:, 1:], cross-entropy over
all 8 slots, pad ignored). The validation loss is the token-weighted mean of that loss over every
validation sequence cut into windows of ``max_events`` events with stride ``max_events - 1`` (each
event transition is predicted exactly once; windows sorted by length into batches of
``config.eval_batch_size``), so it is deterministic and comparable across evaluations.

Optimiser. AdamW (lr = ``config.lr``, constant; weight decay 0.01 on matrices only, none on norms /
biases) over the trainable parameters only, global gradient-norm clip ``config.clip_norm``. On a
CUDA device the forward runs under bf16 autocast when the GPU supports it (``autocast=None``).

Loop. ``training._run`` (validation early stopping, atomic ``last/`` checkpoints after every
evaluation, resume after a kill bit-identical on CPU, learning curve, ``best/`` at the end). The
object handed to it wraps the model:

- full training: its state dict is the MidiModel's (published keys); ``best/`` = ``save_pretrained``
  (``config.json`` + ``model.safetensors``).
- LoRA: its state dict holds ONLY the trainable adapter weights, so ``last/`` stays small even for
  the 233 M-parameter medium model; ``best/`` holds the PEFT adapter in ``best/adapter/``
  (``adapter_config.json`` + ``adapter_model.safetensors``) AND the merged model
  (``config.json`` + ``model.safetensors``, a plain published state dict).

LoRA (``LoraSettings``, ``apply_lora``). PEFT ``LoraConfig`` with a regex ``target_modules`` that
names only the configured sub-networks' projections, e.g.
``^(?:net|net_token)\\.layers\\.\\d+\\.(?:self_attn|mlp)\\.(?:q_proj|v_proj)$``; everything else is
frozen. ``plan()`` = r 16 / alpha 32 on q/v (the plan), ``upstream()`` = r 64 / alpha 128 on
q/k/v/o/gate/up/down (what SkyTNT's published adapters use). QLoRA (``qlora="auto"`` on a CUDA GPU
with bitsandbytes importable): every linear layer of ``net`` / ``net_token`` becomes a
bitsandbytes NF4 ``Linear4bit`` (embeddings, norms and ``lm_head`` stay in full precision),
``prepare_model_for_kbit_training``, then the adapters on top; merging dequantises.

Staged training (``train_stages``) mirrors ``pipeline.train_stages``: stages in order, each in its
own checkpoint folder ``work_dir/<stage name>``; stages named in ``lora_stages`` train adapters (a
later LoRA stage continues from the previous LoRA stage's adapters on the same base), the others
train all weights (adapters of earlier stages merged first).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .midi_model import MidiModel
from .pipeline import Stage, StageReport
from .training import BEST, TrainConfig, TrainResult, _batch_indices, _run, _step_seed, resolve_device

__all__ = [
    "ADAPTER_DIR",
    "LoraSettings",
    "qlora_available",
    "apply_lora",
    "merge_lora",
    "merged_state_dict",
    "save_adapter",
    "train_midi_model",
    "validation_loss",
    "train_windows",
    "val_windows",
    "train_stages",
]

ADAPTER_DIR = "adapter"
SUBNETS = ("net", "net_token")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
PROJECTIONS = ATTN + MLP
WEIGHT_DECAY = 0.01
FAMILY = "midi_model"
FAMILY_LORA = "midi_model_lora"


# ------------------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters for the midi-model.

    ``modules``: the sub-networks that get adapters (``net``, ``net_token``); ``target_modules``:
    the projections inside each decoder layer (q/k/v/o under ``self_attn``, gate/up/down under
    ``mlp``). ``qlora``: "auto" = 4-bit NF4 base (bitsandbytes) when training on a CUDA GPU and
    bitsandbytes is importable, else plain LoRA; "never"; "always" = QLoRA or a RuntimeError naming
    what is missing. ``gradient_checkpointing`` trades compute for memory in both decoders.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    modules: tuple[str, ...] = ("net", "net_token")
    qlora: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "modules", tuple(self.modules))
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need r >= 1, alpha > 0, 0 <= dropout < 1; got r={self.r} alpha={self.alpha} dropout={self.dropout}")
        bad = [m for m in self.target_modules if m not in PROJECTIONS]
        if bad or not self.target_modules:
            raise ValueError(f"target_modules must be a non-empty subset of {PROJECTIONS}; got {self.target_modules}")
        bad = [m for m in self.modules if m not in SUBNETS]
        if bad or not self.modules:
            raise ValueError(f"modules must be a non-empty subset of {SUBNETS}; got {self.modules}")
        if self.qlora not in ("auto", "never", "always"):
            raise ValueError(f"qlora must be 'auto', 'never' or 'always'; got {self.qlora!r}")

    @classmethod
    def plan(cls, **overrides) -> "LoraSettings":
        """The plan's adapters: r 16, alpha 32 on q/v of both decoders."""
        return cls(**{"r": 16, "alpha": 32, "target_modules": ("q_proj", "v_proj"), **overrides})

    @classmethod
    def upstream(cls, **overrides) -> "LoraSettings":
        """SkyTNT's published adapters: r 64, alpha 128 on q/k/v/o/gate/up/down of both decoders."""
        return cls(**{"r": 64, "alpha": 128, "target_modules": PROJECTIONS, **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["modules"] = list(self.modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoraSettings":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def target_regex(self) -> str:
        """The PEFT ``target_modules`` regex (full match on module names relative to MidiModel)."""
        subs = "|".join(re.escape(m) for m in self.modules)
        projs = "|".join(re.escape(m) for m in self.target_modules)
        return rf"^(?:{subs})\.layers\.\d+\.(?:self_attn|mlp)\.(?:{projs})$"

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_regex(),
                          bias="none", init_lora_weights=True)


def qlora_available(device: str | torch.device | None = None) -> tuple[bool, str]:
    """(True, what) when QLoRA can run: a CUDA GPU (and `device`, when given, is one) and an
    importable bitsandbytes; else (False, everything that is missing)."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    elif device is not None and torch.device(device).type != "cuda":
        missing.append(f"a CUDA training device (training runs on {torch.device(device)})")
    try:
        import bitsandbytes  # noqa: F401

        bnb = f"bitsandbytes {getattr(bitsandbytes, '__version__', '?')}"
    except Exception as e:  # noqa: BLE001 - ImportError or a broken native library
        missing.append(f"the bitsandbytes package ({type(e).__name__}: {e})")
        bnb = ""
    if missing:
        return False, "QLoRA needs " + " and ".join(missing)
    return True, f"CUDA {torch.cuda.get_device_name(0)} + {bnb}"


def _use_qlora(settings: LoraSettings, device: torch.device | None) -> bool:
    if settings.qlora == "never":
        return False
    ok, why = qlora_available(device)
    if settings.qlora == "always" and not ok:
        raise RuntimeError(f"LoraSettings(qlora='always'): {why}; use qlora='auto' or 'never' for plain LoRA")
    return ok


# ------------------------------------------------------------------------------------ LoRA
def _quantize_4bit(model: MidiModel, device: torch.device, compute_dtype: torch.dtype) -> None:
    """Replace every nn.Linear of net / net_token by a bitsandbytes NF4 Linear4bit on `device`
    (quantised when moved to the GPU). Needs CUDA + bitsandbytes: not exercised by the CPU tests."""
    import bitsandbytes as bnb

    model.to(device)
    for sub in SUBNETS:
        root = getattr(model, sub)
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu", torch.float32), requires_grad=False,
                                             compress_statistics=True, quant_type="nf4")
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data.to("cpu", torch.float32), requires_grad=False)
                setattr(parent, name, q.to(device))  # .to(cuda) quantises the weight
    model.is_loaded_in_4bit = True  # what peft's dispatcher and prepare_model_for_kbit_training look for


def apply_lora(model: MidiModel, settings: LoraSettings | None = None, *, device: str | torch.device | None = None,
               seed: int | None = None):
    """Wrap `model` in a PEFT LoRA model (`peft.get_peft_model`): adapters on the configured
    projections of the configured sub-networks only, every other parameter frozen.

    The MidiModel is modified in place (its targeted Linear layers become LoRA layers); the PEFT
    model is returned (``.loss``, ``.forward``, ``.forward_token`` reach the MidiModel through it).
    ``seed``: the adapters' random init is drawn from a forked torch RNG seeded with it.

    QLoRA (``settings.qlora`` "auto" with CUDA + bitsandbytes, or "always"): the model moves to
    `device` (default cuda), its decoder linears are quantised to NF4 (``bitsandbytes``),
    ``peft.prepare_model_for_kbit_training`` freezes / upcasts the rest, then the adapters are added.
    That path needs a CUDA GPU and bitsandbytes and is not covered by the CPU test-suite.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    settings = settings or LoraSettings()
    if not isinstance(model, MidiModel):
        raise TypeError(f"apply_lora needs a MidiModel, got {type(model).__name__} (already adapted? use it directly)")
    if any(".lora_A." in n for n, _ in model.named_parameters()):
        raise ValueError("this MidiModel already carries LoRA layers (apply_lora was called on it before)")
    dev = torch.device(device) if device is not None else None
    if _use_qlora(settings, dev if dev is not None else torch.device("cuda")):
        dev = dev if dev is not None and dev.type == "cuda" else torch.device("cuda")
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        _quantize_4bit(model, dev, compute)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if settings.gradient_checkpointing:
        for sub in SUBNETS:
            getattr(model, sub).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(int(seed))
        peft_model = get_peft_model(model, settings.peft_config())
    for n, p in peft_model.named_parameters():  # belt and braces: only adapters train
        p.requires_grad_(".lora_A." in n or ".lora_B." in n)
    return peft_model


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _is_quantized(peft_model) -> bool:
    return bool(getattr(peft_model.get_base_model(), "is_loaded_in_4bit", False))


def _published_keys(config) -> list[str]:
    with torch.device("meta"):
        return list(MidiModel(config).state_dict().keys())


@torch.no_grad()
def merged_state_dict(peft_model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The published state dict of base + active adapters (W + scale·B·A), computed without
    touching the PEFT model; 4-bit base weights are dequantised. CPU tensors, dtype = `dtype` or
    that of ``lm_head``."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    base = peft_model.get_base_model()
    dtype = dtype or base.lm_head.weight.dtype
    mods = dict(base.named_modules())
    out = {}
    for key in _published_keys(base.config):
        mod_name, _, pname = key.rpartition(".")
        mod = mods[mod_name]
        if isinstance(mod, LoraLayer) and pname == "weight":
            w = dequantize_module_weight(mod.get_base_layer()).detach()
            for a in mod.active_adapters:
                if a in mod.lora_A:
                    w = w + mod.get_delta_weight(a).to(w.dtype)
            t = w
        elif isinstance(mod, LoraLayer):
            t = getattr(mod.get_base_layer(), pname)
        elif pname == "weight" and hasattr(mod, "weight") and type(mod.weight).__name__ in ("Params4bit", "Int8Params"):
            t = dequantize_module_weight(mod)
        else:
            t = getattr(mod, pname)
        out[key] = t.detach().to("cpu", dtype).contiguous().clone()
    return out


def merge_lora(peft_model, *, inplace: bool = False) -> MidiModel:
    """A plain MidiModel with the adapters merged into its weights (its state dict has exactly the
    published keys). Plain LoRA: ``merge_and_unload`` on a deep copy (``inplace=True``: on the model
    itself, which then is that MidiModel). QLoRA: a new float MidiModel from the dequantised
    ``merged_state_dict``."""
    if not _is_peft(peft_model):
        raise TypeError(f"merge_lora needs a PEFT model (apply_lora), got {type(peft_model).__name__}")
    if _is_quantized(peft_model):
        base = peft_model.get_base_model()
        model = MidiModel(base.config)
        model.load_published_state_dict(merged_state_dict(peft_model), source="merged QLoRA model")
        return model
    pm = peft_model if inplace else _deepcopy(peft_model)
    merged = pm.merge_and_unload()
    if not isinstance(merged, MidiModel):  # pragma: no cover - peft returns the base model
        raise TypeError(f"merge_and_unload returned {type(merged).__name__}")
    merged.requires_grad_(True)
    return merged


def _deepcopy(m):
    import copy

    return copy.deepcopy(m)


def save_adapter(peft_model, folder: str | os.PathLike) -> Path:
    """The PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) into `folder`;
    load it with ``peft.PeftModel.from_pretrained(MidiModel base, folder)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    return folder


# ------------------------------------------------------------------------------------ the loop
class _Identity:
    """What `_run` reads as ``model.config``: the checkpoint identity (model config + LoRA)."""

    def __init__(self, d: dict):
        self._d = d

    def to_dict(self) -> dict:
        return self._d


class _Trainee(nn.Module):
    """The object `training._run` drives. Full: state dict = the MidiModel's. LoRA: state dict =
    the trainable adapter weights only. ``save`` writes the published model (and the adapter);
    ``cpu()`` is a no-op (``save`` copies to the CPU itself), so a GPU run never round-trips."""

    def __init__(self, net: nn.Module, lora: LoraSettings | None):
        super().__init__()
        self.net = net
        self.lora = lora
        base = net.get_base_model() if lora is not None else net
        self.config = _Identity({"midi_model": base.config.to_dict(), "lora": lora.to_dict() if lora is not None else None})

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.net.named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs):  # noqa: D102 - see the class docstring
        if self.lora is None:
            return self.net.state_dict()
        return {n: p.detach() for n, p in self.trainable().items()}

    @torch.no_grad()
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        if self.lora is None:
            return self.net.load_state_dict(state_dict, strict=strict)
        own = self.trainable()
        if set(own) != set(state_dict):
            missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
            raise ValueError(f"adapter weights do not match the LoRA settings: missing {missing[:4]}, unexpected {unexpected[:4]}")
        for k, v in state_dict.items():
            own[k].copy_(v.to(own[k].device, own[k].dtype))
        return None

    def cpu(self):  # noqa: D102
        return self

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        if self.lora is None:
            return self.net.save_pretrained(folder)
        save_adapter(self.net, folder / ADAPTER_DIR)
        _save_published(self.net.get_base_model().config, merged_state_dict(self.net), folder)
        return folder


def _save_published(config, state: dict[str, torch.Tensor], folder: Path) -> None:
    """config.json + model.safetensors exactly as MidiModel.save_pretrained writes them."""
    from safetensors.torch import save_file

    from .midi_model import CONFIG_FILE, SAFETENSORS_FILE

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    save_file(state, str(folder / SAFETENSORS_FILE), metadata={"format": "pt"})


def _pad_stack(windows: Sequence[np.ndarray], pad: int) -> torch.Tensor:
    n = max(len(w) for w in windows)
    out = np.full((len(windows), n, windows[0].shape[1]), pad, dtype=np.int64)
    for i, w in enumerate(windows):
        out[i, : len(w)] = w
    return torch.from_numpy(out)


def train_windows(seqs: Sequence[np.ndarray], idx: np.ndarray, max_events: int, seed: int, step: int) -> list[np.ndarray]:
    """The training windows of minibatch `step`: one random window of up to `max_events` events
    per chosen sequence (start from ``default_rng([seed, step, 1])``)."""
    rng = np.random.default_rng([int(seed), int(step), 1])
    out = []
    for i in idx:
        s = seqs[int(i)]
        n = len(s)
        start = int(rng.integers(0, n - max_events + 1)) if n > max_events else 0
        out.append(s[start : start + max_events])
    return out


def val_windows(seqs: Sequence[np.ndarray], max_events: int) -> list[np.ndarray]:
    """Every sequence cut into windows of `max_events` events with stride max_events - 1 (each
    transition predicted once), sorted (stably) by length."""
    stride = max_events - 1
    out = []
    for s in seqs:
        for start in range(0, max(len(s) - 1, 0), stride):
            out.append(s[start : start + max_events])
    order = sorted(range(len(out)), key=lambda i: len(out[i]))
    return [out[i] for i in order]


@torch.no_grad()
def _windows_loss(net, windows: Sequence[np.ndarray], pad: int, batch_size: int, device: torch.device, amp) -> float:
    net.eval()
    tot, n = 0.0, 0
    for i in range(0, len(windows), batch_size):
        batch = _pad_stack(windows[i : i + batch_size], pad).to(device)
        k = int((batch[:, 1:] != pad).sum())
        if k == 0:
            continue
        with amp():
            tot += float(net.loss(batch)) * k
        n += k
    return tot / max(n, 1)


def validation_loss(model, seqs: Sequence[np.ndarray], *, max_events: int = 256, batch_size: int = 256,
                    device: str | torch.device = "cpu") -> float:
    """The validation loss `train_midi_model` reports: token-weighted mean ``MidiModel.loss`` over
    `seqs` cut by `val_windows` (a MidiModel or a PEFT model of one; eval mode, no autocast)."""
    base = model.get_base_model() if _is_peft(model) else model
    windows = val_windows([np.asarray(s, dtype=np.int64) for s in seqs if len(s) >= 2], max_events)
    if not windows:
        raise ValueError("no sequences of 2+ events")
    return _windows_loss(model, windows, int(base.tokenizer.pad_id), batch_size, torch.device(device), nullcontext)


def _make_optimizer(params: dict[str, nn.Parameter], lr: float) -> torch.optim.Optimizer:
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr)


def train_midi_model(
    model, train: Sequence[np.ndarray], val: Sequence[np.ndarray], config: TrainConfig,
    checkpoint_dir: str | os.PathLike, *, lora: LoraSettings | None = None, max_events: int = 256,
    log: Callable[[str], Any] = print, init_from: str | os.PathLike | None = None,
    on_step: Callable[[int, float], Any] | None = None, autocast: bool | None = None,
) -> TrainResult:
    """Train a midi-model on token matrices [n_events, 8] (see the module docstring).

    `model`: a MidiModel (full training, or with `lora` fresh adapters seeded by ``config.seed``)
    or a PEFT model from `apply_lora` / an earlier LoRA run (its adapters continue; `lora` must be
    the settings it was made with). At the end the model holds the best weights: a MidiModel
    trained with `lora` gets the best adapters merged in place (it is a plain MidiModel again; on
    an exception the adapters are removed unmerged; with QLoRA it stays 4-bit with adapters, the
    merged float model is in ``best/``); a PEFT model keeps its best adapters.
    ``init_from``: a model folder (``config.json`` + ``model.safetensors``, e.g. an earlier
    ``best/``) loaded into the MidiModel before anything else (with `lora`: the frozen base).
    Resuming from ``checkpoint_dir/last`` follows ``training._run``; the base of a LoRA run must be
    the same on resume (same model / ``init_from``). ``autocast``: bf16 autocast (None: on CUDA
    when supported).
    """
    if max_events < 2:
        raise ValueError("max_events must be >= 2 (a window needs an input and a target event)")
    device = resolve_device(config.device)
    train_seqs = [np.asarray(s, dtype=np.int64) for s in train if len(s) >= 2]
    val_seqs = [np.asarray(s, dtype=np.int64) for s in val if len(s) >= 2]
    if not val_seqs:
        raise ValueError("no validation sequences (of 2+ events)")
    peft_in = _is_peft(model)
    if peft_in and lora is None:
        raise ValueError("model carries LoRA adapters: pass the LoraSettings it was made with as lora=, or merge_lora() it first")
    if peft_in:
        pc = model.peft_config.get(model.active_adapter)
        if pc is None or (pc.r, pc.lora_alpha, pc.target_modules) != (lora.r, lora.alpha, lora.target_regex()):
            raise ValueError("the PEFT model's adapters were not made with these LoraSettings (r, alpha, targets differ)")
    if not peft_in and not isinstance(model, MidiModel):
        raise TypeError(f"train_midi_model needs a MidiModel or a PEFT model of one, got {type(model).__name__}")
    if init_from is not None:
        if peft_in:
            raise ValueError("init_from with a PEFT model: load the base weights before apply_lora")
        from .midi_model import read_state_dict

        model.load_published_state_dict(read_state_dict(init_from), source=str(init_from))
        log(f"[{FAMILY}] initialised from {init_from}")

    created = lora is not None and not peft_in
    net = apply_lora(model, lora, device=device, seed=_step_seed(config.seed, 0)) if created else model
    base = net.get_base_model() if lora is not None else net
    pad = int(base.tokenizer.pad_id)
    trainee = _Trainee(net, lora)
    use_amp = (device.type == "cuda" and torch.cuda.is_bf16_supported()) if autocast is None else bool(autocast)

    def amp():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_amp else nullcontext()

    opt_box: list = []

    def make_opt():
        opt_box[:] = [_make_optimizer(trainee.trainable(), config.lr)]
        return opt_box[0]

    def step_fn(idx: np.ndarray, step: int) -> float:
        net.train()
        batch = _pad_stack(train_windows(train_seqs, idx, max_events, config.seed, step), pad).to(device)
        opt = opt_box[0]
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = net.loss(batch)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        if config.clip_norm and config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
        opt.step()
        return float(loss.detach())

    windows = val_windows(val_seqs, max_events)

    def val_fn() -> float:
        return _windows_loss(net, windows, pad, config.eval_batch_size, device, amp)

    family = FAMILY_LORA if lora is not None else FAMILY
    try:
        result = _run(family=family, model=trainee, n_train=len(train_seqs), train_step_fn=step_fn, val_loss_fn=val_fn,
                      make_opt=make_opt, config=config, checkpoint_dir=checkpoint_dir, log=log, init_from=None,
                      device=device, on_step=on_step)
    except BaseException:
        if created and not _is_quantized(net):
            net.unload()  # the caller's MidiModel back as it was (its base weights were frozen)
        raise
    net.eval()
    if created and not _is_quantized(net):
        merge_lora(net, inplace=True)
    return result


# ------------------------------------------------------------------------------------ stages
def _tokens(corpus_dir, split: str, tiers) -> list[np.ndarray]:
    from ..corpus.midi_model_tokens import read_midi_model_tokens

    return [ex.tokens for ex in read_midi_model_tokens(corpus_dir, split, tiers)]


def evenly_spaced(items: Sequence, n: int | None) -> list:
    """At most `n` items, evenly spaced over `items` (deterministic; all of them when n is None)."""
    if n is None or len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, int(n)).round().astype(int)]


def train_stages(
    model: MidiModel,
    stages: Sequence[Stage],
    corpus_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    lora: LoraSettings | None = None,
    lora_stages: set[str] | frozenset[str] = frozenset(),
    max_events: int = 256,
    max_val_sequences: int | None = None,
    log: Callable[[str], Any] = print,
    on_step: Callable[[int, float], Any] | None = None,
) -> tuple[list[StageReport], Path | None]:
    """Run `stages` in order on ``<corpus_dir>/<split>/midi_model_tokens.parquet`` (train split of
    the stage's tiers; validation split of the same tiers, else of all tiers with ``val_source``
    saying so; a stage without training sequences, or without any validation sequence, is skipped
    with the reason). Stages in `lora_stages` train `lora` adapters on the current weights (a LoRA
    stage after a LoRA stage continues its adapters, e.g. Tier 2 then Tier 1); other stages train
    all weights (earlier adapters merged first). Each stage checkpoints under
    ``work_dir/<stage name>`` and resumes there after a kill (call again with a freshly built
    model equal to the original). Returns the reports and the last stage's ``best/`` (merged
    model + ``adapter/`` for LoRA stages; None when every stage was skipped). At the end `model`
    holds the final (merged) weights (plain LoRA; after QLoRA stages it stays 4-bit with adapters:
    use the returned folder). On an exception the adapters are removed from `model` unmerged.
    ``max_val_sequences``: validate on at most that many of a stage's validation sequences (an
    evenly spaced, deterministic subset; None: all) — validation is most of a CPU run's time.
    """
    lora_stages = set(lora_stages)
    unknown = lora_stages - {s.name for s in stages}
    if unknown:
        raise ValueError(f"lora_stages names no stage: {sorted(unknown)}")
    if lora_stages and lora is None:
        raise ValueError(f"lora_stages {sorted(lora_stages)} need lora=LoraSettings(...)")
    work = Path(work_dir)
    reports: list[StageReport] = []
    current: Path | None = None
    peft_model = None
    cache: dict[tuple[str, Any], list[np.ndarray]] = {}

    def split_of(name: str, tiers) -> list[np.ndarray]:
        key = (name, None if tiers is None else tuple(tiers))
        if key not in cache:
            cache[key] = [t for t in _tokens(corpus_dir, name, tiers) if len(t) >= 2]
        return cache[key]

    try:
        for stage in stages:
            train = split_of("train", stage.tiers)
            val = split_of("validation", stage.tiers)
            val_source = "tiers"
            if not val:
                val = split_of("validation", None)
                val_source = "all tiers (no held-out examples of the stage's tiers)"
            if max_val_sequences is not None and len(val) > max_val_sequences:
                val = evenly_spaced(val, max_val_sequences)
                val_source += f" (an evenly spaced {len(val)} of them)"
            report = StageReport(stage.name, list(stage.tiers), len(train), len(val), len(train), len(val), val_source)
            reports.append(report)
            if not train:
                report.skipped = f"no midi-model training sequences in the train split of tier(s) {list(stage.tiers)}"
                log(f"[{FAMILY}] stage {stage.name} skipped: {report.skipped}")
                continue
            if not val:
                report.skipped = "no midi-model validation sequences in any tier of the validation split"
                log(f"[{FAMILY}] stage {stage.name} skipped: {report.skipped}")
                continue
            ckpt = work / stage.name
            use_lora = stage.name in lora_stages
            log(f"[{FAMILY}] stage {stage.name}: {len(train)} training / {len(val)} validation sequences "
                f"(tiers {list(stage.tiers)}, {'LoRA' if use_lora else 'all weights'})")
            if use_lora:
                if peft_model is None:
                    peft_model = apply_lora(model, lora, device=resolve_device(stage.config.device),
                                            seed=_step_seed(stage.config.seed, 0))
                target = peft_model
            else:
                if peft_model is not None:
                    model = merge_lora(peft_model, inplace=True) if not _is_quantized(peft_model) else merge_lora(peft_model)
                    peft_model = None
                target = model
            result = train_midi_model(target, train, val, stage.config, ckpt, lora=lora if use_lora else None,
                                      max_events=max_events, log=log, on_step=on_step)
            report.result = result.to_dict()
            report.checkpoint_dir = str(ckpt)
            current = ckpt / BEST
    except BaseException:
        if peft_model is not None and not _is_quantized(peft_model):
            peft_model.unload()
        raise
    if peft_model is not None and not _is_quantized(peft_model):
        merge_lora(peft_model, inplace=True)
    return reports, current
