"""The evaluation assets in Dagster on a real (ephemeral) instance: demo Tier 1 files registered by
`gold_melodies_sensor`, synthetic Tier 3 melodies, the corpus up to its splits, then
evaluation/reference_stats, listening_test_kit, listening_test_results and benchmark_report; then a
listener's answers (always config_b's file) and the re-materialized results and report.

One module-scoped world runs it all once; the tests read what it recorded. Files rewritten by the
second pass are snapshotted after the first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from test_midi_model_assets import TINY_MIDI
from test_model_assets import TINY
from trance_assets.assets import corpus, evaluation
from trance_assets.assets.midi_model import MIDI_MODEL_ASSETS, midi_model_tokens
from trance_assets.assets.models import MODEL_ASSETS as RNN_VAE_ASSETS
from trance_assets.assets.gold import gold_melody
from trance_assets.assets.synthetic import synthetic_melodies
from trance_assets.corpus.card import pitch_class_distribution
from trance_assets.demo import write_demo_data
from trance_assets.evaluation.listening import ANSWERS_HEADER, QUESTION
from trance_assets.evaluation.metrics import METRICS
from trance_assets.generation.base import prompt_set
from trance_assets.io_managers import StorageIOManager
from trance_assets.music.melody import melody_from_midi
from trance_assets.profiles import get_profile
from trance_assets.resources import MidiModelResource, SettingsResource
from trance_assets.sensors import gold_melodies_sensor
from trance_assets.storage import sha256_file

DEMO_GOLD = 10
PROFILE = get_profile("demo")
CONFIG_A, CONFIG_B = PROFILE.listening_configs
LISTENERS = ("alice", "bob")
UPSTREAM = [corpus.augmented, corpus.filtered, corpus.splits]
TFRECORDS = [corpus.notesequence_tfrecords, midi_model_tokens]
MODEL_ASSETS = [*RNN_VAE_ASSETS, *MIDI_MODEL_ASSETS]
MODELS = {a.key.path[-1]: a.key for a in MODEL_ASSETS}
MODEL_CONFIGS = ("melody_rnn", "musicvae", "phase1_pretrained", "phase2_finetuned", "midi_model")
CONFIG_NAMES = [name for name, _backend, _options in PROFILE.evaluation_configs]
EVAL = [evaluation.reference_stats, evaluation.listening_test_kit, evaluation.listening_test_results, evaluation.benchmark_report]
REPORT = dg.AssetKey(["evaluation", "benchmark_report"])
NODES = ("evaluation__reference_stats", "evaluation__listening_test_kit", "evaluation__listening_test_results", "evaluation__benchmark_report")


def values(mat) -> dict:
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def node_meta(result, node: str) -> dict:
    [mat] = result.asset_materializations_for_node(node)
    return values(mat)


@dataclass
class World:
    settings: SettingsResource
    storage: Path
    tier1: Path
    evaluation_dir: Path
    splits: pl.DataFrame
    first: dg.ExecuteInProcessResult
    meta: dict  # node -> metadata of the first evaluation run
    results_first: dict  # stored listening_test_results value, no answers
    answers_first: str  # the answers file as the first results run left it
    report_md_first: str
    answer_key: list[dict]
    answers: str  # the answers written between the passes
    models: dict  # model asset name -> its value
    second: dg.ExecuteInProcessResult
    meta_second: dict
    results_second: dict


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("evaluation")
    (tmp / "inbox").mkdir()
    # tiny models (the profile's demo sizes would take minutes on 2 cores)
    settings = SettingsResource(profile="demo", storage_url=str(tmp / "storage"), inbox_dir=str(tmp / "inbox"), profile_overrides=json.dumps({**TINY, **TINY_MIDI}))
    resources = {"settings": settings, "io_manager": StorageIOManager(settings=settings), "midi_model": MidiModelResource()}
    write_demo_data(settings.storage_url, tracks=0, tier1_extra=DEMO_GOLD, inbox=tmp / "inbox", log=lambda *a: None)
    tier1 = settings.local_dataset_dir("tier1")
    for p in tier1.iterdir():
        t = time.time_ns() - 60 * 10**9
        os.utime(p, ns=(t, t))
    storage = Path(settings.storage_url)
    ev_dir = storage / "evaluation"
    results_path = storage / "assets" / "evaluation" / "listening_test_results.json"

    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(instance=instance, cursor=None, resources={"settings": settings})
        tick = gold_melodies_sensor(ctx)
        for req in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        assert len(tick.run_requests) == DEMO_GOLD
        for req in tick.run_requests:
            assert dg.materialize([gold_melody], instance=instance, resources=resources, partition_key=req.partition_key, tags=req.tags).success
        assert dg.materialize([synthetic_melodies], instance=instance, resources=resources).success
        assert dg.materialize(UPSTREAM, instance=instance, resources=resources).success
        # benchmark_report reads the four model assets, which train on the corpus export
        assert dg.materialize([*UPSTREAM, *TFRECORDS], selection=[a.key for a in TFRECORDS], instance=instance, resources=resources).success
        trained = dg.materialize([*UPSTREAM, *TFRECORDS, *MODEL_ASSETS], selection=list(MODELS.values()), instance=instance, resources=resources)
        assert trained.success
        models = {name: trained.asset_value(dg.AssetKey(["models", name])) for name in MODELS}

        everything = [*UPSTREAM, *TFRECORDS, *MODEL_ASSETS, *EVAL]
        first = dg.materialize(everything, selection=[a.key for a in EVAL], instance=instance, resources=resources)
        meta = {n: node_meta(first, n) for n in NODES}
        results_first = json.loads(results_path.read_text())
        answers_first = (ev_dir / "listening_answers.csv").read_text()
        report_md_first = (ev_dir / "benchmark_report.md").read_text()

        # Every listener prefers config_b's file in every pair, found through the answer key.
        key_rows = list(csv.DictReader(io.StringIO((ev_dir / "listening_key" / "answer_key.csv").read_text())))
        lines = [ANSWERS_HEADER.strip()]
        for who in LISTENERS:
            for row in key_rows:
                choice = 1 if row["file_1_config"] == CONFIG_B else 2
                lines.append(f"{who},{row['pair_id']},{choice},")
        answers = "\n".join(lines) + "\n"
        (ev_dir / "listening_answers.csv").write_text(answers)

        second = dg.materialize(everything, selection=[evaluation.RESULTS, REPORT], instance=instance, resources=resources)
        meta_second = {n: node_meta(second, n) for n in NODES[2:]}
        results_second = json.loads(results_path.read_text())

    yield World(
        settings=settings,
        storage=storage,
        tier1=tier1,
        evaluation_dir=ev_dir,
        splits=pl.read_csv(storage / "dataset" / "corpus" / "splits.csv"),
        first=first,
        meta=meta,
        results_first=results_first,
        answers_first=answers_first,
        report_md_first=report_md_first,
        answer_key=key_rows,
        answers=answers,
        models=models,
        second=second,
        meta_second=meta_second,
        results_second=results_second,
    )


def reference_sources(world) -> pl.DataFrame:
    s = world.splits
    return s.filter((pl.col("tier") == 1) & pl.col("parent").is_null() & (pl.col("split") == "test")).sort("example_id")


# ---- the runs -----------------------------------------------------------------------------------


def test_both_runs_succeed_with_what_they_selected(world):
    assert world.first.success and world.second.success
    done = {e.asset_key.to_user_string() for e in world.first.get_asset_materialization_events()}
    assert done == {"evaluation/reference_stats", "evaluation/listening_test_kit", "evaluation/listening_test_results", "evaluation/benchmark_report"}
    done = {e.asset_key.to_user_string() for e in world.second.get_asset_materialization_events()}
    assert done == {"evaluation/listening_test_results", "evaluation/benchmark_report"}


# ---- reference_stats ----------------------------------------------------------------------------


def test_reference_stats_file(world):
    path = world.evaluation_dir / "reference_stats.json"
    stats = json.loads(path.read_text())
    # the stored asset value is the same document
    assert json.loads((world.storage / "assets" / "evaluation" / "reference_stats.json").read_text()) == stats
    assert set(stats["metrics"]) == set(METRICS)
    for name, m in stats["metrics"].items():
        assert set(m) == {"n", "mean", "std", "p10", "p25", "p50", "p75", "p90"}, name
        if m["n"]:
            assert m["p10"] <= m["p25"] <= m["p50"] <= m["p75"] <= m["p90"], name
            assert m["std"] >= 0
    assert stats["metrics"]["self_similarity_16"]["n"] == 0  # demo gold melodies are under 32 bars
    q = stats["pitch_class_histogram"]
    assert len(q) == 12 and all(v > 0 for v in q)
    assert sum(q) == pytest.approx(1.0)
    assert 0 < stats["composite_mean"] <= 1


def test_reference_corpus_is_the_tier1_test_split(world):
    stats = json.loads((world.evaluation_dir / "reference_stats.json").read_text())
    ref = reference_sources(world)
    assert ref.height >= 1
    corpus_part = stats["reference_corpus"]
    assert corpus_part["source"] == "Tier 1 test split"
    assert sorted(corpus_part["melodies"]) == ref["example_id"].to_list()
    assert stats["n_melodies"] == ref.height
    # no Tier 1 train example, nor any augmented copy, is in the reference
    train = set(world.splits.filter(pl.col("split") == "train")["example_id"])
    assert not set(corpus_part["melodies"]) & train
    assert all(m.startswith("t1-") and "~" not in m for m in corpus_part["melodies"])
    files = [Path(f) for f in corpus_part["source_files"]]
    assert all(f.parent == world.tier1 and f.is_file() for f in files)
    for metric in ("pitch_entropy", "chord_tone_ratio", "composite"):
        if metric in stats["metrics"]:
            assert stats["metrics"][metric]["n"] == ref.height
    # Q: the duration-weighted, tonic-rotated pitch classes of the reference's own MIDI files
    mels = [melody_from_midi(f) for f in files]
    q = pitch_class_distribution([m.key for m in mels], [m.pitches for m in mels], [[n.duration for n in m.notes] for m in mels])
    assert np.allclose(stats["pitch_class_histogram"], q, atol=1e-9)


def test_reference_stats_metadata(world):
    md = world.meta["evaluation__reference_stats"]
    stats = json.loads((world.evaluation_dir / "reference_stats.json").read_text())
    assert md["reference_melodies"] == stats["n_melodies"]
    assert md["source"] == "Tier 1 test split"
    assert md["mean_composite"] == pytest.approx(stats["composite_mean"])
    assert md["file"] == str(world.evaluation_dir / "reference_stats.json")
    assert "| pitch_entropy |" in md["metrics"]


# ---- the listening kit --------------------------------------------------------------------------


def test_kit_folder(world):
    kit = world.evaluation_dir / "listening_kit"
    n = PROFILE.listening_pairs
    assert n == 10
    wavs = sorted(p.name for p in kit.glob("*.wav"))
    assert wavs == sorted(f"pair_{k:03d}_{s}.wav" for k in range(1, n + 1) for s in (1, 2))
    assert sorted(p.name for p in kit.iterdir()) == sorted([*wavs, "kit.csv", "INSTRUCTIONS.md"])
    rows = list(csv.DictReader(io.StringIO((kit / "kit.csv").read_text())))
    assert [r["pair_id"] for r in rows] == [f"pair_{k:03d}" for k in range(1, n + 1)]
    prompts = prompt_set(n, bpm=PROFILE.evaluation_bpm, bars=PROFILE.evaluation_bars, seed=PROFILE.evaluation_seed + 1)
    assert [r["prompt_id"] for r in rows] == [p.prompt_id for p in prompts]
    assert all((r["file_1"], r["file_2"]) == (f"{r['pair_id']}_1.wav", f"{r['pair_id']}_2.wav") for r in rows)
    assert QUESTION in (kit / "INSTRUCTIONS.md").read_text()
    info = sf.info(str(kit / "pair_001_1.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
    assert info.duration >= 16 * 4 * 60 / 140 - 0.5  # 16 bars at 140 BPM


def test_the_answer_key_is_kept_out_of_the_kit(world):
    kit = world.evaluation_dir / "listening_kit"
    key_dir = world.evaluation_dir / "listening_key"
    assert (key_dir / "answer_key.csv").is_file()
    assert not list(kit.rglob("answer_key*"))
    assert kit.resolve() not in key_dir.resolve().parents and kit.resolve() != key_dir.resolve()
    # nothing a listener can read names a configuration
    for p in kit.iterdir():
        if p.suffix in (".csv", ".md"):
            text = p.read_text()
            assert CONFIG_A not in text and CONFIG_B not in text, p.name
    # the key: every pair compares the two configurations, each first in half of the pairs
    assert len(world.answer_key) == PROFILE.listening_pairs
    assert all({r["file_1_config"], r["file_2_config"]} == {CONFIG_A, CONFIG_B} for r in world.answer_key)
    assert sum(r["file_1_config"] == CONFIG_A for r in world.answer_key) == PROFILE.listening_pairs // 2


def test_kit_metadata(world):
    md = world.meta["evaluation__listening_test_kit"]
    assert md["pairs"] == PROFILE.listening_pairs
    assert md["configurations"] == f"{CONFIG_A} vs {CONFIG_B}" == "rules vs rules-dense"
    assert md["kit"] == str(world.evaluation_dir / "listening_kit")
    assert md["answer_key (keep from listeners)"] == str(world.evaluation_dir / "listening_key")
    assert md["answers_file"] == str(world.evaluation_dir / "listening_answers.csv")


# ---- listening results ---------------------------------------------------------------------------


def test_results_without_answers(world):
    assert world.answers_first == ANSWERS_HEADER  # created empty
    r = world.results_first
    assert r["n"] == 0 and r["win_rate"] is None and r["p_value"] is None
    assert (r["config_a"], r["config_b"]) == (CONFIG_A, CONFIG_B)
    md = world.meta["evaluation__listening_test_results"]
    assert md["answers"] == 0 and md["win_rate"] == "no answers yet" and md["p_value_one_sided"] == "n/a"


def test_results_with_answers(world):
    r = world.results_second
    n = len(LISTENERS) * PROFILE.listening_pairs
    assert (r["n"], r["wins"], r["losses"]) == (n, 0, n)
    assert r["win_rate"] == 0.0
    assert r["p_value"] == pytest.approx(1.0)  # P(X >= 0)
    assert r["listeners"] == 2
    assert r["per_listener"] == [{"listener": w, "wins": 0, "n": PROFILE.listening_pairs, "rate": 0.0} for w in LISTENERS]
    md = world.meta_second["evaluation__listening_test_results"]
    assert md["answers"] == n and md["win_rate"] == 0.0 and md["p_value_one_sided"] == pytest.approx(1.0)
    assert "alice" in md["listeners"] and "bob" in md["listeners"]
    # the answers file is read, not rewritten
    assert (world.evaluation_dir / "listening_answers.csv").read_text() == world.answers


# ---- the benchmark report ------------------------------------------------------------------------


def test_report_files_and_metadata(world):
    md = world.meta["evaluation__benchmark_report"]
    html_path = world.evaluation_dir / "benchmark_report.html"
    md_path = world.evaluation_dir / "benchmark_report.md"
    assert md["html"] == str(html_path) and md["markdown"] == str(md_path)
    assert html_path.is_file() and md_path.is_file()
    page = html_path.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert md["prompts"] == PROFILE.evaluation_prompts == 20
    assert md["configurations"] == ", ".join(CONFIG_NAMES) == "rules, rules-dense, melody_rnn, musicvae, phase1_pretrained, phase2_finetuned, midi_model"
    assert md["reference_melodies"] == reference_sources(world).height
    assert isinstance(md["plagiarism_flags"], int) and md["plagiarism_flags"] >= 0
    assert md["outcome"].startswith("| configuration | pitch_entropy | chord_tone_ratio | self_similarity_8 | kl_to_reference | composite | composite_vs_reference | human_preference |")
    assert md["report"] == world.report_md_first
    assert f"**Gate:** {md['gate']}" in world.report_md_first


def test_report_without_answers(world):
    md = world.meta["evaluation__benchmark_report"]
    assert md["gate"].startswith("Not production-ready. Best configuration: ")
    assert md["gate"].endswith("the listening test has not been run yet (no answers).")
    outcome_rows = md["outcome"].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in outcome_rows] == [*CONFIG_NAMES, "reference corpus"]
    assert [row.split("|")[-2].strip() for row in outcome_rows] == ["not yet run"] * len(CONFIG_NAMES) + ["—"]


def test_report_with_answers(world):
    md = world.meta_second["evaluation__benchmark_report"]
    n = len(LISTENERS) * PROFILE.listening_pairs
    outcome_rows = md["outcome"].splitlines()[2:]
    assert [row.split("|")[-2].strip() for row in outcome_rows] == [
        f"0.0% of {n} (rules vs rules-dense)",
        f"100.0% of {n} (rules vs rules-dense)",
        *["not yet run"] * len(MODEL_CONFIGS),  # not in the listening test
        "—",
    ]
    gate = md["gate"]
    assert "has not been run yet" not in gate
    if gate.startswith("Not production-ready. Best configuration: rules;"):
        assert f"it wins 0.0% of {n} listening comparisons against rules-dense (needs > 70%)" in gate
    else:  # rules-dense is best: it wins every comparison
        assert gate.startswith("Production-ready: rules-dense") and "wins 100.0% of listening comparisons" in gate
    report = (world.evaluation_dir / "benchmark_report.md").read_text()
    assert f"**Gate:** {gate}" in report and report != world.report_md_first
    assert f"0.0% of {n} (rules vs rules-dense)" in (world.evaluation_dir / "benchmark_report.html").read_text()


# ---- the trained models in the report ------------------------------------------------------------


def test_listening_kit_compares_configurations_without_models():
    by_name = {n: json.loads(o) for n, _b, o in PROFILE.evaluation_configs}
    assert set(PROFILE.listening_configs) <= set(by_name)
    for n in PROFILE.listening_configs:
        assert not any(isinstance(v, str) and v.startswith("@") for v in by_name[n].values()), n


def test_model_assets_were_trained_with_the_tiny_overrides(world):
    assert set(world.models) == {"melody_rnn_base", "musicvae_base", "melody_rnn_trance", "musicvae_trance",
                                 "midi_model_base", "midi_model_trance_lora", "midi_model_onnx", "midi_model_onnx_int8"}
    assert world.models["melody_rnn_base"]["config"]["layers"] == [8, 8]
    assert world.models["musicvae_base"]["config"]["z_size"] == 4
    for name, v in world.models.items():
        if name.startswith("midi_model"):
            continue
        assert v["source"] in ("pre-trained on Tier 3", "fine-tuned from pre-trained on Tier 3"), name
        assert Path(v["model_dir"]) == world.storage / "models" / name / "model"
    # the demo corpus has no Tier 2 material (no reference tracks): the Tier 2 stage is skipped
    for name in ("melody_rnn_trance", "musicvae_trance"):
        t2, t1 = world.models[name]["stages"]
        assert t2["skipped"] and "tier(s) [2]" in t2["skipped"] and t2["result"] is None
        assert t1["skipped"] is None and t1["result"]["steps"] == 2


def report_config_rows(md: str) -> dict[str, dict]:
    """The report's "Configurations" table: {configuration: row}."""
    lines = md.split("## Configurations", 1)[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_report_configurations_name_their_model_checkpoints(world):
    sha = {name: v["sha256"] for name, v in world.models.items()}
    assert all(sha[n] == sha256_file(world.storage / "models" / n / "model" / "model.safetensors") for n in sha if "onnx" not in n)
    for md_text in (world.report_md_first, (world.evaluation_dir / "benchmark_report.md").read_text()):
        rows = report_config_rows(md_text)
        assert list(rows) == CONFIG_NAMES
        assert [rows[n]["backend"] for n in MODEL_CONFIGS] == ["melody_rnn", "musicvae", "hybrid", "hybrid", "midi_model"]
        # midi-model standalone, on the INT8 ONNX export of the LoRA fine-tune
        assert str(world.storage / "models" / "midi_model_onnx_int8" / "model") in rows["midi_model"]["options"]
        assert rows["midi_model"]["checkpoint"] not in ("", "—")
        assert rows["melody_rnn"]["checkpoint"] == sha["melody_rnn_trance"]
        assert rows["musicvae"]["checkpoint"] == sha["musicvae_trance"]
        assert rows["phase1_pretrained"]["checkpoint"] == f"rnn:{sha['melody_rnn_base']};vae:{sha['musicvae_base']}"
        assert rows["phase2_finetuned"]["checkpoint"] == f"rnn:{sha['melody_rnn_trance']};vae:{sha['musicvae_trance']}"
        assert rows["rules"]["checkpoint"] == rows["rules-dense"]["checkpoint"] == "—"
        for n in CONFIG_NAMES:
            assert int(rows[n]["melodies"]) == PROFILE.evaluation_prompts, n
        # "@models/<name>" options were resolved to the model folders, "@reference_pc" to the histogram
        assert str(world.storage / "models" / "melody_rnn_trance" / "model") in rows["melody_rnn"]["options"]
        assert str(world.storage / "models" / "musicvae_base" / "model") in rows["phase1_pretrained"]["options"]
        assert "@" not in rows["phase2_finetuned"]["options"]
    assert sha["melody_rnn_trance"] in (world.evaluation_dir / "benchmark_report.html").read_text()


def test_resolve_model_options():
    from trance_assets.generation.base import Configuration

    models = {"melody_rnn_trance": {"model_dir": "/m/rnn"}, "musicvae_base": {"model_dir": "/m/vae"}}
    cfg = Configuration("x", "hybrid", {"melody_rnn": "@models/melody_rnn_trance", "musicvae": "@models/musicvae_base",
                                        "reference_pc": "@reference_pc", "label": "x", "temperature": 0.9})
    got = evaluation._resolve(cfg, models, np.full(12, 1 / 12))
    assert got.options == {"melody_rnn": "/m/rnn", "musicvae": "/m/vae", "reference_pc": [1 / 12] * 12, "label": "x", "temperature": 0.9}
    assert (got.name, got.backend) == ("x", "hybrid")
    with pytest.raises(dg.Failure, match="names no model asset"):
        evaluation._resolve(Configuration("y", "melody_rnn", {"checkpoint": "@models/nope"}), models, None)
    with pytest.raises(dg.Failure, match="needs evaluation/reference_stats"):
        evaluation._resolve(Configuration("z", "hybrid", {"reference_pc": "@reference_pc"}), models, None)
