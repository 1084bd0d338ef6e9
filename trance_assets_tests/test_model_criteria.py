"""evaluation.model_criteria: the phase-2 success criteria, hand-computed expectations; tiny CPU VAE."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trance_assets.corpus.card import EPS
from trance_assets.evaluation.model_criteria import (
    criteria_table,
    criterion,
    generation_criteria,
    loss_criteria,
    pc_minor_likeness,
    vae_interpolation,
    vae_interpolation_row,
    vae_reconstruction,
    vae_reconstruction_row,
    vae_variations_in_key,
    vae_variations_row,
)
from trance_assets.generation.models import events_to_notes
from trance_assets.models.musicvae import MusicVAE, MusicVAEConfig, classes_to_events
from trance_assets.music.analysis import _KK_MAJOR, _KK_MINOR, scale_compliance
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.quality import QualityThresholds
from trance_assets.music.theory import parse_key

ROW_KEYS = {"criterion", "value", "threshold", "passed", "detail"}


def by_name(rows):
    return {r["criterion"]: r for r in rows}


def assert_rows(rows):
    for r in rows:
        assert set(r) == ROW_KEYS
        assert isinstance(r["passed"], bool)
        if r["value"] is None:
            assert r["passed"] is False and r["detail"]
    json.dumps(rows)


# ---- loss criteria -------------------------------------------------------------------------------

CURVE = [(0, None, 4.0), (10, 3.0, 3.0), (20, 2.9, 2.95), (30, 2.9, 2.94), (40, 2.9, 2.945)]


def test_loss_criteria_example_curve_passes_everything():
    rows = loss_criteria(CURVE, stopped_early=False)
    assert_rows(rows)
    r = by_name(rows)
    assert [x["criterion"] for x in rows] == ["validation loss decreases", "validation loss plateaus", "train/validation gap"]
    assert r["validation loss decreases"]["value"] == pytest.approx((4.0 - 2.94) / 4.0)  # 0.265
    assert r["validation loss decreases"]["passed"]
    # last 4 val losses 3.0, 2.95, 2.94, 2.945: (3.0 - 2.94) / 3.0 = 0.02, exactly the tolerance
    assert r["validation loss plateaus"]["value"] == pytest.approx(0.02)
    assert r["validation loss plateaus"]["passed"]
    assert r["train/validation gap"]["value"] == pytest.approx(2.945 - 2.9)
    assert r["train/validation gap"]["passed"]
    assert r["train/validation gap"]["threshold"] == "gap <= 25% of the validation loss"


def test_loss_criteria_still_falling_fails_the_plateau_unless_stopped_early():
    curve = [(0, None, 4.0), (10, 3.5, 3.5), (20, 3.0, 3.0), (30, 2.5, 2.5), (40, 2.0, 2.0)]
    r = by_name(loss_criteria(curve, stopped_early=False))
    assert r["validation loss plateaus"]["value"] == pytest.approx(1.5 / 3.5)
    assert not r["validation loss plateaus"]["passed"]
    assert r["validation loss decreases"]["value"] == pytest.approx(0.5)
    r = by_name(loss_criteria(curve, stopped_early=True))
    assert r["validation loss plateaus"]["value"] == pytest.approx(1.5 / 3.5)
    assert r["validation loss plateaus"]["passed"]
    assert "early stopping" in r["validation loss plateaus"]["detail"]
    # a wider tolerance passes without the early stop
    r = by_name(loss_criteria(curve, stopped_early=False, plateau_tolerance=0.5))
    assert r["validation loss plateaus"]["passed"]


def test_loss_criteria_plateau_window_and_order():
    # rows out of order are sorted by step; window 2 -> last 3 values 2.0, 2.02, 2.01
    curve = [(30, 1.9, 2.01), (0, None, 3.0), (20, 1.9, 2.02), (10, 2.0, 2.0)]
    r = by_name(loss_criteria(curve, stopped_early=False, plateau_window=2))
    assert r["validation loss plateaus"]["value"] == pytest.approx(0.02 / 2.02)
    assert r["validation loss plateaus"]["passed"]
    assert r["validation loss decreases"]["value"] == pytest.approx(1.0 / 3.0)
    assert r["train/validation gap"]["value"] == pytest.approx(2.01 - 1.9)
    assert "step 30" in r["train/validation gap"]["detail"]


def test_loss_criteria_failures():
    curve = [(0, None, 2.0), (10, 1.0, 2.5)]
    r = by_name(loss_criteria(curve, stopped_early=False))
    assert r["validation loss decreases"]["value"] == 0.0
    assert not r["validation loss decreases"]["passed"]
    assert r["train/validation gap"]["value"] == pytest.approx(1.5)  # limit 0.625
    assert not r["train/validation gap"]["passed"]
    assert by_name(loss_criteria(curve, stopped_early=False, max_gap_ratio=0.6))["train/validation gap"]["passed"]
    assert by_name(loss_criteria(curve, stopped_early=False, max_gap_ratio=0.6))["train/validation gap"]["threshold"] == (
        "gap <= 60% of the validation loss"
    )
    # a negative gap (val below train) passes
    r = by_name(loss_criteria([(0, None, 4.0), (10, 3.5, 3.0)], stopped_early=False))
    assert r["train/validation gap"]["value"] == pytest.approx(-0.5)
    assert r["train/validation gap"]["passed"]


def test_loss_criteria_unmeasurable_rows():
    for stopped in (False, True):
        rows = loss_criteria([(0, None, 4.0)], stopped_early=stopped)
        assert_rows(rows)
        assert all(r["value"] is None and r["passed"] is False for r in rows)
    rows = loss_criteria([], stopped_early=False)
    assert_rows(rows)
    assert all(r["value"] is None and not r["passed"] for r in rows)
    # too few points for the window: unmeasurable unless stopped early (then measured over what is there)
    short = [(0, None, 4.0), (10, 3.0, 3.1), (20, 3.0, 3.0)]
    r = by_name(loss_criteria(short, stopped_early=False))
    assert r["validation loss plateaus"]["value"] is None and not r["validation loss plateaus"]["passed"]
    assert r["validation loss decreases"]["passed"]
    r = by_name(loss_criteria(short, stopped_early=True))
    assert r["validation loss plateaus"]["value"] == pytest.approx(1.0 / 4.0)
    assert r["validation loss plateaus"]["passed"]


# ---- pitch-class minor likeness ------------------------------------------------------------------


def pearson(a, b):
    a, b = list(a), list(b)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den


def smoothed(h):
    total = sum(h)
    p = [x / total + EPS for x in h]
    s = sum(p)
    return [x / s for x in p]


def test_pc_minor_likeness_a_minor_triad_is_minor():
    # key Am, A (1 beat) C (1 beat) E (2 beats): minor frame A = 0 -> bins 0, 3, 7 weighted 1, 1, 2
    m = Melody(notes=(Note(0, 69, 1), Note(1, 72, 1), Note(2, 76, 2)), bpm=138, key="Am")
    out = pc_minor_likeness([m])
    h = [0.0] * 12
    h[0], h[3], h[7] = 1.0, 1.0, 2.0
    expected = smoothed(h)
    assert out["histogram"] == pytest.approx(expected, abs=1e-12)
    assert out["r_minor"] == pytest.approx(pearson(expected, _KK_MINOR))
    assert out["r_major"] == pytest.approx(pearson(expected, [_KK_MAJOR[(i - 3) % 12] for i in range(12)]))
    assert out["minor_like"] is True
    json.dumps(out)


def test_pc_minor_likeness_c_major_arpeggios_are_major():
    # key C: rotated to its relative minor (A = 0), so C, E, G land on 3, 7, 10 -- the major profile's 0, 4, 7
    notes = []
    for bar in range(4):
        for i, p in enumerate((60, 64, 67, 72)):
            notes.append(Note(bar * 4 + i, p, 1.0))
    m = Melody(notes=tuple(notes), bpm=138, key="C")
    out = pc_minor_likeness([m])
    h = [0.0] * 12
    h[3], h[7], h[10] = 8.0, 4.0, 4.0
    expected = smoothed(h)
    assert out["histogram"] == pytest.approx(expected, abs=1e-12)
    assert out["r_major"] == pytest.approx(pearson(expected, [_KK_MAJOR[(i - 3) % 12] for i in range(12)]))
    assert out["r_minor"] == pytest.approx(pearson(expected, _KK_MINOR))
    assert out["minor_like"] is False


def test_pc_minor_likeness_a_natural_minor_scale_pools_melodies():
    scale = [69, 71, 72, 74, 76, 77, 79]
    emph = Melody(notes=tuple(Note(i, p, 2.0 if p in (69, 72, 76) else 0.5) for i, p in enumerate(scale * 2)), bpm=138, key="Am")
    # the same content written in E minor, transposed: pooling rotates each by its own key
    em = Melody(notes=tuple(Note(n.start, n.pitch + 7, n.duration) for n in emph.notes), bpm=138, key="Em")
    a, b = pc_minor_likeness([emph]), pc_minor_likeness([emph, em])
    assert a["minor_like"] and b["minor_like"]
    assert b["histogram"] == pytest.approx(a["histogram"])


def test_pc_minor_likeness_without_notes():
    for melodies in ([], [Melody(notes=(), bpm=138, key="Am")]):
        out = pc_minor_likeness(melodies)
        assert out["histogram"] == pytest.approx([1 / 12] * 12)
        assert out["r_minor"] is None and out["r_major"] is None and out["minor_like"] is False


# ---- generation criteria -------------------------------------------------------------------------

AM_CHORDS = tuple(ChordSpan("Am", 4.0 * b, 4.0) for b in range(16))


def base_melody() -> Melody:
    """16 bars over Am: A B A B quarters; bars 8-15 shifted by an 8th (no shared onset cell).
    chord-tone ratio 0.5, self_similarity_8 0.0, pitch_entropy 1 bit."""
    notes = []
    for bar in range(16):
        off = 0.5 if bar >= 8 else 0.0
        for beat, p in enumerate((69, 71, 69, 71)):
            notes.append(Note(bar * 4 + beat + off, p, 0.5))
    return Melody(notes=tuple(notes), bpm=138, key="Am", chords=AM_CHORDS, bars=16)


def tuned_melody() -> Melody:
    """16 bars over Am: A C E A quarters every bar. chord-tone ratio 1, self_similarity_8 1, entropy 1.5 bits."""
    notes = [Note(bar * 4 + beat, p, 1.0) for bar in range(16) for beat, p in enumerate((69, 72, 76, 81))]
    notes = [Note(n.start, 69 if n.pitch == 81 else n.pitch, n.duration) for n in notes]
    return Melody(notes=tuple(notes), bpm=138, key="Am", chords=AM_CHORDS, bars=16)


def test_generation_criteria_tuned_beats_base():
    out = generation_criteria([base_melody(), base_melody()], [tuned_melody(), tuned_melody()])
    json.dumps(out)
    assert out["n_base"] == out["n_tuned"] == 2
    assert set(out["base"]) == {"chord_tone_ratio", "self_similarity_8", "minor_adherence", "composite", "pitch_entropy"}
    assert out["base"]["chord_tone_ratio"] == pytest.approx(0.5)
    assert out["tuned"]["chord_tone_ratio"] == pytest.approx(1.0)
    assert out["base"]["self_similarity_8"] == pytest.approx(0.0)
    assert out["tuned"]["self_similarity_8"] == pytest.approx(1.0)
    assert out["base"]["pitch_entropy"] == pytest.approx(1.0)
    assert out["tuned"]["pitch_entropy"] == pytest.approx(1.5)
    assert out["base"]["minor_adherence"] == out["tuned"]["minor_adherence"] == pytest.approx(1.0)
    assert isinstance(out["base"]["composite"], float) and isinstance(out["tuned"]["composite"], float)
    rows = out["rows"]
    assert_rows(rows)
    r = by_name(rows)
    ctr = r["chord-tone ratio: fine-tuned >= base + 10 pp"]
    assert ctr["value"] == pytest.approx(0.5) and ctr["passed"]
    ss = r["8-bar self-similarity increases"]
    assert ss["value"] == pytest.approx(1.0) and ss["passed"]
    pc = r["pitch-class histogram resembles minor (fine-tuned)"]
    like = pc_minor_likeness([tuned_melody()])
    assert pc["value"] == pytest.approx(like["r_minor"]) and pc["passed"]
    assert "r_major" in pc["detail"]


def test_generation_criteria_base_beats_tuned_fails():
    out = generation_criteria([tuned_melody()], [base_melody()])
    r = by_name(out["rows"])
    assert r["chord-tone ratio: fine-tuned >= base + 10 pp"]["value"] == pytest.approx(-0.5)
    assert not r["chord-tone ratio: fine-tuned >= base + 10 pp"]["passed"]
    assert r["8-bar self-similarity increases"]["value"] == pytest.approx(-1.0)
    assert not r["8-bar self-similarity increases"]["passed"]
    # the gain threshold is a keyword (and names the row)
    out = generation_criteria([base_melody()], [tuned_melody()], min_chord_tone_gain=0.6)
    row = out["rows"][0]
    assert row["criterion"] == "chord-tone ratio: fine-tuned >= base + 60 pp"
    assert row["value"] == pytest.approx(0.5) and not row["passed"]


def test_generation_criteria_means_ignore_undefined_and_unmeasurable_rows():
    short = Melody(notes=(Note(0, 69, 1), Note(1, 72, 1)), bpm=138, key="Am", chords=(ChordSpan("Am", 0, 4),), bars=1)
    out = generation_criteria([short], [short, tuned_melody()])
    assert out["base"]["self_similarity_8"] is None  # 1 bar: undefined
    assert out["tuned"]["self_similarity_8"] == pytest.approx(1.0)  # the short one is left out
    r = by_name(out["rows"])
    assert r["8-bar self-similarity increases"]["value"] is None
    assert not r["8-bar self-similarity increases"]["passed"]
    assert "base" in r["8-bar self-similarity increases"]["detail"]
    out = generation_criteria([], [])
    assert_rows(out["rows"])
    assert all(row["value"] is None and row["passed"] is False for row in out["rows"])
    assert all(v is None for v in out["base"].values())


# ---- MusicVAE ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MusicVAE(MusicVAEConfig(enc_sizes=(16,), conductor_sizes=(16,), dec_sizes=(16,), z_size=8, bars=2))
    model.eval()
    yield model
    torch.set_num_threads(n)


def random_classes(n: int, steps: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, steps))  # holds and note-offs
    on = rng.random((n, steps)) < 0.4
    x[on] = rng.integers(2 + 48, 2 + 72, size=int(on.sum()))  # note-ons, MIDI 69..92
    return x.astype(np.int64)


def test_vae_reconstruction_matches_an_independent_count(vae):
    x = random_classes(70)  # more than one batch of 64
    out = vae_reconstruction(vae, x)
    json.dumps(out)
    with torch.no_grad():
        rec = vae.reconstruct(torch.as_tensor(x)).numpy()
    assert rec.shape == x.shape
    assert out["n"] == 70
    assert out["accuracy"] == pytest.approx(float(np.mean(rec == x)))
    on = x >= 2
    assert out["note_on_accuracy"] == pytest.approx(float(np.sum((rec == x) & on) / np.sum(on)))
    assert out["melodies_exact"] == pytest.approx(float(np.mean(np.all(rec == x, axis=1))))
    for k in ("accuracy", "note_on_accuracy", "melodies_exact"):
        assert 0.0 <= out[k] <= 1.0
    row = vae_reconstruction_row(out, min_accuracy=0.0)
    assert_rows([row])
    assert row["value"] == out["accuracy"] and row["passed"]
    assert "note-on accuracy" in row["detail"]
    assert not vae_reconstruction_row(out, min_accuracy=1.01)["passed"]


def test_vae_reconstruction_empty_and_no_note_ons(vae):
    for x in (np.zeros((0, 32), dtype=np.int64), np.zeros((0,), dtype=np.int64)):
        out = vae_reconstruction(vae, x)
        assert out == {"n": 0, "accuracy": None, "note_on_accuracy": None, "melodies_exact": None}
        row = vae_reconstruction_row(out)
        assert row["value"] is None and row["passed"] is False
    out = vae_reconstruction(vae, np.zeros((2, 32), dtype=np.int64))
    assert out["note_on_accuracy"] is None and out["accuracy"] is not None


def to_melody(classes, key="Am", bpm=138.0):
    return Melody(notes=tuple(events_to_notes(classes_to_events(classes), transpose=0)), bpm=bpm, key=key, bars=2)


def test_vae_interpolation_counts_and_failures(vae):
    x = random_classes(2, seed=1)
    lenient = QualityThresholds(min_notes=1, min_range_octaves=0.0, max_range_octaves=10.0, max_polyphony=1.0, min_scale_compliance=0.0)
    out = vae_interpolation(vae, x[0], x[1], key="Am", bpm=138.0, n_intermediates=4, thresholds=lenient)
    json.dumps(out)
    with torch.no_grad():
        classes = vae.interpolate(torch.as_tensor(x[:1]), torch.as_tensor(x[1:]), 6).numpy()[1:-1]
    with_notes = sum(1 for c in classes if to_melody(c).notes)  # the lenient filter only needs a note
    assert out["intermediates"] == 4
    assert out["passed"] == with_notes
    assert len(out["failures"]) == 4 - with_notes
    assert out["all_pass"] == (with_notes == 4)

    strict = QualityThresholds(min_notes=10_000)
    out = vae_interpolation(vae, x[0], x[1], key="Am", bpm=138.0, n_intermediates=3, thresholds=strict)
    assert out["passed"] == 0 and out["all_pass"] is False
    assert len(out["failures"]) == 3
    assert out["failures"][0].startswith("intermediate 1/3: ") and "notes=" in out["failures"][0]
    row = vae_interpolation_row(out)
    assert_rows([row])
    assert row["value"] == 0.0 and row["passed"] is False
    assert row["criterion"] == "interpolation has no garbage intermediates"


def test_vae_interpolation_rows():
    ok = {"intermediates": 10, "passed": 10, "failures": [], "all_pass": True}
    assert vae_interpolation_row(ok)["value"] == 1.0 and vae_interpolation_row(ok)["passed"]
    half = {"intermediates": 4, "passed": 2, "failures": ["intermediate 1/4: x", "intermediate 3/4: y"], "all_pass": False}
    row = vae_interpolation_row(half)
    assert row["value"] == 0.5 and not row["passed"] and "intermediate 3/4: y" in row["detail"]
    none = {"intermediates": 0, "passed": 0, "failures": [], "all_pass": False}
    assert vae_interpolation_row(none)["value"] is None and vae_interpolation_row(none)["passed"] is False


def test_vae_variations_in_key(vae):
    x = random_classes(1, seed=2)[0]
    out = vae_variations_in_key(vae, x, key="Am", bpm=138.0, n=5, seed=3)
    json.dumps(out)
    assert out["n"] == 5 and out["noise_scale"] == 0.2 and len(out["compliance"]) == 5
    assert out == vae_variations_in_key(vae, x, key="Am", bpm=138.0, n=5, seed=3)  # deterministic
    with torch.no_grad():
        classes = vae.variations(torch.as_tensor(x[None]), 5, noise_scale=0.2, generator=torch.Generator().manual_seed(3)).numpy()
    expected = [scale_compliance(to_melody(c).notes, parse_key("Am")) for c in classes]
    assert out["compliance"] == pytest.approx(expected)
    assert out["in_key"] == sum(1 for c in expected if c is not None and c >= 0.9)
    assert out["all_in_key"] == (out["in_key"] == 5)
    for c in out["compliance"]:
        assert c is None or 0.0 <= c <= 1.0

    zero = vae_variations_in_key(vae, x, key="Am", bpm=138.0, n=5, seed=3, min_scale_compliance=0.0)
    assert zero["in_key"] == sum(1 for c in expected if c is not None)
    row = vae_variations_row(zero)
    assert_rows([row])
    defined = [c for c in expected if c is not None]
    if defined:
        assert row["value"] == pytest.approx(float(np.mean(defined)))
    assert row["passed"] == (zero["in_key"] == 5)
    assert row["criterion"] == "variations at noise_scale 0.2 stay in key"
    assert "0.9" in vae_variations_row(out)["threshold"]

    empty = vae_variations_in_key(vae, x, key="Am", bpm=138.0, n=0)
    assert empty["compliance"] == [] and empty["all_in_key"] is False
    assert vae_variations_row(empty)["value"] is None and vae_variations_row(empty)["passed"] is False


def test_vae_variations_row_by_hand():
    res = {"n": 2, "noise_scale": 0.2, "min_scale_compliance": 0.9, "compliance": [1.0, 0.8], "in_key": 1, "all_in_key": False}
    row = vae_variations_row(res)
    assert row["value"] == pytest.approx(0.9) and row["passed"] is False
    res = {**res, "compliance": [1.0, 0.95], "in_key": 2, "all_in_key": True}
    assert vae_variations_row(res)["passed"] is True


# ---- rows and the table --------------------------------------------------------------------------


def test_criterion_unmeasurable_is_never_passed():
    assert criterion("x", None, "t", True, "why")["passed"] is False
    assert criterion("x", float("nan"), "t", True, "why")["value"] is None
    assert criterion("x", 1, "t", True)["value"] == 1.0


def test_criteria_table():
    rows = [
        criterion("a | b", 0.123456, ">= 0.1", True, "fine"),
        criterion("c", None, "> 0", False, "needs points"),
    ]
    table = criteria_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| criterion | value | threshold | passed | detail |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| a \\| b | 0.1235 | >= 0.1 | ✅ | fine |"
    assert lines[3] == "| c | n/a | > 0 | ❌ | needs points |"
    assert criteria_table([]).count("\n") == 1
