"""IncrementalInputs, batched Melody RNN sampling, and the rule-constrained "hybrid" backend.

Independent references used here (written from the docstrings, not from the code under test):
a naive per-position attention_rnn feature builder (`_ref_input`), a hand-rolled greedy decode
loop that re-runs the model on the full prefix each step, and the pre-batching single-sequence
sampler (`melody_rnn.sample` fed by `events_to_input`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trance_assets.evaluation.metrics as metrics_mod  # noqa: E402
import trance_assets.generation.hybrid as hybrid_mod  # noqa: E402
from trance_assets.evaluation.metrics import score_melody  # noqa: E402
from trance_assets.generation.base import available, get_generator  # noqa: E402
from trance_assets.generation.hybrid import HybridGenerator, melody_to_events, to_c_frame  # noqa: E402
from trance_assets.generation.models import (  # noqa: E402
    _torch_generator,
    c_frame_chord_rows,
    events_to_notes,
    sample_rnn_events,
)
from trance_assets.models.melody_encoding import (  # noqa: E402
    NO_EVENT,
    NOTE_OFF,
    KeyMelodyEncoderDecoder,
    best_major_key,
    chord_one_hot,
)
from trance_assets.models.melody_rnn import MelodyRNN, MelodyRNNConfig, sample  # noqa: E402
from trance_assets.models.musicvae import MusicVAE, MusicVAEConfig, classes_to_events  # noqa: E402
from trance_assets.music.melody import Melody, Note  # noqa: E402
from trance_assets.music.quality import QualityThresholds, check_melody  # noqa: E402
from trance_assets.music.rules import generate as rules_generate  # noqa: E402
from trance_assets.music.theory import parse_chord, parse_key  # noqa: E402

H, O = NO_EVENT, NOTE_OFF
PROG = ["Am", "F", "C", "G"]
ENC = KeyMelodyEncoderDecoder()


pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---- helpers ------------------------------------------------------------------------------------

_MAJOR = (0, 2, 4, 5, 7, 9, 11)


def _key_hot(pcs: list[int]) -> np.ndarray:
    """Multi-hot of the major keys whose scale holds the most of the given pitch classes."""
    counts = np.array([sum(1 for pc in pcs if (pc - k) % 12 in _MAJOR) for k in range(12)])
    return (counts == counts.max()).astype(np.float32)


def _ref_input(ev: list[int], p: int) -> np.ndarray:
    """attention_rnn input for position p, rebuilt naively from the class docstring."""
    row = np.zeros(74, dtype=np.float32)
    prefix = ev[: p + 1]
    cur = None
    attack = 0.0
    last3: list[int] = []
    direction = 0.0
    pcs = []
    for e in prefix:
        if e >= 0:
            cur = e
            attack = 1.0
            if last3 and e != last3[-1]:
                direction = 1.0 if e > last3[-1] else -1.0
            last3 = [x for x in last3 if x != e] + [e]
            last3 = last3[-3:]
            pcs.append(e % 12)
        elif e == NOTE_OFF:
            cur = None
        else:
            attack = 0.0
    if cur is None:
        row[37] = 1
    else:
        row[cur - 48] = 1
        row[36] = 1
    row[38] = attack
    row[39] = direction
    row[40] = float(p >= 16 and ev[p] == ev[p - 16])
    row[41] = float(p >= 32 and ev[p] == ev[p - 32])
    n = p + 1
    for i in range(7):
        row[42 + i] = 1.0 if (n >> i) & 1 else -1.0
    row[49] = float(n % 16 == 0)
    row[50:62] = _key_hot(pcs)
    row[62:74] = _key_hot([x % 12 for x in last3])
    return row


def _random_events(rng: np.random.Generator, n: int) -> list[int]:
    """A valid squashed sequence with plenty of repeats (so lookback features fire)."""
    out: list[int] = []
    for i in range(n):
        r = rng.random()
        if i >= 16 and r < 0.2:
            out.append(out[i - 16])
        elif i >= 32 and r < 0.3:
            out.append(out[i - 32])
        elif r < 0.55:
            out.append(H)
        elif r < 0.65:
            out.append(O)
        else:
            out.append(int(rng.integers(48, 84)))
    return out


def _decode_label(label: int, ev: list[int]) -> int:
    if label < 36:
        return 48 + label
    if label == 36:
        return H
    if label == 37:
        return O
    d = 16 if label == 38 else 32
    return ev[-d] if len(ev) >= d else H


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_event(e: int) -> bool:
    return e in (H, O) or 48 <= e < 84


# ---- IncrementalInputs --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 17, 33, 70, 130])
def test_incremental_push_matches_encode_and_reference(n):
    rng = np.random.default_rng(1000 + n)
    for _ in range(3):
        ev = _random_events(rng, n)
        state = ENC.incremental()
        rows = [state.push(e) for e in ev]
        assert all(r.shape == (ENC.input_size,) and r.dtype == np.float32 for r in rows)
        enc_inputs, _ = ENC.encode(ev)
        assert enc_inputs.shape == (n - 1, ENC.input_size)
        for p in range(n):
            np.testing.assert_array_equal(rows[p], _ref_input(ev, p), err_msg=f"p={p} ev={ev[:p + 1]}")
            np.testing.assert_array_equal(rows[p], ENC.events_to_input(ev, p))
            if p < n - 1:
                np.testing.assert_array_equal(rows[p], enc_inputs[p])


def test_incremental_push_fills_given_row_and_is_order_dependent_state():
    ev = [60, H, O, 62, 62, H, 55]
    state = ENC.incremental()
    buf = np.full((len(ev), ENC.input_size), 7.0, dtype=np.float32)
    for p, e in enumerate(ev):
        buf[p] = 0.0
        out = state.push(e, buf[p])
        assert out is buf[p] or np.shares_memory(out, buf[p])
    np.testing.assert_array_equal(buf, np.stack([_ref_input(ev, p) for p in range(len(ev))]))
    assert state.events == ev


def test_incremental_hand_worked_attack_and_direction():
    st = ENC.incremental()
    r0 = st.push(60)
    assert r0[60 - 48] == 1 and r0[36] == 1 and r0[38] == 1 and r0[39] == 0
    r1 = st.push(O)  # [60, NOTE_OFF]: silence, attack stays 1 (upstream)
    assert r1[:36].sum() == 0 and r1[37] == 1 and r1[38] == 1
    r2 = st.push(H)
    assert r2[38] == 0 and r2[37] == 1
    r3 = st.push(55)
    assert r3[39] == -1 and r3[55 - 48] == 1
    r4 = st.push(67)
    assert r4[39] == 1
    # counter of the next step (n = 5 -> bits 0 and 2) and no bar flag
    assert list(r4[42:49]) == [1, -1, 1, -1, -1, -1, -1] and r4[49] == 0


@pytest.mark.parametrize("bad", [90, -3, 47, 84, 0, 127])
def test_incremental_push_rejects_out_of_range(bad):
    st = ENC.incremental()
    st.push(60)
    with pytest.raises(ValueError, match=str(bad)):
        st.push(bad)
    with pytest.raises(ValueError, match=str(bad)):
        ENC.incremental().push(bad)


# ---- sample_rnn_events --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rnn_plain():
    torch.manual_seed(11)
    m = MelodyRNN(MelodyRNNConfig(layers=(8, 8), attn_length=4))
    m.eval()
    return m


@pytest.fixture(scope="module")
def rnn_chord():
    torch.manual_seed(12)
    m = MelodyRNN(MelodyRNNConfig(layers=(8, 8), attn_length=4, chord_dim=25))
    m.eval()
    return m


def _rows(model, key="Am", bars=4, prog=PROG):
    k = parse_key(key)
    frame = k.tonic if k.mode == "major" else (k.tonic + 3) % 12
    return c_frame_chord_rows(model, [parse_chord(s) for s in prog], bars, frame)


@pytest.mark.parametrize("which", ["rnn_plain", "rnn_chord"])
def test_sample_rnn_events_basic_properties(which, request):
    model = request.getfixturevalue(which)
    rows = _rows(model, bars=3)
    assert (rows is None) == (which == "rnn_plain")
    total = 48
    for primer in ([60], [69, H, H, O, 64], [60, H, 62, H, O, H, 64, 65, H, 67, O, H, 72, H, H, H, 71]):
        out = sample_rnn_events(model, primer, total, rows, 1.0, [3, 4, 5])
        assert len(out) == 3
        for ev in out:
            assert len(ev) == total
            assert ev[: len(primer)] == primer
            assert all(isinstance(e, int) and _valid_event(e) for e in ev)
        again = sample_rnn_events(model, primer, total, rows, 1.0, [3, 4, 5])
        assert again == out
    assert model.training is False


def test_sample_rnn_events_restores_training_mode(rnn_plain):
    rnn_plain.train()
    try:
        sample_rnn_events(rnn_plain, [60], 20, None, 1.0, [0])
        assert rnn_plain.training is True
    finally:
        rnn_plain.eval()


@pytest.mark.parametrize("which", ["rnn_plain", "rnn_chord"])
def test_sample_rnn_events_batch_invariance(which, request):
    model = request.getfixturevalue(which)
    rows = _rows(model, bars=4)
    primer = [69, H, 72, O]
    for s, others in ((7, (8, 9)), (123456, (0, 1)), (2, (2, 99))):
        alone = sample_rnn_events(model, primer, 64, rows, 1.0, [s])[0]
        batched = sample_rnn_events(model, primer, 64, rows, 1.0, [s, *others])
        assert batched[0] == alone
        reordered = sample_rnn_events(model, primer, 64, rows, 1.0, [others[0], s, others[1]])
        assert reordered[1] == alone
        assert reordered[0] == batched[1]


def test_sample_rnn_events_different_seeds_differ(rnn_plain):
    out = sample_rnn_events(rnn_plain, [60], 64, None, 1.0, [1, 2, 3, 4])
    assert len({tuple(e) for e in out}) > 1


def test_sample_rnn_events_primer_longer_than_total(rnn_chord):
    rows = _rows(rnn_chord, bars=1)
    primer = [60, H, 62, H, O] * 5  # 25 events
    out = sample_rnn_events(rnn_chord, primer, 16, rows, 1.0, [1, 2])
    assert out == [primer[:16], primer[:16]]
    out = sample_rnn_events(rnn_chord, primer[:16], 16, rows, 1.0, [1])
    assert out == [primer[:16]]
    # one event short: exactly one sampled event
    out = sample_rnn_events(rnn_chord, primer[:15], 16, rows, 1.0, [1])[0]
    assert len(out) == 16 and out[:15] == primer[:15] and _valid_event(out[15])


def test_sample_rnn_events_empty_primer(rnn_plain):
    with pytest.raises(ValueError):
        sample_rnn_events(rnn_plain, [], 16, None, 1.0, [1])


def _greedy_reference(model, primer, total, rows, n_steps):
    """Argmax decode, re-running the model on the whole encoded prefix every step."""
    ev = list(primer)
    margins = []
    for _ in range(n_steps):
        xs = []
        for p in range(len(ev)):
            x = ENC.events_to_input(ev, p)
            np.testing.assert_array_equal(x, _ref_input(ev, p))
            if rows is not None:
                x = np.concatenate([x, rows[(p + 1) // 16]])
            xs.append(x)
        logits, _ = model(torch.from_numpy(np.stack(xs).astype(np.float32))[None])
        last = logits[0, -1]
        top2 = torch.topk(last, 2).values
        margins.append(float(top2[0] - top2[1]))
        ev.append(_decode_label(int(torch.argmax(last)), ev))
    return ev, margins


@pytest.mark.parametrize("which", ["rnn_plain", "rnn_chord"])
def test_sample_rnn_events_low_temperature_equals_greedy_reference(which, request):
    import copy

    # a sharpened copy: the tiny random model's logits are nearly flat, so scale the output
    # layer until the argmax is unambiguous (the sampler and the reference share the weights)
    model = copy.deepcopy(request.getfixturevalue(which))
    with torch.no_grad():
        model.logits.weight.mul_(1000.0)
        model.logits.bias.mul_(1000.0)
    bars = 3
    total = bars * 16
    # chords changing every bar so that a wrong bar index changes the input
    rows = _rows(model, key="C", bars=bars, prog=["C", "Am", "F#"])
    primer = [60, H, H, 64, O, 67, H, 72, H, H, O, H, 71]
    n_steps = 35  # predicts steps 13..47: the chord bar index matters at p = 15 and p = 31
    with torch.no_grad():
        ref, margins = _greedy_reference(model, primer, total, rows, n_steps)
    # argmax must be unambiguous for temperature 1e-4 sampling to equal it
    assert min(margins) > 0.05, margins
    for seeds in ([0], [5, 17]):
        got = sample_rnn_events(model, primer, total, rows, 1e-4, seeds)
        for ev in got:
            assert ev[: len(ref)] == ref


@pytest.mark.parametrize("which", ["rnn_plain", "rnn_chord"])
def test_sample_rnn_events_matches_single_sequence_sampler(which, request):
    """seeds=[s] reproduces the pre-batching path: melody_rnn.sample fed by events_to_input."""
    model = request.getfixturevalue(which)
    bars = 2
    total = bars * 16
    rows = _rows(model, key="Am", bars=bars)
    for seed in (0, 7, 99):
        events = [69]

        def input_at(p):
            x = ENC.events_to_input(events, p)
            if rows is not None:
                x = np.concatenate([x, rows[min(p + 1, total - 1) // 16]])
            return x.astype(np.float32)

        def next_input(labels):
            events.append(ENC.class_to_event(labels[-1], events))
            return input_at(len(events) - 1)

        labels = sample(model, torch.from_numpy(input_at(0)).reshape(1, -1), next_input, total - 1,
                        temperature=1.0, generator=_torch_generator(seed))
        events.append(ENC.class_to_event(labels[-1], events))
        got = sample_rnn_events(model, [69], total, rows, 1.0, [seed])[0]
        assert got == events


def test_c_frame_chord_rows(rnn_plain, rnn_chord):
    chords = [parse_chord(s) for s in ["A", "F#m", "D", "E"]]
    assert c_frame_chord_rows(rnn_plain, chords, 4, 9) is None
    rows = c_frame_chord_rows(rnn_chord, chords, 6, 9)  # A major frame -> C
    assert len(rows) == 6
    # A -> C major (1 + 0), F#m -> Am (13 + 9), D -> F (1 + 5), E -> G (1 + 7), then cycling
    expected = [1, 22, 6, 8, 1, 22]
    assert [int(np.argmax(r)) for r in rows] == expected
    for r, s in zip(rows, ["A", "F#m", "D", "E", "A", "F#m"]):
        np.testing.assert_array_equal(r, chord_one_hot(s, transpose=-9))


# ---- melody_to_events / to_c_frame --------------------------------------------------------------


def _mel(notes, key="C", bars=1):
    return Melody(notes=tuple(notes), bpm=140.0, key=key, bars=bars)


def test_melody_to_events_onsets_offs_and_legato():
    m = _mel([
        Note(0.0, 60, 1.0),   # steps 0-4, rest follows -> NOTE_OFF at 4
        Note(2.0, 62, 0.5),   # steps 8-10, legato into the next
        Note(2.5, 64, 1.0),   # steps 10-14, rest -> NOTE_OFF at 14
        Note(3.75, 65, 0.25),  # steps 15-16: ends at the end -> no NOTE_OFF
    ])
    ev = melody_to_events(m, 16)
    expected = [H] * 16
    expected[0], expected[4] = 60, O
    expected[8], expected[10], expected[14], expected[15] = 62, 64, O, 65
    assert ev == expected


def test_melody_to_events_drops_notes_beyond_steps_and_keeps_long_notes():
    m = _mel([Note(0.0, 72, 0.25), Note(3.0, 67, 3.0), Note(4.0, 69, 1.0), Note(6.0, 71, 1.0)], bars=2)
    ev = melody_to_events(m, 16)
    expected = [H] * 16
    expected[0], expected[1], expected[12] = 72, O, 67  # 67 sounds past the end: no NOTE_OFF
    assert ev == expected
    assert len(melody_to_events(m, 32)) == 32
    ev32 = melody_to_events(m, 32)
    assert ev32[12] == 67 and ev32[16] == 69 and ev32[20] == O and ev32[24] == 71 and ev32[28] == O
    assert melody_to_events(_mel([]), 8) == [H] * 8


def test_melody_to_events_overlap_later_onset_wins():
    m = _mel([Note(0.0, 60, 2.0), Note(1.0, 64, 0.5)])
    ev = melody_to_events(m, 16)
    expected = [H] * 16
    expected[0], expected[4], expected[6] = 60, 64, O
    assert ev == expected


def test_to_c_frame():
    ev = [69, H, O, 83, 40, 30, 100, H]
    # frame 9 (A major): nearest shift of 9 is -3, so +3 into C, folded into [48, 84)
    assert to_c_frame(ev, 9) == [72, H, O, 74, 55, 57, 79, H]
    assert to_c_frame([60, 48, 83, 47, 84, H, O], 0) == [60, 48, 83, 59, 72, H, O]
    assert to_c_frame([66, 65], 6) == [60, 59]  # F#: shift 6 -> -6
    assert to_c_frame([65, 70], 5) == [60, 65]  # F: shift 5 -> -5
    assert to_c_frame([67, 71], 7) == [72, 76]  # G: nearest shift -5 -> +5
    for frame in range(12):
        out = to_c_frame(list(range(20, 110)), frame)
        assert all(48 <= e < 84 for e in out)
        assert all((o - i) % 12 == (-frame) % 12 for i, o in zip(range(20, 110), out))


# ---- HybridGenerator ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    torch.manual_seed(21)
    rnn = tmp_path_factory.mktemp("hy_rnn")
    MelodyRNN(MelodyRNNConfig(layers=(8, 8), attn_length=4, chord_dim=25)).save(rnn)
    torch.manual_seed(22)
    vae = tmp_path_factory.mktemp("hy_vae")
    MusicVAE(MusicVAEConfig(enc_sizes=(16,), conductor_sizes=(16,), dec_sizes=(16,), z_size=8)).save(vae)
    return rnn, vae


def _gen(ckpts, **kw):
    rnn, vae = ckpts
    opts = {"melody_rnn": str(rnn), "musicvae": str(vae), "rnn_candidates": 2, "vae_samples": 2, "vae_variations": 2}
    opts.update(kw)
    return get_generator("hybrid", **opts)


def _sources(m):
    return [r["source"] for r in m.attributes["candidates"]]


def _expected_winner(table, rules_compete=False):
    """The selection rule, written from the module docstring: the valid model candidate with the
    highest composite (ties: the earlier row); the rule melody only competes with rules_compete,
    and is the answer (valid or not) when no model candidate passes."""
    pool = [r for r in table if r["valid"] and (r["source"] != "rules" or rules_compete)]
    if not pool:
        return next(r for r in table if r["source"] == "rules")
    best = max(r["composite"] for r in pool)
    return next(r for r in pool if r["composite"] == best)  # the first of the best


def _check_choice(m, tier, reference_pc=None, rules_compete=False):
    a = m.attributes
    table = a["candidates"]
    assert table[0]["source"] == "rules", "the rule melody must always take part"
    for r in table:
        assert set(r) >= {"source", "valid", "composite", "reason"}
        assert (r["composite"] is not None) == r["valid"]
        assert (r["reason"] == "") == r["valid"]
    valid = [r for r in table if r["valid"]]
    assert valid, "some candidate must pass the tier's rules"
    model_valid = [r for r in valid if r["source"] != "rules"]
    win = _expected_winner(table, rules_compete)
    assert a["winner"] == win["source"]
    assert a["winner_composite"] == win["composite"]
    assert a["valid"] is win["valid"] is True
    if not rules_compete:
        if model_valid:
            assert a["winner"] != "rules"
            assert a["winner_composite"] == max(r["composite"] for r in model_valid)
        else:
            assert a["winner"] == "rules"
    else:
        assert a["winner_composite"] == max(r["composite"] for r in valid)
    assert a["valid_candidates"] == len(valid)
    assert a["model_candidates_valid"] == len(model_valid)
    assert a["rules_fallback"] == (not model_valid)
    # the returned notes re-score to the winner's composite and pass the tier's rules
    again = Melody(notes=m.notes, bpm=m.bpm, key=m.key, chords=m.chords, bars=m.bars)
    assert score_melody(again, reference_pc)["composite"] == pytest.approx(win["composite"], abs=1e-12)
    assert check_melody(again, QualityThresholds.for_tier(tier)).passed


def test_available_includes_hybrid():
    assert "hybrid" in available()
    assert {"rules", "melody_rnn", "musicvae"} <= set(available())


def test_hybrid_info(ckpts):
    rnn, vae = ckpts
    g = _gen(ckpts)
    assert isinstance(g, HybridGenerator)
    assert g.info.name == "hybrid"
    assert g.info.version.startswith("hybrid-")
    assert _sha256(rnn / "model.safetensors") in g.info.checkpoint
    assert _sha256(vae / "model.safetensors") in g.info.checkpoint
    only = _gen(ckpts, musicvae=None)
    assert _sha256(rnn / "model.safetensors") in only.info.checkpoint
    assert _sha256(vae / "model.safetensors") not in only.info.checkpoint


@pytest.mark.parametrize("tier", [1, 2, 3])
def test_hybrid_generate_full(ckpts, tier):
    g = _gen(ckpts, quality_tier=tier)
    m = g.generate("Am", 140.0, PROG, 16, seed=3)
    assert isinstance(m, Melody)
    assert m.key == "Am" and m.bpm == 140.0 and m.bars == 16
    assert [c.symbol for c in m.chords] == [PROG[b % 4] for b in range(16)]
    srcs = _sources(m)
    assert srcs[:5] == ["rules", "rnn:0", "rnn:1", "vae:0", "vae:1"]
    assert len(srcs) == 7
    assert all(s.startswith(f"variation:{i}<") for i, s in enumerate(srcs[5:]))
    base = srcs[5].split("<", 1)[1]
    assert base in srcs[:5] and all(s.split("<", 1)[1] == base for s in srcs[5:])
    # the variations vary the best valid model candidate among the first five (rules when none)
    assert base == _expected_winner(m.attributes["candidates"][:5])["source"]
    _check_choice(m, tier)
    a = m.attributes
    assert a["generator"] == "hybrid" and a["seed"] == 3 and a["progression"] == PROG
    assert a["checkpoint"] == g.info.checkpoint and a["generator_version"] == g.info.version
    # the rules row is the rule engine's melody for the same prompt
    layout = rules_generate(parse_key("Am"), 140.0, PROG, 16, 3)
    rules_row = a["candidates"][0]
    assert rules_row["notes"] == len(layout.notes)
    assert rules_row["valid"] == check_melody(layout, QualityThresholds.for_tier(tier)).passed
    if rules_row["valid"]:
        assert rules_row["composite"] == pytest.approx(score_melody(layout)["composite"], abs=1e-12)


def test_hybrid_deterministic(ckpts):
    g = _gen(ckpts)
    a = g.generate("F#m", 138, ["F#m", "D", "A", "E"], 8, seed=5)
    b = g.generate("F#m", 138, ["F#m", "D", "A", "E"], 8, seed=5)
    assert a.notes == b.notes and a.attributes == b.attributes
    g2 = _gen(ckpts)  # a fresh instance from the same weights
    c = g2.generate("F#m", 138, ["F#m", "D", "A", "E"], 8, seed=5)
    assert c.notes == a.notes and c.attributes == a.attributes


def test_hybrid_reference_pc(ckpts):
    ref = [1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1]
    g = _gen(ckpts, reference_pc=ref, quality_tier=3)
    m = g.generate("C", 140, ["C", "G", "Am", "F"], 8, seed=2)
    _check_choice(m, 3, reference_pc=ref)


def test_hybrid_only_rnn_and_only_vae(ckpts):
    rnn, vae = ckpts
    m = get_generator("hybrid", melody_rnn=str(rnn), rnn_candidates=3, quality_tier=3).generate("Am", 140, PROG, 4, seed=1)
    assert _sources(m) == ["rules", "rnn:0", "rnn:1", "rnn:2"]
    _check_choice(m, 3)
    m = get_generator("hybrid", musicvae=str(vae), vae_samples=1, vae_variations=2, quality_tier=3).generate("Am", 140, PROG, 4, seed=1)
    srcs = _sources(m)
    assert srcs[:2] == ["rules", "vae:0"] and len(srcs) == 4
    assert srcs[2].startswith("variation:0<") and srcs[3].startswith("variation:1<")
    _check_choice(m, 3)


def test_hybrid_zero_counts(ckpts):
    m = _gen(ckpts, rnn_candidates=0, vae_samples=0, vae_variations=0).generate("Am", 140, PROG, 4, seed=1)
    assert _sources(m) == ["rules"]
    assert m.attributes["winner"] == "rules" and m.attributes["rules_fallback"] is True
    _check_choice(m, 2)
    m = _gen(ckpts, rnn_candidates=1, vae_samples=0, vae_variations=0).generate("Am", 140, PROG, 4, seed=1)
    assert _sources(m) == ["rules", "rnn:0"]
    m = _gen(ckpts, rnn_candidates=0, vae_samples=0, vae_variations=1).generate("Am", 140, PROG, 4, seed=1)
    assert _sources(m) == ["rules", "variation:0<rules"]


def test_hybrid_tier1_fallback_consistent(ckpts):
    g = _gen(ckpts, quality_tier=1)
    for seed in (0, 3):
        m = g.generate("Em", 140, ["Em", "C", "G", "D"], 8, seed=seed)
        _check_choice(m, 1)
        a = m.attributes
        if a["rules_fallback"]:
            assert a["winner"] == "rules" and a["model_candidates_valid"] == 0
        else:
            assert a["winner"] != "rules" and a["model_candidates_valid"] > 0


def _cand(m) -> str:
    """The candidate a melody seen by check_melody / score_melody is: model candidates carry their
    ``source``; the rule melody is the rule engine's own output (``generator: rules``)."""
    a = m.attributes or {}
    return a.get("source") or ("rules" if a.get("generator") == "rules" else "")


def _force(monkeypatch, favourite, valid_all=True):
    """Every candidate passes (when valid_all) and only `favourite` scores high."""
    real_check = hybrid_mod.check_melody

    class _Pass:
        passed = True

        @staticmethod
        def reason():
            return ""

    def fake_check(m, t, **kw):
        return _Pass() if valid_all else real_check(m, t, **kw)

    def fake_score(m, ref=None):
        return {"composite": 1.0 if _cand(m) == favourite else 0.5}

    monkeypatch.setattr(hybrid_mod, "check_melody", fake_check)
    monkeypatch.setattr(metrics_mod, "score_melody", fake_score)


def test_hybrid_rnn_winner_is_primed_continuation(ckpts, monkeypatch):
    rnn, _ = ckpts
    _force(monkeypatch, "rnn:1")
    key, bars, seed, motif_bars = "A", 4, 9, 2
    prog = ["A", "F#m", "D", "E"]
    g = _gen(ckpts, motif_bars=motif_bars, vae_variations=0)
    m = g.generate(key, 140, prog, bars, seed=seed)
    assert m.attributes["winner"] == "rnn:1" and m.attributes["winner_composite"] == 1.0
    # independent recomputation of candidate rnn:1
    layout = rules_generate(parse_key(key), 140, prog, bars, seed)
    total = bars * 16
    motif = to_c_frame(melody_to_events(layout, total)[: motif_bars * 16], 9)
    model = MelodyRNN.load(rnn)
    rows = [chord_one_hot(prog[b % 4], transpose=-9) for b in range(bars)]
    ev = sample_rnn_events(model, motif, total, rows, 1.0, [seed * 1000 + 1])[0]
    assert ev[: len(motif)] == motif
    expected = events_to_notes(ev, transpose=-3)
    assert list(m.notes) == sorted(expected)
    # the motif's onsets and pitch classes survive the round trip
    lay_motif = [(n.start, n.pitch % 12) for n in layout.notes if n.start < motif_bars * 4]
    got_motif = [(n.start, n.pitch % 12) for n in m.notes if n.start < motif_bars * 4]
    assert got_motif == lay_motif


def test_hybrid_vae_winner_and_variation_base(ckpts, monkeypatch):
    _, vae = ckpts
    _force(monkeypatch, "vae:1")
    key, bars, seed = "Dm", 4, 4
    g = _gen(ckpts, vae_temperature=0.7)
    m = g.generate(key, 140, PROG, bars, seed=seed)
    assert m.attributes["winner"] == "vae:1"
    assert _sources(m)[5:] == ["variation:0<vae:1", "variation:1<vae:1"]
    # independent recomputation of candidate vae:1 (seed * 1000 + 500 + 1)
    model = MusicVAE.load(vae)
    model.eval()
    gen = _torch_generator(seed * 1000 + 501)
    z = torch.randn(1, 8, generator=gen)
    with torch.no_grad():
        classes = model.sample(z, greedy=False, temperature=0.7, generator=gen)
    ev = classes_to_events(classes[0])[: bars * 16]
    if any(e >= 0 for e in ev):
        d = (5 - best_major_key(ev)) % 12  # Dm -> F major frame (5)
        shift = d - 12 if d > 6 else d
    else:
        shift = 0
    assert list(m.notes) == sorted(events_to_notes(ev, transpose=shift))


def test_hybrid_tie_goes_to_earlier_and_fallback_when_models_invalid(ckpts, monkeypatch):
    real_check = hybrid_mod.check_melody

    def only_rules(m, t, **kw):
        r = real_check(m, t, **kw)
        if _cand(m) != "rules":
            class _Fail:
                passed = False

                @staticmethod
                def reason():
                    return "forced"
            return _Fail()
        return r

    monkeypatch.setattr(hybrid_mod, "check_melody", only_rules)
    m = _gen(ckpts).generate("Am", 140, PROG, 4, seed=1)
    a = m.attributes
    assert a["winner"] == "rules" and a["rules_fallback"] is True and a["model_candidates_valid"] == 0
    assert a["candidates"][0]["valid"] is True and a["valid"] is True  # the rule melody kept its real verdict
    assert a["winner_composite"] == a["candidates"][0]["composite"] is not None
    assert all(s.split("<")[-1] == "rules" for s in _sources(m)[5:])
    monkeypatch.undo()

    _force(monkeypatch, "nobody")  # every candidate valid with composite 0.5: the first model candidate wins
    m = _gen(ckpts).generate("Am", 140, PROG, 4, seed=1)
    assert m.attributes["winner"] == "rnn:0" and m.attributes["rules_fallback"] is False
    assert m.attributes["model_candidates_valid"] == 6
    assert _sources(m)[5:] == ["variation:0<rnn:0", "variation:1<rnn:0"]
    # with rules_compete the rule melody is a candidate like the others: it is the first row, so it wins
    m = _gen(ckpts, rules_compete=True).generate("Am", 140, PROG, 4, seed=1)
    assert m.attributes["winner"] == "rules" and m.attributes["rules_fallback"] is False
    assert m.attributes["model_candidates_valid"] == 6
    assert _sources(m)[5:] == ["variation:0<rules", "variation:1<rules"]
    layout = rules_generate(parse_key("Am"), 140, PROG, 4, 1)
    assert m.notes == layout.notes


def test_hybrid_model_candidate_beats_a_higher_scoring_rule_melody(ckpts, monkeypatch):
    """The rule melody scores highest, yet a valid model candidate exists: the model candidate wins."""
    rnn, _ = ckpts
    _force(monkeypatch, "rules")  # every candidate valid; rules 1.0, every model candidate 0.5
    key, bars, seed, motif_bars = "A", 4, 9, 2
    prog = ["A", "F#m", "D", "E"]
    m = _gen(ckpts, motif_bars=motif_bars).generate(key, 140, prog, bars, seed=seed)
    a = m.attributes
    rules_row = a["candidates"][0]
    assert rules_row["source"] == "rules" and rules_row["composite"] == 1.0
    assert a["winner"] == "rnn:0" and a["winner_composite"] == 0.5  # ties among models: the earlier
    assert a["rules_fallback"] is False and a["valid"] is True
    assert a["model_candidates_valid"] == 6
    assert _sources(m)[5:] == ["variation:0<rnn:0", "variation:1<rnn:0"]
    # the returned notes are candidate rnn:0 (independent recomputation), not the rule melody
    layout = rules_generate(parse_key(key), 140, prog, bars, seed)
    total = bars * 16
    motif = to_c_frame(melody_to_events(layout, total)[: motif_bars * 16], 9)
    rows = [chord_one_hot(prog[b % 4], transpose=-9) for b in range(bars)]
    ev = sample_rnn_events(MelodyRNN.load(rnn), motif, total, rows, 1.0, [seed * 1000 + 0])[0]
    assert list(m.notes) == sorted(events_to_notes(ev, transpose=-3))
    assert m.notes != layout.notes
    # with rules_compete=True the same scores make the rule melody the winner (the old behaviour)
    m = _gen(ckpts, motif_bars=motif_bars, rules_compete=True).generate(key, 140, prog, bars, seed=seed)
    a = m.attributes
    assert a["winner"] == "rules" and a["winner_composite"] == 1.0 and a["rules_fallback"] is False
    assert _sources(m)[5:] == ["variation:0<rules", "variation:1<rules"]
    assert m.notes == layout.notes
    monkeypatch.undo()

    # one model candidate valid (vae:1), scoring below the rule melody: it still wins
    real_check = hybrid_mod.check_melody

    class _Fail:
        passed = False

        @staticmethod
        def reason():
            return "forced"

    def rules_and_vae1(mel, t, **kw):
        return real_check(mel, t, **kw) if _cand(mel) in ("rules", "vae:1") else _Fail()

    def fake_score(mel, ref=None):
        return {"composite": 1.0 if _cand(mel) == "rules" else 0.25}

    monkeypatch.setattr(hybrid_mod, "check_melody", rules_and_vae1)
    monkeypatch.setattr(metrics_mod, "score_melody", fake_score)
    m = _gen(ckpts, quality_tier=3).generate("Am", 140, PROG, 16, seed=3)
    a = m.attributes
    by_src = {r["source"]: r for r in a["candidates"]}
    assert by_src["rules"]["valid"] and by_src["rules"]["composite"] == 1.0
    assert by_src["vae:1"]["valid"]  # vae:1 passes the real Tier-3 rules for this prompt
    assert [r["source"] for r in a["candidates"] if r["valid"]] == ["rules", "vae:1"]
    assert a["winner"] == "vae:1" and a["winner_composite"] == 0.25 and a["valid"] is True
    assert a["rules_fallback"] is False and a["model_candidates_valid"] == 1
    assert _sources(m)[5:] == ["variation:0<vae:1", "variation:1<vae:1"]
    assert m.notes != rules_generate(parse_key("Am"), 140, PROG, 16, 3).notes


@pytest.mark.parametrize("tier,seed", [(1, 3), (2, 3), (3, 3), (2, 5), (1, 0)])
def test_hybrid_rules_compete_reproduces_the_old_selection(ckpts, tier, seed):
    key, prog = ("Am", PROG) if seed != 0 else ("Em", ["Em", "C", "G", "D"])
    g = _gen(ckpts, quality_tier=tier, rules_compete=True)
    assert g.rules_compete is True and g.info.options["rules_compete"] is True
    m = g.generate(key, 140.0, prog, 16, seed=seed)
    a = m.attributes
    table = a["candidates"]
    valid = [r for r in table if r["valid"]]
    assert valid
    # the old rule: the best valid row overall, the rule melody included (ties: the earlier row)
    assert a["winner_composite"] == max(r["composite"] for r in valid)
    assert a["winner"] == next(r for r in valid if r["composite"] == a["winner_composite"])["source"]
    _check_choice(m, tier, rules_compete=True)
    # the variations vary the best valid row among the first five, the rule melody included
    base = _sources(m)[5].split("<", 1)[1]
    assert base == _expected_winner(table[:5], rules_compete=True)["source"]
    # the default instance sees the same candidates up to the variations' base
    d = _gen(ckpts, quality_tier=tier).generate(key, 140.0, prog, 16, seed=seed)
    assert d.attributes["candidates"][:5] == table[:5]
    assert d.attributes["layout_sha1"] == a["layout_sha1"]
    assert _gen(ckpts).info.options["rules_compete"] is False


def test_hybrid_rules_compete_must_be_a_bool(ckpts):
    rnn, _ = ckpts
    for bad in (1, 0, "true", "false", None, 1.0, [True]):
        with pytest.raises(ValueError, match="rules_compete"):
            HybridGenerator(melody_rnn=str(rnn), rules_compete=bad)
        with pytest.raises(ValueError, match="rules_compete"):
            get_generator("hybrid", melody_rnn=str(rnn), rules_compete=bad)
    for ok in (True, False):
        assert HybridGenerator(melody_rnn=str(rnn), rules_compete=ok).rules_compete is ok


# ---- errors -------------------------------------------------------------------------------------


def test_hybrid_errors(ckpts, tmp_path):
    rnn, vae = ckpts
    with pytest.raises(ValueError):
        get_generator("hybrid")
    with pytest.raises(ValueError):
        HybridGenerator(melody_rnn=None, musicvae="")
    for bad in (-1, True, 1.5, "2", None):
        with pytest.raises(ValueError, match="rnn_candidates"):
            HybridGenerator(melody_rnn=str(rnn), rnn_candidates=bad)
    for name in ("vae_samples", "vae_variations"):
        with pytest.raises(ValueError, match=name):
            HybridGenerator(musicvae=str(vae), **{name: -2})
    for tier in (0, 4, "2", None):
        with pytest.raises(ValueError):
            HybridGenerator(melody_rnn=str(rnn), quality_tier=tier)
    with pytest.raises(ValueError):
        HybridGenerator(melody_rnn=str(rnn), rules={"no_such_option": 1})
    with pytest.raises(ValueError):
        HybridGenerator(melody_rnn=str(rnn), rules={"density": 2.0})
    for ref in ([1.0] * 11, [1.0] * 13, [[1.0] * 12]):
        with pytest.raises(ValueError, match="reference_pc"):
            HybridGenerator(melody_rnn=str(rnn), reference_pc=ref)
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="motif_bars"):
            HybridGenerator(melody_rnn=str(rnn), motif_bars=bad)
    with pytest.raises(ValueError):
        HybridGenerator(melody_rnn=str(rnn), temperature=0)
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        HybridGenerator(melody_rnn=str(missing))
    with pytest.raises(FileNotFoundError, match="nope"):
        HybridGenerator(melody_rnn=str(rnn), musicvae=str(missing))
    g = _gen(ckpts)
    with pytest.raises(ValueError):
        g.generate("Am", 140, "Am F C G", 4, seed=1)
    with pytest.raises(ValueError):
        g.generate("Am", 140, PROG, 0, seed=1)
    with pytest.raises(ValueError):
        g.generate("Am", 140, PROG, 4, seed=1.5)


# ---- edge cases ---------------------------------------------------------------------------------


def test_sample_rnn_events_no_seeds_gives_empty_list(rnn_plain):
    assert sample_rnn_events(rnn_plain, [60] * 20, 16, None, 1.0, []) == []
    assert sample_rnn_events(rnn_plain, [60], 16, None, 1.0, []) == []


def test_hybrid_short_prompt_records_an_invalid_rule_fallback(ckpts):
    # One bar holds fewer than the minimum notes: the rule melody is returned, marked invalid.
    g = _gen(ckpts, rnn_candidates=0, vae_samples=0, vae_variations=0, quality_tier=1)
    m = g.generate("G", 140, ["G", "D", "Em", "C"], 1, seed=0)
    assert m.attributes["winner"] == "rules"
    assert m.attributes["rules_fallback"] is True
    assert m.attributes["valid"] is False
    assert m.attributes["winner_composite"] is None
    assert not check_melody(m, QualityThresholds.for_tier(1)).passed


def test_hybrid_valid_flag_matches_the_quality_rules(ckpts):
    g = _gen(ckpts, quality_tier=2)
    m = g.generate("Am", 140, ["Am", "F", "C", "G"], 16, seed=4)
    assert m.attributes["valid"] is check_melody(m, QualityThresholds.for_tier(2)).passed


def test_melody_to_events_same_onset_keeps_the_highest_note():
    m = Melody(notes=(Note(0.0, 60, 1.0), Note(0.0, 67, 1.0)), bpm=140.0, key="C", bars=1)
    assert melody_to_events(m, 16)[0] == 67
