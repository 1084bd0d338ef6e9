"""The "midi_model" generator: masks, sampling, primer, the KV-cache loop and the registry, on a tiny
random MidiModel saved with save_pretrained."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from trance_assets.formats.midi_tokenizer import MidiTokenizer  # noqa: E402
from trance_assets.generation import midi_model as gm  # noqa: E402
from trance_assets.generation.base import Generator, get_generator  # noqa: E402
from trance_assets.models.midi_model import MidiModel, MidiModelConfig, TorchStepper  # noqa: E402
from trance_assets.music.melody import Melody, Note  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PROG = ["Am", "F", "C", "G"]
TOK = MidiTokenizer("v2")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("midi_model_tiny")
    MidiModel(MidiModelConfig.from_size("tiny")).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def model(model_dir):
    return MidiModel.from_pretrained(model_dir)


class BiasedStepper:
    """Wraps a stepper: no eos, and short beat deltas (time1 0/1 favoured) so a random model
    writes many notes; tracks the slot itself (0 after token_start, +1 per token_next)."""

    def __init__(self, inner, tok):
        self.inner, self.tok, self.slot = inner, tok, 0
        self.hidden_size, self.vocab_size = inner.hidden_size, inner.vocab_size

    def start(self, batch):
        self.inner.start(batch)

    def net_step(self, x):
        return self.inner.net_step(x)

    def _bias(self, logits):
        logits = np.array(logits, dtype=np.float32)
        if self.slot == 0:
            logits[:, self.tok.eos_id] = -np.inf
        elif self.slot == 1:
            t1 = self.tok.parameter_ids["time1"]
            logits[:, t1[0]] += 50.0
            logits[:, t1[1]] += 50.0
        return logits

    def token_start(self, hidden):
        self.slot = 0
        return self._bias(self.inner.token_start(hidden))

    def token_next(self, ids):
        self.slot += 1
        return self._bias(self.inner.token_next(ids))


# ---------------------------------------------------------------------------------------- masks
@settings(max_examples=60, deadline=None)
@given(slot=st.integers(0, 7), event=st.sampled_from(sorted(TOK.events)),
       subset=st.lists(st.sampled_from(sorted(TOK.events)), min_size=1, max_size=6, unique=True) | st.none())
def test_allowed_ids_are_exactly_the_valid_tokens(slot, event, subset):
    if slot == 0:
        m = gm.allowed_ids(TOK, 0, None, subset)
        expected = {TOK.event_ids[e] for e in (subset or TOK.events)} | {TOK.eos_id}
        assert set(np.flatnonzero(m).tolist()) == expected
        return
    m = gm.allowed_ids(TOK, slot, event)
    params = TOK.events[event]
    if slot > len(params):
        assert np.flatnonzero(m).tolist() == [TOK.pad_id]
    else:
        assert np.flatnonzero(m).tolist() == TOK.parameter_ids[params[slot - 1]]
    assert not m.flags.writeable  # shared, precomputed once per tokenizer
    assert gm.allowed_ids(TOK, slot, event) is m


def test_allowed_ids_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown event"):
        gm.allowed_ids(TOK, 0, None, ["note", "sysex"])
    with pytest.raises(ValueError, match="known event"):
        gm.allowed_ids(TOK, 2, "sysex")


_SPECIAL = st.sampled_from([-np.inf, np.inf, np.nan, 1e30, -1e30, 0.0, 1e-30, 88.0, -745.0])


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    v=st.integers(1, 40),
    b=st.integers(1, 3),
    temperature=st.sampled_from([None, 0, 1e-6, 0.3, 1.0, 7.0, 1e6]),
    top_p=st.sampled_from([None, 1e-9, 0.01, 0.5, 0.94, 1.0]),
    top_k=st.sampled_from([None, 0, 1, 2, 20, 1000]),
    seed=st.integers(0, 2**32 - 1),
    shared_mask=st.booleans(),
)
def test_sample_never_returns_a_masked_id(data, v, b, temperature, top_p, top_k, seed, shared_mask):
    logits = np.asarray(data.draw(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32) | _SPECIAL,
                                                     min_size=v, max_size=v), min_size=b, max_size=b)), dtype=np.float32)
    shape = (v,) if shared_mask else (b, v)
    mask = np.asarray(data.draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))), dtype=bool).reshape(shape)
    mask[..., data.draw(st.integers(0, v - 1))] = True  # at least one allowed id per row
    ids = gm.sample(logits, mask, temperature, top_p, top_k, np.random.default_rng(seed))
    assert ids.shape == (b,) and ids.dtype == np.int64
    rows = np.broadcast_to(mask, (b, v))
    assert all(rows[i, ids[i]] for i in range(b))


def test_sample_greedy_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.array([[0.0, 5.0, 4.0, 3.0, 9.0]])
    mask = np.array([True, True, True, True, False])
    assert gm.sample(logits, mask, 0, None, None, rng)[0] == 1  # argmax over the allowed ids only
    assert gm.sample(logits, mask, None, 0.9, 20, rng)[0] == 1
    draws = {int(gm.sample(logits, mask, 1.0, None, 2, rng)[0]) for _ in range(200)}
    assert draws == {1, 2}  # top-2 of the allowed
    draws = {int(gm.sample(logits, mask, 1.0, 1e-9, None, rng)[0]) for _ in range(50)}
    assert draws == {1}  # a tiny top_p keeps the best id
    with pytest.raises(ValueError, match="allows no token"):
        gm.sample(logits, np.zeros(5, dtype=bool), 1.0, 0.9, 20, rng)


# --------------------------------------------------------------------------------------- primer
def _events(rows):
    return [TOK.row_to_event(r.tolist()) for r in rows[1:]]


@pytest.mark.parametrize("key, sig", [("Am", (0, 1)), ("F#m", (3, 1)), ("C", (0, 0)), ("Bbm", (-5, 1))])
def test_primer_meta_layout(key, sig):
    p = gm.build_primer(TOK, key=key, bpm=138, chords=PROG, bars=4, mode="meta")
    assert p.rows[0].tolist() == [TOK.bos_id] + [TOK.pad_id] * 7
    ev = _events(p.rows)
    assert ev[0] == ("time_signature", [0, 0, 0, 3, 1])  # 4/4 stored as nn-1, dd-1
    assert ev[1] == ("key_signature", [0, 0, 0, sig[0] + 7, sig[1]])  # the real key, minor stays minor
    assert ev[2] == ("set_tempo", [0, 0, 0, 138])
    assert ev[3] == ("patch_change", [0, 0, gm.LEAD_TRACK, gm.LEAD_CHANNEL, 80])  # GM 81 is byte 80
    assert len(ev) == 4 and p.origin == 0 and p.scheduled == []


def test_primer_chords_pad_and_schedule():
    p = gm.build_primer(TOK, key="Am", bpm=140, chords=PROG, bars=4, mode="chords")
    ev = _events(p.rows)
    assert ("patch_change", [0, 0, gm.PAD_TRACK, gm.PAD_CHANNEL, gm.PAD_PROGRAM - 1]) in ev
    pad = [e for e in ev if e[0] == "note"]
    assert [e[1][4] for e in pad] == [57, 60, 64]  # A minor triad, root in octave 3
    assert all(e[1][2:4] == [gm.PAD_TRACK, gm.PAD_CHANNEL] and e[1][6] == 64 for e in pad)  # one bar long
    assert [t for t, _ in p.scheduled] == [64] * 3 + [128] * 3 + [192] * 3  # bars 1-3 (F, C, G)
    assert [TOK.row_to_event(r)[1][4] for _, r in p.scheduled[:3]] == [53, 57, 60]  # F major
    assert not any(TOK.row_to_event(r.tolist()) and TOK.row_to_event(r.tolist())[0] == "note"
                   and TOK.row_to_event(r.tolist())[1][3] == gm.LEAD_CHANNEL for r in p.rows[1:])


def test_primer_previous_melody():
    prev = Melody(notes=(Note(0, 69, 1), Note(1.5, 72, 0.5), Note(6, 76, 2)), bpm=140, key="Am", bars=2)
    p = gm.build_primer(TOK, key="Am", bpm=140, chords=PROG, bars=2, mode="previous", previous=prev)
    assert p.origin == 2 * 64
    times = gm.event_times(TOK, p.rows)
    lead = [(int(t), TOK.row_to_event(r.tolist())[1][4]) for r, t in zip(p.rows, times)
            if t >= 0 and TOK.row_to_event(r.tolist())[0] == "note" and TOK.row_to_event(r.tolist())[1][3] == gm.LEAD_CHANNEL]
    assert lead == [(0, 69), (24, 72), (96, 76)]
    assert int(times.max()) == p.origin  # the first new bar's chord closes the primer
    with pytest.raises(ValueError, match="previous melody"):
        gm.build_primer(TOK, key="Am", bpm=140, chords=PROG, bars=2, mode="previous")


# ----------------------------------------------------------------------------------- generation
def test_generated_rows_are_valid_events_of_the_allowed_types(model):
    primer = gm.build_primer(model.tokenizer, key="Am", bpm=140, chords=PROG, bars=4, mode="chords")
    allowed = ("note", "patch_change", "control_change")
    for seed in range(3):
        report = {}
        rows = gm.generate_tokens(TorchStepper(model), model.tokenizer, primer.rows, max_events=12, rng=np.random.default_rng(seed),
                                  allowed_events=allowed, report=report)
        assert rows.shape[1] == 8 and rows.dtype == np.int64
        assert np.array_equal(rows[: len(primer.rows)], primer.rows)
        new = rows[len(primer.rows):]
        assert len(new) == report["events"] <= 12
        for r in new:
            ev = model.tokenizer.row_to_event(r.tolist())
            assert ev is not None and ev[0] in allowed
            assert (r[1 + len(model.tokenizer.events[ev[0]]):] == model.tokenizer.pad_id).all()


def test_bar_stopping_and_scheduled_pads(model):
    tok = model.tokenizer
    primer = gm.build_primer(tok, key="Am", bpm=140, chords=PROG, bars=2, mode="chords")
    report = {}
    rows = gm.generate_tokens(BiasedStepper(TorchStepper(model), tok), tok, primer, max_events=500, rng=np.random.default_rng(1),
                              constraints={"track": [1], "channel": [0]}, bars=2, report=report)
    assert report["stopped_by"] == "bars" and report["events"] > 0
    times = gm.event_times(tok, rows)
    new = slice(len(primer.rows), None)
    assert (times[new] < 2 * 64).all() and (times[new] >= 0).all()
    pads = [(int(t), r) for r, t in zip(rows[new], times[new]) if tok.row_to_event(r.tolist())[1][3] == gm.PAD_CHANNEL]
    assert report["scheduled_fed"] == len(pads) in (0, 3)
    assert all(t == 64 for t, _ in pads)  # bar 1's F chord, fed at the bar line
    sampled = [r for r in rows[new] if tok.row_to_event(r.tolist())[1][3] != gm.PAD_CHANNEL]
    assert all(tok.row_to_event(r.tolist())[1][2:4] == [1, 0] for r in sampled)


def test_generator_melody_stops_at_bars(model_dir, monkeypatch):
    g = gm.MidiModelGenerator(model=str(model_dir))
    inner = g._stepper_now
    monkeypatch.setattr(g, "_stepper_now", lambda: BiasedStepper(inner(), g.tokenizer))
    m = g.generate("F#m", 132.0, ["F#m", "D", "A", "E"], 2, seed=3)
    assert isinstance(m, Melody) and m.key == "F#m" and m.bpm == 132.0 and m.bars == 2 and m.program == 81
    assert m.attributes["stopped_by"] == "bars" and m.attributes["backend"] == "torch"
    assert m.attributes["events_generated"] > 0 and m.attributes["seconds"] >= 0
    assert len(m.notes) > 0
    assert all(0 <= n.start < 8 and n.end <= 8 + 1e-9 for n in m.notes)
    assert list(m.notes) == sorted(m.notes)
    assert all(a.end <= b.start + 1e-9 and a.start < b.start for a, b in zip(m.notes, m.notes[1:]))  # monophonic
    assert [(c.symbol, c.start, c.duration) for c in m.chords] == [("F#m", 0.0, 4.0), ("D", 4.0, 4.0)]


def test_determinism_per_seed(model):
    tok = model.tokenizer
    primer = gm.build_primer(tok, key="Am", bpm=140, chords=PROG, bars=4, mode="chords")

    def run(seed):
        return gm.generate_tokens(BiasedStepper(TorchStepper(model), tok), tok, primer, max_events=16,
                                  rng=np.random.default_rng(seed), bars=4)

    a, b, c = run(5), run(5), run(6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_registry_info_and_determinism(model_dir):
    g = get_generator("midi_model", model=str(model_dir), temperature=1.0, label="tiny")
    assert isinstance(g, Generator)
    assert g.info.name == "midi_model" and g.info.version == gm.GENERATOR_VERSION
    assert g.info.checkpoint == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert g.info.options["model"] == str(model_dir) and g.info.options["backend"] == "torch"
    g2 = get_generator("midi_model", model=str(model_dir))
    assert g2._model is g._model  # cached per (folder, backend)
    m1, m2 = g.generate("Am", 140, PROG, 2, 11), g.generate("Am", 140, PROG, 2, 11)
    assert m1 == m2 and m1.key == "Am" and m1.bars == 2
    assert m1.attributes["stopped_by"] in ("bars", "eos", "max_events")


def test_missing_model_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-midi-model"
    with pytest.raises(FileNotFoundError, match="no-such-midi-model"):
        gm.MidiModelGenerator(model=str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        gm.MidiModelGenerator(model=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="backend"):
        gm.MidiModelGenerator(model=str(missing), backend="tf")


def _reference_greedy(model, tok, primer_rows, max_events, allowed_events, allow_eos):
    """Greedy decoding recomputing MidiModel.forward / forward_token from scratch (no caches)."""
    seq = [list(map(int, r)) for r in primer_rows]
    with torch.no_grad():
        for _ in range(max_events):
            hidden = model.forward(torch.tensor([seq]))[:, -1]
            row: list[int] = []
            for k in range(8):
                x = torch.tensor([row]) if row else None
                logits = model.forward_token(hidden, x)[0, -1].numpy()
                if k == 0:
                    mask = gm.allowed_ids(tok, 0, None, allowed_events).copy()
                    mask[tok.eos_id] = allow_eos
                else:
                    name = tok.id_events[row[0]]
                    if k > len(tok.events[name]):
                        break
                    mask = gm.allowed_ids(tok, k, name)
                z = np.where(mask, logits, -np.inf)
                row.append(int(np.argmax(z)))
                if k == 0 and row[0] == tok.eos_id:
                    return np.asarray(seq, dtype=np.int64)
            seq.append(row + [tok.pad_id] * (8 - len(row)))
    return np.asarray(seq, dtype=np.int64)


@pytest.mark.parametrize("allowed, mode, allow_eos", [(("note",), "chords", False), (("note",), "meta", True),
                                                      (("note", "patch_change", "control_change", "set_tempo"), "meta", False)])
def test_kv_cache_loop_equals_recomputation(model, allowed, mode, allow_eos):
    tok = model.tokenizer
    primer = gm.build_primer(tok, key="Am", bpm=140, chords=PROG, bars=4, mode=mode).rows
    fast = gm.generate_tokens(TorchStepper(model), tok, primer, max_events=10, temperature=0, rng=np.random.default_rng(0),
                              allowed_events=allowed, allow_eos=allow_eos)
    slow = _reference_greedy(model, tok, primer, 10, allowed, allow_eos)
    if not allow_eos:
        assert len(fast) == len(primer) + 10
    assert np.array_equal(fast, slow)


# ------------------------------------------------------------------------------------------ onnx
def test_onnx_backend(model, model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    mo = pytest.importorskip("trance_assets.models.midi_model_onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks the exported model files"):
        gm.MidiModelGenerator(model=str(model_dir), backend="onnx", onnx_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="onnx_dir"):
        gm.MidiModelGenerator(model=str(model_dir), backend="onnx")
    out = tmp_path / "onnx"
    mo.export_onnx(model, out)
    g = gm.MidiModelGenerator(backend="onnx", onnx_dir=str(out), temperature=0)
    gt = gm.MidiModelGenerator(model=str(model_dir), backend="torch", temperature=0)
    assert g.info.checkpoint and g.info.checkpoint != gt.info.checkpoint
    m_onnx, m_torch = g.generate("Am", 140, PROG, 2, 0), gt.generate("Am", 140, PROG, 2, 0)
    assert m_onnx.attributes["backend"] == "onnx"
    assert m_onnx == m_torch  # greedy: same melody on both runtimes
    tok = model.tokenizer
    primer = gm.build_primer(tok, key="Am", bpm=140, chords=PROG, bars=4, mode="chords")
    kw = dict(max_events=8, temperature=0, allow_eos=False, rng=np.random.default_rng(0))
    a = gm.generate_tokens(mo.OnnxStepper(out), tok, primer, **kw)
    b = gm.generate_tokens(TorchStepper(model), tok, primer, **kw)
    assert len(a) >= len(primer.rows) + 8 and np.array_equal(a, b)  # (scheduled pads fed too)


class FullLogitsStepper:
    """TorchStepper without `supports_rows`: the generation loop asks it for the full logits."""

    def __init__(self, model):
        self._s = TorchStepper(model)
        self.hidden_size, self.vocab_size = self._s.hidden_size, self._s.vocab_size

    def start(self, batch):
        self._s.start(batch)

    def net_step(self, x):
        return self._s.net_step(x)

    def token_start(self, hidden):
        return self._s.token_start(hidden)

    def token_next(self, ids):
        return self._s.token_next(ids)


def test_rows_restriction_gives_the_same_logits_and_the_same_melody(model):
    tok = model.tokenizer
    s = TorchStepper(model)
    s.start(1)
    hidden = s.net_step(np.asarray([[[tok.bos_id] + [0] * 7]], dtype=np.int64))
    full = s.token_start(hidden)
    s.token_start(hidden)  # a fresh token cache again
    part = s.token_start(hidden, rows=slice(153, 2201))
    np.testing.assert_allclose(part, full[:, 153:2201], rtol=1e-5, atol=1e-5)
    primer = gm.build_primer(tok, key="Am", bpm=140, chords=["Am", "F"], bars=2, mode="chords")
    runs = []
    for stepper in (TorchStepper(model), FullLogitsStepper(model)):
        runs.append(gm.generate_tokens(stepper, tok, primer, max_events=24, rng=np.random.default_rng(5)))
    np.testing.assert_array_equal(runs[0], runs[1])
