"""The training recipes of `trance_assets.models.pipeline` (no Dagster): the corpus export read per
split and tier, staged training with skipping / validation fallback / init chaining / resume,
atomic publishing, run fingerprints, Magenta checkpoint detection and import; plus the profile's
model settings (`Profile.model_config`, `Profile.model_stages`, `parse_overrides`).

Everything runs on a tiny corpus export written here (rule-engine melodies of 16-20 bars as
NoteSequences, collection_name ``trance_assets/<split>/tier<N>``) and on tiny models.

`write_corpus` is also used by test_model_assets.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trance_assets.formats.notesequence import melody_to_notesequence
from trance_assets.formats.tfrecord import write_tfrecord
from trance_assets.models import pipeline as pl_
from trance_assets.models.pipeline import (
    Stage,
    build_model,
    detect_family,
    family_examples,
    import_magenta,
    load_model,
    load_split_sequences,
    publish,
    run_fingerprint,
    train_stages,
)
from trance_assets.models.training import TrainConfig
from trance_assets.music.rules import generate
from trance_assets.profiles import Profile, get_profile, parse_overrides
from trance_assets.storage import sha256_file

SPLITS = ("train", "validation", "test")
# split -> tier -> number of melodies
FULL_LAYOUT = {"train": {1: 3, 2: 3, 3: 3}, "validation": {1: 1, 2: 1, 3: 1}, "test": {1: 2, 2: 2, 3: 1}}
KEYS = ("Am", "Em", "Dm", "Am")
TINY_RNN = {"layers": [8, 8], "attn_length": 4, "chord_dim": 25}
TINY_VAE = {"enc_sizes": [8], "conductor_sizes": [8], "dec_sizes": [8], "z_size": 4}
TINY_CFG = {"melody_rnn": TINY_RNN, "musicvae": TINY_VAE}
TC = TrainConfig(max_steps=4, eval_every=2, batch_size=4, threads=1, device="cpu")


def write_corpus(corpus_dir, layout=None) -> dict[str, list[str]]:
    """A corpus export under `corpus_dir`: <split>/notesequences.tfrecord per split of `layout`
    (split -> {tier: count}). Melodies alternate 16 and 20 bars (both families get examples).
    Returns {split: [ids in file order]}."""
    layout = FULL_LAYOUT if layout is None else layout
    out = {}
    for s_i, split in enumerate(SPLITS):
        records, ids = [], []
        for tier, n in sorted(layout.get(split, {}).items()):
            for i in range(n):
                mel = generate(key=KEYS[i % len(KEYS)], bpm=138, bars=16 + 4 * (i % 2), seed=1000 * s_i + 100 * tier + i)
                ident = f"t{tier}-{split}-{i:02d}"
                ns = melody_to_notesequence(mel, id=ident, collection_name=f"trance_assets/{split}/tier{tier}")
                records.append(ns.SerializeToString())
                ids.append(ident)
        write_tfrecord(Path(corpus_dir) / split / pl_.TFRECORD_NAME, records)
        out[split] = ids
    return out


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


def quiet(*_a, **_k):
    return None


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(family, TINY_CFG[family])


def weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- data ----------------------------------------------------------------------------------------


def test_load_split_sequences_filters_by_tier(corpus):
    root, ids = corpus
    every = load_split_sequences(root, "train")
    assert [ns.id for ns in every] == ids["train"]
    assert len(every) == 9
    t3 = load_split_sequences(root, "train", (3,))
    assert [ns.id for ns in t3] == ["t3-train-00", "t3-train-01", "t3-train-02"]
    assert {ns.collection_name for ns in t3} == {"trance_assets/train/tier3"}
    t12 = load_split_sequences(root, "test", [1, 2])
    assert [ns.id for ns in t12] == ["t1-test-00", "t1-test-01", "t2-test-00", "t2-test-01"]
    assert load_split_sequences(root, "validation", (4,)) == []
    assert load_split_sequences(root, "validation", ()) == []


def test_load_split_sequences_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_split_sequences(tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path / "train" / "notesequences.tfrecord") in msg
    assert "corpus/notesequence_tfrecords" in msg


def test_family_examples(corpus):
    root, _ = corpus
    seqs = load_split_sequences(root, "train", (1,))
    rnn = tiny("melody_rnn")
    ex = family_examples("melody_rnn", seqs, rnn.config)
    assert len(ex) >= 3 and all("chords" in e and e["chords"].shape[1] == 25 for e in ex)
    no_chords = build_model("melody_rnn", {**TINY_RNN, "chord_dim": 0})
    assert all("chords" not in e for e in family_examples("melody_rnn", seqs, no_chords.config))
    vae = family_examples("musicvae", seqs, tiny("musicvae").config)
    assert vae.ndim == 2 and vae.shape[1] == 256 and len(vae) >= 3  # 16-bar windows
    with pytest.raises(ValueError, match="unknown model family 'remi'"):
        family_examples("remi", seqs, rnn.config)


def test_build_and_load_model(tmp_path):
    for family in pl_.FAMILIES:
        m = tiny(family)
        m.save(tmp_path / family)
        back = load_model(family, tmp_path / family)
        assert type(back) is type(m) and back.config == m.config
        assert same_weights(tmp_path / family, tmp_path / family)
    with pytest.raises(ValueError, match="unknown model family"):
        build_model("gpt", {})
    with pytest.raises(ValueError, match="unknown model family"):
        load_model("gpt", tmp_path)


# ---- staged training -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Both families through pretrain (Tier 3) -> finetune_tier2 -> finetune_tier1, then a second
    call with the same work folders (a resume)."""
    root, _ = corpus
    out = {}
    for family in pl_.FAMILIES:
        work = tmp_path_factory.mktemp(f"work_{family}")
        fine = (("learning_rate", 1e-4),) if family == "musicvae" else ()
        stages = [Stage("pretrain_tier3", (3,), TC), Stage("finetune_tier2", (2,), TC, fine), Stage("finetune_tier1", (1,), TC, fine)]
        logs: list[str] = []
        steps: list[int] = []
        model = tiny(family)
        reports, final = train_stages(family, model, stages, root, work, log=logs.append, on_step=lambda s, loss: steps.append(s))
        final_bytes = (final / "model.safetensors").read_bytes()
        logs2: list[str] = []
        steps2: list[int] = []
        model2 = tiny(family, seed=1)
        reports2, final2 = train_stages(family, model2, stages, root, work, log=logs2.append, on_step=lambda s, loss: steps2.append(s))
        out[family] = dict(work=work, stages=stages, model=model, reports=reports, final=final, final_bytes=final_bytes, logs=logs,
                           steps=steps, model2=model2, reports2=reports2, final2=final2, logs2=logs2, steps2=steps2)
    return out


@pytest.mark.parametrize("family", pl_.FAMILIES)
def test_train_stages_runs_every_stage(trained, family):
    t = trained[family]
    reports = t["reports"]
    assert [r.name for r in reports] == ["pretrain_tier3", "finetune_tier2", "finetune_tier1"]
    assert [r.tiers for r in reports] == [[3], [2], [1]]
    assert [r.train_sequences for r in reports] == [3, 3, 3]
    assert [r.val_sequences for r in reports] == [1, 1, 1]
    for r in reports:
        assert r.skipped is None and r.val_source == "tiers"
        assert r.train_examples >= 3 and r.val_examples >= 1
        assert r.result["steps"] == 4 and r.result["resumed_from"] is None
        assert [c[0] for c in r.result["curve"]] == [0, 2, 4]
        assert r.result["curve"][0][1] is None
        assert r.checkpoint_dir == str(t["work"] / r.name)
        assert (Path(r.checkpoint_dir) / "best" / "model.safetensors").is_file()
        assert (Path(r.checkpoint_dir) / "last" / "state.json").is_file()
        assert np.isfinite(r.result["best_val_loss"])
        d = r.to_dict()
        assert d["name"] == r.name and d["result"]["steps"] == 4
        json.dumps(d)  # JSON-serialisable as published in training.json
    assert t["final"] == t["work"] / "finetune_tier1" / "best"
    assert t["steps"] == [1, 2, 3, 4] * 3
    assert any(f"stage finetune_tier2: {reports[1].train_examples} training" in line for line in t["logs"])


@pytest.mark.parametrize("family", pl_.FAMILIES)
def test_stages_chain_from_the_previous_best(trained, family):
    t = trained[family]
    work = t["work"]
    assert any(f"initialised from {work / 'pretrain_tier3' / 'best'}" in line for line in t["logs"])
    assert any(f"initialised from {work / 'finetune_tier2' / 'best'}" in line for line in t["logs"])
    # the model object ends with the final best weights
    state = t["model"].state_dict()
    w = weights(t["final"])
    assert all(torch.equal(state[k].cpu(), w[k]) for k in w)


def test_init_chaining_melody_rnn_step0_is_previous_best(corpus, tmp_path):
    """Two stages on the same tiers: stage 2's untrained (step-0) validation loss is stage 1's best."""
    root, _ = corpus
    stages = [Stage("a", (3,), TC), Stage("b", (3,), TC)]
    reports, final = train_stages("melody_rnn", tiny("melody_rnn"), stages, root, tmp_path, log=quiet)
    a, b = reports[0].result, reports[1].result
    assert b["curve"][0][0] == 0
    assert b["curve"][0][2] == pytest.approx(a["best_val_loss"], rel=1e-6, abs=1e-6)
    assert final == tmp_path / "b" / "best"


def test_init_chaining_musicvae_by_weights(corpus, tmp_path):
    """A zero-step second stage keeps exactly the weights it started from: stage 1's best."""
    root, _ = corpus
    stages = [Stage("a", (3,), TC), Stage("b", (2,), dataclasses.replace(TC, max_steps=0))]
    reports, final = train_stages("musicvae", tiny("musicvae"), stages, root, tmp_path, log=quiet)
    assert reports[1].result["steps"] == 0 and len(reports[1].result["curve"]) == 1
    assert final == tmp_path / "b" / "best"
    assert same_weights(tmp_path / "a" / "best", final)
    # and the first stage does start from init_from when given
    init = tmp_path / "init"
    tiny("musicvae", seed=5).save(init)
    reports, final = train_stages("musicvae", tiny("musicvae"), [Stage("c", (3,), dataclasses.replace(TC, max_steps=0))], root,
                                  tmp_path, init_from=init, log=quiet)
    assert same_weights(init, final)


def test_musicvae_model_overrides_applied(trained):
    t = trained["musicvae"]
    assert t["model"].config.learning_rate == 1e-4
    states = {r.name: json.loads((Path(r.checkpoint_dir) / "last" / "state.json").read_text()) for r in t["reports"]}
    assert states["pretrain_tier3"]["model_config"]["learning_rate"] == 1e-3  # default, before the override
    assert states["finetune_tier2"]["model_config"]["learning_rate"] == 1e-4
    assert states["finetune_tier1"]["model_config"]["learning_rate"] == 1e-4
    assert json.loads((t["final"] / "config.json").read_text())["learning_rate"] == 1e-4


@pytest.mark.parametrize("family", pl_.FAMILIES)
def test_a_second_call_resumes_without_new_steps(trained, family):
    t = trained[family]
    assert t["final2"] == t["final"]
    assert t["steps2"] == []  # no new optimisation step
    for r1, r2 in zip(t["reports"], t["reports2"]):
        assert r2.result["resumed_from"] == 4
        assert r2.result["steps"] == r1.result["steps"] == 4
        assert r2.result["best_val_loss"] == r1.result["best_val_loss"]
        assert r2.result["best_step"] == r1.result["best_step"]
        assert [tuple(c) for c in r2.result["curve"]] == [tuple(c) for c in r1.result["curve"]]
    assert any("resuming from" in line for line in t["logs2"])
    if family == "melody_rnn":  # MusicVAE files are not byte-stable: see test_model_files_are_byte_stable
        assert (t["final2"] / "model.safetensors").read_bytes() == t["final_bytes"]
    # the second model (another random init) ends with the same final weights
    w = weights(t["final"])
    state = t["model2"].state_dict()
    assert all(torch.equal(state[k].cpu(), w[k]) for k in w)


def test_a_stage_without_training_examples_is_skipped(corpus, tmp_path):
    root, _ = corpus
    stages = [Stage("t3", (3,), TC), Stage("t4", (4,), TC)]
    logs: list[str] = []
    reports, final = train_stages("melody_rnn", tiny("melody_rnn"), stages, root, tmp_path, log=logs.append)
    assert reports[1].skipped == "no melody_rnn training examples in the train split of tier(s) [4]"
    assert reports[1].result is None and reports[1].checkpoint_dir is None
    assert reports[1].train_sequences == reports[1].train_examples == 0
    assert not (tmp_path / "t4").exists()
    assert final == tmp_path / "t3" / "best"  # the last stage that ran
    assert any("stage t4 skipped: no melody_rnn training examples" in line for line in logs)


def test_every_stage_skipped_gives_no_final(corpus, tmp_path):
    root, _ = corpus
    reports, final = train_stages("musicvae", tiny("musicvae"), [Stage("t4", (4,), TC)], root, tmp_path, log=quiet)
    assert final is None and reports[0].skipped.startswith("no musicvae training examples")
    init = tmp_path / "init"
    tiny("musicvae").save(init)
    _, final = train_stages("musicvae", tiny("musicvae"), [Stage("t4", (4,), TC)], root, tmp_path, init_from=init, log=quiet)
    assert final == init


def test_validation_falls_back_to_every_tier(tmp_path):
    """No Tier 2 material in the validation split: the Tier 2 stage validates on all tiers."""
    root = tmp_path / "corpus"
    write_corpus(root, {"train": {2: 2, 3: 2}, "validation": {1: 1, 3: 1}, "test": {1: 1}})
    for family in pl_.FAMILIES:
        reports, final = train_stages(family, tiny(family), [Stage("t2", (2,), TC)], root, tmp_path / family, log=quiet)
        [r] = reports
        assert r.val_source.startswith("all tiers") and "no held-out examples" in r.val_source, r.val_source
        assert r.val_sequences == 2 and r.val_examples >= 2
        assert r.skipped is None and r.result["steps"] == 4 and final is not None


def test_no_validation_examples_at_all_skips(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root, {"train": {3: 2}, "validation": {}, "test": {}})
    reports, final = train_stages("melody_rnn", tiny("melody_rnn"), [Stage("t3", (3,), TC)], root, tmp_path / "w", log=quiet)
    assert final is None
    assert reports[0].skipped == "no melody_rnn validation examples in any tier of the validation split"


def test_train_stages_rejects_unknown_family_and_missing_export(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(ValueError, match="unknown model family"):
        train_stages("gpt", None, [Stage("x", (3,), TC)], root, tmp_path)
    with pytest.raises(FileNotFoundError, match="notesequences.tfrecord"):
        train_stages("melody_rnn", tiny("melody_rnn"), [Stage("x", (3,), TC)], tmp_path / "nowhere", tmp_path, log=quiet)


def test_stage_to_dict():
    s = Stage("finetune_tier2", (2,), TC, (("learning_rate", 1e-4),))
    d = s.to_dict()
    assert d["name"] == "finetune_tier2" and d["tiers"] == [2]
    assert d["config"]["max_steps"] == 4 and d["model_overrides"] == {"learning_rate": 1e-4}
    json.dumps(d)


def test_model_files_are_byte_stable(tmp_path):
    model = tiny("musicvae")
    digests = set()
    for i in range(16):
        model.save(tmp_path / str(i))
        digests.add(sha256_file(tmp_path / str(i) / "model.safetensors"))
    assert len(digests) == 1


# ---- publishing ----------------------------------------------------------------------------------


def test_publish_is_atomic_and_writes_the_record(tmp_path):
    src = tmp_path / "src"
    tiny("melody_rnn").save(src)
    target = tmp_path / "models" / "x" / "model"
    record = {"family": "melody_rnn", "n": np.int64(3), "loss": np.float32(0.5), "where": tmp_path}
    assert publish(src, target, record) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    assert (target / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    rec = json.loads((target / "training.json").read_text())
    assert rec == {"family": "melody_rnn", "n": 3, "loss": 0.5, "where": str(tmp_path)}
    # republishing replaces the folder (a stale extra file goes) and leaves no temp folders
    (target / "stale.txt").write_text("x")
    src2 = tmp_path / "src2"
    tiny("melody_rnn", seed=3).save(src2)
    publish(src2, target, {"v": 2})
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    assert (target / "model.safetensors").read_bytes() == (src2 / "model.safetensors").read_bytes()
    assert json.loads((target / "training.json").read_text()) == {"v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_publish_refuses_a_non_model_folder(tmp_path):
    target = tmp_path / "model"
    tiny("musicvae").save(target)
    before = (target / "model.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as e:
        publish(bad, target, {})
    assert "model.safetensors" in str(e.value) and str(bad) in str(e.value)
    assert (target / "model.safetensors").read_bytes() == before  # untouched
    with pytest.raises(FileNotFoundError, match="config.json"):
        publish(tmp_path / "missing", target, {})
    # a record that is not JSON-serialisable fails before the target is touched
    src = tmp_path / "src"
    tiny("musicvae", seed=2).save(src)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        publish(src, target, {"x": object()})
    assert (target / "model.safetensors").read_bytes() == before


# ---- fingerprints --------------------------------------------------------------------------------


def test_run_fingerprint():
    stages = get_profile("demo").model_stages("melody_rnn", "base")
    cfg = get_profile("demo").model_config("melody_rnn")
    base = run_fingerprint("melody_rnn", cfg, stages, ["a", "b", "c"], None)
    assert len(base) == 16 and int(base, 16) >= 0
    assert run_fingerprint("melody_rnn", dict(cfg), list(stages), ["a", "b", "c"], None) == base  # deterministic
    others = [
        run_fingerprint("melody_rnn", cfg, stages, ["a", "b", "x"], None),  # new data
        run_fingerprint("melody_rnn", {**cfg, "layers": [8, 8]}, stages, ["a", "b", "c"], None),  # model config
        run_fingerprint("melody_rnn", cfg, [dataclasses.replace(stages[0], config=dataclasses.replace(stages[0].config, max_steps=7))],
                        ["a", "b", "c"], None),  # stage settings
        run_fingerprint("melody_rnn", cfg, get_profile("demo").model_stages("melody_rnn", "trance"), ["a", "b", "c"], None),  # stages
        run_fingerprint("melody_rnn", cfg, stages, ["a", "b", "c"], "f00d"),  # init weights
        run_fingerprint("musicvae", cfg, stages, ["a", "b", "c"], None),  # family
    ]
    assert len({base, *others}) == 7


# ---- Magenta checkpoints -------------------------------------------------------------------------


def write_mag(path, seed=0, layers=(8, 8), attn_length=4):
    """A tiny attention_rnn `.mag` bundle; returns the source model (eval mode)."""
    from trance_assets.models.melody_rnn import MelodyRNN, MelodyRNNConfig
    from trance_assets.models.tf_checkpoint import write_mag_bundle

    torch.manual_seed(seed)
    model = MelodyRNN(MelodyRNNConfig(layers=layers, attn_length=attn_length)).eval()
    write_mag_bundle(path, {**model.export_tf_weights(), "global_step": np.array(1, dtype=np.int64)}, "attention_rnn")
    return model


def write_v2(prefix, seed=0):
    """A tiny 16-bar MusicVAE V2 checkpoint at `prefix`; returns the source model (eval mode)."""
    from trance_assets.models.tf_checkpoint import write_v2_checkpoint

    torch.manual_seed(seed)
    model = build_model("musicvae", TINY_VAE).eval()
    write_v2_checkpoint(prefix, model.export_tf_weights())
    return model


def test_detect_family(tmp_path):
    mag = tmp_path / "attention_rnn.mag"
    write_mag(mag)
    assert detect_family(mag) == "melody_rnn"
    assert detect_family(str(mag)) == "melody_rnn"
    ck = tmp_path / "vae"
    ck.mkdir()
    prefix = ck / "model.ckpt-100"
    write_v2(prefix)
    assert Path(str(prefix) + ".index").is_file()
    assert detect_family(prefix) == "musicvae"
    assert detect_family(str(prefix) + ".index") == "musicvae"
    assert detect_family(ck) == "musicvae"  # a folder holding one checkpoint
    with pytest.raises(FileNotFoundError) as e:
        detect_family(tmp_path / "nothing.mag")
    assert str(tmp_path / "nothing.mag") in str(e.value)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError) as e:
        detect_family(other)
    assert str(other) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither a Melody RNN"):
        detect_family(empty)


def test_import_magenta_melody_rnn_round_trip(tmp_path):
    path = tmp_path / "attention_rnn.mag"
    source = write_mag(path, seed=3)
    model, details = import_magenta(path, attn_length=4)
    model.eval()
    assert details["family"] == "melody_rnn"
    assert details["source"] == str(path)
    assert details["source_sha256"] == sha256_file(path)
    assert details["config"] == model.config.to_dict()
    assert model.config.layers == (8, 8) and model.config.attn_length == 4 and model.config.chord_dim == 0
    x = torch.randn(2, 11, 74, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _ = source(x)
        got, _ = model(x)
    assert torch.equal(want, got)
    # the family given explicitly; the default attn_length is attention_rnn's 40
    model40, _ = import_magenta(path, "melody_rnn")
    assert model40.config.attn_length == 40


def test_import_magenta_musicvae_round_trip(tmp_path):
    from trance_assets.models.musicvae import one_hot

    folder = tmp_path / "hierdec"
    folder.mkdir()
    prefix = folder / "model.ckpt-3000"
    source = write_v2(prefix, seed=4)
    classes = torch.randint(0, 90, (2, 256), generator=torch.Generator().manual_seed(2))
    for where in (prefix, Path(str(prefix) + ".index"), folder):
        model, details = import_magenta(where)
        model.eval()
        assert details["family"] == "musicvae"
        assert details["source"] == str(prefix)
        assert details["source_sha256"] == sha256_file(Path(str(prefix) + ".index"))
        assert model.config.z_size == 4 and model.config.enc_sizes == (8,) and model.config.bars == 16
        with torch.no_grad():
            mu_a, sigma_a = source.encode(one_hot(classes))
            mu_b, sigma_b = model.encode(one_hot(classes))
            assert torch.equal(mu_a, mu_b) and torch.equal(sigma_a, sigma_b)
            assert torch.equal(source.sample(mu_a, greedy=True), model.sample(mu_b, greedy=True))
    # a folder with two checkpoints: the prefix must be named
    write_v2(folder / "model.ckpt-4000", seed=5)
    with pytest.raises(ValueError, match="holds 2 checkpoints"):
        import_magenta(folder)


def test_import_magenta_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_magenta(tmp_path / "missing.mag")
    with pytest.raises(ValueError, match="unknown model family"):
        import_magenta(tmp_path, "remi")


def test_imported_model_saves_and_publishes(tmp_path):
    model, details = import_magenta(_mag(tmp_path), attn_length=4)
    model.save(tmp_path / "conv")
    target = publish(tmp_path / "conv", tmp_path / "imported" / "melody_rnn", {"imported": details})
    assert json.loads((target / "training.json").read_text())["imported"]["source_sha256"] == details["source_sha256"]
    assert load_model("melody_rnn", target).config == model.config


def _mag(tmp_path) -> Path:
    p = tmp_path / "attention_rnn.mag"
    write_mag(p)
    return p


# ---- profile settings ----------------------------------------------------------------------------


def test_parse_overrides():
    assert parse_overrides("") == {}
    assert parse_overrides("   ") == {}
    got = parse_overrides('{"melody_rnn_layers": [8, 8], "musicvae_z_size": 4, "synthetic_bpm_range": [130, 140], "melody_rnn_max_seq_len": null}')
    assert got == {"melody_rnn_layers": (8, 8), "musicvae_z_size": 4, "synthetic_bpm_range": (130, 140), "melody_rnn_max_seq_len": None}
    assert isinstance(got["melody_rnn_layers"], tuple)
    nested = parse_overrides('{"evaluation_configs": [["rules", "rules", "{}"]]}')
    assert nested == {"evaluation_configs": (("rules", "rules", "{}"),)}
    with pytest.raises(ValueError) as e:
        parse_overrides('{"melody_rnn_layers": [8], "no_such_field": 1}')
    assert "no_such_field" in str(e.value) and "melody_rnn_layers" not in str(e.value).split("known")[0]
    with pytest.raises(ValueError, match="unknown profile field"):
        parse_overrides('{"name": "x"}')  # the profile's name is not an override
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_overrides('{"melody_rnn_layers": [8, 8]')
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_overrides("[1, 2]")
    p = get_profile("demo", **parse_overrides('{"melody_rnn_steps": [4, 2, 2]}'))
    assert p.melody_rnn_steps == (4, 2, 2) and p.name == "demo"


def test_profile_model_config():
    demo = get_profile("demo")
    assert demo.model_config("melody_rnn") == {"layers": [64, 64], "attn_length": 16, "chord_dim": 25}
    assert build_model("melody_rnn", demo.model_config("melody_rnn")).config.layers == (64, 64)
    no_chords = dataclasses.replace(demo, melody_rnn_chord_conditioned=False)
    assert no_chords.model_config("melody_rnn")["chord_dim"] == 0
    vae = demo.model_config("musicvae")
    assert vae == {"enc_sizes": [64], "conductor_sizes": [64], "dec_sizes": [64], "z_size": 32, "free_bits": 16.0, "batch_size": 16}
    full = get_profile("full")
    assert full.model_config("musicvae")["enc_sizes"] == [2048, 2048] and full.model_config("musicvae")["z_size"] == 512
    assert full.model_config("melody_rnn")["layers"] == [128, 128]
    with pytest.raises(ValueError, match="unknown model family"):
        demo.model_config("remi")


def test_profile_model_stages():
    p = get_profile("demo", melody_rnn_steps=(40, 30, 20), musicvae_steps=(7, 6, 5), model_eval_every=3, model_patience=2,
                    melody_rnn_batch_size=5, musicvae_batch_size=6, model_threads=1, melody_rnn_max_seq_len=64, musicvae_finetune_lr=2e-4)
    [base] = p.model_stages("melody_rnn", "base")
    assert (base.name, base.tiers, base.model_overrides) == ("pretrain_tier3", (3,), ())
    assert (base.config.max_steps, base.config.batch_size, base.config.eval_every, base.config.patience) == (40, 5, 3, 2)
    assert (base.config.max_seq_len, base.config.threads, base.config.lr, base.config.device) == (64, 1, p.melody_rnn_lr, "auto")
    t2, t1 = p.model_stages("melody_rnn", "trance")
    assert [(s.name, s.tiers, s.config.max_steps, s.model_overrides) for s in (t2, t1)] == [
        ("finetune_tier2", (2,), 30, ()), ("finetune_tier1", (1,), 20, ())]
    [vbase] = p.model_stages("musicvae", "base")
    assert (vbase.tiers, vbase.config.max_steps, vbase.config.batch_size, vbase.config.max_seq_len, vbase.model_overrides) == ((3,), 7, 6, None, ())
    v2, v1 = p.model_stages("musicvae", "trance")
    assert [(s.name, s.tiers, s.config.max_steps) for s in (v2, v1)] == [("finetune_tier2", (2,), 6), ("finetune_tier1", (1,), 5)]
    assert v2.model_overrides == v1.model_overrides == (("learning_rate", 2e-4),)
    assert get_profile("full").model_stages("musicvae", "base")[0].config.max_steps == 50_000
    with pytest.raises(ValueError, match="kind must be 'base' or 'trance'"):
        p.model_stages("melody_rnn", "finetune")


def test_demo_profile_evaluation_configs_name_the_models():
    names = {n: (b, json.loads(o)) for n, b, o in Profile(name="x").evaluation_configs}
    assert names["melody_rnn"] == ("melody_rnn", {"checkpoint": "@models/melody_rnn_trance"})
    assert names["musicvae"] == ("musicvae", {"checkpoint": "@models/musicvae_trance"})
    assert names["phase1_pretrained"][0] == names["phase2_finetuned"][0] == "hybrid"
    assert names["phase1_pretrained"][1]["melody_rnn"] == "@models/melody_rnn_base"
    assert names["phase2_finetuned"][1]["musicvae"] == "@models/musicvae_trance"
