"""Resumable minibatch training for the Melody RNN and MusicVAE (torch; no Dagster).

Loop (both families): step s = 1..max_steps draws a minibatch, runs the family's ``train_step``;
every ``eval_every`` steps (and at the last step) the validation loss is computed, the learning
curve gets ``(step, mean train loss since the previous eval, val loss)``, the best weights are
kept (in memory and in the checkpoint), and early stopping fires when ``patience`` evaluations in
a row did not improve on the best by more than ``min_delta``. Step 0 is evaluated first (train loss
None) so the curve starts at the untrained model and early stopping has a baseline.

Determinism / resume. Everything random is a function of ``(seed, step)``: the minibatch of step s
comes from a per-epoch permutation ``default_rng([seed, epoch])`` and the torch RNG (dropout,
MusicVAE's reparameterisation noise) is re-seeded with ``seed * 1_000_003 + s`` before step s.
After every evaluation ``checkpoint_dir/last/`` is written atomically (into a temp folder renamed
over the old one): ``model.safetensors`` (current weights), ``best.safetensors`` (best weights),
``optimizer.pt`` (``torch.save`` of the optimizer state), ``state.json`` (step, curve, best val /
step, patience counter, stopped flag, the RNG states for the record, model config). A new call with
the same ``checkpoint_dir`` resumes from it, so a run killed at any point repeats at most the
steps since its last evaluation and (on CPU) ends bit-identical to an uninterrupted run. At the end
the best weights are loaded into the model and saved with the model's own ``save`` to
``checkpoint_dir/best/``.

Validation loss: Melody RNN = mean cross-entropy per non-padded step over the whole validation set
(dropout off). MusicVAE = mean over validation rows of the training objective ``total`` (Σ_t CE +
β(step)·KL cost) with fixed noise (a generator seeded with ``seed``), so it is comparable across
evaluations as long as β is constant (β anneals 0 -> beta_max over beta_anneal_steps).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint_io import WEIGHTS_FILE

__all__ = [
    "TrainConfig",
    "TrainResult",
    "resolve_device",
    "train_melody_rnn",
    "train_musicvae",
    "learning_curve_png",
]

LAST = "last"
BEST = "best"
STATE_FILE = "state.json"
BEST_WEIGHTS_FILE = "best.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 20_000
    batch_size: int = 128
    eval_every: int = 500
    patience: int | None = 5  # evaluations without improvement before stopping; None = never stop
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda"
    threads: int | None = None  # torch.set_num_threads while training (restored after) when given
    lr: float = 1e-3  # Melody RNN (constant, the current attention_rnn config); MusicVAE: its own schedule
    clip_norm: float = 3.0  # Melody RNN per-tensor clip
    min_delta: float = 0.0
    max_seq_len: int | None = None  # Melody RNN: truncate examples to this many steps
    eval_batch_size: int = 256
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) during training

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("need max_steps >= 0, batch_size >= 1, eval_every >= 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be >= 1 or None")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


@dataclasses.dataclass
class TrainResult:
    steps: int
    best_step: int
    best_val_loss: float
    final_train_loss: float
    train_val_gap: float  # val loss - train loss at the last evaluation
    curve: list[tuple[int, float | None, float]]  # train loss None at step 0
    stopped_early: bool
    resumed_from: int | None
    seconds: float
    steps_per_second: float
    device: str = "cpu"
    checkpoint_dir: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but CUDA is not available")
    return torch.device(device)


# ------------------------------------------------------------------------------------ checkpoints
def _state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _write_last(
    checkpoint_dir: Path, model: torch.nn.Module, best_state: dict, opt: torch.optim.Optimizer,
    state: dict,
) -> None:
    from safetensors.torch import save_file

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_dir / f".{LAST}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_state_dict_cpu(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    save_file(best_state, str(tmp / BEST_WEIGHTS_FILE), metadata={"format": "pt"})
    torch.save(opt.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    last = checkpoint_dir / LAST
    old = checkpoint_dir / f"{LAST}.old"
    if old.exists():
        shutil.rmtree(old)
    if last.exists():
        os.replace(last, old)
    os.replace(tmp, last)
    if old.exists():
        shutil.rmtree(old)


def _find_last(checkpoint_dir: Path) -> Path | None:
    for name in (LAST, f"{LAST}.old"):  # .old survives a kill between the two renames
        p = checkpoint_dir / name
        if (p / STATE_FILE).exists():
            return p
    return None


def _rng_record() -> dict:
    return {
        "torch_cpu": torch.get_rng_state().tolist(),
        "torch_cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % (2**63 - 1)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of minibatch `step` (1-based): epochs of random permutations, a function of (seed, step)."""
    bs = min(batch_size, n)
    per_epoch = max(n // bs, 1)  # the tail of each permutation that does not fill a batch is skipped
    epoch, b = divmod(step - 1, per_epoch)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    return perm[b * bs : (b + 1) * bs]


# ------------------------------------------------------------------------------------ the loop
def _run(
    *, family: str, model: torch.nn.Module, n_train: int, train_step_fn: Callable[[np.ndarray, int], float],
    val_loss_fn: Callable[[], float], make_opt: Callable[[], torch.optim.Optimizer], config: TrainConfig,
    checkpoint_dir: str | os.PathLike, log: Callable[[str], Any], init_from: str | os.PathLike | None,
    device: torch.device, on_step: Callable[[int, float], Any] | None,
) -> TrainResult:
    from safetensors.torch import load_file

    if n_train < 1:
        raise ValueError("no training examples")
    ckpt = Path(checkpoint_dir)
    prev_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    prev_det = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    try:
        model.to(device)
        opt = make_opt()
        cfg_dict = model.config.to_dict()
        last = _find_last(ckpt)
        resumed_from = None
        if last is not None:
            st = json.loads((last / STATE_FILE).read_text())
            if st.get("family") != family or st.get("model_config") != json.loads(json.dumps(cfg_dict)):
                raise ValueError(f"{last} holds a checkpoint of another model/config; use a new checkpoint_dir")
            model.load_state_dict(load_file(str(last / WEIGHTS_FILE), device=str(device)))
            opt.load_state_dict(torch.load(last / OPTIMIZER_FILE, map_location=device, weights_only=True))
            best_state = load_file(str(last / BEST_WEIGHTS_FILE))
            step = int(st["step"])
            curve = [tuple(x) for x in st["curve"]]
            best_val, best_step = float(st["best_val_loss"]), int(st["best_step"])
            bad_evals, stopped = int(st["patience_counter"]), bool(st["stopped_early"])
            resumed_from = step
            log(f"[{family}] resuming from {last} at step {step}")
        else:
            if init_from is not None:
                src = Path(init_from)
                model.load_state_dict(load_file(str(src / WEIGHTS_FILE), device=str(device)))
                log(f"[{family}] initialised from {src}")
            step, curve, bad_evals, stopped = 0, [], 0, False
            v0 = val_loss_fn()
            curve.append((0, None, v0))
            best_val, best_step, best_state = v0, 0, _state_dict_cpu(model)
            log(f"[{family}] step 0 val {v0:.4f}")

        def checkpoint() -> None:
            _write_last(ckpt, model, best_state, opt, {
                "family": family, "step": step, "curve": [list(x) for x in curve],
                "best_val_loss": best_val, "best_step": best_step, "patience_counter": bad_evals,
                "stopped_early": stopped, "seed": config.seed, "rng": _rng_record(),
                "train_config": dataclasses.asdict(config), "model_config": cfg_dict,
            })

        if resumed_from is None:
            checkpoint()
        start_step = step
        losses: list[float] = []
        while step < config.max_steps and not stopped:
            step += 1
            torch.manual_seed(_step_seed(config.seed, step))
            idx = _batch_indices(n_train, config.batch_size, config.seed, step)
            loss = train_step_fn(idx, step)
            losses.append(loss)
            if on_step is not None:
                on_step(step, loss)
            if step % config.eval_every == 0 or step == config.max_steps:
                v = val_loss_fn()
                tr = float(np.mean(losses)) if losses else float("nan")
                losses = []
                curve.append((step, tr, v))
                if v < best_val - config.min_delta:
                    best_val, best_step, best_state, bad_evals = v, step, _state_dict_cpu(model), 0
                else:
                    bad_evals += 1
                    if config.patience is not None and bad_evals >= config.patience:
                        stopped = True
                log(f"[{family}] step {step} train {tr:.4f} val {v:.4f} best {best_val:.4f}@{best_step}"
                    + (" -> early stop" if stopped else ""))
                checkpoint()
        model.load_state_dict({k: v.to(device) for k, v in best_state.items()})
        model.cpu().save(ckpt / BEST)
        model.to(device)
        seconds = time.perf_counter() - t0
        done = step - start_step
        last_eval = curve[-1]
        final_train = float("nan") if last_eval[1] is None else last_eval[1]
        return TrainResult(
            steps=step, best_step=best_step, best_val_loss=best_val, final_train_loss=final_train,
            train_val_gap=last_eval[2] - final_train, curve=curve, stopped_early=stopped,
            resumed_from=resumed_from, seconds=seconds,
            steps_per_second=done / seconds if seconds > 0 else 0.0, device=str(device),
            checkpoint_dir=str(ckpt),
        )
    finally:
        if config.deterministic and not prev_det:
            torch.use_deterministic_algorithms(False)
        if config.threads:
            torch.set_num_threads(prev_threads)


def train_melody_rnn(
    model, train_examples: Sequence[dict], val_examples: Sequence[dict], config: TrainConfig,
    checkpoint_dir: str | os.PathLike, log: Callable[[str], Any] = print,
    init_from: str | os.PathLike | None = None, on_step: Callable[[int, float], Any] | None = None,
) -> TrainResult:
    """Train a `MelodyRNN` on `datasets.melody_rnn_examples` output (see the module docstring).

    Chords are fed when ``model.config.chord_dim > 0`` (every example must have ``chords``).
    ``on_step(step, loss)`` is called after every update (an exception there aborts the run, which
    a later call resumes from ``checkpoint_dir/last``). ``init_from``: a folder written by
    ``MelodyRNN.save`` to start from (ignored when resuming).
    """
    from . import melody_rnn as mr
    from .datasets import pad_batch

    device = resolve_device(config.device)
    with_chords = model.config.chord_dim > 0
    if not val_examples:
        raise ValueError("no validation examples")

    def batch(exs):
        return pad_batch(exs, max_len=config.max_seq_len, with_chords=with_chords, device=device)

    def step_fn(idx: np.ndarray, step: int) -> float:
        return mr.train_step(model, opt_box[0], batch([train_examples[i] for i in idx]),
                             clip_norm=config.clip_norm, lr=config.lr)

    @torch.no_grad()
    def val_fn() -> float:
        model.eval()
        tot, n = 0.0, 0
        for i in range(0, len(val_examples), config.eval_batch_size):
            b = batch(val_examples[i : i + config.eval_batch_size])
            logits, _ = model(b["inputs"], chords=b.get("chords"))
            k = int(b["lengths"].sum())
            tot += float(mr.masked_cross_entropy(logits, b["labels"], b["lengths"])) * k
            n += k
        return tot / n

    opt_box: list = []

    def make_opt():
        opt_box[:] = [mr.make_optimizer(model, config.lr)]
        return opt_box[0]

    return _run(family="melody_rnn", model=model, n_train=len(train_examples), train_step_fn=step_fn,
                val_loss_fn=val_fn, make_opt=make_opt, config=config, checkpoint_dir=checkpoint_dir,
                log=log, init_from=init_from, device=device, on_step=on_step)


def train_musicvae(
    model, train_x: np.ndarray, val_x: np.ndarray, config: TrainConfig,
    checkpoint_dir: str | os.PathLike, log: Callable[[str], Any] = print,
    init_from: str | os.PathLike | None = None, on_step: Callable[[int, float], Any] | None = None,
) -> TrainResult:
    """Train a `MusicVAE` on class arrays [N, 256] (`datasets.musicvae_examples`).

    Uses `musicvae.train_step` (its lr / β schedules, global-norm clip); ``config.lr`` and
    ``clip_norm`` are not used. Other arguments as `train_melody_rnn`.
    """
    from . import musicvae as mv

    device = resolve_device(config.device)
    train_t = torch.as_tensor(np.asarray(train_x), dtype=torch.int64)
    val_t = torch.as_tensor(np.asarray(val_x), dtype=torch.int64)
    if len(val_t) == 0:
        raise ValueError("no validation examples")
    opt_box: list = []

    def make_opt():
        opt_box[:] = [mv.make_optimizer(model)]
        return opt_box[0]

    def step_fn(idx: np.ndarray, step: int) -> float:
        g = torch.Generator().manual_seed(_step_seed(config.seed, step))
        x = train_t[torch.as_tensor(idx)].to(device)
        return float(mv.train_step(model, opt_box[0], x, step - 1, generator=g)["total"])

    @torch.no_grad()
    def val_fn() -> float:
        model.eval()
        g = torch.Generator().manual_seed(int(config.seed))
        step = int(state_box[0])
        tot = 0.0
        for i in range(0, len(val_t), config.eval_batch_size):
            x = val_t[i : i + config.eval_batch_size].to(device)
            tot += float(model.loss(x, step, generator=g)["total"]) * len(x)
        return tot / len(val_t)

    state_box = [0]

    def step_fn_tracking(idx: np.ndarray, step: int) -> float:
        state_box[0] = step
        return step_fn(idx, step)

    return _run(family="musicvae", model=model, n_train=len(train_t), train_step_fn=step_fn_tracking,
                val_loss_fn=val_fn, make_opt=make_opt, config=config, checkpoint_dir=checkpoint_dir,
                log=log, init_from=init_from, device=device, on_step=on_step)


def learning_curve_png(curve: Sequence[Sequence[float]], title: str = "learning curve") -> bytes:
    """PNG bytes of train / validation loss against step (matplotlib, Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [float(c[0]) for c in curve]
    tr = [float(c[1]) if c[1] is not None else math.nan for c in curve]
    va = [float(c[2]) if c[2] is not None else math.nan for c in curve]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, tr, marker="o", label="train")
    ax.plot(steps, va, marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
