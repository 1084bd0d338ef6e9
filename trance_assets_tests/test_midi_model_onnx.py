"""ONNX export / INT8 / onnxruntime stepper of the midi-model (tiny size, CPU, one thread)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from trance_assets.models import midi_model_onnx as mo  # noqa: E402
from trance_assets.models.midi_model import MidiModel, MidiModelConfig, TorchStepper  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def model() -> MidiModel:
    torch.manual_seed(0)
    m = MidiModel(MidiModelConfig.from_size("tiny")).eval()
    # scale the weights up a little so the logits are not all ties around zero
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return m


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("onnx") / "fp32"
        info = mo.export_onnx(model, folder)
        qfolder = folder.parent / "int8"
        quant = mo.quantize_int8(folder, qfolder)
    finally:
        torch.set_num_threads(n)
    return folder, info, qfolder, quant


def _llama_ref(llama, emb, cache):
    out = llama(inputs_embeds=emb, past_key_values=cache, use_cache=True)
    return out.last_hidden_state


@pytest.mark.parametrize("which", ["net", "net_token"])
def test_functional_forward_equals_transformers(model, which):
    from transformers import DynamicCache

    llama = getattr(model, which)
    f = mo.FunctionalLlama(llama)
    g = torch.Generator().manual_seed(1)
    H = model.config.n_embd
    e1, e2, e3 = (torch.randn(2, n, H, generator=g) for n in (4, 3, 1))
    with torch.no_grad():
        cache = DynamicCache()
        refs = [_llama_ref(llama, e, cache) for e in (e1, e2, e3)]
        past = f.empty_past(2)
        outs = []
        for e in (e1, e2, e3):  # no past, then 3 positions on a past of 4, then 1 on a past of 7
            h, past = f(e, past)
            outs.append(h)
    for r, o in zip(refs, outs):
        assert torch.allclose(r, o, atol=1e-5, rtol=1e-5), float((r - o).abs().max())
    assert past[0][0].shape == (2, f.n_kv, 8, f.head_dim)
    # the cache equals transformers'
    assert torch.allclose(cache.layers[0].keys, past[0][0], atol=1e-5)


def test_exported_files_and_names(exported, model):
    folder, info, _, _ = exported
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "export.json", "model_base.onnx", "model_token.onnx"]
    assert json.loads((folder / "config.json").read_text()) == model.config.to_dict()
    assert json.loads((folder / "export.json").read_text())["opset"] == 17 == info["opset"]
    nb, nt = model.net.config.num_hidden_layers, model.net_token.config.num_hidden_layers
    kv = lambda n, p: [f"{p}.{i}.{k}" for i in range(n) for k in ("key", "value")]  # noqa: E731
    base = onnx.load(str(folder / "model_base.onnx"))
    token = onnx.load(str(folder / "model_token.onnx"))
    assert [i.name for i in base.graph.input] == ["x", *kv(nb, "past_key_values")]
    assert [o.name for o in base.graph.output] == ["hidden", *kv(nb, "present")]
    assert [i.name for i in token.graph.input] == ["hidden", "x", "rows", *kv(nt, "past_key_values")]
    assert [o.name for o in token.graph.output] == ["logits", *kv(nt, "present")]
    assert info["graphs"]["model_base.onnx"]["inputs"][0]["shape"] == ["batch", "events", 8]
    assert info["graphs"]["model_base.onnx"]["inputs"][1]["shape"][2] == "past"
    assert base.opset_import[0].version >= 14


@pytest.mark.parametrize("batch,events", [(2, 5), (1, 1), (2, 3)])
def test_onnx_parity(exported, model, batch, events):
    folder = exported[0]
    p = mo.parity(model, folder, batch=batch, events=events, seed=events)
    assert p["logits_max_abs_diff"] < 1e-4, p
    assert p["hidden_max_abs_diff"] < 1e-4, p
    assert p["rows_subset_max_abs_diff"] < 1e-5, p


def _greedy(stepper, tok, events: int, rows: bool):
    """Greedy loop: the event type inside event ids, each parameter inside its block."""
    note = tok.event_ids["note"]
    ev = slice(2, 3 + len(tok.events))
    blocks = [slice(tok.parameter_ids[p][0], tok.parameter_ids[p][-1] + 1) for p in tok.events["note"]]
    stepper.start(1)
    hidden = stepper.net_step(np.array([[[tok.bos_id] + [0] * 7]]))
    out, firsts = [], []
    for _ in range(events):
        lg = stepper.token_start(hidden, rows=ev) if rows else stepper.token_start(hidden)[:, ev]
        firsts.append(int(np.argmax(lg[0])))
        row = [note]
        for b in blocks:
            lg = stepper.token_next(np.array([row[-1]]), rows=b) if rows else stepper.token_next(np.array([row[-1]]))[:, b]
            row.append(b.start + int(np.argmax(lg[0])))
        out.append(row)
        hidden = stepper.net_step(np.array([[row]]))
    return np.array(out), firsts


def test_onnx_stepper_matches_torch_stepper(exported, model):
    tok = model.tokenizer
    ref, ref_first = _greedy(TorchStepper(model), tok, 10, rows=False)
    onnx_stepper = mo.OnnxStepper(exported[0], threads=1)
    got, got_first = _greedy(onnx_stepper, tok, 10, rows=False)
    np.testing.assert_array_equal(ref, got)
    assert ref_first == got_first
    got_rows, first_rows = _greedy(onnx_stepper, tok, 10, rows=True)
    np.testing.assert_array_equal(ref, got_rows)
    assert first_rows == ref_first
    assert len(set(map(tuple, ref[:, 1:].tolist()))) > 1  # not a degenerate constant loop


def test_rows_equal_full_logits_and_batch(exported, model):
    ts, os_ = TorchStepper(model), mo.OnnxStepper(exported[0], threads=1)
    rng = np.random.default_rng(3)
    x = rng.integers(0, model.tokenizer.vocab_size, size=(2, 4, 8))
    ts.start(2)
    os_.start(2)
    h_ref, h = ts.net_step(x), os_.net_step(x)
    np.testing.assert_allclose(h, h_ref, atol=1e-4)
    h_ref, h = ts.net_step(x[:, :1]), os_.net_step(x[:, :1])  # a cached single event
    np.testing.assert_allclose(h, h_ref, atol=1e-4)
    full = ts.token_start(h_ref)
    np.testing.assert_allclose(os_.token_start(h), full, atol=1e-4)
    rows = np.array([5, 17, 200, 3000])
    np.testing.assert_allclose(os_.token_start(h, rows=rows), mo.select_rows(full, rows), atol=1e-4)
    ids = np.array([9, 10])
    full2 = ts.token_next(ids)
    np.testing.assert_allclose(os_.token_next(ids, rows=slice(9, 137)), mo.select_rows(full2, slice(9, 137)), atol=1e-4)
    full3 = ts.token_next(ids + 1)
    np.testing.assert_allclose(os_.token_next(ids + 1), full3, atol=1e-4)


def test_int8_export(exported, model):
    folder, _, qfolder, quant = exported
    for f in ("model_base.onnx", "model_token.onnx"):
        assert (qfolder / f).stat().st_size < (folder / f).stat().st_size
    assert quant["total_bytes_after"] < quant["total_bytes_before"]
    ops = {n.op_type for n in onnx.load(str(qfolder / "model_base.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    s = mo.OnnxStepper(qfolder, threads=1)
    s.start(1)
    h = s.net_step(np.array([[[1, 0, 0, 0, 0, 0, 0, 0]]]))
    lg = s.token_start(h)
    assert lg.shape == (1, model.tokenizer.vocab_size) and np.isfinite(lg).all()
    assert s.token_next(np.array([3]), rows=slice(9, 137)).shape == (1, 128)
    tok = model.tokenizer
    rng = np.random.default_rng(0)
    seqs = []
    for n in (12, 20):
        rows = [[tok.bos_id] + [0] * 7]
        for _ in range(n):
            rows.append(tok.event_to_row("note", [int(rng.integers(0, 4)), int(rng.integers(0, 16)), 1, 0,
                                                 int(rng.integers(48, 84)), 100, int(rng.integers(1, 16))]))
        seqs.append(np.array(rows))
    agree = mo.top1_agreement(folder, qfolder, seqs, threads=1)
    assert agree["positions"] == 8 * 32  # every token of the 32 target note events
    assert agree["top1_agreement"] > 0.5, agree


def test_atomic_write(model, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    calls = []
    real = mo._export_graph

    def failing(module, args, path, *a, **k):
        calls.append(path.name)
        if path.name == "model_token.onnx":
            raise RuntimeError("boom")
        return real(module, args, path, *a, **k)

    monkeypatch.setattr(mo, "_export_graph", failing)
    with pytest.raises(RuntimeError, match="boom"):
        mo.export_onnx(model, folder)
    assert calls == ["model_base.onnx", "model_token.onnx"]
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temporary sibling
    # an existing export survives a failed re-export untouched
    monkeypatch.setattr(mo, "_export_graph", real)
    mo.export_onnx(model, folder)
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(mo, "_export_graph", failing)
    with pytest.raises(RuntimeError):
        mo.export_onnx(model, folder)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_opset_too_low(model, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        mo.export_onnx(model, tmp_path / "x", opset=13)
