"""`trance_assets.models.midi_model_train`: LoRA adapters on the midi-model (which modules, what
trains, merging, PEFT adapter files), the training loop (loss goes down, kill/resume identity in
full and LoRA mode), QLoRA's refusal without a GPU, and staged training over a tiny token corpus
(full pre-train on Tier 3, then LoRA on Tier 2 and Tier 1, a stage without data skipped).

Everything runs on the "tiny" model size on the CPU with a handful of steps.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import torch

from trance_assets.corpus.midi_model_tokens import TOKENIZER_NAME, TOKENS_NAME
from trance_assets.models.midi_model import MidiModel, MidiModelConfig, read_state_dict
from trance_assets.models.midi_model_train import (
    ADAPTER_DIR,
    LoraSettings,
    apply_lora,
    merge_lora,
    merged_state_dict,
    qlora_available,
    save_adapter,
    train_midi_model,
    train_stages,
    train_windows,
    val_windows,
    validation_loss,
)
from trance_assets.models.pipeline import Stage
from trance_assets.models.training import TrainConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PLAIN = LoraSettings(qlora="never")
ALL7 = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def tiny(seed: int = 0) -> MidiModel:
    torch.manual_seed(seed)
    return MidiModel(MidiModelConfig.from_size("tiny"))


def repetitive(n_seqs: int = 6, reps: int = 12, shift: int = 0) -> list[np.ndarray]:
    """Token matrices of a two-note riff repeated (v2 note rows), bos first, eos last."""
    def note(pitch, t2):
        return [3, 9 + 1, 137 + t2, 2201, 2329, 2345 + pitch, 2473 + 100, 153 + 4]

    out = []
    for i in range(n_seqs):
        riff = [note(60 + shift + (i % 3), 0), note(64 + shift + (i % 3), 8)]
        out.append(np.array([[1] + [0] * 7] + riff * reps + [[2] + [0] * 7], dtype=np.int64))
    return out


def lora_modules(peft_model) -> set[str]:
    return {n.split(".base_model.model.", 1)[-1].removeprefix("base_model.model.").rsplit(".lora_A", 1)[0]
            for n, _ in peft_model.named_parameters() if ".lora_A." in n}


def all_weights(model: MidiModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ settings / LoRA
def test_settings_presets_and_validation():
    assert LoraSettings.plan().r == 16 and LoraSettings.plan().target_modules == ("q_proj", "v_proj")
    up = LoraSettings.upstream()
    assert (up.r, up.alpha, set(up.target_modules)) == (64, 128, ALL7)
    d = LoraSettings(modules=["net"]).to_dict()
    assert d["modules"] == ["net"] and json.loads(json.dumps(d)) == d
    assert LoraSettings.from_dict(d) == LoraSettings(modules=("net",))
    for bad in ({"target_modules": ("lm_head",)}, {"modules": ("decoder",)}, {"qlora": "maybe"}, {"r": 0}):
        with pytest.raises(ValueError):
            LoraSettings(**bad)
    assert re.fullmatch(LoraSettings().target_regex(), "net_token.layers.0.self_attn.v_proj")
    assert not re.fullmatch(LoraSettings().target_regex(), "net.layers.0.self_attn.k_proj")


def test_lora_targets_only_configured_modules():
    pm = apply_lora(tiny(), PLAIN, seed=0)
    expected = {f"{sub}.layers.{i}.self_attn.{p}" for sub, n in (("net", 2), ("net_token", 1)) for i in range(n) for p in ("q_proj", "v_proj")}
    assert lora_modules(pm) == expected
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(p.numel() for p in pm.parameters() if p.requires_grad) < 0.1 * sum(p.numel() for p in pm.parameters())

    up = apply_lora(tiny(), LoraSettings.upstream(qlora="never"), seed=0)
    mods = lora_modules(up)
    assert {m.rsplit(".", 1)[1] for m in mods} == ALL7
    assert len(mods) == 7 * 3  # 2 net layers + 1 net_token layer

    net_only = apply_lora(tiny(), LoraSettings(modules=("net",), qlora="never"), seed=0)
    assert lora_modules(net_only) and all(m.startswith("net.") for m in lora_modules(net_only))
    with pytest.raises(ValueError, match="already carries LoRA"):
        apply_lora(net_only.get_base_model(), PLAIN)


def test_qlora_always_refused_without_gpu_and_bitsandbytes():
    ok, why = qlora_available()
    if ok:
        pytest.skip("this machine can run QLoRA")
    assert "QLoRA needs" in why
    with pytest.raises(RuntimeError, match="qlora='always'.*(CUDA|bitsandbytes)"):
        apply_lora(tiny(), LoraSettings(qlora="always"))
    # "auto" falls back to plain LoRA
    pm = apply_lora(tiny(), LoraSettings(qlora="auto"))
    assert not getattr(pm.get_base_model(), "is_loaded_in_4bit", False)


def test_merge_and_adapter_files_reproduce_the_adapter_model(tmp_path):
    from peft import PeftModel

    base = tiny(1)
    base_state = all_weights(base)
    pm = apply_lora(base, PLAIN, seed=0)
    cfg = TrainConfig(max_steps=4, eval_every=2, batch_size=3, lr=2e-2, device="cpu", patience=None)
    seqs = repetitive()
    train_midi_model(pm, seqs, seqs[:2], cfg, tmp_path / "ck", lora=PLAIN, max_events=12, log=lambda s: None)
    lora_b = [p for n, p in pm.named_parameters() if ".lora_B." in n]
    assert all(float(p.detach().abs().max()) > 0 for p in lora_b)  # adapters really moved

    pm.eval()
    x = torch.as_tensor(seqs[0][:10])[None]
    with torch.no_grad():
        h_ad = pm.forward(x)
        lg_ad = pm.forward_token(h_ad[:, -1], x[:, -1, :7])
    merged = merge_lora(pm).eval()
    assert isinstance(merged, MidiModel)
    assert set(merged.state_dict()) == set(MidiModel(base.config).state_dict())
    with torch.no_grad():
        h_m = merged.forward(x)
        lg_m = merged.forward_token(h_m[:, -1], x[:, -1, :7])
    assert float((h_m - h_ad).abs().max()) < 1e-5 and float((lg_m - lg_ad).abs().max()) < 1e-5
    # merged_state_dict (what best/ holds) == merge_and_unload
    msd = merged_state_dict(pm)
    assert set(msd) == set(merged.state_dict())
    assert all(torch.allclose(msd[k], v, atol=1e-6) for k, v in merged.state_dict().items())

    # the PEFT adapter on a fresh copy of the base gives the same outputs
    save_adapter(pm, tmp_path / "ad")
    assert (tmp_path / "ad" / "adapter_config.json").is_file() and (tmp_path / "ad" / "adapter_model.safetensors").is_file()
    fresh = MidiModel(base.config)
    fresh.load_state_dict(base_state)
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "ad")).eval()
    with torch.no_grad():
        h_l = loaded.forward(x)
        lg_l = loaded.forward_token(h_l[:, -1], x[:, -1, :7])
    assert float((h_l - h_ad).abs().max()) < 1e-6 and float((lg_l - lg_ad).abs().max()) < 1e-6

    # best/ holds the merged model (published layout) and the adapter
    best = tmp_path / "ck" / "best"
    assert (best / ADAPTER_DIR / "adapter_config.json").is_file()
    published = MidiModel.from_pretrained(best)
    assert set(read_state_dict(best)) == set(merged.state_dict())
    assert all(torch.equal(published.state_dict()[k], v) for k, v in merged.state_dict().items())
    # the last/ checkpoint only holds adapter weights
    assert all(".lora_" in k for k in read_state_dict(tmp_path / "ck" / "last"))


# ------------------------------------------------------------------------------------ training loop
def test_windows_are_deterministic_and_cover_every_transition():
    seqs = repetitive(3, reps=10)  # 22 events each
    a = train_windows(seqs, np.array([0, 2]), 8, seed=5, step=3)
    b = train_windows(seqs, np.array([0, 2]), 8, seed=5, step=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and all(len(w) == 8 for w in a)
    w = val_windows(seqs, 8)
    assert sum(len(x) - 1 for x in w) == sum(len(s) - 1 for s in seqs)


@pytest.mark.parametrize("lora", [None, PLAIN], ids=["full", "lora"])
def test_training_lowers_the_loss_and_model_ends_plain(tmp_path, lora):
    m = tiny(2)
    seqs = repetitive()
    before = validation_loss(m, seqs[:2], max_events=16)
    cfg = TrainConfig(max_steps=8, eval_every=4, batch_size=4, lr=1e-2 if lora is None else 3e-2, device="cpu", patience=None)
    r = train_midi_model(m, seqs, seqs[:2], cfg, tmp_path / "ck", lora=lora, max_events=16, log=lambda s: None)
    assert r.curve[0][2] == pytest.approx(before, abs=1e-5)
    assert r.best_val_loss < before - 0.5
    assert isinstance(m, MidiModel) and not any("lora" in k for k in m.state_dict())
    # the model ends with the best weights, equal to best/
    saved = read_state_dict(tmp_path / "ck" / "best")
    assert all(torch.equal(saved[k], v) for k, v in m.state_dict().items())
    assert validation_loss(m, seqs[:2], max_events=16) == pytest.approx(r.best_val_loss, abs=1e-5)


class Kill(Exception):
    pass


@pytest.mark.parametrize("lora", [None, PLAIN], ids=["full", "lora"])
def test_kill_and_resume_ends_identical(tmp_path, lora):
    seqs = repetitive(5)
    cfg = TrainConfig(max_steps=6, eval_every=2, batch_size=2, lr=1e-2, device="cpu", patience=None, seed=3)

    ref = tiny(4)
    r_ref = train_midi_model(ref, seqs, seqs[:2], cfg, tmp_path / "ref", lora=lora, max_events=10, log=lambda s: None)

    def killer(step, loss):
        if step == 5:
            raise Kill

    victim = tiny(4)
    with pytest.raises(Kill):
        train_midi_model(victim, seqs, seqs[:2], cfg, tmp_path / "run", lora=lora, max_events=10, log=lambda s: None, on_step=killer)
    assert not any("lora" in k for k in victim.state_dict())  # adapters removed on the way out
    again = tiny(4)  # a restarted process builds the model afresh
    r = train_midi_model(again, seqs, seqs[:2], cfg, tmp_path / "run", lora=lora, max_events=10, log=lambda s: None)
    assert r.resumed_from == 4 and r.steps == 6
    assert r.curve == r_ref.curve
    a, b = ref.state_dict(), again.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_resume_refuses_a_full_checkpoint(tmp_path):
    seqs = repetitive(3)
    cfg = TrainConfig(max_steps=1, eval_every=1, batch_size=2, device="cpu")
    train_midi_model(tiny(), seqs, seqs[:1], cfg, tmp_path / "ck", max_events=8, log=lambda s: None)
    with pytest.raises(ValueError, match="another model/config"):
        train_midi_model(tiny(), seqs, seqs[:1], cfg, tmp_path / "ck", lora=PLAIN, max_events=8, log=lambda s: None)


# ------------------------------------------------------------------------------------ stages
def write_token_corpus(root, layout: dict[str, dict[int, int]]) -> None:
    """<root>/<split>/midi_model_tokens.parquet with the corpus schema: split -> {tier: count}."""
    from trance_assets.formats.midi_tokenizer import MidiTokenizer

    tok = MidiTokenizer("v2")
    root.mkdir(parents=True, exist_ok=True)
    (root / TOKENIZER_NAME).write_text(json.dumps(tok.to_config()))
    schema = {"example_id": pl.Utf8, "tier": pl.Int8, "source": pl.Utf8, "group": pl.Utf8, "key": pl.Utf8,
              "bpm": pl.Float64, "n_events": pl.Int32, "tokens": pl.List(pl.UInt16)}
    for s_i, split in enumerate(("train", "validation", "test")):
        rows = []
        for tier, n in sorted(layout.get(split, {}).items()):
            for i, t in enumerate(repetitive(n, reps=6 + 2 * tier, shift=tier + s_i)):
                rows.append({"example_id": f"t{tier}-{split}-{i}", "tier": tier, "source": "x", "group": "", "key": "Am",
                             "bpm": 138.0, "n_events": len(t), "tokens": t.astype(np.uint16).reshape(-1).tolist()})
        (root / split).mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=schema).write_parquet(root / split / TOKENS_NAME)


def test_train_stages_full_then_lora_chain(tmp_path):
    corpus = tmp_path / "corpus"
    # tier 1 has no validation examples (falls back to all tiers); tier 4 has nothing at all
    write_token_corpus(corpus, {"train": {1: 2, 2: 3, 3: 4}, "validation": {2: 1, 3: 1}, "test": {1: 1}})
    cfg = TrainConfig(max_steps=4, eval_every=2, batch_size=2, lr=1e-2, device="cpu", patience=None)
    stages = [Stage("pretrain", (3,), cfg), Stage("empty", (4,), cfg), Stage("tier2", (2,), cfg), Stage("tier1", (1,), cfg)]
    lora = LoraSettings(r=4, alpha=8, qlora="never")
    work = tmp_path / "work"
    model = tiny(5)
    reports, final = train_stages(model, stages, corpus, work, lora=lora, lora_stages={"tier2", "tier1"}, max_events=12,
                                  log=lambda s: None)
    by = {r.name: r for r in reports}
    assert by["empty"].skipped and "tier(s) [4]" in by["empty"].skipped and by["empty"].result is None
    assert by["pretrain"].train_sequences == 4 and by["pretrain"].val_source == "tiers"
    assert by["tier1"].val_source.startswith("all tiers") and by["tier1"].val_sequences == 2
    assert final == work / "tier1" / "best"
    assert not (work / "pretrain" / "best" / ADAPTER_DIR).exists()
    for name in ("tier2", "tier1"):
        assert (work / name / "best" / ADAPTER_DIR / "adapter_model.safetensors").is_file()
        assert all(".lora_" in k for k in read_state_dict(work / name / "last"))

    # the model ends as a plain MidiModel holding the final merged weights
    final_state = read_state_dict(final)
    assert isinstance(model, MidiModel) and set(model.state_dict()) == set(final_state)
    assert all(torch.equal(final_state[k], v) for k, v in model.state_dict().items())

    # tier1's adapters sit on the pre-trained base (not on tier2's merge) and start from tier2's best adapters
    from peft import PeftModel

    pre = MidiModel.from_pretrained(work / "pretrain" / "best")
    on_base = PeftModel.from_pretrained(pre, str(final / ADAPTER_DIR))
    rebuilt = merged_state_dict(on_base)
    assert all(torch.allclose(rebuilt[k], v, atol=1e-6) for k, v in final_state.items())
    tier2_merged = MidiModel.from_pretrained(work / "tier2" / "best")
    val_all = [np.asarray(t, dtype=np.int64) for t in _val_tokens(corpus)]
    tier1_start = by["tier1"].result["curve"][0][2]
    assert tier1_start == pytest.approx(validation_loss(tier2_merged, val_all, max_events=12), abs=1e-4)

    # a second call resumes every stage from its finished checkpoint and ends in the same place
    again = tiny(5)
    reports2, final2 = train_stages(again, stages, corpus, work, lora=lora, lora_stages={"tier2", "tier1"}, max_events=12,
                                    log=lambda s: None)
    assert final2 == final and [r.result["resumed_from"] for r in reports2 if r.result] == [4, 4, 4]
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())

    with pytest.raises(ValueError, match="need lora"):
        train_stages(tiny(), stages, corpus, tmp_path / "w2", lora=None, lora_stages={"tier1"}, log=lambda s: None)


def _val_tokens(corpus):
    from trance_assets.corpus.midi_model_tokens import read_midi_model_tokens

    return [ex.tokens for ex in read_midi_model_tokens(corpus, "validation")]


def test_validation_subset_is_evenly_spaced_and_reported(tmp_path):
    from trance_assets.models.midi_model_train import evenly_spaced

    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert evenly_spaced(list(range(3)), 4) == [0, 1, 2] and evenly_spaced(list(range(5)), None) == list(range(5))
    corpus = tmp_path / "corpus"
    write_token_corpus(corpus, {"train": {3: 3}, "validation": {3: 5}})
    cfg = TrainConfig(max_steps=2, eval_every=2, batch_size=2, lr=1e-3, device="cpu", patience=None)
    [report], _ = train_stages(tiny(), [Stage("pretrain", (3,), cfg)], corpus, tmp_path / "w", max_events=12,
                               max_val_sequences=2, log=lambda s: None)
    assert report.val_sequences == 2 and report.val_source == "tiers (an evenly spaced 2 of them)"
