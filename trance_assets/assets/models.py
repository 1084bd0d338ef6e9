"""Models: Melody RNN and MusicVAE, pre-trained on Tier 3 (or imported from Magenta) and fine-tuned
on Tier 2 then Tier 1; the plan's success criteria as asset checks."""

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..constants import ENV_MAGENTA, MODELS, POOL_HEAVY
from ..evaluation.model_report import LOSS_CHECKS, MELODY_RNN_CHECKS, MUSICVAE_CHECKS, loss_report, melody_rnn_report, musicvae_report
from ..generation.base import prompt_set
from ..metadata import md_image, md_table
from ..models.pipeline import build_model, convert_magenta, load_model, publish, run_fingerprint, train_stages
from ..models.training import learning_curve_png, resolve_device
from ..resources import SettingsResource
from ..storage import local_path, sha256_file
from .automation import CORPUS_AUTOMATION, WITH_ITS_ASSET, waiting_for

TFRECORDS = dg.AssetKey(["corpus", "notesequence_tfrecords"])
FAMILY_TITLES = {"melody_rnn": "Melody RNN (attention_rnn)", "musicvae": "MusicVAE (hierdec-mel 16 bars)"}
TRANCE_CHECKS = {"melody_rnn": LOSS_CHECKS + MELODY_RNN_CHECKS, "musicvae": LOSS_CHECKS + MUSICVAE_CHECKS}
CHECK_DESCRIPTIONS = {
    "val_loss_decreases": "Validation loss of the last training stage ends below its starting value.",
    "val_loss_plateaus": "Validation loss plateaus (early stop, or < 2% change over the last 3 evaluations).",
    "train_val_gap": "No overfitting: validation minus training loss at the last evaluation <= 25% of the validation loss.",
    "chord_tone_gain": "Chord-tone ratio of the fine-tuned model >= the base model's + 10 percentage points (same prompts).",
    "minor_histogram": "The fine-tuned model's pitch-class histogram correlates better with the minor than the major key profile.",
    "self_similarity_increases": "8-bar self-similarity of the fine-tuned model's melodies is higher than the base model's.",
    "reconstruction_accuracy": "Greedy encode -> decode reproduces the held-out (test split) trance windows step for step.",
    "interpolation_intermediates": "Every intermediate of a slerp interpolation between two held-out melodies passes the quality rules.",
    "variations_in_key": "Variations of a held-out melody at noise_scale 0.2 stay in its key (scale compliance).",
}


class BaseModelConfig(dg.Config):
    magenta_checkpoint: str = Field(
        default="",
        description="Import this Magenta checkpoint instead of pre-training: attention_rnn.mag (Melody RNN) or the "
        "hierdec-mel_16bar checkpoint prefix (MusicVAE). Empty: the environment variable "
        "TRANCE_MELODY_RNN_MAGENTA / TRANCE_MUSICVAE_MAGENTA, else pre-train on Tier 3.",
    )


def _models_dir(settings: SettingsResource, name: str):
    root = settings.path("models", name)
    try:
        return local_path(root)
    except ValueError:
        raise dg.Failure(f"model training needs local storage; {root} is remote (set TRANCE_STORAGE to a local folder)") from None


def _corpus_dir(settings: SettingsResource):
    return local_path(settings.path("dataset", "corpus"))


def _export_hashes(settings: SettingsResource, filename: str = "notesequences.tfrecord", asset: str = "corpus/notesequence_tfrecords") -> list[str]:
    """sha256 of a corpus export's file in each split (what a training run's fingerprint covers)."""
    corpus = _corpus_dir(settings)
    out = []
    for split in ("train", "validation", "test"):
        f = corpus / split / filename
        if not f.is_file():
            raise dg.Failure(f"no {filename} at {f}: materialize {asset} first")
        out.append(sha256_file(f))
    return out


def _curve_metadata(stages: list[dict], title: str) -> dict:
    meta = {}
    for s in stages:
        if s.get("result"):
            png = learning_curve_png(s["result"]["curve"], title=f"{title}: {s['name']}")
            meta[f"learning_curve_{s['name']}"] = md_image(png, f"learning curve {s['name']}")
    return meta


def _stage_rows(stages: list[dict]) -> list[dict]:
    rows = []
    for s in stages:
        r = s.get("result") or {}
        rows.append({
            "stage": s["name"], "tiers": ",".join(map(str, s["tiers"])), "train_examples": s["train_examples"],
            "val_examples": s["val_examples"], "validation": s["val_source"], "steps": r.get("steps"),
            "best_step": r.get("best_step"), "best_val_loss": r.get("best_val_loss"), "final_train_loss": r.get("final_train_loss"),
            "train_val_gap": r.get("train_val_gap"), "early_stop": r.get("stopped_early"), "resumed_from": r.get("resumed_from"),
            "steps_per_s": r.get("steps_per_second"), "device": r.get("device"), "skipped": s.get("skipped") or "",
        })
    return rows


def _train(context, settings: SettingsResource, family: str, kind: str, name: str, init_dir=None, init_model=None) -> dict:
    """Train the stages of `kind` and publish the model to <storage>/models/<name>/model; {"skipped":
    reason} when no stage has training data yet."""
    p = settings.get_profile()
    stages = p.model_stages(family, kind)
    model = init_model if init_model is not None else build_model(family, p.model_config(family))
    init_hash = sha256_file(init_dir / "model.safetensors") if init_dir is not None else None
    data = _export_hashes(settings)
    fp = run_fingerprint(family, model.config.to_dict(), stages, data, init_hash)
    home = _models_dir(settings, name)
    work = home / "runs" / fp
    t0 = time.perf_counter()
    reports, final = train_stages(family, model, stages, _corpus_dir(settings), work, log=context.log.info)
    stage_dicts = [r.to_dict() for r in reports]
    if final is None:
        return {"skipped": "; ".join(f"{r.name}: {r.skipped}" for r in reports)}
    record = {"family": family, "kind": kind, "profile": p.name, "run": fp, "stages": stage_dicts, "init_sha256": init_hash,
              "data_sha256": data, "seconds": time.perf_counter() - t0}
    target = publish(final, home / "model", record)
    _clean_runs(home, fp)
    return {"model_dir": str(target), "record": record, "stages": stage_dicts}


def _value(family: str, kind: str, source: str, model_dir, stages: list[dict], extra: dict | None = None) -> dict:
    weights = os.path.join(str(model_dir), "model.safetensors")
    config = json.loads(Path(model_dir, "config.json").read_text())
    return {"family": family, "kind": kind, "source": source, "model_dir": str(model_dir), "sha256": sha256_file(weights),
            "config": config, "stages": stages, **(extra or {})}


def _base_asset(family: str):
    name = f"{family}_base"
    key = dg.AssetKey(["models", name])

    @_model_asset(
        key, LOSS_CHECKS,
        description=f"{FAMILY_TITLES[family]} pre-trained on the Tier 3 train split (validation: Tier 3 validation "
        f"split), or a Magenta checkpoint: the run config's magenta_checkpoint, else {ENV_MAGENTA[family]}, else "
        f"one converted by `trance-assets import-magenta` (<storage>/models/imported/{family}). Writes "
        f"<storage>/models/{name}/model (config.json + model.safetensors + training.json); resumes after a kill. "
        "Skipped (no materialization, an observation with the reason) while the Tier 3 train split is empty.",
    )
    def _asset(context: dg.AssetExecutionContext, settings: SettingsResource, config: BaseModelConfig):
        magenta = config.magenta_checkpoint or os.environ.get(ENV_MAGENTA[family], "")
        imported_dir = _models_dir(settings, "imported") / family
        home = _models_dir(settings, name)
        t0 = time.perf_counter()
        if magenta or (imported_dir / "model.safetensors").is_file():
            if magenta:
                context.log.info(f"importing the Magenta checkpoint {magenta}")
                try:
                    details = convert_magenta(magenta, home / "model", family, {"family": family, "kind": "base"})
                except (OSError, ValueError, KeyError) as e:
                    raise dg.Failure(f"cannot import the Magenta checkpoint {magenta!r}: {e}") from e
                target = home / "model"
            else:  # converted earlier by `trance-assets import-magenta`
                record = imported_dir / "training.json"
                details = json.loads(record.read_text()).get("imported", {}) if record.is_file() else {"source": str(imported_dir)}
                context.log.info(f"using the imported Magenta checkpoint in {imported_dir} (from {details.get('source')})")
                target = publish(imported_dir, home / "model", {"family": family, "kind": "base", "imported": details})
            value = _value(family, "base", "imported Magenta checkpoint", target, [], {"imported": details})
            report = loss_report([])
            for row in report["rows"].values():  # nothing was trained here: the loss criteria do not apply
                row.update(passed=True, detail="not applicable: imported Magenta checkpoint, no training in this run")
        else:
            out = _train(context, settings, family, "base", name)
            if "skipped" in out:
                yield _skipped(context, key, out["skipped"])
                return
            value = _value(family, "base", "pre-trained on Tier 3", out["model_dir"], out["stages"])
            report = loss_report(out["stages"])
        value["criteria"] = report["rows"]
        yield from _results(context, key, value, _metadata(value, report, time.perf_counter() - t0, settings), report["rows"])

    return _asset


def _trance_asset(family: str):
    name = f"{family}_trance"
    key = dg.AssetKey(["models", name])
    base_key = dg.AssetKey(["models", f"{family}_base"])

    @_model_asset(
        key, TRANCE_CHECKS[family], ins={"base": dg.AssetIn(base_key)},
        description=f"{FAMILY_TITLES[family]} fine-tuned from models/{family}_base on the Tier 2 train split, then a "
        "final pass on the Tier 1 train split (validation: the same tiers' validation split); the plan's success "
        "criteria measured on held-out material only. Skipped (no materialization, an observation with the reason) "
        "while the corpus has no Tier 1 or Tier 2 training examples, e.g. on a first start before the partitions land.",
    )
    def _asset(context: dg.AssetExecutionContext, settings: SettingsResource, base: dict):
        p = settings.get_profile()
        t0 = time.perf_counter()
        base_dir = Path(base["model_dir"])
        model = load_model(family, base_dir)
        chords_added = family == "melody_rnn" and p.melody_rnn_chord_conditioned and model.config.chord_dim == 0
        if chords_added:  # an imported attention_rnn bundle: learn the chords while fine-tuning
            context.log.info("the base model has no chord inputs: adding them (zero-initialised, same outputs until trained)")
            model = model.with_chord_inputs(25)
        out = _train(context, settings, family, "trance", name, init_dir=base_dir, init_model=model)
        if "skipped" in out:
            yield _skipped(context, key, out["skipped"])
            return
        value = _value(family, "trance", f"fine-tuned from {base['source']}", out["model_dir"], out["stages"],
                       {"base_sha256": base["sha256"], "chord_inputs_added": chords_added})
        report = loss_report(out["stages"])
        context.log.info("measuring the success criteria on held-out material")
        if family == "melody_rnn":
            prompts = prompt_set(p.model_criteria_prompts, bpm=p.evaluation_bpm, bars=p.evaluation_bars, seed=p.evaluation_seed + 7)
            extra = melody_rnn_report(base["model_dir"], out["model_dir"], prompts, min_chord_tone_gain=p.model_min_chord_tone_gain)
        else:
            extra = musicvae_report(out["model_dir"], _corpus_dir(settings), quality_thresholds=p.quality_thresholds(2),
                                    interpolation_steps=p.model_interpolation_steps, noise_scale=p.model_variation_noise,
                                    min_compliance=p.model_variation_min_compliance, min_accuracy=p.model_min_reconstruction_accuracy,
                                    seed=p.model_seed)
        rows = {**report["rows"], **extra["rows"]}
        value["criteria"] = rows
        value["criteria_details"] = {k: v for k, v in extra.items() if k != "rows"}
        meta = _metadata(value, {"rows": rows, "stages": report["stages"]}, time.perf_counter() - t0, settings)
        if family == "melody_rnn":
            meta["base_vs_fine_tuned"] = md_table([{"model": "base", **extra["base"]}, {"model": "fine-tuned", **extra["tuned"]}])
        yield from _results(context, key, value, meta, rows)

    return _asset


def _model_asset(key: dg.AssetKey, checks: list, description: str, ins: dict | None = None, *, deps=(TFRECORDS,),
                 automation: dg.AutomationCondition | None = None, kinds=("pytorch", "safetensors")):
    """A model asset: heavy pool, its checks (names of CHECK_DESCRIPTIONS: WARN criteria; or whole
    AssetCheckSpecs) run with it, and skippable: a run whose stages have no training data yet ends
    without a materialization instead of failing (see `_skipped`). Automation: after the corpus
    changes, waiting for the assets it reads as inputs (unless `automation` says otherwise)."""
    if automation is None:
        automation = waiting_for([i.key for i in ins.values()]) if ins else CORPUS_AUTOMATION
    specs = [c if isinstance(c, dg.AssetCheckSpec) else
             dg.AssetCheckSpec(c, asset=key, description=CHECK_DESCRIPTIONS[c], automation_condition=WITH_ITS_ASSET) for c in checks]
    return dg.multi_asset(
        name=key.to_python_identifier(),
        outs={key.to_python_identifier(): dg.AssetOut(
            key=key, group_name=MODELS, code_version="1", kinds=set(kinds), is_required=False,
            automation_condition=automation, description=description)},
        check_specs=specs, deps=list(deps), ins=ins or {}, pool=POOL_HEAVY, can_subset=True,
    )


def _clean_runs(home: Path, keep: str) -> None:
    """A run finished: other runs' resume state under <home>/runs is obsolete."""
    for old in (home / "runs").iterdir():
        if old.name != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _skipped(context: dg.AssetExecutionContext, key: dg.AssetKey, reason: str) -> dg.AssetObservation:
    """Nothing to train on yet: the run succeeds, the asset stays unmaterialized (its downstream assets
    in the same run are skipped) and the reason is recorded on the asset's timeline. Automation
    requests it again when the corpus next changes."""
    message = f"not trained: no stage has training data yet ({reason}); waiting for the corpus to gain material in these tiers"
    context.log.warning(f"{key.to_user_string()}: {message}")
    return dg.AssetObservation(asset_key=key, metadata={"skipped": message})


def _results(context: dg.AssetExecutionContext, key: dg.AssetKey, value: dict, metadata: dict, rows: dict):
    yield dg.Output(value, output_name=key.to_python_identifier(), metadata=metadata)
    for check in context.selected_asset_check_keys:
        yield _check(check.name, rows[check.name])


def _check(name: str, row: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(row["passed"]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"criterion": row["criterion"], "value": row["value"] if row["value"] is not None else "not measurable",
                  "threshold": row.get("threshold") or "", "detail": row.get("detail") or ""},
    )


def _metadata(value: dict, report: dict, seconds: float, settings: SettingsResource) -> dict:
    rows = list(report["rows"].values())
    meta = {
        "source": value["source"],
        "model_dir": dg.MetadataValue.path(value["model_dir"]),
        "sha256": value["sha256"],
        "config": dg.MetadataValue.json(value["config"]),
        "criteria": md_table([{k: r.get(k) for k in ("criterion", "value", "threshold", "passed", "detail")} for r in rows]),
        "criteria_passed": f"{sum(bool(r['passed']) for r in rows)} of {len(rows)}",
        "device": str(resolve_device(settings.get_profile().model_device)),
        "profile": settings.get_profile().name,
        "seconds": round(seconds, 1),
    }
    if value["stages"]:
        meta["stages"] = md_table(_stage_rows(value["stages"]))
        meta.update(_curve_metadata(value["stages"], value["family"]))
    if value.get("imported"):
        meta["imported_from"] = str(value["imported"].get("source", ""))
        meta["imported_sha256"] = str(value["imported"].get("source_sha256", "unknown"))
    return meta


melody_rnn_base = _base_asset("melody_rnn")
musicvae_base = _base_asset("musicvae")
melody_rnn_trance = _trance_asset("melody_rnn")
musicvae_trance = _trance_asset("musicvae")
MODEL_ASSETS = [melody_rnn_base, musicvae_base, melody_rnn_trance, musicvae_trance]
MODEL_KEYS = {a.key.path[-1]: a.key for a in MODEL_ASSETS}
