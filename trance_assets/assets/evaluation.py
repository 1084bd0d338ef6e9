"""Evaluation: reference statistics, the benchmark report, and the listening test (kit + results)."""

import json

import dagster as dg
import numpy as np
import polars as pl

from ..constants import EVALUATION
from ..corpus.card import pitch_class_distribution
from ..corpus.examples import from_table
from ..evaluation.benchmark import run_benchmark
from ..evaluation.listening import ANSWERS_HEADER, make_kit, parse_answers, score_listening
from ..evaluation.metrics import score_many
from ..evaluation.report import best_and_worst, metric_figure, render_html, render_markdown
from ..evaluation.sets import reference_stats as build_reference_stats
from ..generation.base import Configuration, prompt_set
from ..io_managers import read_stored
from ..metadata import md_table
from ..resources import SettingsResource
from ..storage import atomic_write_text
from .automation import BULK_AUTOMATION, CORPUS_AUTOMATION, waiting_for
from .corpus import SPLITS_KEY
from .midi_model import INT8 as MIDI_MODEL_INT8, LORA as MIDI_MODEL_LORA
from .models import MODEL_KEYS

REFERENCE_STATS = dg.AssetKey(["evaluation", "reference_stats"])
KIT = dg.AssetKey(["evaluation", "listening_test_kit"])
RESULTS = dg.AssetKey(["evaluation", "listening_test_results"])
# The model assets the benchmark's configurations may name as "@models/<name>".
COMPARED_MODELS = {**MODEL_KEYS, "midi_model_trance_lora": MIDI_MODEL_LORA, "midi_model_onnx_int8": MIDI_MODEL_INT8}


def _reference_part(splits: pl.DataFrame, source: str) -> pl.DataFrame:
    t1 = splits.filter((pl.col("tier") == 1) & pl.col("parent").is_null())
    return t1 if source == "all" else t1.filter(pl.col("split") == "test")


def _configurations(settings: SettingsResource) -> list[Configuration]:
    return [Configuration(name, backend, json.loads(options)) for name, backend, options in settings.get_profile().evaluation_configs]


def _resolve(cfg: Configuration, models: dict[str, dict], reference_pc) -> Configuration:
    """Option values "@models/<name>" -> that model asset's folder; "@reference_pc" -> the
    reference corpus's pitch-class histogram."""
    options = {}
    for k, v in cfg.options.items():
        if isinstance(v, str) and v.startswith("@models/"):
            name = v.split("/", 1)[1]
            if name not in models:
                raise dg.Failure(f"configuration {cfg.name!r}: option {k}={v!r} names no model asset; known: {sorted(models)}")
            v = models[name]["model_dir"]
        elif v == "@reference_pc":
            if reference_pc is None:
                raise dg.Failure(f"configuration {cfg.name!r}: option {k}='@reference_pc' needs evaluation/reference_stats")
            v = [float(x) for x in reference_pc]
        options[k] = v
    return Configuration(cfg.name, cfg.backend, options)


@dg.asset(key=REFERENCE_STATS, group_name=EVALUATION, code_version="1", kinds={"json"}, automation_condition=CORPUS_AUTOMATION, ins={"splits": dg.AssetIn(SPLITS_KEY)})
def reference_stats(context: dg.AssetExecutionContext, settings: SettingsResource, splits: pl.DataFrame) -> dg.Output[dict]:
    """Mean, std and 10/25/50/75/90th percentiles of every metric over the reference corpus (Tier 1
    test split, or all of Tier 1 when the profile says so), its pitch-class histogram Q and its mean
    composite (EVALUATION.md's reference_stats.json)."""
    p = settings.get_profile()
    ref = _reference_part(splits, p.reference_source)
    examples = from_table(ref)
    melodies = [ex.to_melody() for ex in examples]
    q = pitch_class_distribution(ref["key"].to_list(), ref["pitch"].to_list(), ref["duration"].to_list()) if len(ref) else np.full(12, 1 / 12)
    scored = score_many(melodies, reference_pc=q)
    comps = [s["composite"] for s in scored if s.get("composite") is not None]
    stats = build_reference_stats(scored, q, float(np.mean(comps)) if comps else None)
    stats["reference_corpus"] = {"source": "Tier 1 test split" if p.reference_source != "all" else "all of Tier 1", "melodies": [ex.example_id for ex in examples], "source_files": [ex.source_file for ex in examples]}
    path = atomic_write_text(settings.path("evaluation", "reference_stats.json"), json.dumps(stats, indent=1, default=float))
    if len(examples) < 5:
        context.log.warning(f"the reference corpus has only {len(examples)} melodies: its statistics are noisy")
    rows = [{"metric": k, **{s: v.get(s) for s in ("n", "mean", "std", "p10", "p50", "p90")}} for k, v in stats.get("metrics", {}).items()]
    return dg.Output(
        stats,
        metadata={
            "reference_melodies": len(examples),
            "source": stats["reference_corpus"]["source"],
            "mean_composite": stats.get("composite_mean"),
            "metrics": md_table(rows),
            "file": dg.MetadataValue.path(str(path)),
        },
    )


@dg.asset(key=KIT, group_name=EVALUATION, code_version="1", kinds={"audio"}, automation_condition=BULK_AUTOMATION)
def listening_test_kit(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[dict]:
    """Blind A/B pairs between the two configurations named in the profile: one plain saw synth, dry,
    140 BPM, 16 bars, loudness-normalised 44.1 kHz WAV, order randomised per pair; the answer key is
    written apart from the kit."""
    p = settings.get_profile()
    by_name = {c.name: c for c in _configurations(settings)}
    for n in (p.listening_configs or ()):
        if n in by_name and any(isinstance(v, str) and v.startswith("@") for v in by_name[n].options.values()):
            raise dg.Failure(f"listening_configs names {n!r}, which needs trained models; the kit compares configurations without model inputs")
    a_name, b_name = p.listening_configs
    for n in (a_name, b_name):
        if n not in by_name:
            raise dg.Failure(f"listening_configs names {n!r}, which is not among the evaluation configurations {sorted(by_name)}")
    gen_a, gen_b = by_name[a_name].make(), by_name[b_name].make()
    prompts = prompt_set(p.listening_pairs, bpm=p.evaluation_bpm, bars=p.evaluation_bars, seed=p.evaluation_seed + 1)
    pairs = [(pr.prompt_id, gen_a.generate(pr.key, pr.bpm, list(pr.chords), pr.bars, pr.seed), gen_b.generate(pr.key, pr.bpm, list(pr.chords), pr.bars, pr.seed)) for pr in prompts]
    kit_dir = settings.path("evaluation", "listening_kit")
    key_dir = settings.path("evaluation", "listening_key")
    summary = make_kit(pairs, a_name, b_name, kit_dir, key_dir, seed=p.evaluation_seed)
    summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list, dict, type(None)))}
    summary.update({"config_a": a_name, "config_b": b_name, "kit_dir": str(kit_dir), "key_dir": str(key_dir)})
    return dg.Output(
        summary,
        metadata={
            "pairs": len(pairs),
            "configurations": f"{a_name} vs {b_name}",
            "kit": dg.MetadataValue.path(str(kit_dir)),
            "answer_key (keep from listeners)": dg.MetadataValue.path(str(key_dir)),
            "answers_file": dg.MetadataValue.path(str(settings.path("evaluation", "listening_answers.csv"))),
            "how_to": "Give listeners the kit folder (INSTRUCTIONS.md inside), collect rows 'listener,pair_id,choice' "
            "into listening_answers.csv, then materialize evaluation/listening_test_results.",
        },
    )


@dg.asset(key=RESULTS, group_name=EVALUATION, code_version="1", kinds={"csv"}, automation_condition=CORPUS_AUTOMATION, deps=[KIT])
def listening_test_results(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[dict]:
    """Win rate of the first configuration, one-sided binomial p-value and a per-listener breakdown,
    from storage/evaluation/listening_answers.csv (created empty when missing)."""
    p = settings.get_profile()
    a_name, b_name = p.listening_configs
    answers_file = settings.path("evaluation", "listening_answers.csv")
    if not answers_file.exists():
        atomic_write_text(answers_file, ANSWERS_HEADER)
    answers = parse_answers(answers_file.read_text(), str(answers_file))
    key_file = settings.path("evaluation", "listening_key", "answer_key.csv")
    if not key_file.exists():
        raise dg.Failure(f"no answer key at {key_file}: materialize evaluation/listening_test_kit first")
    import csv
    import io

    key_rows = list(csv.DictReader(io.StringIO(key_file.read_text())))
    result = score_listening(answers, key_rows, a_name, b_name)
    result = {k: v for k, v in result.items() if isinstance(v, (int, float, str, list, dict, type(None)))}
    result.update({"config_a": a_name, "config_b": b_name})
    return dg.Output(
        result,
        metadata={
            "answers": result.get("n", 0),
            "win_rate": result.get("win_rate") if result.get("n") else "no answers yet",
            "p_value_one_sided": result.get("p_value") if result.get("n") else "n/a",
            "listeners": md_table(result.get("per_listener") or []),
            "answers_file": dg.MetadataValue.path(str(answers_file)),
        },
    )


@dg.asset(
    key=["evaluation", "benchmark_report"],
    group_name=EVALUATION,
    code_version="1",
    kinds={"html"},
    automation_condition=waiting_for(COMPARED_MODELS.values()),
    ins={"reference_stats": dg.AssetIn(REFERENCE_STATS), "splits": dg.AssetIn(SPLITS_KEY), **{name: dg.AssetIn(key) for name, key in COMPARED_MODELS.items()}},
    deps=[RESULTS],
)
def benchmark_report(
    context: dg.AssetExecutionContext, settings: SettingsResource, reference_stats: dict, splits: pl.DataFrame,
    melody_rnn_base: dict, musicvae_base: dict, melody_rnn_trance: dict, musicvae_trance: dict,
    midi_model_trance_lora: dict, midi_model_onnx_int8: dict,
) -> dg.MaterializeResult:
    """Every configuration on the fixed prompt set against the reference corpus: metrics, set-level
    OA and fd_features, paired Wilcoxon + Holm, Mann–Whitney + Cliff's δ, plagiarism flags, the
    plan's outcome table and the gate decision; markdown + a self-contained HTML page."""
    p = settings.get_profile()
    ref = _reference_part(splits, p.reference_source)
    reference_melodies = [ex.to_melody() for ex in from_table(ref)]
    train = splits.filter(pl.col("split") == "train")
    training = [list(x) for x in train.sort(["example_id"])["pitch"].to_list()]
    listening = read_stored(settings.storage_root, RESULTS.path)
    prompts = prompt_set(p.evaluation_prompts, bpm=p.evaluation_bpm, bars=p.evaluation_bars, seed=p.evaluation_seed)
    models = {"melody_rnn_base": melody_rnn_base, "musicvae_base": musicvae_base, "melody_rnn_trance": melody_rnn_trance, "musicvae_trance": musicvae_trance,
              "midi_model_trance_lora": midi_model_trance_lora, "midi_model_onnx_int8": midi_model_onnx_int8}
    configs = [_resolve(c, models, reference_stats.get("pitch_class_histogram")) for c in _configurations(settings)]
    res = run_benchmark(
        configs,
        prompts,
        reference_melodies,
        reference_stats["pitch_class_histogram"],
        training_pitch_sequences=training,
        listening=listening,
        gate_composite_ratio=p.gate_composite_ratio,
        gate_listening_win_rate=p.gate_listening_win_rate,
        log=context.log.info,
    )
    folder = settings.path("evaluation")
    md = render_markdown(res)
    md_path = atomic_write_text(folder / "benchmark_report.md", md)
    html_path = atomic_write_text(folder / "benchmark_report.html", render_html(res, metric_figure(res), best_and_worst(res)))
    return dg.MaterializeResult(
        metadata={
            "gate": res.gate["text"],
            "outcome": md_table(res.outcome),
            "report": dg.MetadataValue.md(md),
            "html": dg.MetadataValue.path(str(html_path)),
            # A link the UI renders as clickable (browsers open local files from file:// links).
            "open_html": dg.MetadataValue.url(html_path.as_uri() if html_path.protocol in ("", "file", "local") else str(html_path)),
            "markdown": dg.MetadataValue.path(str(md_path)),
            "prompts": len(prompts),
            "configurations": ", ".join(r.config.name for r in res.configs),
            "reference_melodies": len(reference_melodies),
            "plagiarism_flags": sum(h.flagged for r in res.configs for h in r.plagiarism),
        }
    )
