"""The code location: it loads, holds exactly the expected assets, sensor and checks, Tier 3
materializes, and the domain core stays free of Dagster."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl

import trance_assets
from trance_assets.assets.synthetic import synthetic_melodies, synthetic_melodies_pass_quality
from trance_assets.definitions import defs
from trance_assets.profiles import get_profile

PACKAGE = Path(trance_assets.__file__).parent
CORE_PACKAGES = ("music", "audio", "formats", "bulk", "corpus", "evaluation", "generation", "models")
CORE_MODULES = ("inbox.py", "gold_inbox.py", "storage.py", "profiles.py", "demo.py", "review.py")
PER_TRACK = {"reference_audio", "tier2/separated_lead", "tier2/transcription", "tier2/melody"}
CORPUS_ASSETS = (
    "corpus/augmented",
    "corpus/filtered",
    "corpus/spot_check",
    "corpus/splits",
    "corpus/remi_tokens",
    "corpus/notesequence_tfrecords",
    "corpus/metadata",
    "corpus/dataset_card",
    "corpus/midi_model_tokens",
)
MODEL_ASSETS = (
    "models/melody_rnn_base", "models/musicvae_base", "models/melody_rnn_trance", "models/musicvae_trance",
    "models/midi_model_base", "models/midi_model_trance_lora", "models/midi_model_onnx", "models/midi_model_onnx_int8",
)
LOSS = ("val_loss_decreases", "val_loss_plateaus", "train_val_gap")
EVALUATION_ASSETS = (
    "evaluation/reference_stats",
    "evaluation/listening_test_kit",
    "evaluation/listening_test_results",
    "evaluation/benchmark_report",
)


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_and_groups():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "reference_audio": "ingest",
        "tier2/separated_lead": "tier2",
        "tier2/transcription": "tier2",
        "tier2/melody": "tier2",
        "tier2/review_queue": "tier2",
        "tier1/melody": "tier1",
        "tier3/synthetic_melodies": "tier3",
        "tier3/gigamidi_melodies": "tier3",
        "tier3/public_domain_melodies": "tier3",
        **{key: "corpus" for key in CORPUS_ASSETS},
        **{key: "models" for key in MODEL_ASSETS},
        **{key: "evaluation" for key in EVALUATION_ASSETS},
    }
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == {
        ("tier2/melody", "non_empty"),
        ("tier2/melody", "tempo_in_range"),
        ("tier2/melody", "scale_compliance"),
        ("tier2/melody", "tier2_rules"),
        ("tier2/review_queue", "review_batches_pass"),
        ("tier1/melody", "tier1_rules"),
        ("tier3/synthetic_melodies", "synthetic_melodies_pass_quality"),
        ("corpus/filtered", "filtered_satisfies_every_rule"),
        ("corpus/spot_check", "spot_check_flag_rate"),
        ("corpus/splits", "no_leakage"),
        ("corpus/dataset_card", "tier1_count"),
        ("corpus/dataset_card", "tier2_count"),
        ("corpus/dataset_card", "tier3_count"),
        ("corpus/dataset_card", "remi_roundtrip_100"),
        ("corpus/dataset_card", "notesequence_complete"),
        ("corpus/dataset_card", "remi_complete"),
        *{("models/melody_rnn_base", c) for c in LOSS},
        *{("models/musicvae_base", c) for c in LOSS},
        *{("models/melody_rnn_trance", c) for c in (*LOSS, "chord_tone_gain", "minor_histogram", "self_similarity_increases")},
        *{("models/musicvae_trance", c) for c in (*LOSS, "reconstruction_accuracy", "interpolation_intermediates", "variations_in_key")},
        *{("models/midi_model_base", c) for c in LOSS},
        *{("models/midi_model_trance_lora", c) for c in (*LOSS, "val_loss_improves_on_base")},
    }
    # The ONNX export never runs on a fine-tuned midi-model that did not beat its base.
    lora = defs.resolve_assets_def(dg.AssetKey(["models", "midi_model_trance_lora"]))
    assert {s.name: s.blocking for s in lora.check_specs} == {**{c: False for c in LOSS}, "val_loss_improves_on_base": True}
    tracks = dg.DynamicPartitionsDefinition(name="reference_tracks")
    for key in PER_TRACK:
        assert graph.get(dg.AssetKey.from_user_string(key)).partitions_def == tracks, key
    assert graph.get(dg.AssetKey(["tier1", "melody"])).partitions_def == dg.DynamicPartitionsDefinition(name="gold_melodies")
    for key in ("tier2/review_queue", "tier3/synthetic_melodies", "tier3/gigamidi_melodies", "tier3/public_domain_melodies", *CORPUS_ASSETS, *MODEL_ASSETS, *EVALUATION_ASSETS):
        assert graph.get(dg.AssetKey.from_user_string(key)).partitions_def is None, key
    assert graph.get(dg.AssetKey("reference_audio")).code_version == "1"
    # The per-track chain, in order of dependency.
    assert graph.get(dg.AssetKey(["tier2", "separated_lead"])).parent_keys == {dg.AssetKey("reference_audio")}
    assert graph.get(dg.AssetKey(["tier2", "transcription"])).parent_keys == {dg.AssetKey(["tier2", "separated_lead"])}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey(["tier2", "melody"])).parent_keys} == {
        "reference_audio",
        "tier2/separated_lead",
        "tier2/transcription",
    }
    assert graph.get(dg.AssetKey(["tier2", "review_queue"])).parent_keys == {dg.AssetKey(["tier2", "melody"])}
    # The corpus reads every tier, then runs as a chain.
    assert {k.to_user_string() for k in graph.get(dg.AssetKey(["corpus", "augmented"])).parent_keys} == {
        "tier1/melody",
        "tier2/melody",
        "tier2/review_queue",
        "tier3/synthetic_melodies",
        "tier3/gigamidi_melodies",
        "tier3/public_domain_melodies",
    }
    parents = {key: {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(key)).parent_keys} for key in CORPUS_ASSETS}
    assert parents["corpus/filtered"] == {"corpus/augmented"}
    assert parents["corpus/spot_check"] == parents["corpus/splits"] == {"corpus/filtered"}
    assert parents["corpus/remi_tokens"] == parents["corpus/notesequence_tfrecords"] == parents["corpus/metadata"] == {"corpus/splits"}
    assert parents["corpus/dataset_card"] == {"corpus/augmented", "corpus/splits", "corpus/remi_tokens", "corpus/notesequence_tfrecords", "corpus/metadata"}
    # Evaluation: reference statistics from the splits, the listening kit stands alone, its results
    # follow it, and the benchmark report reads the statistics, the splits and the listening results.
    ev = {key: {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(key)).parent_keys} for key in EVALUATION_ASSETS}
    assert ev["evaluation/reference_stats"] == {"corpus/splits"}
    assert ev["evaluation/listening_test_kit"] == set()
    assert ev["evaluation/listening_test_results"] == {"evaluation/listening_test_kit"}
    assert ev["evaluation/benchmark_report"] == {"evaluation/reference_stats", "corpus/splits", "evaluation/listening_test_results", *MODEL_ASSETS[:4],
                                                 "models/midi_model_trance_lora", "models/midi_model_onnx_int8"}
    # Models: the base models train on the corpus export (a dependency without an input: they read
    # the TFRecord files), the trance models fine-tune their base.
    models = {key: {k.to_user_string() for k in graph.get(dg.AssetKey.from_user_string(key)).parent_keys} for key in MODEL_ASSETS}
    assert models["models/melody_rnn_base"] == models["models/musicvae_base"] == {"corpus/notesequence_tfrecords"}
    assert models["models/melody_rnn_trance"] == {"corpus/notesequence_tfrecords", "models/melody_rnn_base"}
    assert models["models/musicvae_trance"] == {"corpus/notesequence_tfrecords", "models/musicvae_base"}
    # midi-model: tokens from the splits; base -> LoRA -> ONNX -> INT8 (which reads held-out tokens).
    assert parents["corpus/midi_model_tokens"] == {"corpus/splits"}
    assert models["models/midi_model_base"] == {"corpus/midi_model_tokens"}
    assert models["models/midi_model_trance_lora"] == {"corpus/midi_model_tokens", "models/midi_model_base"}
    assert models["models/midi_model_onnx"] == {"models/midi_model_trance_lora"}
    assert models["models/midi_model_onnx_int8"] == {"corpus/midi_model_tokens", "models/midi_model_onnx"}
    for key in MODEL_ASSETS:
        assert graph.get(dg.AssetKey.from_user_string(key)).code_version == "1", key


def test_separation_and_model_training_run_in_the_heavy_pool():
    separated = defs.resolve_assets_def(dg.AssetKey(["tier2", "separated_lead"]))
    assert separated.op.pool == "heavy"
    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert {k for k, v in pools.items() if v} == {"tier2/separated_lead", *MODEL_ASSETS}
    assert all(pools[k] == {"heavy"} for k in ("tier2/separated_lead", *MODEL_ASSETS))


def test_sensor_and_job():
    sensor = defs.resolve_sensor_def("reference_audio_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "reference_track_job"
    automation = defs.resolve_sensor_def("automation_condition_sensor")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    automated = automation.asset_selection.resolve(defs.resolve_asset_graph())
    assert dg.AssetKey(["tier2", "review_queue"]) in automated
    assert {dg.AssetKey.from_user_string(k) for k in (*CORPUS_ASSETS, *MODEL_ASSETS, *EVALUATION_ASSETS)} <= automated
    assert {dg.AssetKey(["tier3", "gigamidi_melodies"]), dg.AssetKey(["tier3", "public_domain_melodies"]), dg.AssetKey(["tier3", "synthetic_melodies"])} <= automated
    # Every automatable asset has a running sensor: Dagster adds no (stopped) default one.
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {"reference_audio_sensor", "gold_melodies_sensor", "automation_condition_sensor"}
    gold_sensor = defs.resolve_sensor_def("gold_melodies_sensor")
    assert gold_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert gold_sensor.job_name == "gold_melody_job"
    job = defs.resolve_job_def("reference_track_job")
    assert job.partitions_def == dg.DynamicPartitionsDefinition(name="reference_tracks")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == PER_TRACK
    gold_job = defs.resolve_job_def("gold_melody_job")
    assert gold_job.partitions_def == dg.DynamicPartitionsDefinition(name="gold_melodies")
    assert {k.to_user_string() for k in gold_job.asset_layer.selected_asset_keys} == {"tier1/melody"}
    assert {"reference_track_job", "gold_melody_job"} <= {j.name for j in repo.get_all_jobs()}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert set(schedules) == {"nightly_reference_tracks_backfill", "nightly_gold_backfill"}
    for s in schedules.values():
        assert s.default_status == dg.DefaultScheduleStatus.RUNNING, s.name
        assert s.cron_schedule == "0 3 * * *", s.name
    assert schedules["nightly_reference_tracks_backfill"].job_name == "reference_track_job"
    assert schedules["nightly_gold_backfill"].job_name == "gold_melody_job"
    assert {"settings", "io_manager", "separator", "transcriber", "gigamidi"} <= set(defs.resources)


def test_synthetic_melodies_materialize_and_pass_their_check(settings, resources, instance):
    profile = get_profile(settings.profile)
    result = dg.materialize([synthetic_melodies, synthetic_melodies_pass_quality], instance=instance, resources=resources)
    assert result.success
    [mat] = result.asset_materializations_for_node("tier3__synthetic_melodies")
    assert mat.metadata["count"].value == profile.synthetic_count == 48
    assert mat.metadata["passing_tier3_quality"].value == profile.synthetic_count
    assert mat.metadata["seed"].value == profile.synthetic_seed
    assert mat.metadata["profile"].value == "demo"

    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "synthetic_melodies_pass_quality"
    assert check.passed is True
    assert (check.metadata["checked"].value, check.metadata["failing"].value) == (48, 0)

    folder = Path(settings.storage_url) / "assets" / "tier3" / "synthetic_melodies.melodies"
    index = pl.read_parquet(folder / "index.parquet")
    assert index.height == 48
    assert index["name"].to_list() == [f"synthetic_{i:05d}" for i in range(48)]
    assert len(list(folder.glob("*.mid"))) == 48
    first = json.loads((folder / "synthetic_00000.json").read_text())
    assert first["attributes"]["synthetic"] is True and first["attributes"]["tier"] == 3


def core_files() -> list[Path]:
    files = [PACKAGE / name for name in CORE_MODULES]
    for pkg in CORE_PACKAGES:
        files += sorted((PACKAGE / pkg).rglob("*.py"))
    return files


def dagster_imports(path: Path) -> list[str]:
    """`import dagster...` / `from dagster... import` (any dagster* distribution), with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    return found


def test_core_modules_do_not_import_dagster():
    files = core_files()
    names = {f.relative_to(PACKAGE).as_posix() for f in files}
    # The scan must actually cover the core (a moved package would make it vacuous).
    assert {"inbox.py", "storage.py", "profiles.py", "demo.py", "review.py", "music/rules.py", "music/melody.py",
            "audio/io.py", "audio/synth.py", "audio/ingest.py"} <= names
    for pkg in ("audio", "formats"):
        every = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / pkg).glob("*.py")}
        assert len(every) > 2 and every <= names, pkg
    assert {"audio/separation.py", "audio/transcription.py", "audio/extraction.py", "formats/dataset.py", "formats/remi.py"} <= names
    # the model recipes, the model criteria and the hybrid generator are core too
    assert {"models/pipeline.py", "models/training.py", "models/tf_checkpoint.py", "evaluation/model_report.py",
            "evaluation/model_criteria.py", "generation/hybrid.py", "generation/models.py"} <= names
    offenders = [hit for f in files for hit in dagster_imports(f)]
    assert offenders == []


def test_the_scan_detects_a_dagster_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport dagster as dg\n\ndef f():\n    from dagster_shared import x\n    from .dagster import y\n")
    assert dagster_imports(probe) == ["probe.py:2: dagster", "probe.py:5: dagster_shared"]


def test_core_imports_leave_dagster_unloaded():
    """Transitively too: importing every core module in a fresh interpreter loads no dagster module."""
    mods = [f"trance_assets.{n[:-3]}" for n in CORE_MODULES]
    for f in core_files():
        rel = f.relative_to(PACKAGE).with_suffix("")
        if rel.name != "__init__":
            mods.append("trance_assets." + ".".join(rel.parts))
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0].startswith('dagster'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(PACKAGE.parent), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
