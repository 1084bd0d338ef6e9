"""Melody events, quantization, extraction, squash and the attention_rnn encoding.

Hand-worked cases first; then differential checks against note-seq 0.0.5's own `sequences_lib`,
`melodies_lib` and `melody_encoder_decoder` (installed with the project) on seeded random input.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from trance_assets.formats.notesequence import music_pb2, notesequence_from_arrays
from trance_assets.models.melody_encoding import (
    CHORD_DIM,
    NO_EVENT,
    NOTE_OFF,
    KeyMelodyEncoderDecoder,
    best_major_key,
    chord_one_hot,
    extract_melodies,
    quantize_notesequence,
    squash,
    unsquash,
)

H, O = NO_EVENT, NOTE_OFF


def _ns(notes, bpm=120.0, instrument=0):
    """NoteSequence from (start_beat, duration_beats, pitch) triples."""
    s, d, p = zip(*notes)
    return notesequence_from_arrays(s, d, p, [100] * len(p), bpm=bpm, key="C", instrument=instrument)


def _quarters(pitches, start_beat=0.0):
    return [(start_beat + i, 1.0, p) for i, p in enumerate(pitches)]


FIVE = [60, 62, 64, 65, 67]


def _cycle(n, pcs=FIVE):
    return [pcs[i % len(pcs)] for i in range(n)]


# ---- quantization -------------------------------------------------------------------------------


def test_quantize_120_qpm_exact_steps():
    # 120 qpm, 4 steps per quarter -> 8 steps per second; step = int(t * 8 + 0.5).
    ns = music_pb2.NoteSequence()
    ns.tempos.add(time=0, qpm=120)
    for start, end in [(0.0, 0.5), (0.0624, 0.25), (0.0625, 1.3), (1.0, 1.1875), (2.0, 2.01)]:
        ns.notes.add(pitch=60, velocity=90, start_time=start, end_time=end)
    q = quantize_notesequence(ns)
    assert q.start_step.tolist() == [0, 0, 1, 8, 16]
    # 0.5 -> 4; 0.25 -> 2; 1.3 -> 10.4 -> 10; 1.1875 -> 9.5 + 0.5 -> 10; 2.01 -> 16.08 -> 16 = start,
    # so the zero-length note gets end = start + 1 = 17.
    assert q.end_step.tolist() == [4, 2, 10, 10, 17]
    assert q.qpm == 120 and q.steps_per_bar == 16 and q.total_steps == 17


def test_quantize_uses_first_tempo_and_rejects_3_4():
    ns = _ns([(0, 1, 60), (1.5, 0.5, 62)], bpm=140)
    q = quantize_notesequence(ns)
    assert q.start_step.tolist() == [0, 6] and q.end_step.tolist() == [4, 8]
    ns.time_signatures[0].numerator = 3
    with pytest.raises(ValueError, match="4/4"):
        quantize_notesequence(ns)


# ---- extraction ---------------------------------------------------------------------------------


def test_extract_seven_bar_melody_events():
    ns = _ns(_quarters(_cycle(28)))
    (m,) = extract_melodies(ns)
    assert m.start_step == 0 and len(m) == 7 * 16  # trailing NOTE_OFF dropped
    assert m.events[:9].tolist() == [60, H, H, H, 62, H, H, H, 64]
    assert m.events[-4:].tolist() == [64, H, H, H]


def test_extract_gap_of_one_bar_splits():
    a = _quarters(_cycle(28))  # ends at beat 28 = step 112
    b = _quarters(_cycle(28), start_beat=32)  # starts at step 128: 16 steps (one bar) of silence
    mels = extract_melodies(_ns(a + b))
    assert [m.start_step for m in mels] == [0, 128]
    assert [len(m) for m in mels] == [112, 112]


def test_extract_gap_shorter_than_a_bar_does_not_split():
    a = _quarters(_cycle(28))
    b = _quarters(_cycle(28), start_beat=31.75)  # step 127: 15 steps of silence
    (m,) = extract_melodies(_ns(a + b))
    assert m.start_step == 0 and len(m) == 127 + 4 * 28  # last note-off (step 239) dropped
    assert m.events[112].item() == O and m.events[113:127].tolist() == [H] * 14
    assert m.events[127].item() == 60


def test_melody_starts_at_bar_line_before_first_note():
    (m,) = extract_melodies(_ns(_quarters(_cycle(28), start_beat=6)))  # first note at step 24
    assert m.start_step == 16 and m.events[:9].tolist() == [H] * 8 + [60]


def test_extract_drops_six_bar_melody():
    assert extract_melodies(_ns(_quarters(_cycle(24)))) == []  # 96 steps < 112
    assert len(extract_melodies(_ns(_quarters(_cycle(24))), min_bars=6)) == 1


def test_extract_drops_four_unique_pitches():
    assert extract_melodies(_ns(_quarters(_cycle(28, [60, 62, 64, 65])))) == []
    # Unique pitch *classes* count: 72 is another C, still only 4.
    assert extract_melodies(_ns(_quarters(_cycle(28, [60, 62, 64, 65, 72])))) == []
    assert len(extract_melodies(_ns(_quarters(_cycle(28, [60, 62, 64, 65, 66]))))) == 1


def test_extract_truncates_to_max_steps():
    (m,) = extract_melodies(_ns(_quarters(_cycle(200))))
    assert len(m) == 512
    (m,) = extract_melodies(_ns(_quarters(_cycle(200))), max_steps=128)
    assert len(m) == 128


def test_polyphonic_step_keeps_highest_note():
    # 55 under the 60 at step 0 (lower: dropped); 72 over the 64 at step 32 (higher: kept, and cut
    # at step 36 by the next note, 67).
    notes = _quarters(_cycle(28)) + [(0, 1, 55), (8, 2, 72)]
    (m,) = extract_melodies(_ns(notes))
    assert m.events[:5].tolist() == [60, H, H, H, 62]
    assert m.events[32:37].tolist() == [72, H, H, H, 67]
    # Without ignore_polyphonic_notes the rest of the instrument is discarded.
    assert extract_melodies(_ns(notes), ignore_polyphonic_notes=False) == []


def test_overlapping_note_is_cut_and_drums_skipped():
    notes = [(0, 3, 60)] + _quarters(_cycle(27), start_beat=1)  # 60 sounds into the next note
    (m,) = extract_melodies(_ns(notes))
    assert m.events[:5].tolist() == [60, H, H, H, 60]
    ns = _ns(_quarters(_cycle(28)))
    for n in ns.notes:
        n.is_drum = True
    assert extract_melodies(ns) == []


# ---- squash -------------------------------------------------------------------------------------


D_MAJOR = [62, H, 64, 66, 67, H, 69, 71, 73, 74, O]


def test_squash_melody_in_d_goes_down_two():
    assert best_major_key(D_MAJOR) == 2
    ev, t = squash(D_MAJOR)
    assert t == -2
    assert ev.tolist() == [60, H, 62, 64, 65, H, 67, 69, 71, 72, O]
    assert squash(D_MAJOR, key="D")[1] == -2
    assert squash(D_MAJOR, key="Bm")[1] == -2  # minor key: its relative major
    assert unsquash(ev, t).tolist() == D_MAJOR


def test_squash_folds_octaves_into_range():
    # C major, centre (36 + 95) / 2 = 65.5 = target: no transposition; 36 and 95 folded.
    ev, t = squash([36, 60, 62, 64, 65, 67, 69, 71, 95])
    assert t == 0
    assert ev.tolist() == [48, 60, 62, 64, 65, 67, 69, 71, 83]
    assert ev.min() >= 48 and ev.max() < 84
    # A high C-major melody is centred: lowest 84 -> 60.
    ev, t = squash([84, H, 88, 91, O])
    assert t == -24 and ev.tolist() == [60, H, 64, 67, O]


def test_squash_no_notes_and_no_transpose():
    assert squash([H, O, H])[1] == 0
    ev, t = squash([30, 62, 100], transpose_to_key=None)
    assert t == 0 and ev.tolist() == [54, 62, 76]


# ---- encoder ------------------------------------------------------------------------------------

BAR0 = [60, H, H, H, 62, H, O, H, 64, H, H, H, 65, H, H, O]
EVENTS = BAR0 + BAR0 + [67, H, H, H, H]  # bar 1 repeats bar 0; 37 events


def test_sizes():
    enc = KeyMelodyEncoderDecoder()
    assert enc.input_size == 74 and enc.num_classes == 40


def test_input_pitch_note_attack_direction():
    enc = KeyMelodyEncoderDecoder()
    x = enc.events_to_input(EVENTS, 4)  # note-on 62
    assert x.shape == (74,) and x.dtype == np.float32
    assert np.flatnonzero(x[:36]).tolist() == [14]  # 62 - 48
    assert x[36] == 1 and x[37] == 0  # note, not silence
    assert x[38] == 1  # attack
    assert x[39] == 1  # 62 > 60: going up
    x = enc.events_to_input(EVENTS, 5)  # holding 62
    assert np.flatnonzero(x[:36]).tolist() == [14] and x[38] == 0
    x = enc.events_to_input(EVENTS, 6)  # note-off
    assert not x[:36].any() and x[36] == 0 and x[37] == 1 and x[38] == 0
    x = enc.events_to_input(EVENTS, 0)
    assert x[39] == 0  # no pitch change yet
    x = enc.events_to_input(EVENTS + [62], 37)  # 62 after 67: going down
    assert x[39] == -1


def test_input_counter_and_bar_flag():
    enc = KeyMelodyEncoderDecoder()
    inputs, _ = enc.encode(EVENTS)
    # Row p predicts step p + 1: the row predicting step 5 is p = 4; 5 = 0b0000101, LSB first.
    assert inputs[4, 42:49].tolist() == [1, -1, 1, -1, -1, -1, -1]
    assert np.array_equal(inputs[4, 42:49], enc.events_to_input(EVENTS, 4)[42:49])
    assert inputs[15, 42:49].tolist() == [-1, -1, -1, -1, 1, -1, -1]  # 16
    # Start of bar: the rows predicting steps 16 and 32 (the bar lines after step 0).
    assert np.flatnonzero(inputs[:, 49]).tolist() == [15, 31]


def test_input_lookback_and_keys():
    enc = KeyMelodyEncoderDecoder()
    inputs, _ = enc.encode(EVENTS)
    # Bar 1 equals bar 0: the 16-step lookback flag is set on rows 16..31; the 32-step flag is set
    # where events[p] == events[p - 32] (row 32: 67 vs 60, not set).
    assert inputs[16:32, 40].all() and not inputs[:16, 40].any()
    assert [p for p in range(32, 36) if inputs[p, 41]] == [33, 34, 35]  # H == H at p - 32
    # Only C played so far: every major key containing C (C, Db, Eb, F, G, Ab, Bb) is 1.
    c_keys = [0, 1, 3, 5, 7, 8, 10]
    assert np.flatnonzero(inputs[0, 50:62]).tolist() == c_keys
    assert np.flatnonzero(inputs[0, 62:74]).tolist() == c_keys
    # After C D E F: keys holding all four are C and F.
    assert np.flatnonzero(inputs[12, 50:62]).tolist() == [0, 5]
    # Last 3 distinct pitches at p = 12 are D E F; major scales holding all three: C and F.
    assert np.flatnonzero(inputs[12, 62:74]).tolist() == [0, 5]


def test_labels_repeats_and_quirk():
    enc = KeyMelodyEncoderDecoder()
    _, labels = enc.encode(EVENTS)
    lab = {p: int(labels[p - 1]) for p in range(1, len(EVENTS))}
    assert lab[4] == 14  # pitch 62
    assert lab[1] == 39 and lab[2] == 39  # quirk: no-event at position < 32 -> 39
    assert lab[6] == 37  # note-off
    assert lab[16] == 38  # 60 == events[0]: repeat 1 bar
    assert lab[20] == 38 and lab[22] == 38  # 62 and the note-off repeat bar 0
    assert lab[17] == 39  # a no-event at 17 < 32: quirk wins over the 1-bar repeat
    assert lab[32] == 67 - 48  # no repeat: 67 vs 60 / 60
    assert lab[33] == 39  # H == events[1] (2 bars back) wins over 1 bar back
    assert lab[36] == 36  # H, but events[20] = 62 and events[4] = 62: plain no-event
    assert enc.event_to_label(EVENTS, 36) == 36


def test_round_trip_labels_to_events():
    enc = KeyMelodyEncoderDecoder()
    inputs, labels = enc.encode(EVENTS)
    assert inputs.shape == (len(EVENTS) - 1, 74) and labels.dtype == np.int64
    for p in range(1, len(EVENTS)):
        assert enc.class_to_event(int(labels[p - 1]), EVENTS[:p]) == EVENTS[p]
    assert enc.decode(labels, EVENTS[:1]).tolist() == EVENTS
    assert enc.class_to_event(39, [60] * 10) == NO_EVENT  # fewer than 32 steps back
    assert enc.class_to_event(38, [H] * 15 + [70]) == NO_EVENT
    assert enc.class_to_event(38, [70] + [H] * 15) == 70


def test_encode_rejects_unsquashed_and_short():
    enc = KeyMelodyEncoderDecoder()
    with pytest.raises(ValueError, match="squash"):
        enc.encode([60, 90])
    x, y = enc.encode([60])
    assert x.shape == (0, 74) and y.shape == (0,)


def test_encode_extracted_squashed_melody():
    (m,) = extract_melodies(_ns(_quarters(_cycle(40, [62, 64, 66, 69, 71, 73]))))
    ev, t = squash(m.events)
    assert t == -2
    x, y = KeyMelodyEncoderDecoder().encode(ev)
    assert x.shape == (len(ev) - 1, 74) and y.min() >= 0 and y.max() < 40


# ---- chords -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol, transpose, index",
    [(None, 0, 0), ("N.C.", 0, 0), ("", 0, 0), ("C", 0, 1), ("F", 0, 6), ("G7", 0, 8),
     ("Am", 0, 22), ("Bdim", 0, 24), ("F#m7b5", 0, 19), ("Dsus4", 0, 3), ("C/E", 0, 1),
     ("Em", -2, 15), ("Bb", 2, 1)],
)
def test_chord_one_hot(symbol, transpose, index):
    v = chord_one_hot(symbol, transpose)
    assert v.shape == (CHORD_DIM,) and v.sum() == 1 and v[index] == 1


def test_chord_one_hot_rejects_garbage():
    with pytest.raises(ValueError):
        chord_one_hot("H7")


# ---- differential checks against note-seq 0.0.5 ---------------------------------------------------


@pytest.fixture(scope="module")
def ref():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from note_seq import melodies_lib, melody_encoder_decoder, sequences_lib
    return melodies_lib, melody_encoder_decoder, sequences_lib


def _random_events(rng, n):
    ev: list[int] = []
    for _ in range(n):
        r = rng.random()
        last = [x for x in ev if x != H]
        if r < 0.4:
            ev.append(H)
        elif r < 0.55:
            ev.append(O if last and last[-1] >= 0 else H)  # canonical: note-off only after a note
        elif r < 0.7 and len(ev) >= 16 and ev[-16] != O:
            ev.append(ev[-16])
        else:
            ev.append(int(rng.integers(48, 84)))
    return ev


def test_encoder_matches_note_seq(ref):
    melodies_lib, med, _ = ref
    enc, r = KeyMelodyEncoderDecoder(), med.KeyMelodyEncoderDecoder(48, 84)
    rng = np.random.default_rng(7)
    for _ in range(25):
        ev = _random_events(rng, int(rng.integers(2, 70)))
        x, y = enc.encode(ev)
        m = melodies_lib.Melody(ev)
        rx = np.array([r.events_to_input(m, i) for i in range(len(ev) - 1)], dtype=np.float32)
        ry = [r.events_to_label(m, i + 1) for i in range(len(ev) - 1)]
        assert np.array_equal(x, rx.reshape(-1, 74)) and y.tolist() == ry
        for p in range(1, len(ev)):
            assert enc.class_to_event(int(y[p - 1]), ev[:p]) == r.class_index_to_event(
                int(y[p - 1]), melodies_lib.Melody(ev[:p])
            )


def test_squash_matches_note_seq(ref):
    melodies_lib = ref[0]
    rng = np.random.default_rng(3)
    for _ in range(300):
        ev = [int(x) for x in rng.integers(0, 128, rng.integers(1, 10))] + [H, O]
        m = melodies_lib.Melody(ev)
        t = int(m.squash(48, 84, 0))
        mine, mt = squash(ev)
        assert mt == t and mine.tolist() == [int(x) for x in m]


def test_quantize_and_melody_building_match_note_seq(ref):
    melodies_lib, _, sequences_lib = ref
    from trance_assets.models import melody_encoding as me

    rng = np.random.default_rng(11)
    for _ in range(40):
        ns = music_pb2.NoteSequence()
        ns.tempos.add(qpm=float(rng.choice([120, 138, 97.3])))
        ns.time_signatures.add(numerator=4, denominator=4)
        t = 0.0
        for _ in range(int(rng.integers(1, 50))):
            t += float(rng.choice([0, 0, 0.1, 0.25, 0.5, 1, 2, 5])) * rng.random() * 2
            ns.notes.add(pitch=int(rng.integers(40, 90)), velocity=80, start_time=t,
                         end_time=t + float(rng.random() * 1.5) + 0.001)
        ns.total_time = t + 2
        q = quantize_notesequence(ns)
        rq = sequences_lib.quantize_note_sequence(ns, 4)
        assert q.start_step.tolist() == [n.quantized_start_step for n in rq.notes]
        assert q.end_step.tolist() == [n.quantized_end_step for n in rq.notes]
        order = np.lexsort((-q.pitch, q.start_step))
        for ignore in (True, False):
            for search in (0, 16):
                m = melodies_lib.Melody()
                try:
                    m.from_quantized_sequence(rq, search_start_step=search, gap_bars=1,
                                              ignore_polyphonic_notes=ignore)
                    want = ([int(x) for x in m], m.start_step) if len(m) else "empty"
                except melodies_lib.PolyphonicMelodyError:
                    want = "poly"
                try:
                    ev, st = me._one_melody(q.start_step[order], q.end_step[order], q.pitch[order],
                                            search, 16, 16, ignore)
                    got = (ev, st) if ev else "empty"
                except me._Polyphonic:
                    got = "poly"
                assert got == want
