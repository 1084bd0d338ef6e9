"""midi-model: the corpus in its native tokens, a base (a published checkpoint or pre-trained here on
Tier 3), LoRA fine-tuning on Tier 2 then Tier 1, ONNX export with KV caches and its INT8 variant.
The work is in the core (`models.midi_model*`, `corpus.midi_model_tokens`); these assets call it."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import polars as pl

from ..constants import CORPUS, MODELS, POOL_HEAVY
from ..corpus.midi_model_tokens import TOKENIZER_NAME, read_midi_model_tokens, write_midi_model_tokens
from ..evaluation.model_report import LOSS_CHECKS, loss_report
from ..formats.midi_tokenizer import MidiTokenizer
from ..metadata import md_table
from ..models.pipeline import publish
from ..models.training import resolve_device
from ..resources import MidiModelResource, SettingsResource
from ..storage import local_path, sha256_file
from .automation import CORPUS_AUTOMATION, WITH_ITS_ASSET, waiting_for
from .corpus import SPLITS_KEY
from .models import _check, _clean_runs, _curve_metadata, _export_hashes, _model_asset, _models_dir, _results, _skipped, _stage_rows

TOKENS = dg.AssetKey(["corpus", "midi_model_tokens"])
BASE = dg.AssetKey(["models", "midi_model_base"])
LORA = dg.AssetKey(["models", "midi_model_trance_lora"])
ONNX = dg.AssetKey(["models", "midi_model_onnx"])
INT8 = dg.AssetKey(["models", "midi_model_onnx_int8"])
MIDI_MODEL_KEYS = {"midi_model_base": BASE, "midi_model_trance_lora": LORA, "midi_model_onnx": ONNX, "midi_model_onnx_int8": INT8}
IMPROVES = "val_loss_improves_on_base"
TOKENS_VERSION = "1"


def _corpus_dir(settings: SettingsResource) -> Path:
    return local_path(settings.path("dataset", "corpus"))


def _tokens_hash(settings: SettingsResource) -> list[str]:
    return _export_hashes(settings, "midi_model_tokens.parquet", "corpus/midi_model_tokens")


# ---------------------------------------------------------------------------------------- corpus
@dg.asset(key=TOKENS, group_name=CORPUS, code_version=f"midi-model-tokens-{TOKENS_VERSION}", kinds={"parquet"},
          automation_condition=CORPUS_AUTOMATION, ins={"splits": dg.AssetIn(SPLITS_KEY)})
def midi_model_tokens(context: dg.AssetExecutionContext, settings: SettingsResource, splits: pl.DataFrame) -> dg.MaterializeResult:
    """The corpus in SkyTNT midi-model tokens (tokenizer v2 by default, the profile's
    midi_model_tokenizer): <corpus>/<split>/midi_model_tokens.parquet, one row per example (its token
    matrix [events, 8] flattened), and midi_model_tokenizer.json. Every melody keeps its real key
    signature; nothing is skipped for being small or monophonic (upstream quirks not inherited)."""
    p = settings.get_profile()
    tok = MidiTokenizer(p.midi_model_tokenizer, optimise_midi=True)
    corpus = settings.path("dataset", "corpus")
    t0 = time.perf_counter()
    info = write_midi_model_tokens(corpus, splits, tok)
    seconds = time.perf_counter() - t0
    sample = _sample_rows(corpus, tok)
    return dg.MaterializeResult(
        metadata={
            "tokenizer": dg.MetadataValue.path(str(corpus / TOKENIZER_NAME)),
            "tokenizer_version": tok.version,
            "vocab_size": tok.vocab_size,
            "examples": sum(d["examples"] for d in info.values()),
            "events": sum(d["events"] for d in info.values()),
            "splits": md_table([{"split": s, **{k: v for k, v in d.items() if k != "path"}} for s, d in info.items()]),
            "first_events_of_an_example": sample,
            "files": dg.MetadataValue.md("\n".join(f"- `{d['path']}`" for d in info.values())),
            "seconds": round(seconds, 2),
        },
        data_version=dg.DataVersion(hashlib.sha256(("\n".join(splits["content_hash"].to_list()) + tok.version).encode()).hexdigest()[:16]),
    )


def _sample_rows(corpus, tok: MidiTokenizer) -> dg.MetadataValue:
    """The first events of the first training example, decoded: what the model reads."""
    try:
        examples = read_midi_model_tokens(local_path(corpus), "train")
    except (FileNotFoundError, ValueError):
        return dg.MetadataValue.md("_(no training example)_")
    if not examples:
        return dg.MetadataValue.md("_(no training example)_")
    ex = examples[0]
    rows = []
    for row in ex.tokens[:12]:
        ev = tok.row_to_event(list(row))
        rows.append({"example": ex.example_id, "ids": " ".join(str(int(i)) for i in row),
                     "event": ev[0] if ev else {1: "bos", 2: "eos"}.get(int(row[0]), "?"),
                     "parameters": ", ".join(f"{n}={v}" for n, v in zip(tok.events.get(ev[0], []), ev[1])) if ev else ""})
    return md_table(rows)


# ---------------------------------------------------------------------------------------- models
def _midi_asset(key: dg.AssetKey, *, deps=(TOKENS,), **kwargs):
    """`models._model_asset` for the midi-model branch (which reads the corpus in its own tokens)."""
    return _model_asset(key, deps=deps, **kwargs)


def _lora_settings(p):
    from ..models.midi_model_train import LoraSettings

    return LoraSettings(r=p.midi_model_lora_r, alpha=p.midi_model_lora_alpha, dropout=p.midi_model_lora_dropout,
                        target_modules=tuple(p.midi_model_lora_targets), qlora=p.midi_model_qlora)


def _value(kind: str, source: str, model_dir: Path, stages: list[dict], extra: dict | None = None) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    return {"family": "midi_model", "kind": kind, "source": source, "model_dir": str(model_dir),
            "sha256": sha256_file(model_dir / "model.safetensors"), "config": config, "stages": stages, **(extra or {})}


def _model_metadata(value: dict, rows: dict, seconds: float, settings: SettingsResource, extra: dict | None = None) -> dict:
    meta = {
        "source": value["source"],
        "model_dir": dg.MetadataValue.path(value["model_dir"]),
        "sha256": value["sha256"],
        "parameters": value.get("parameters"),
        "config": dg.MetadataValue.json(value["config"]),
        "criteria": md_table([{k: r.get(k) for k in ("criterion", "value", "threshold", "passed", "detail")} for r in rows.values()]),
        "device": str(resolve_device(settings.get_profile().model_device)),
        "profile": settings.get_profile().name,
        "seconds": round(seconds, 1),
        **(extra or {}),
    }
    if value["stages"]:
        meta["stages"] = md_table(_stage_rows(value["stages"]))
        meta.update(_curve_metadata(value["stages"], "midi-model"))
    return {k: v for k, v in meta.items() if v is not None}


def _train(context, settings: SettingsResource, kind: str, model, name: str, init_hash: str | None):
    from ..models.midi_model_train import train_stages
    from ..models.pipeline import run_fingerprint

    p = settings.get_profile()
    stages = p.midi_model_stages(kind)
    lora = _lora_settings(p) if kind == "trance" else None
    data = _tokens_hash(settings)
    fp = run_fingerprint("midi_model", model.config.to_dict(), stages, data + [json.dumps(lora.to_dict() if lora else None),
                         str(p.midi_model_max_events), str(p.midi_model_max_val_sequences)], init_hash)
    home = _models_dir(settings, name)
    work = home / "runs" / fp
    reports, final = train_stages(model, stages, _corpus_dir(settings), work, lora=lora,
                                  lora_stages={s.name for s in stages} if lora else set(),
                                  max_events=p.midi_model_max_events, max_val_sequences=p.midi_model_max_val_sequences,
                                  log=context.log.info)
    stage_dicts = [r.to_dict() for r in reports]
    if final is None:
        return None, stage_dicts, fp, home
    return Path(final), stage_dicts, fp, home


@_midi_asset(
    BASE, checks=LOSS_CHECKS,
    description="The midi-model base: the MidiModelResource's published checkpoint (hub id such as "
    "skytnt/midi-model-tv2o-medium, or a local folder; TRANCE_MIDI_MODEL_BASE), loaded with no key mismatch — or, "
    "offline (the demo default), the profile's midi_model_size pre-trained here on the Tier 3 train split "
    "(validation: Tier 3). Writes <storage>/models/midi_model_base/model (config.json + model.safetensors, the "
    "published format). Skipped (an observation with the reason) while Tier 3 is empty.",
)
def midi_model_base(context: dg.AssetExecutionContext, settings: SettingsResource, midi_model: MidiModelResource):
    from ..models.midi_model import MidiModel, MidiModelConfig

    p = settings.get_profile()
    t0 = time.perf_counter()
    home = _models_dir(settings, "midi_model_base")
    if midi_model.base_model:
        src = midi_model.base_model
        context.log.info(f"loading the published midi-model checkpoint {src!r}")
        try:
            model = MidiModel.from_pretrained(src, revision=midi_model.revision or None, token=midi_model.token())
        except (OSError, ValueError) as e:
            raise dg.Failure(f"cannot load the midi-model checkpoint {src!r}: {e}. Give a local folder (config.json + "
                             "model.safetensors / pytorch_model.bin / model.ckpt) or a reachable hub id (HF_TOKEN for gated repos).") from e
        staging = home / f".staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        model.save_pretrained(staging)
        target = publish(staging, home / "model", {"family": "midi_model", "kind": "base", "source": src, "revision": midi_model.revision})
        shutil.rmtree(staging, ignore_errors=True)
        value = _value("base", f"published checkpoint {src}", target, [], {"parameters": model.n_params, "checkpoint": src})
        report = loss_report([])
        for row in report["rows"].values():
            row.update(passed=True, detail="not applicable: published checkpoint, no training in this run")
    else:
        model = MidiModel(MidiModelConfig.from_size(p.midi_model_size, p.midi_model_tokenizer))
        final, stages, fp, home = _train(context, settings, "base", model, "midi_model_base", None)
        if final is None:
            yield _skipped(context, BASE, "; ".join(f"{s['name']}: {s['skipped']}" for s in stages))
            return
        target = publish(final, home / "model", {"family": "midi_model", "kind": "base", "run": fp, "stages": stages})
        _clean_runs(home, fp)
        value = _value("base", f"pre-trained on Tier 3 ({p.midi_model_size})", target, stages, {"parameters": model.n_params})
        report = loss_report(stages)
    value["criteria"] = report["rows"]
    meta = _model_metadata(value, report["rows"], time.perf_counter() - t0, settings,
                           {"size": _size_name(value["config"])})
    yield from _results(context, BASE, value, meta, report["rows"])


def _size_name(config: dict) -> str:
    from ..models.midi_model import MidiModelConfig

    return MidiModelConfig.from_dict(config).size_name


@_midi_asset(
    LORA, ins={"base": dg.AssetIn(BASE)},
    checks=[*LOSS_CHECKS, dg.AssetCheckSpec(IMPROVES, asset=LORA, blocking=True, automation_condition=WITH_ITS_ASSET, description=(
        "Blocking: validation loss of the fine-tuned model on the Tier 1 + Tier 2 validation split is below the base "
        "model's on the same split. The ONNX export does not run on a model that fails it."))],
    description="LoRA fine-tuning of models/midi_model_base (PEFT; the profile's r / alpha / targets — the plan's r 16 "
    "on q/v by default; QLoRA when a CUDA GPU and bitsandbytes are present, plain LoRA otherwise) on the Tier 2 train "
    "split, then a final pass on the Tier 1 train split, each early-stopped on the same tiers' validation split. Writes "
    "the merged weights (save_pretrained) and the PEFT adapter (adapter/) to <storage>/models/midi_model_trance_lora/"
    "model; resumes after a kill. Skipped while the corpus has no Tier 1 or Tier 2 training examples.",
)
def midi_model_trance_lora(context: dg.AssetExecutionContext, settings: SettingsResource, base: dict):
    from ..models.midi_model import MidiModel
    from ..models.midi_model_train import evenly_spaced, qlora_available, validation_loss

    p = settings.get_profile()
    t0 = time.perf_counter()
    base_dir = Path(base["model_dir"])
    model = MidiModel.from_pretrained(base_dir)
    final, stages, fp, home = _train(context, settings, "trance", model, "midi_model_trance_lora", sha256_file(base_dir / "model.safetensors"))
    if final is None:
        yield _skipped(context, LORA, "; ".join(f"{s['name']}: {s['skipped']}" for s in stages))
        return
    lora = _lora_settings(p)
    target = publish(final, home / "model", {"family": "midi_model", "kind": "trance_lora", "run": fp, "stages": stages,
                                             "lora": lora.to_dict(), "base_sha256": base["sha256"]}, subdirs=("adapter",))
    _clean_runs(home, fp)
    tuned = MidiModel.from_pretrained(target)
    val = [ex.tokens for ex in read_midi_model_tokens(_corpus_dir(settings), "validation", tiers=(1, 2))]
    val_source = "Tier 1 + 2 validation split"
    if not val:  # the stages validated on every tier in this case too
        val, val_source = [ex.tokens for ex in read_midi_model_tokens(_corpus_dir(settings), "validation")], "validation split, all tiers (no Tier 1/2 examples)"
    if p.midi_model_max_val_sequences is not None and len(val) > p.midi_model_max_val_sequences:
        val = evenly_spaced(val, p.midi_model_max_val_sequences)
        val_source += f", an evenly spaced {len(val)} of them"
    context.log.info(f"validation loss of the base and the fine-tuned model on {len(val)} sequences ({val_source})")
    batch = p.midi_model_batch_size
    base_loss = validation_loss(MidiModel.from_pretrained(base_dir), val, max_events=p.midi_model_max_events, batch_size=batch)
    tuned_loss = validation_loss(tuned, val, max_events=p.midi_model_max_events, batch_size=batch)
    qlora_ok, qlora_reason = qlora_available()
    trainable = _trainable_parameters(model, lora)
    value = _value("trance_lora", f"LoRA on {base['source']}", target, stages,
                   {"parameters": tuned.n_params, "base_sha256": base["sha256"], "lora": lora.to_dict(),
                    "adapter_dir": str(target / "adapter"), "val_loss_base": base_loss, "val_loss_tuned": tuned_loss})
    report = loss_report(stages)
    rows = dict(report["rows"])
    rows[IMPROVES] = {"criterion": "validation loss below the base model's (same held-out sequences)",
                      "value": round(tuned_loss, 4) if tuned_loss is not None else None,
                      "threshold": f"< {base_loss:.4f} (base)" if base_loss is not None else "",
                      "passed": tuned_loss is not None and base_loss is not None and tuned_loss < base_loss,
                      "detail": f"base {base_loss:.4f}, fine-tuned {tuned_loss:.4f}, {len(val)} sequences of the {val_source}"}
    value["criteria"] = rows
    meta = _model_metadata(value, rows, time.perf_counter() - t0, settings, {
        "adapter_dir": dg.MetadataValue.path(str(target / "adapter")),
        "lora": dg.MetadataValue.json(lora.to_dict()),
        "trainable_parameters": f"{trainable[0]:,} of {trainable[1]:,} ({100 * trainable[0] / max(trainable[1], 1):.2f}%)",
        "qlora": "used" if (qlora_ok and lora.qlora != "never") else f"not used: {qlora_reason}",
        "val_loss_base": base_loss, "val_loss_tuned": tuned_loss,
    })
    yield dg.Output(value, output_name=LORA.to_python_identifier(), metadata=meta)
    for check in context.selected_asset_check_keys:
        row = rows[check.name]
        if check.name == IMPROVES:
            yield dg.AssetCheckResult(check_name=IMPROVES, passed=bool(row["passed"]), severity=dg.AssetCheckSeverity.ERROR,
                                      metadata={"criterion": row["criterion"], "value": row["value"] if row["value"] is not None else "not measurable",
                                                "threshold": row["threshold"], "detail": row["detail"]})
        else:
            yield _check(check.name, row)


def _trainable_parameters(model, lora) -> tuple[int, int]:
    from ..models.midi_model_train import apply_lora

    peft_model = apply_lora(model.copy(), lora)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return trainable, total


# ONNX: never export a model whose blocking check failed.
EXPORT_AUTOMATION = waiting_for([LORA], CORPUS_AUTOMATION & dg.AutomationCondition.all_deps_blocking_checks_passed())


@_midi_asset(
    ONNX, ins={"lora": dg.AssetIn(LORA)}, checks=[], deps=(), automation=EXPORT_AUTOMATION, kinds={"onnx"},
    description="models/midi_model_trance_lora exported to ONNX: model_base.onnx (the event network) and "
    "model_token.onnx (the token network), both with KV-cache inputs/outputs, dynamic batch and length axes; parity "
    "with PyTorch (max abs logit difference on random inputs) in the metadata.",
)
def midi_model_onnx(context: dg.AssetExecutionContext, settings: SettingsResource, lora: dict):
    from ..models.midi_model import MidiModel
    from ..models.midi_model_onnx import export_onnx, parity

    p = settings.get_profile()
    t0 = time.perf_counter()
    model = MidiModel.from_pretrained(lora["model_dir"])
    target = _models_dir(settings, "midi_model_onnx") / "model"
    info = export_onnx(model, target, opset=p.midi_model_onnx_opset)
    par = parity(model, target)
    value = {"family": "midi_model", "kind": "onnx", "source": f"ONNX export of {lora['model_dir']}", "model_dir": str(target),
             "sha256": _folder_hash(target), "torch_model_dir": lora["model_dir"], "torch_sha256": lora["sha256"], "parity": par, "export": info}
    yield dg.Output(value, output_name=ONNX.to_python_identifier(), metadata={
        "model_dir": dg.MetadataValue.path(str(target)),
        "sha256": value["sha256"],
        "from_model": dg.MetadataValue.path(lora["model_dir"]),
        "opset": p.midi_model_onnx_opset,
        "parity": dg.MetadataValue.json(par),
        "max_abs_logit_diff": par.get("logits_max_abs_diff"),
        "max_abs_hidden_diff": par.get("hidden_max_abs_diff"),
        "files": md_table(_file_rows(target)),
        "export": dg.MetadataValue.json(info),
        "seconds": round(time.perf_counter() - t0, 1),
    })


@_midi_asset(
    INT8, ins={"onnx": dg.AssetIn(ONNX)}, checks=[], deps=(TOKENS,), kinds={"onnx"},
    description="models/midi_model_onnx with onnxruntime dynamic INT8 quantization (weights) of both graphs; parity as "
    "top-1 agreement with the fp32 export on held-out corpus events (the test split), file sizes before and after.",
)
def midi_model_onnx_int8(context: dg.AssetExecutionContext, settings: SettingsResource, onnx: dict):
    from ..models.midi_model_onnx import quantize_int8, top1_agreement

    p = settings.get_profile()
    t0 = time.perf_counter()
    src = Path(onnx["model_dir"])
    target = _models_dir(settings, "midi_model_onnx_int8") / "model"
    info = quantize_int8(src, target)
    held_out = [ex.tokens for ex in read_midi_model_tokens(_corpus_dir(settings), "test")][: p.midi_model_agreement_sequences]
    agreement = top1_agreement(src, target, held_out) if held_out else {"agreement": None, "positions": 0}
    value = {"family": "midi_model", "kind": "onnx_int8", "source": f"INT8 quantization of {src}", "model_dir": str(target),
             "sha256": _folder_hash(target), "onnx_sha256": onnx["sha256"], "torch_model_dir": onnx["torch_model_dir"],
             "agreement": agreement, "quantization": info}
    yield dg.Output(value, output_name=INT8.to_python_identifier(), metadata={
        "model_dir": dg.MetadataValue.path(str(target)),
        "sha256": value["sha256"],
        "top1_agreement": _first_number(agreement, ("agreement", "top1_agreement")),
        "agreement": dg.MetadataValue.json(agreement),
        "held_out_sequences": len(held_out),
        "quantization": dg.MetadataValue.json(info),
        "files": md_table(_file_rows(target) + _file_rows(src, label="fp32 ")),
        "seconds": round(time.perf_counter() - t0, 1),
    })


def _first_number(d: dict, names) -> float | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _file_rows(folder: Path, label: str = "") -> list[dict]:
    return [{"file": label + f.name, "MB": round(f.stat().st_size / 1e6, 2)} for f in sorted(Path(folder).iterdir()) if f.is_file()]


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if f.suffix in (".onnx", ".data", ".json") and f.is_file():
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


MIDI_MODEL_ASSETS = [midi_model_base, midi_model_trance_lora, midi_model_onnx, midi_model_onnx_int8]
