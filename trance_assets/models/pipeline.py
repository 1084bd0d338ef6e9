"""Training recipes for the two model families: data from the corpus export, staged training
(pre-train, fine-tune Tier 2, final pass Tier 1), publishing the final checkpoint, and importing
Magenta checkpoints. Torch + numpy; no Dagster imports (the assets in `assets/models.py` call it).

Data. Every split of the corpus export is one TFRecord of NoteSequences
(``<corpus_dir>/<split>/notesequences.tfrecord``) whose ``collection_name`` is
``trance_assets/<split>/tier<N>`` (`corpus.export`); a stage reads the tiers it names from the
``train`` split and validates on the same tiers of the ``validation`` split (so evaluation only
ever sees held-out examples; the ``test`` split is left for the success criteria). A stage whose
validation tiers hold no examples validates on the validation examples of every tier and says so.

Stages. ``train_stages`` runs the stages in order, each starting from the previous stage's best
weights (the first from ``init_from``, when given), each in its own checkpoint folder under
``work_dir`` (``training.train_*``: validation early stopping, resumable from ``last/`` after a
kill). A stage without training examples is skipped with the reason recorded. The final model is
the best checkpoint of the last stage that ran.

Publishing. ``publish`` copies a model folder (``config.json`` + ``model.safetensors``) into place
atomically (a temp folder renamed over the target), together with a ``training.json`` record.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint_io import CONFIG_FILE, WEIGHTS_FILE
from .training import BEST, TrainConfig, TrainResult, train_melody_rnn, train_musicvae

FAMILIES = ("melody_rnn", "musicvae")
TFRECORD_NAME = "notesequences.tfrecord"  # corpus.export.TFRECORD_NAME (not imported: polars-free)
RECORD_FILE = "training.json"

__all__ = [
    "FAMILIES",
    "Stage",
    "StageReport",
    "load_split_sequences",
    "family_examples",
    "build_model",
    "load_model",
    "train_stages",
    "publish",
    "import_magenta",
    "convert_magenta",
    "detect_family",
    "run_fingerprint",
]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training pass: train on `tiers` of the train split, early-stop on the same tiers of the
    validation split."""

    name: str
    tiers: tuple[int, ...]
    config: TrainConfig
    model_overrides: tuple[tuple[str, Any], ...] = ()  # model-config fields set for this stage (MusicVAE learning rate)

    def to_dict(self) -> dict:
        return {"name": self.name, "tiers": list(self.tiers), "config": dataclasses.asdict(self.config), "model_overrides": dict(self.model_overrides)}


@dataclasses.dataclass
class StageReport:
    name: str
    tiers: list[int]
    train_sequences: int
    val_sequences: int
    train_examples: int
    val_examples: int
    val_source: str  # "tiers", or "all tiers (no held-out examples of the stage's tiers)"
    skipped: str | None = None
    result: dict | None = None  # TrainResult.to_dict()
    checkpoint_dir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ data
def load_split_sequences(corpus_dir: str | os.PathLike, split: str, tiers: Sequence[int] | None = None) -> list[Any]:
    """NoteSequences of one split, restricted to `tiers` (None: all). FileNotFoundError names the
    missing file (materialize corpus/notesequence_tfrecords first)."""
    from .datasets import read_notesequences

    path = Path(corpus_dir) / split / TFRECORD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no NoteSequence TFRecord at {path} (materialize corpus/notesequence_tfrecords first)")
    return _of_tiers(read_notesequences(path), tiers)


def _of_tiers(seqs: list[Any], tiers: Sequence[int] | None) -> list[Any]:
    if tiers is None:
        return seqs
    wanted = {f"tier{int(t)}" for t in tiers}
    return [ns for ns in seqs if ns.collection_name.rsplit("/", 1)[-1] in wanted]


def family_examples(family: str, sequences: Sequence[Any], model_config: Any) -> Any:
    """Training examples of a family: Melody RNN example dicts (chords when the model takes them)
    or MusicVAE class arrays [N, bars * 16]."""
    from .datasets import melody_rnn_examples, musicvae_examples

    if family == "melody_rnn":
        return melody_rnn_examples(sequences, chord_conditioned=model_config.chord_dim > 0)
    if family == "musicvae":
        return musicvae_examples(sequences, bars=model_config.bars)
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


# ------------------------------------------------------------------------------------ models
def build_model(family: str, config: dict):
    """A freshly initialised model of `family` from a config dict (the model's `to_dict` keys)."""
    if family == "melody_rnn":
        from .melody_rnn import MelodyRNN, MelodyRNNConfig

        return MelodyRNN(MelodyRNNConfig.from_dict(config))
    if family == "musicvae":
        from .musicvae import MusicVAE, MusicVAEConfig

        return MusicVAE(MusicVAEConfig.from_dict(config))
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def load_model(family: str, directory: str | os.PathLike):
    if family == "melody_rnn":
        from .melody_rnn import MelodyRNN

        return MelodyRNN.load(directory)
    if family == "musicvae":
        from .musicvae import MusicVAE

        return MusicVAE.load(directory)
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def run_fingerprint(family: str, model_config: dict, stages: Sequence[Stage], data_hashes: Sequence[str], init_hash: str | None) -> str:
    """A short hash of everything a training run depends on: a killed run with the same inputs
    resumes from its checkpoints, a run on new data or settings starts in a fresh folder."""
    payload = json.dumps(
        {"family": family, "model": model_config, "stages": [s.to_dict() for s in stages], "data": list(data_hashes), "init": init_hash},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ training
def train_stages(
    family: str,
    model,
    stages: Sequence[Stage],
    corpus_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    init_from: str | os.PathLike | None = None,
    log: Callable[[str], Any] = print,
    on_step: Callable[[int, float], Any] | None = None,
) -> tuple[list[StageReport], Path | None]:
    """Run `stages` in order (see the module docstring). Returns the per-stage reports and the
    folder of the final best weights (None when every stage was skipped and there was no
    `init_from`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    work = Path(work_dir)
    current = Path(init_from) if init_from is not None else None
    reports: list[StageReport] = []
    splits: dict[str, list[Any]] = {}  # each split's file is read once for all stages

    def split_of(name: str, tiers: Sequence[int] | None) -> list[Any]:
        if name not in splits:
            splits[name] = load_split_sequences(corpus_dir, name)
        return _of_tiers(splits[name], tiers)

    for stage in stages:
        train_seqs = split_of("train", stage.tiers)
        val_seqs = split_of("validation", stage.tiers)
        train_ex = family_examples(family, train_seqs, model.config)
        val_ex = family_examples(family, val_seqs, model.config)
        val_source = "tiers"
        if len(val_ex) == 0:
            val_seqs = split_of("validation", None)
            val_ex = family_examples(family, val_seqs, model.config)
            val_source = "all tiers (no held-out examples of the stage's tiers)"
        report = StageReport(stage.name, list(stage.tiers), len(train_seqs), len(val_seqs), len(train_ex), len(val_ex), val_source)
        reports.append(report)
        if len(train_ex) == 0:
            report.skipped = f"no {family} training examples in the train split of tier(s) {list(stage.tiers)}"
            log(f"[{family}] stage {stage.name} skipped: {report.skipped}")
            continue
        if len(val_ex) == 0:
            report.skipped = f"no {family} validation examples in any tier of the validation split"
            log(f"[{family}] stage {stage.name} skipped: {report.skipped}")
            continue
        if stage.model_overrides:
            model.config = dataclasses.replace(model.config, **dict(stage.model_overrides))
        ckpt = work / stage.name
        log(f"[{family}] stage {stage.name}: {len(train_ex)} training / {len(val_ex)} validation examples (tiers {list(stage.tiers)})")
        train = train_melody_rnn if family == "melody_rnn" else train_musicvae
        result: TrainResult = train(model, train_ex, val_ex, stage.config, ckpt, log=log, init_from=current, on_step=on_step)
        report.result = result.to_dict()
        report.checkpoint_dir = str(ckpt)
        current = ckpt / BEST
    return reports, current


def publish(model_dir: str | os.PathLike, target: str | os.PathLike, record: dict, subdirs: Sequence[str] = ()) -> Path:
    """Copy `model_dir` (config.json + model.safetensors, and the `subdirs` it has, e.g. a LoRA
    adapter/) to `target` atomically, with `record` as training.json; returns `target`."""
    src, dst = Path(model_dir), Path(target)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} has no {name}: not a model folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy2(src / name, tmp / name)
    for name in subdirs:
        if (src / name).is_dir():
            shutil.copytree(src / name, tmp / name)
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=1, default=_json_default))
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old.exists():
        shutil.rmtree(old)
    return dst


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# ------------------------------------------------------------------------------------ Magenta
def detect_family(path: str | os.PathLike) -> str:
    """'melody_rnn' for a `.mag` bundle file, 'musicvae' for a V2 checkpoint (a prefix with
    `<prefix>.index`, or a folder holding one). ValueError otherwise, naming the path."""
    p = Path(path)
    if p.is_file() and p.suffix == ".mag":
        return "melody_rnn"
    if Path(str(p) + ".index").is_file() or (p.is_file() and p.suffix == ".index"):
        return "musicvae"
    if p.is_dir() and any(p.glob("*.index")):
        return "musicvae"
    if not p.exists() and not Path(str(p) + ".index").exists():
        raise FileNotFoundError(f"no Magenta checkpoint at {str(p)!r} (expected a .mag bundle or a V2 checkpoint prefix)")
    raise ValueError(f"{str(p)!r} is neither a Melody RNN .mag bundle nor a MusicVAE V2 checkpoint (<prefix>.index + data shards)")


def _v2_prefix(path: Path) -> Path:
    if path.is_file() and path.suffix == ".index":
        return path.with_suffix("")
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise ValueError(f"{path} holds {len(indexes)} checkpoints (*.index); name the prefix, e.g. {path}/model.ckpt")
        return indexes[0].with_suffix("")
    return path


def import_magenta(path: str | os.PathLike, family: str | None = None, *, attn_length: int = 40):
    """Read a Magenta checkpoint without TensorFlow into the PyTorch module.

    Melody RNN: a `.mag` GeneratorBundle (V1 checkpoint inside; old and new attention layouts
    detected from the variable names). MusicVAE: a V2 checkpoint (sizes read from the tensor
    shapes). Returns (model, details dict with the source path, its sha256 and the family).
    """
    from ..storage import sha256_file

    p = Path(path)
    family = family or detect_family(p)
    if family == "melody_rnn":
        from .melody_rnn import MelodyRNN

        model = MelodyRNN.from_magenta_bundle(p, attn_length=attn_length)
        digest = sha256_file(p)
        source = str(p)
    elif family == "musicvae":
        from .musicvae import MusicVAE

        prefix = _v2_prefix(p)
        model = MusicVAE.from_magenta_checkpoint(prefix)
        index = Path(str(prefix) + ".index")
        digest = sha256_file(index)
        source = str(prefix)
    else:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return model, {"family": family, "source": source, "source_sha256": digest, "config": model.config.to_dict()}


def convert_magenta(path: str | os.PathLike, target: str | os.PathLike, family: str | None = None, record: dict | None = None) -> dict:
    """`import_magenta` and publish the PyTorch weights to `target` (config.json + model.safetensors
    + training.json holding ``{"imported": details, **record}``); returns the details."""
    model, details = import_magenta(path, family)
    details["parameters"] = int(sum(p.numel() for p in model.parameters()))
    dst = Path(target)
    tmp = dst.parent / f".{dst.name}.convert-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(tmp)
        publish(tmp, dst, {**(record or {}), "imported": details})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return details
