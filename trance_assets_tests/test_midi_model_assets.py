"""The midi-model assets in Dagster on an ephemeral instance: corpus/midi_model_tokens from a splits
table, models/midi_model_base pre-trained on Tier 3 (or a published-format checkpoint through the
resource), models/midi_model_trance_lora (LoRA on Tier 2 then Tier 1, the blocking check),
models/midi_model_onnx (parity) and models/midi_model_onnx_int8 (top-1 agreement).

Tiny sizes and step counts come in through SettingsResource.profile_overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from trance_assets.assets.midi_model import BASE, INT8, LORA, MIDI_MODEL_ASSETS, ONNX, TOKENS, midi_model_tokens
from trance_assets.assets.corpus import SPLITS_KEY
from trance_assets.corpus.examples import example_from_melody, to_table
from trance_assets.corpus.midi_model_tokens import read_midi_model_tokens
from trance_assets.io_managers import StorageIOManager
from trance_assets.models.midi_model import MidiModel, MidiModelConfig
from trance_assets.music.rules import generate
from trance_assets.resources import MidiModelResource, SettingsResource

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY_MIDI = {
    "midi_model_size": "tiny", "midi_model_steps": [8, 6, 6], "midi_model_batch_size": 4, "midi_model_max_events": 48,
    "midi_model_lr": 3e-3, "midi_model_lora_lr": 5e-3, "midi_model_lora_r": 4, "midi_model_lora_alpha": 8,
    "midi_model_lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "midi_model_agreement_sequences": 4, "model_eval_every": 2, "model_patience": 10,
}
SOURCES = {1: "tier1/gold", 2: "tier2/audio_extraction", 3: "tier3/synthetic"}
KEYS = ("Am", "Em", "F#m", "Dm", "C", "G")
ALL = [*MIDI_MODEL_ASSETS]


def splits_table(layout: dict[int, tuple[int, int, int]]):
    """A corpus/splits value: rule-engine melodies per tier, (train, validation, test) counts."""
    examples, split_col, group_col = [], [], []
    for tier, counts in layout.items():
        for split, n in zip(("train", "validation", "test"), counts):
            for i in range(n):
                mel = generate(key=KEYS[i % len(KEYS)], bpm=138, chord_progression=["Am", "F", "C", "G"], bars=4, seed=100 * tier + 10 * len(split) + i)
                name = f"t{tier}-{split}-{i}"
                examples.append(example_from_melody(mel, source=SOURCES[tier], licence="test", source_file=f"{name}.mid", name=name))
                split_col.append(split)
                group_col.append(name)
    return to_table(examples, extra={"split": split_col, "group": group_col})


def splits_asset(table):
    @dg.asset(key=SPLITS_KEY)
    def splits():
        return table

    return splits


def make_settings(tmp: Path, **overrides) -> SettingsResource:
    (tmp / "inbox").mkdir(exist_ok=True)
    return SettingsResource(profile="demo", storage_url=str(tmp / "storage"), inbox_dir=str(tmp / "inbox"),
                            profile_overrides=json.dumps({**TINY_MIDI, **overrides}))


def resources_for(settings: SettingsResource, base_model: str = "") -> dict:
    return {"settings": settings, "io_manager": StorageIOManager(settings=settings), "midi_model": MidiModelResource(base_model=base_model)}


def meta(result, key: dg.AssetKey) -> dict:
    [mat] = result.asset_materializations_for_node(key.to_python_identifier())
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def checks(result) -> dict:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


@dataclass
class World:
    storage: Path
    result: dg.ExecuteInProcessResult
    values: dict


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("midi_model")
    settings = make_settings(tmp)
    table = splits_table({1: (4, 2, 2), 2: (6, 2, 2), 3: (10, 2, 2)})
    result = dg.materialize([splits_asset(table), midi_model_tokens, *ALL], resources=resources_for(settings), raise_on_error=False)
    values = {k.path[-1]: result.asset_value(k) for k in (BASE, LORA, ONNX, INT8)} if result.success else {}
    return World(tmp / "storage", result, values)


def test_the_chain_materializes(world):
    assert world.result.success
    done = {e.asset_key.to_user_string() for e in world.result.get_asset_materialization_events()}
    assert done == {"corpus/splits", "corpus/midi_model_tokens", "models/midi_model_base", "models/midi_model_trance_lora",
                    "models/midi_model_onnx", "models/midi_model_onnx_int8"}


def test_tokens_keep_every_example_and_its_key(world):
    corpus = world.storage / "dataset" / "corpus"
    train = read_midi_model_tokens(corpus, "train")
    assert sorted({ex.tier for ex in train}) == [1, 2, 3] and len(train) == 20
    md = meta(world.result, TOKENS)
    assert md["examples"] == 32 and md["tokenizer_version"] == "v2" and md["vocab_size"] == 3406
    assert "note" in md["first_events_of_an_example"] and "key_signature" in md["first_events_of_an_example"]
    assert (corpus / "midi_model_tokenizer.json").is_file()
    # F#m keeps its own key signature (sf 3, minor) — never rewritten as the relative major
    ex = next(e for e in train if e.tier == 3 and e.example_id.endswith("train-2"))
    [key_row] = [r for r in ex.tokens if r[0] == 8]  # the key_signature event: ..., sf + 7, mi
    assert (key_row[4], key_row[5]) == (3389 + 3 + 7, 3404 + 1)


def test_base_is_pretrained_on_tier3_with_loss_checks(world):
    v = world.values["midi_model_base"]
    assert v["source"].startswith("pre-trained on Tier 3") and v["config"]["n_embd"] == 32
    [stage] = v["stages"]
    assert stage["name"] == "pretrain_tier3" and stage["tiers"] == [3] and stage["result"]["steps"] == 8
    model = MidiModel.from_pretrained(v["model_dir"])  # the published format, no key mismatch
    assert set(model.state_dict()) == set(MidiModel(MidiModelConfig.from_size("tiny")).state_dict())
    c = checks(world.result)
    assert {n for (a, n) in c if a == "midi_model_base"} == {"val_loss_decreases", "val_loss_plateaus", "train_val_gap"}


def test_lora_stages_adapter_and_blocking_check(world):
    v = world.values["midi_model_trance_lora"]
    assert [s["name"] for s in v["stages"]] == ["lora_tier2", "lora_tier1"]
    assert all(s["result"] for s in v["stages"])
    folder = Path(v["model_dir"])
    assert (folder / "adapter" / "adapter_config.json").is_file() and (folder / "training.json").is_file()
    tuned = MidiModel.from_pretrained(folder)
    base = MidiModel.from_pretrained(world.values["midi_model_base"]["model_dir"])
    changed = [k for k, t in tuned.state_dict().items() if not torch.equal(t, base.state_dict()[k])]
    assert changed and all(".layers." in k and k.endswith("_proj.weight") for k in changed)  # LoRA touched projections only
    c = checks(world.result)[("midi_model_trance_lora", "val_loss_improves_on_base")]
    assert c.passed and c.severity == dg.AssetCheckSeverity.ERROR
    assert v["val_loss_tuned"] < v["val_loss_base"]
    md = meta(world.result, LORA)
    assert "%" in md["trainable_parameters"] and md["qlora"].startswith("not used")


def test_onnx_export_parity_and_int8(world):
    onnx = world.values["midi_model_onnx"]
    names = {p.name for p in Path(onnx["model_dir"]).iterdir()}
    assert {"model_base.onnx", "model_token.onnx"} <= names
    md = meta(world.result, ONNX)
    assert md["max_abs_logit_diff"] is not None and md["max_abs_logit_diff"] < 1e-3
    int8 = world.values["midi_model_onnx_int8"]
    md8 = meta(world.result, INT8)
    assert 0.0 <= md8["top1_agreement"] <= 1.0 and md8["held_out_sequences"] == 4
    size = lambda d, n: (Path(d) / n).stat().st_size  # noqa: E731
    assert size(int8["model_dir"], "model_base.onnx") < size(onnx["model_dir"], "model_base.onnx")


def test_the_midi_model_generator_runs_on_the_int8_export(world):
    from trance_assets.generation.base import get_generator

    gen = get_generator("midi_model", model=world.values["midi_model_trance_lora"]["model_dir"], backend="onnx",
                        onnx_dir=world.values["midi_model_onnx_int8"]["model_dir"])
    mel = gen.generate("Am", 140, ["Am", "F", "C", "G"], 4, seed=1)
    assert mel.key == "Am" and mel.bars == 4
    assert all(n.start < 16 for n in mel.notes)


def test_a_model_that_does_not_beat_its_base_is_not_exported(tmp_path):
    settings = make_settings(tmp_path, midi_model_lora_lr=0.0)
    table = splits_table({1: (2, 1, 1), 2: (2, 1, 1), 3: (4, 1, 1)})
    result = dg.materialize([splits_asset(table), midi_model_tokens, *ALL], resources=resources_for(settings), raise_on_error=False)
    c = checks(result)[("midi_model_trance_lora", "val_loss_improves_on_base")]
    assert not c.passed
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "models/midi_model_trance_lora" in done and "models/midi_model_onnx" not in done
    assert not (tmp_path / "storage" / "models" / "midi_model_onnx").exists()


def test_lora_waits_for_tier1_and_tier2_material(tmp_path):
    settings = make_settings(tmp_path)
    table = splits_table({3: (4, 1, 1)})
    result = dg.materialize([splits_asset(table), midi_model_tokens, *ALL], resources=resources_for(settings), raise_on_error=False)
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "models/midi_model_base" in done and "models/midi_model_trance_lora" not in done
    [obs] = [e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert obs.asset_key == LORA and "lora_tier2" in obs.metadata["skipped"].value


@pytest.mark.parametrize("fmt", ["safetensors", "lightning"])
def test_a_published_checkpoint_is_the_base(tmp_path, fmt):
    folder = tmp_path / "published"
    model = MidiModel(MidiModelConfig.from_size("tiny"))
    model.save_pretrained(folder)
    if fmt == "lightning":  # an older Lightning checkpoint: the state dict under "state_dict"
        state = dict(model.state_dict())
        (folder / "model.safetensors").unlink()
        torch.save({"state_dict": state, "epoch": 3}, folder / "model.ckpt")
    settings = make_settings(tmp_path)
    table = splits_table({3: (2, 1, 1)})
    result = dg.materialize([splits_asset(table), midi_model_tokens, ALL[0]],
                            resources=resources_for(settings, base_model=str(folder)), raise_on_error=False)
    assert result.success
    v = result.asset_value(BASE)
    assert v["source"] == f"published checkpoint {folder}" and v["stages"] == []
    loaded = MidiModel.from_pretrained(v["model_dir"])
    for k, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], t), k
    assert all(e.passed for (a, _n), e in checks(result).items() if a == "midi_model_base")


def test_an_unreachable_hub_id_fails_saying_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings(tmp_path)
    table = splits_table({3: (2, 1, 1)})
    result = dg.materialize([splits_asset(table), midi_model_tokens, ALL[0]],
                            resources=resources_for(settings, base_model="skytnt/midi-model-tv2o-medium"), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    msg = failure.step_failure_data.user_failure_data.description
    assert "skytnt/midi-model-tv2o-medium" in msg and "local folder" in msg
