"""Melodies as note-seq NoteSequence protobufs (formats.notesequence), read back by note-seq's own tools."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from trance_assets.formats.notesequence import (
    TICKS_PER_QUARTER,
    melody_to_notesequence,
    music_pb2,
    notesequence_from_arrays,
    notesequence_to_arrays,
)
from trance_assets.formats.tfrecord import read_tfrecord, write_tfrecord
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.rules import generate
from trance_assets.music.theory import ALL_KEYS

NS = music_pb2.NoteSequence


@pytest.fixture(scope="module")
def note_seq():
    """The full note_seq package (slow to import, so only the tests that use its tools pay)."""
    with warnings.catch_warnings():  # pydub (imported by note_seq.audio_io) warns about ffmpeg
        warnings.simplefilter("ignore")
        import note_seq as ns_pkg
        import note_seq.midi_io  # noqa: F401
        import note_seq.sequences_lib  # noqa: F401

    return ns_pkg


def three_notes(**kw) -> "music_pb2.NoteSequence":
    args = dict(bpm=120, key="Am", chords=[("Am", 0), ("F", 4), ("C", 6.5)])
    args.update(kw)
    return notesequence_from_arrays([0, 1, 2.5], [1, 0.5, 1.5], [69, 72, 76], [100, 90, 80], **args)


def test_hand_computed_example() -> None:
    ns = three_notes(id="mel-1", filename="a.mid", collection_name="trance")
    # 120 BPM: one beat = 0.5 s
    assert [(n.start_time, n.end_time) for n in ns.notes] == [(0.0, 0.5), (0.5, 0.75), (1.25, 2.0)]
    assert [n.pitch for n in ns.notes] == [69, 72, 76]
    assert [n.velocity for n in ns.notes] == [100, 90, 80]
    assert all(n.program == 80 and n.instrument == 0 and not n.is_drum for n in ns.notes)
    assert ns.total_time == 2.0
    assert ns.ticks_per_quarter == TICKS_PER_QUARTER == 220
    assert [(t.time, t.qpm) for t in ns.tempos] == [(0.0, 120.0)]
    assert [(t.time, t.numerator, t.denominator) for t in ns.time_signatures] == [(0.0, 4, 4)]
    assert [(k.time, k.key, k.mode) for k in ns.key_signatures] == [(0.0, NS.KeySignature.A, NS.KeySignature.MINOR)]
    assert (ns.id, ns.filename, ns.collection_name) == ("mel-1", "a.mid", "trance")
    assert ns.source_info.source_type == NS.SourceInfo.SCORE_BASED
    assert ns.source_info.encoding_type == NS.SourceInfo.MIDI
    assert ns.source_info.parser == NS.SourceInfo.UNKNOWN_PARSER


def test_other_tempo_seconds() -> None:
    ns = notesequence_from_arrays([0, 4], [0.25, 2], [60, 62], [64, 64], bpm=140, key="C")
    spb = 60 / 140
    assert ns.notes[1].start_time == pytest.approx(4 * spb, abs=1e-12)
    assert ns.notes[1].end_time == pytest.approx(6 * spb, abs=1e-12)
    assert ns.total_time == pytest.approx(6 * spb, abs=1e-12)
    assert ns.tempos[0].qpm == 140


@pytest.mark.parametrize(
    "key, enum, mode",
    [
        ("Am", NS.KeySignature.A, NS.KeySignature.MINOR),
        ("C#m", NS.KeySignature.C_SHARP, NS.KeySignature.MINOR),
        ("Bb", NS.KeySignature.B_FLAT, NS.KeySignature.MAJOR),
        ("F#", NS.KeySignature.F_SHARP, NS.KeySignature.MAJOR),
        ("F# major", NS.KeySignature.F_SHARP, NS.KeySignature.MAJOR),
        ("Ebm", NS.KeySignature.E_FLAT, NS.KeySignature.MINOR),
        ("C", NS.KeySignature.C, NS.KeySignature.MAJOR),
    ],
)
def test_key_signature_enum(key: str, enum: int, mode: int) -> None:
    ks = three_notes(key=key).key_signatures
    assert len(ks) == 1
    assert (ks[0].time, ks[0].key, ks[0].mode) == (0.0, enum, mode)


def test_all_24_keys_round_trip() -> None:
    for k in ALL_KEYS:
        ns = three_notes(key=k.name)
        assert ns.key_signatures[0].key == k.tonic
        assert notesequence_to_arrays(ns)["key"] == k.name


def test_bad_key_raises() -> None:
    with pytest.raises(ValueError, match="not a key"):
        three_notes(key="H minor")


def test_chords_are_chord_symbol_annotations() -> None:
    ns = three_notes(bpm=138, chords=[("Am", 0), ("Fmaj7", 4), ("G", 6.5), ("N.C.", 8)])
    anns = list(ns.text_annotations)
    assert [a.annotation_type for a in anns] == [NS.TextAnnotation.CHORD_SYMBOL] * 4
    assert [a.text for a in anns] == ["Am", "Fmaj7", "G", "N.C."]
    spb = 60 / 138
    assert [a.time for a in anns] == pytest.approx([0, 4 * spb, 6.5 * spb, 8 * spb], abs=1e-12)
    assert notesequence_to_arrays(ns)["chords"] == [
        (s, pytest.approx(b, abs=1e-9)) for s, b in [("Am", 0), ("Fmaj7", 4), ("G", 6.5), ("N.C.", 8)]
    ]


@pytest.mark.parametrize("gm, wire", [(81, 80), (1, 0), (128, 127), (39, 38)])
def test_program_is_stored_zero_based(gm: int, wire: int) -> None:
    ns = three_notes(program=gm, instrument=3)
    assert {n.program for n in ns.notes} == {wire}
    assert {n.instrument for n in ns.notes} == {3}
    back = notesequence_to_arrays(ns)
    assert back["program"].tolist() == [gm] * 3
    assert back["instrument"].tolist() == [3] * 3


def test_default_program_is_gm_lead_81() -> None:
    assert {n.program for n in three_notes().notes} == {80}


@pytest.mark.parametrize("program", [0, 129])
def test_program_out_of_range(program: int) -> None:
    with pytest.raises(ValueError, match="1-based General MIDI"):
        three_notes(program=program)


@pytest.mark.parametrize(
    "args, match",
    [
        (([0, 1], [1], [60, 62], [90, 90]), "differ in length"),
        (([0], [1], [60], [0]), "velocities"),
        (([0], [1], [128], [90]), "pitches"),
        (([0], [0], [60], [90]), "durations"),
        (([-1], [1], [60], [90]), "starts"),
    ],
)
def test_invalid_notes(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        notesequence_from_arrays(*args, bpm=120, key="Am")


def test_invalid_bpm() -> None:
    with pytest.raises(ValueError, match="bpm"):
        three_notes(bpm=0)


def test_empty_melody() -> None:
    ns = notesequence_from_arrays([], [], [], [], bpm=128, key="Dm")
    assert len(ns.notes) == 0 and ns.total_time == 0.0 and ns.tempos[0].qpm == 128
    back = notesequence_to_arrays(ns)
    assert back["pitch"].shape == (0,) and back["key"] == "Dm"


def test_round_trip_through_bytes() -> None:
    rng = np.random.default_rng(7)
    n = 200
    starts = np.sort(rng.uniform(0, 64, n))
    durs = rng.uniform(0.01, 4, n)
    pitch = rng.integers(0, 128, n)
    vel = rng.integers(1, 128, n)
    chords = [("Am", 0.0), ("F", 16.0), ("C", 32.25), ("G", 48.0)]
    ns = notesequence_from_arrays(
        starts, durs, pitch, vel, bpm=138.7, key="C#m", chords=chords, id="x", program=82, instrument=2
    )
    again = NS.FromString(ns.SerializeToString())
    assert again == ns
    back = notesequence_to_arrays(again)
    np.testing.assert_allclose(back["start_beats"], starts, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back["duration_beats"], durs, rtol=0, atol=1e-9)
    assert back["pitch"].tolist() == pitch.tolist()
    assert back["velocity"].tolist() == vel.tolist()
    assert back["program"].tolist() == [82] * n
    assert back["bpm"] == 138.7 and back["key"] == "C#m" and back["id"] == "x"
    assert [s for s, _ in back["chords"]] == [s for s, _ in chords]
    np.testing.assert_allclose([b for _, b in back["chords"]], [b for _, b in chords], rtol=0, atol=1e-9)
    assert back["total_beats"] == pytest.approx(float(np.max(starts + durs)), abs=1e-9)
    # and once more: arrays -> proto gives the same proto
    ns2 = notesequence_from_arrays(
        back["start_beats"], back["duration_beats"], back["pitch"], back["velocity"],
        bpm=back["bpm"], key=back["key"], chords=back["chords"], id="x", program=82, instrument=2,
    )
    for a, b in zip(ns2.notes, ns.notes):
        assert (a.pitch, a.velocity, a.program) == (b.pitch, b.velocity, b.program)
        assert a.start_time == pytest.approx(b.start_time, abs=1e-9)
        assert a.end_time == pytest.approx(b.end_time, abs=1e-9)


def test_melody_to_notesequence() -> None:
    mel = generate(key="Am", bpm=138, chord_progression=["Am", "F", "C", "G"], bars=4, seed=3)
    ns = melody_to_notesequence(mel, collection_name="rules")
    assert len(ns.notes) == len(mel.notes) > 0
    spb = 60 / 138
    for n, m in zip(ns.notes, mel.notes):
        assert (n.pitch, n.velocity, n.program) == (m.pitch, m.velocity, mel.program - 1)
        assert n.start_time == pytest.approx(m.start * spb, abs=1e-12)
        assert n.end_time == pytest.approx(m.end * spb, abs=1e-12)
    assert [(a.text, a.time) for a in ns.text_annotations] == [
        (c.symbol, pytest.approx(c.start * spb, abs=1e-12)) for c in mel.chords
    ]
    assert ns.key_signatures[0].key == 9 and ns.key_signatures[0].mode == NS.KeySignature.MINOR
    assert ns.collection_name == "rules" and ns.id == mel.name and ns.sequence_metadata.title == mel.name


def test_melody_keywords_override() -> None:
    mel = Melody(
        notes=(Note(0, 64, 1, 99), Note(1, 67, 2, 98)),
        bpm=130,
        key="Em",
        chords=(ChordSpan("Em", 0, 4), ChordSpan("C", 4, 4, inferred=True)),
        program=82,
        name="m1",
    )
    ns = melody_to_notesequence(mel, id="other", genre=["trance"])
    assert ns.id == "other" and ns.sequence_metadata.title == "m1"
    assert list(ns.sequence_metadata.genre) == ["trance"]
    assert {n.program for n in ns.notes} == {81}
    assert [a.text for a in ns.text_annotations] == ["Em", "C"]


# ---- Magenta's tools read it ---------------------------------------------------------------------


def test_note_seq_pretty_midi_conversion(note_seq) -> None:
    ns = three_notes(bpm=140, key="C#m", program=81)
    pm = note_seq.midi_io.note_sequence_to_pretty_midi(ns)
    assert len(pm.instruments) == 1
    inst = pm.instruments[0]
    assert inst.program == 80 and not inst.is_drum
    spb = 60 / 140
    got = [(n.pitch, n.velocity, n.start, n.end) for n in inst.notes]
    want = [(69, 100, 0.0, spb), (72, 90, spb, 1.5 * spb), (76, 80, 2.5 * spb, 4 * spb)]
    for g, w in zip(got, want, strict=True):
        assert g[:2] == w[:2]
        # pretty_midi rounds times to its tick grid (220 ticks per quarter at 140 BPM)
        assert g[2] == pytest.approx(w[2], abs=spb / 220) and g[3] == pytest.approx(w[3], abs=spb / 220)
    _, tempi = pm.get_tempo_changes()
    assert tempi.tolist() == pytest.approx([140.0])
    assert [k.key_number for k in pm.key_signature_changes] == [1 + 12]  # C# minor
    assert [(t.numerator, t.denominator) for t in pm.time_signature_changes] == [(4, 4)]
    # ... and back: pretty_midi -> NoteSequence through note_seq gives the same notes
    ns2 = note_seq.midi_io.midi_to_note_sequence(pm)
    assert [(n.pitch, n.program) for n in ns2.notes] == [(n.pitch, n.program) for n in ns.notes]


def test_note_seq_quantization(note_seq) -> None:
    ns = three_notes(bpm=137)
    q = note_seq.sequences_lib.quantize_note_sequence(ns, steps_per_quarter=4)
    assert [(n.quantized_start_step, n.quantized_end_step) for n in q.notes] == [(0, 4), (4, 6), (10, 16)]
    assert q.quantization_info.steps_per_quarter == 4
    assert [a.quantized_step for a in q.text_annotations] == [0, 16, 26]


def test_matches_note_seq_reading_the_projects_midi(note_seq) -> None:
    """Our NoteSequence and note_seq's own reading of `Melody.to_midi_bytes()` agree."""
    mel = generate(key="F#", bpm=128, chord_progression=["F#", "D#m", "B", "C#"], bars=2, seed=1)
    ours = melody_to_notesequence(mel)
    theirs = note_seq.midi_io.midi_to_note_sequence(mel.to_midi_bytes())
    assert [(n.pitch, n.velocity, n.program, n.is_drum) for n in ours.notes] == [
        (n.pitch, n.velocity, n.program, n.is_drum) for n in sorted(theirs.notes, key=lambda n: (n.start_time, n.pitch))
    ]
    for a, b in zip(ours.notes, sorted(theirs.notes, key=lambda n: (n.start_time, n.pitch))):
        assert a.start_time == pytest.approx(b.start_time, abs=1e-3)
        assert a.end_time == pytest.approx(b.end_time, abs=1e-3)
    assert theirs.tempos[0].qpm == pytest.approx(ours.tempos[0].qpm, abs=1e-3)
    assert (theirs.key_signatures[0].key, theirs.key_signatures[0].mode) == (
        ours.key_signatures[0].key, ours.key_signatures[0].mode
    )


def test_tfrecord_of_notesequences(tmp_path: Path) -> None:
    seqs = [
        melody_to_notesequence(generate(key=k, bpm=bpm, bars=2, seed=i), id=f"seq-{i}")
        for i, (k, bpm) in enumerate([("Am", 138), ("Cm", 140), ("G", 132), ("Bbm", 126)])
    ]
    p = tmp_path / "notesequences.tfrecord"
    assert write_tfrecord(p, (s.SerializeToString() for s in seqs)) == 4
    back = [music_pb2.NoteSequence.FromString(b) for b in read_tfrecord(p)]
    assert back == seqs
    assert [s.id for s in back] == ["seq-0", "seq-1", "seq-2", "seq-3"]
