"""The model assets in Dagster on an ephemeral instance: models/melody_rnn_base and
models/musicvae_base pre-trained on a tiny corpus export (Tier 3) or imported from a Magenta
checkpoint (run config, environment variable, or the folder `trance-assets import-magenta` writes),
then models/*_trance fine-tuned on Tier 2 and Tier 1 with the success criteria as asset checks.

Tiny models and step counts come in through SettingsResource.profile_overrides. One module-scoped
world materializes the four assets twice (the second run resumes) and once more on changed data;
the import / failure paths each get their own storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_models_pipeline import TINY_RNN, write_corpus, write_mag, write_v2
from trance_assets.assets.models import CHECK_DESCRIPTIONS, MODEL_ASSETS, TRANCE_CHECKS, melody_rnn_base, melody_rnn_trance, musicvae_base
from trance_assets.constants import ENV_MAGENTA
from trance_assets.evaluation.model_report import LOSS_CHECKS, MELODY_RNN_CHECKS, MUSICVAE_CHECKS
from trance_assets.io_managers import StorageIOManager
from trance_assets.models.pipeline import build_model, publish
from trance_assets.resources import SettingsResource
from trance_assets.storage import sha256_file

TINY = {
    "melody_rnn_layers": [8, 8], "melody_rnn_attn_length": 4, "melody_rnn_batch_size": 4, "melody_rnn_max_seq_len": 32,
    "melody_rnn_steps": [4, 2, 2], "musicvae_enc_sizes": [8], "musicvae_conductor_sizes": [8], "musicvae_dec_sizes": [8],
    "musicvae_z_size": 4, "musicvae_batch_size": 4, "musicvae_steps": [4, 2, 2], "model_eval_every": 2,
    "model_criteria_prompts": 3, "model_interpolation_steps": 3,
}
NAMES = ("melody_rnn_base", "musicvae_base", "melody_rnn_trance", "musicvae_trance")
FAMILY = {n: n.rsplit("_", 1)[0] for n in NAMES}
KIND = {n: n.rsplit("_", 1)[1] for n in NAMES}
EXPECTED_CHECKS = {
    "melody_rnn_base": LOSS_CHECKS, "musicvae_base": LOSS_CHECKS,
    "melody_rnn_trance": LOSS_CHECKS + MELODY_RNN_CHECKS, "musicvae_trance": LOSS_CHECKS + MUSICVAE_CHECKS,
}
STAGES = {"base": ["pretrain_tier3"], "trance": ["finetune_tier2", "finetune_tier1"]}
STEPS = {"pretrain_tier3": 4, "finetune_tier2": 2, "finetune_tier1": 2}
REPO = Path(__file__).resolve().parent.parent


def node(name: str) -> str:
    return f"models__{name}"


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["models", name])


def meta_values(mat) -> dict:
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def failure_message(result) -> str:
    for ev in result.all_events:
        if ev.is_step_failure:
            data = ev.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            return data.error.to_string() if data.error else ""
    return ""


def make_settings(tmp: Path, **overrides) -> SettingsResource:
    (tmp / "inbox").mkdir(exist_ok=True)
    return SettingsResource(profile="demo", storage_url=str(tmp / "storage"), inbox_dir=str(tmp / "inbox"),
                            profile_overrides=json.dumps({**TINY, **overrides}))


def resources_for(settings: SettingsResource) -> dict:
    return {"settings": settings, "io_manager": StorageIOManager(settings=settings)}


def state_equal(model_or_state, folder) -> bool:
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    w = load_file(str(Path(folder) / "model.safetensors"))
    return state.keys() == w.keys() and all(torch.equal(state[k].cpu(), w[k]) for k in w)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(autouse=True)
def _no_magenta_env(monkeypatch):
    for var in ENV_MAGENTA.values():
        monkeypatch.delenv(var, raising=False)


@dataclass
class World:
    storage: Path
    corpus: Path
    first: dg.ExecuteInProcessResult
    values: dict  # name -> output value of the first run
    meta: dict  # name -> materialization metadata of the first run
    checks: dict  # name -> {check name: AssetCheckEvaluation}
    records: dict  # name -> training.json after the first run
    weights: dict  # name -> bytes of model.safetensors after the first run
    data_sha: list
    second: dg.ExecuteInProcessResult
    values2: dict
    records2: dict
    runs_after_second: dict  # name -> run folder names
    changed: dg.ExecuteInProcessResult  # melody_rnn_base on a changed corpus
    changed_value: dict
    runs_after_changed: list


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("models")
    settings = make_settings(tmp)
    storage = tmp / "storage"
    corpus = storage / "dataset" / "corpus"
    write_corpus(corpus)
    data_sha = [sha256_file(corpus / s / "notesequences.tfrecord") for s in ("train", "validation", "test")]
    models = storage / "models"
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_MAGENTA.values():
            mp.delenv(var, raising=False)
        with dg.DagsterInstance.ephemeral() as instance:
            res = resources_for(settings)
            first = dg.materialize(MODEL_ASSETS, instance=instance, resources=res)
            values = {n: first.asset_value(key(n)) for n in NAMES}
            meta = {n: meta_values(first.asset_materializations_for_node(node(n))[0]) for n in NAMES}
            checks: dict = {n: {} for n in NAMES}
            for ev in first.get_asset_check_evaluations():
                checks[ev.asset_key.path[-1]][ev.check_name] = ev
            records = {n: json.loads((models / n / "model" / "training.json").read_text()) for n in NAMES}
            weights = {n: (models / n / "model" / "model.safetensors").read_bytes() for n in NAMES}

            second = dg.materialize(MODEL_ASSETS, instance=instance, resources=res)
            values2 = {n: second.asset_value(key(n)) for n in NAMES}
            records2 = {n: json.loads((models / n / "model" / "training.json").read_text()) for n in NAMES}
            runs_after_second = {n: sorted(p.name for p in (models / n / "runs").iterdir()) for n in NAMES}

            # new data: a fresh run in a new folder, the old run's resume state removed
            write_corpus(corpus, {"train": {1: 2, 2: 2, 3: 4}, "validation": {1: 1, 2: 1, 3: 1}, "test": {1: 2, 2: 2}})
            changed = dg.materialize(MODEL_ASSETS, selection=[melody_rnn_base.key], instance=instance, resources=res)
            changed_value = changed.asset_value(key("melody_rnn_base"))
            runs_after_changed = sorted(p.name for p in (models / "melody_rnn_base" / "runs").iterdir())
    return World(storage, corpus, first, values, meta, checks, records, weights, data_sha, second, values2, records2,
                 runs_after_second, changed, changed_value, runs_after_changed)


# ---- the pre-train / fine-tune runs ----------------------------------------------------------------


def test_all_four_materialize(world):
    assert world.first.success and world.second.success and world.changed.success
    done = {e.asset_key.to_user_string() for e in world.first.get_asset_materialization_events()}
    assert done == {f"models/{n}" for n in NAMES}
    done = {e.asset_key.to_user_string() for e in world.changed.get_asset_materialization_events()}
    assert done == {"models/melody_rnn_base"}


@pytest.mark.parametrize("name", NAMES)
def test_published_model_folder(world, name):
    folder = world.storage / "models" / name / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    rec = world.records[name]
    assert rec["family"] == FAMILY[name] and rec["kind"] == KIND[name] and rec["profile"] == "demo"
    assert rec["data_sha256"] == world.data_sha
    assert [s["name"] for s in rec["stages"]] == STAGES[KIND[name]]
    assert rec["seconds"] > 0
    if KIND[name] == "base":
        assert rec["init_sha256"] is None
    else:
        assert rec["init_sha256"] == world.values[f"{FAMILY[name]}_base"]["sha256"]
    # the run's resume state lives under runs/<fingerprint>; after the second run only its run is kept
    assert world.runs_after_second[name] == [world.records2[name]["run"]]
    assert len(rec["run"]) == 16
    for s in rec["stages"]:
        assert s["checkpoint_dir"] == str(world.storage / "models" / name / "runs" / rec["run"] / s["name"])


@pytest.mark.parametrize("name", NAMES)
def test_output_value(world, name):
    v = world.values[name]
    folder = world.storage / "models" / name / "model"
    assert v["family"] == FAMILY[name] and v["kind"] == KIND[name]
    assert v["model_dir"] == str(folder)
    assert v["sha256"] == hashlib.sha256(world.weights[name]).hexdigest()
    assert v["config"] == json.loads((folder / "config.json").read_text())
    assert json.loads(json.dumps(v["stages"])) == world.records[name]["stages"]
    assert [s["name"] for s in v["stages"]] == STAGES[KIND[name]]
    for s in v["stages"]:
        assert s["skipped"] is None and s["val_source"] == "tiers"
        assert s["result"]["steps"] == STEPS[s["name"]] and s["result"]["resumed_from"] is None
    assert set(v["criteria"]) == set(EXPECTED_CHECKS[name])
    for row in v["criteria"].values():
        assert {"criterion", "value", "threshold", "passed", "detail"} <= set(row)
    if KIND[name] == "base":
        assert v["source"] == "pre-trained on Tier 3"
    else:
        base = world.values[f"{FAMILY[name]}_base"]
        assert v["source"] == "fine-tuned from pre-trained on Tier 3"
        assert v["base_sha256"] == base["sha256"] and v["chord_inputs_added"] is False
        assert "criteria_details" in v
    # the stored asset value is the same document
    stored = json.loads((world.storage / "assets" / "models" / f"{name}.json").read_text())
    latest = world.changed_value if name == "melody_rnn_base" else world.values2[name]
    assert stored == json.loads(json.dumps(latest))


def test_sizes_come_from_the_overrides_and_trance_keeps_the_base_sizes(world):
    rb, rt = world.values["melody_rnn_base"]["config"], world.values["melody_rnn_trance"]["config"]
    assert (rb["layers"], rb["attn_length"], rb["chord_dim"]) == ([8, 8], 4, 25)
    assert {k: rt[k] for k in ("layers", "attn_length", "chord_dim", "input_size")} == {k: rb[k] for k in ("layers", "attn_length", "chord_dim", "input_size")}
    vb, vt = world.values["musicvae_base"]["config"], world.values["musicvae_trance"]["config"]
    sizes = ("enc_sizes", "conductor_sizes", "dec_sizes", "z_size", "bars", "free_bits", "batch_size")
    assert (vb["enc_sizes"], vb["conductor_sizes"], vb["dec_sizes"], vb["z_size"], vb["batch_size"]) == ([8], [8], [8], 4, 4)
    assert {k: vt[k] for k in sizes} == {k: vb[k] for k in sizes}
    # the fine-tuning learning rate of the plan
    assert vb["learning_rate"] == 1e-3 and vt["learning_rate"] == 1e-4


def test_trance_models_start_from_the_base(tmp_path, world):
    """The Tier 2 stage's untrained (step-0) validation loss is the base weights' loss on the Tier 2
    validation split (Melody RNN: plain cross-entropy, no noise)."""
    from safetensors.torch import load as load_bytes

    from trance_assets.models.pipeline import family_examples, load_split_sequences
    from trance_assets.models.training import TrainConfig, train_melody_rnn

    write_corpus(tmp_path / "corpus")  # the world's first corpus (deterministic)
    base = build_model("melody_rnn", world.values["melody_rnn_base"]["config"])
    base.load_state_dict(load_bytes(world.weights["melody_rnn_base"]))
    val = family_examples("melody_rnn", load_split_sequences(tmp_path / "corpus", "validation", (2,)), base.config)
    cfg = TrainConfig(max_steps=0, batch_size=4, eval_every=2, threads=1, device="cpu", max_seq_len=TINY["melody_rnn_max_seq_len"])
    r = train_melody_rnn(base, val, val, cfg, tmp_path / "probe", log=lambda *_: None)
    s0 = world.values["melody_rnn_trance"]["stages"][0]["result"]["curve"][0]
    assert s0[0] == 0 and s0[1] is None
    assert s0[2] == pytest.approx(r.curve[0][2], rel=1e-6)
    assert world.records["melody_rnn_trance"]["init_sha256"] == world.values["melody_rnn_base"]["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata(world, name):
    md = world.meta[name]
    v = world.values[name]
    assert md["source"] == v["source"] and md["sha256"] == v["sha256"]
    assert md["model_dir"] == v["model_dir"]
    assert md["config"] == v["config"]
    assert md["device"] == "cpu" and md["profile"] == "demo"
    for stage in STAGES[KIND[name]]:
        img = md[f"learning_curve_{stage}"]
        assert img.startswith(f"![learning curve {stage}](data:image/png;base64,")
    assert not any(k.startswith("learning_curve_") and k[len("learning_curve_"):] not in STAGES[KIND[name]] for k in md)
    table = md["stages"].splitlines()
    assert table[0].startswith("| stage | tiers | train_examples | val_examples | validation | steps | best_step |")
    assert [row.split("|")[1].strip() for row in table[2:]] == STAGES[KIND[name]]
    crit = md["criteria"].splitlines()
    assert crit[0] == "| criterion | value | threshold | passed | detail |"
    assert len(crit) == 2 + len(EXPECTED_CHECKS[name])
    passed = sum(bool(r["passed"]) for r in v["criteria"].values())
    assert md["criteria_passed"] == f"{passed} of {len(EXPECTED_CHECKS[name])}"
    assert "imported_from" not in md
    if name == "melody_rnn_trance":
        rows = md["base_vs_fine_tuned"].splitlines()
        assert rows[0].startswith("| model |") and [r.split("|")[1].strip() for r in rows[2:]] == ["base", "fine-tuned"]


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_check_is_evaluated(world, name):
    asset = {a.key.path[-1]: a for a in MODEL_ASSETS}[name]
    declared = {spec.name for spec in asset.check_specs}
    assert declared == set(EXPECTED_CHECKS[name])
    assert set(TRANCE_CHECKS[FAMILY[name]]) >= declared
    assert all(CHECK_DESCRIPTIONS[c] for c in declared)
    got = world.checks[name]
    assert set(got) == declared
    for c, ev in got.items():
        assert ev.severity == dg.AssetCheckSeverity.WARN
        m = {k: getattr(x, "value", x) for k, x in ev.metadata.items()}
        row = world.values[name]["criteria"][c]
        assert ev.passed == bool(row["passed"])
        assert m["criterion"] == row["criterion"]
        assert m["value"] == (row["value"] if row["value"] is not None else "not measurable")
        assert "threshold" in m and "detail" in m
        if c in LOSS_CHECKS:
            assert m["detail"].startswith(f"stage {STAGES[KIND[name]][-1]}: ")


def test_checks_of_the_musicvae_measure_held_out_windows(world):
    details = world.values["musicvae_trance"]["criteria_details"]
    assert details["test_windows"] > 0
    assert details["pair"][0].startswith(("t1-test", "t2-test")) and details["pair"][1].startswith(("t1-test", "t2-test"))
    row = world.values["musicvae_trance"]["criteria"]["interpolation_intermediates"]
    assert row["value"] is not None and "->" in row["detail"]


def test_a_second_run_resumes(world):
    for name in ("melody_rnn_base", "musicvae_base", "melody_rnn_trance"):
        v1, v2 = world.values[name], world.values2[name]
        assert world.records2[name]["run"] == world.records[name]["run"], name
        for s1, s2 in zip(v1["stages"], v2["stages"]):
            assert s2["result"]["resumed_from"] == s1["result"]["steps"] == s2["result"]["steps"], (name, s2["name"])
            assert s2["result"]["best_val_loss"] == s1["result"]["best_val_loss"]
    # the Melody RNN's files are byte-stable: the same weights, the same sha256
    assert world.values2["melody_rnn_base"]["sha256"] == world.values["melody_rnn_base"]["sha256"]
    assert world.values2["melody_rnn_trance"]["sha256"] == world.values["melody_rnn_trance"]["sha256"]
    # the published folder is rewritten (a new record), and stays complete
    for name in NAMES:
        folder = world.storage / "models" / name / "model"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "training.json"]
        assert world.records2[name]["seconds"] != world.records[name]["seconds"]
    # model files are byte-stable (test_models_pipeline.py::test_model_files_are_byte_stable), so
    # musicvae_trance's fingerprint (it holds the base's sha256) is unchanged and it resumes too
    assert world.values2["musicvae_base"]["sha256"] == world.values["musicvae_base"]["sha256"]
    vt = world.values2["musicvae_trance"]
    assert all(s["result"]["resumed_from"] == s["result"]["steps"] for s in vt["stages"] if s.get("result"))


def test_new_data_starts_a_fresh_run(world):
    v = world.changed_value
    [s] = v["stages"]
    assert s["result"]["resumed_from"] is None and s["result"]["steps"] == 4
    assert s["train_sequences"] == 4
    rec = json.loads((world.storage / "models" / "melody_rnn_base" / "model" / "training.json").read_text())
    assert rec["run"] != world.records["melody_rnn_base"]["run"]
    assert world.runs_after_changed == [rec["run"]]  # the obsolete run folder was removed


# ---- Magenta imports -------------------------------------------------------------------------------


def run_config(path) -> dict:
    return {"ops": {node("melody_rnn_base"): {"config": {"magenta_checkpoint": str(path)}}}}


def test_import_a_mag_bundle_from_the_run_config(tmp_path):
    settings = make_settings(tmp_path)
    mag = tmp_path / "attention_rnn.mag"
    source = write_mag(mag, seed=7)
    result = dg.materialize([melody_rnn_base], resources=resources_for(settings), run_config=run_config(mag))
    assert result.success
    v = result.asset_value(key("melody_rnn_base"))
    folder = tmp_path / "storage" / "models" / "melody_rnn_base" / "model"
    assert v["source"] == "imported Magenta checkpoint"
    assert v["imported"]["source"] == str(mag) and v["imported"]["source_sha256"] == sha256_file(mag)
    assert v["imported"]["family"] == "melody_rnn"
    assert v["stages"] == [] and v["model_dir"] == str(folder)
    assert v["sha256"] == sha256_file(folder / "model.safetensors")
    assert v["config"]["layers"] == [8, 8] and v["config"]["chord_dim"] == 0
    assert state_equal(source, folder)  # the converted network is the bundle's
    assert json.loads((folder / "training.json").read_text()) == {"family": "melody_rnn", "kind": "base", "imported": v["imported"]}
    assert not list(folder.parent.glob(".import-*"))
    assert not (folder.parent / "runs").exists()  # nothing trained
    md = meta_values(result.asset_materializations_for_node(node("melody_rnn_base"))[0])
    assert md["imported_from"] == str(mag) and md["imported_sha256"] == sha256_file(mag)
    assert "stages" not in md and not any(k.startswith("learning_curve_") for k in md)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(LOSS_CHECKS)
    for ev in checks.values():
        assert ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
        assert ev.metadata["detail"].value.startswith("not applicable")
        assert ev.metadata["value"].value == "not measurable"
    assert all(r["passed"] and r["detail"].startswith("not applicable") for r in v["criteria"].values())


def test_import_a_musicvae_checkpoint_from_the_environment(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    prefix = tmp_path / "hierdec" / "model.ckpt-3000"
    prefix.parent.mkdir()
    source = write_v2(prefix, seed=8)
    monkeypatch.setenv(ENV_MAGENTA["musicvae"], str(prefix))
    result = dg.materialize([musicvae_base], resources=resources_for(settings))
    assert result.success
    v = result.asset_value(key("musicvae_base"))
    assert v["source"] == "imported Magenta checkpoint" and v["imported"]["source"] == str(prefix)
    assert v["imported"]["source_sha256"] == sha256_file(str(prefix) + ".index")
    assert v["config"]["z_size"] == 4 and v["config"]["enc_sizes"] == [8]
    assert state_equal(source, v["model_dir"])


def test_imported_base_is_fine_tuned_with_chord_inputs(tmp_path):
    """attention_rnn bundles read no chords: the trance model gets chord inputs added."""
    settings = make_settings(tmp_path)
    write_corpus(tmp_path / "storage" / "dataset" / "corpus")
    mag = tmp_path / "attention_rnn.mag"
    write_mag(mag, seed=9)
    result = dg.materialize([melody_rnn_base, melody_rnn_trance], resources=resources_for(settings), run_config=run_config(mag))
    assert result.success
    base = result.asset_value(key("melody_rnn_base"))
    v = result.asset_value(key("melody_rnn_trance"))
    assert v["source"] == "fine-tuned from imported Magenta checkpoint"
    assert v["chord_inputs_added"] is True and v["base_sha256"] == base["sha256"]
    assert v["config"]["chord_dim"] == 25 and base["config"]["chord_dim"] == 0
    assert v["config"]["layers"] == base["config"]["layers"] == [8, 8]
    assert [s["result"]["steps"] for s in v["stages"]] == [2, 2]
    assert {e.check_name for e in result.get_asset_check_evaluations() if e.asset_key == melody_rnn_trance.key} == set(LOSS_CHECKS + MELODY_RNN_CHECKS)


def test_the_folder_written_by_import_magenta_is_used(tmp_path):
    settings = make_settings(tmp_path)
    torch.manual_seed(3)
    model = build_model("melody_rnn", TINY_RNN)
    model.save(tmp_path / "conv")
    details = {"family": "melody_rnn", "source": "/somewhere/attention_rnn.mag", "source_sha256": "ab" * 32, "config": model.config.to_dict()}
    imported = publish(tmp_path / "conv", tmp_path / "storage" / "models" / "imported" / "melody_rnn", {"family": "melody_rnn", "kind": "imported", "imported": details})
    result = dg.materialize([melody_rnn_base], resources=resources_for(settings))  # no corpus needed: nothing is trained
    assert result.success
    v = result.asset_value(key("melody_rnn_base"))
    assert v["source"] == "imported Magenta checkpoint" and v["imported"] == details
    assert v["sha256"] == sha256_file(imported / "model.safetensors")
    assert v["model_dir"] == str(tmp_path / "storage" / "models" / "melody_rnn_base" / "model")
    assert state_equal(model, v["model_dir"])
    # the run config wins over the imported folder
    mag = tmp_path / "attention_rnn.mag"
    write_mag(mag, seed=1)
    result = dg.materialize([melody_rnn_base], resources=resources_for(settings), run_config=run_config(mag))
    assert result.asset_value(key("melody_rnn_base"))["imported"]["source"] == str(mag)


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_an_unreadable_checkpoint_fails_and_keeps_the_model(tmp_path, kind):
    settings = make_settings(tmp_path)
    home = tmp_path / "storage" / "models" / "melody_rnn_base"
    build_model("melody_rnn", TINY_RNN).save(tmp_path / "prev")
    publish(tmp_path / "prev", home / "model", {"previous": True})
    before = {p.name: p.read_bytes() for p in (home / "model").iterdir()}
    bad = tmp_path / "attention_rnn.mag"
    if kind == "garbage":
        bad.write_bytes(b"this is not a generator bundle")
    result = dg.materialize([melody_rnn_base], resources=resources_for(settings), run_config=run_config(bad), raise_on_error=False)
    assert not result.success
    msg = failure_message(result)
    assert f"cannot import the Magenta checkpoint {str(bad)!r}" in msg, msg
    assert {p.name: p.read_bytes() for p in (home / "model").iterdir()} == before
    assert sorted(p.name for p in home.iterdir()) == ["model"]  # no temp folder left


def test_missing_corpus_export_fails_naming_the_file(tmp_path):
    settings = make_settings(tmp_path)
    result = dg.materialize([melody_rnn_base], resources=resources_for(settings), raise_on_error=False)
    assert not result.success
    msg = failure_message(result)
    assert str(tmp_path / "storage" / "dataset" / "corpus" / "train" / "notesequences.tfrecord") in msg, msg
    assert "materialize corpus/notesequence_tfrecords first" in msg
    assert not (tmp_path / "storage" / "models" / "melody_rnn_base" / "model").exists()


def test_trance_models_wait_for_tier1_and_tier2_material(tmp_path):
    """A first start: the corpus has only Tier 3 so far. The bases train; the trance models end without a
    materialization (an observation says why), the run succeeds, and nothing downstream runs on them."""
    settings = make_settings(tmp_path)
    corpus = tmp_path / "storage" / "dataset" / "corpus"
    write_corpus(corpus, {"train": {3: 6}, "validation": {3: 2}, "test": {3: 2}})
    result = dg.materialize(MODEL_ASSETS, resources=resources_for(settings), raise_on_error=False)
    assert result.success, failure_message(result)
    materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events() for m in [m.event_specific_data.materialization]}
    assert materialized == {"melody_rnn_base", "musicvae_base"}
    observations = [e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert {o.asset_key.path[-1] for o in observations} == {"melody_rnn_trance", "musicvae_trance"}
    for o in observations:
        reason = o.metadata["skipped"].value
        assert "no stage has training data" in reason and "finetune_tier2" in reason and "finetune_tier1" in reason, reason
    assert not result.get_asset_check_evaluations() or {e.asset_key.path[-1] for e in result.get_asset_check_evaluations()} <= {"melody_rnn_base", "musicvae_base"}
    for name in ("melody_rnn_trance", "musicvae_trance"):
        assert not (tmp_path / "storage" / "models" / name / "model").exists()


# ---- trance-assets import-magenta --------------------------------------------------------------------


def run_cli(args, cwd, env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANCE_") and k != "DAGSTER_HOME"}
    env.update(env_extra)
    exe = Path(sys.executable).parent / "trance-assets"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "trance_assets.cli"]
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_import_magenta_converts_into_the_imported_folder(tmp_path):
    mag = tmp_path / "attention_rnn.mag"
    source = write_mag(mag, seed=4)
    storage = tmp_path / "storage"
    home = tmp_path / "dagster_home"
    out = run_cli(["import-magenta", str(mag), "--no-fine-tune", "--project-dir", str(tmp_path)], cwd=tmp_path,
                  env_extra={"TRANCE_STORAGE": str(storage), "DAGSTER_HOME": str(home)})
    assert out.returncode == 0, out.stderr[-3000:]
    target = storage / "models" / "imported" / "melody_rnn"
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    rec = json.loads((target / "training.json").read_text())
    assert rec["family"] == "melody_rnn" and rec["kind"] == "imported"
    assert rec["imported"]["source"] == str(mag) and rec["imported"]["source_sha256"] == sha256_file(mag)
    assert state_equal(source, target)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"imported melody_rnn from {mag} (sha256 {sha256_file(mag)[:16]}…): ")
    assert lines[0].endswith(" parameters")
    assert any(line.startswith("  config: ") for line in lines)
    assert f"  written to {target} (config.json + model.safetensors); models/melody_rnn_base now uses it instead of pre-training" in lines
    assert not list(target.parent.glob(".*"))  # the conversion folder is gone
    # a bad path: exit 2 with a message, nothing written
    out = run_cli(["import-magenta", str(tmp_path / "nothing.mag"), "--no-fine-tune"], cwd=tmp_path,
                  env_extra={"TRANCE_STORAGE": str(tmp_path / "other"), "DAGSTER_HOME": str(home)})
    assert out.returncode == 2
    assert out.stdout.strip() == (f"trance-assets import-magenta: cannot import {str(tmp_path / 'nothing.mag')!r}: "
                                  f"no Magenta checkpoint at {str(tmp_path / 'nothing.mag')!r} (expected a .mag bundle or a V2 checkpoint prefix)")
    assert not (tmp_path / "other").exists()


def test_cli_project_dir_selects_the_storage(tmp_path):
    mag = tmp_path / "attention_rnn.mag"
    write_mag(mag)
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    out = run_cli(["import-magenta", str(mag), "--no-fine-tune", "--project-dir", str(project)], cwd=elsewhere, env_extra={})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (project / "storage" / "instance").is_dir()  # the instance does follow --project-dir
    assert (project / "storage" / "models" / "imported" / "melody_rnn" / "model.safetensors").is_file()


# ---- settings ----------------------------------------------------------------------------------------


def test_settings_profile_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANCE_STORAGE", str(tmp_path / "s"))
    monkeypatch.setenv("TRANCE_PROFILE_OVERRIDES", '{"melody_rnn_layers": [8, 8], "musicvae_steps": [1, 2, 3]}')
    p = SettingsResource.from_env().get_profile()
    assert p.name == "demo" and p.melody_rnn_layers == (8, 8) and p.musicvae_steps == (1, 2, 3)
    assert p.model_config("melody_rnn")["layers"] == [8, 8]
    assert make_settings(tmp_path).get_profile().musicvae_z_size == 4
    assert SettingsResource(profile="demo", storage_url=str(tmp_path)).get_profile() == SettingsResource(
        profile="demo", storage_url=str(tmp_path), profile_overrides="").get_profile()
    with pytest.raises(ValueError, match="melody_rnn_lyers"):
        SettingsResource(profile="demo", storage_url=str(tmp_path), profile_overrides='{"melody_rnn_lyers": [8]}').get_profile()
    # a bad override fails the run that reads it, naming the field
    bad = SettingsResource(profile="demo", storage_url=str(tmp_path / "s"), profile_overrides='{"melody_rnn_lyers": [8]}')
    result = dg.materialize([melody_rnn_base], resources=resources_for(bad), raise_on_error=False)
    assert not result.success and "melody_rnn_lyers" in failure_message(result)
