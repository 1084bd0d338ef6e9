"""The Melody model's MIDI and JSON forms: what the bytes contain (read back with mido) and that
`melody_from_midi` returns the same notes, tempo, key and chord track."""

from __future__ import annotations

import io

import mido
import pytest

from trance_assets.music.melody import (
    GM_LEAD_PROGRAM,
    TICKS_PER_BEAT,
    ChordSpan,
    Melody,
    MelodySet,
    MidiError,
    Note,
    melody_from_midi,
)
from trance_assets.music.rules import generate
from trance_assets.music.theory import ALL_KEYS, default_progression


@pytest.fixture(scope="module")
def melody() -> Melody:
    return generate(key="Am", bpm=140, chord_progression=["Am", "F", "C", "G"], bars=16, seed=0)


def parse(data: bytes) -> mido.MidiFile:
    return mido.MidiFile(file=io.BytesIO(data))


def lead_track(mid: mido.MidiFile) -> mido.MidiTrack:
    tracks = [t for t in mid.tracks if any(m.type == "note_on" for m in t)]
    assert len(tracks) == 1
    return tracks[0]


def absolute(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    now, out = 0, []
    for msg in track:
        now += msg.time
        out.append((now, msg))
    return out


# ---- the bytes -------------------------------------------------------------------------------


def test_midi_header_tempo_and_meter(melody: Melody) -> None:
    mid = parse(melody.to_midi_bytes())
    assert mid.type == 1
    assert mid.ticks_per_beat == TICKS_PER_BEAT == 480
    metas = [m for t in mid.tracks for m in t if m.is_meta]
    tempos = [m for m in metas if m.type == "set_tempo"]
    assert [m.tempo for m in tempos] == [mido.bpm2tempo(140)] == [428571]
    assert mido.tempo2bpm(tempos[0].tempo) == pytest.approx(140, abs=1e-3)
    sigs = [m for m in metas if m.type == "time_signature"]
    assert [(m.numerator, m.denominator) for m in sigs] == [(4, 4)]
    assert [m.key for m in metas if m.type == "key_signature"] == ["Am"]


def test_lead_track_program_is_gm_81(melody: Melody) -> None:
    lead = lead_track(parse(melody.to_midi_bytes()))
    programs = [m.program for m in lead if m.type == "program_change"]
    assert programs == [80]  # GM program 81 "Lead 1 (square)", 0-based on the wire
    assert melody.program == GM_LEAD_PROGRAM == 81
    first_note = next(i for i, m in enumerate(lead) if m.type == "note_on")
    assert next(i for i, m in enumerate(lead) if m.type == "program_change") < first_note


def test_note_events_are_at_exact_ticks(melody: Melody) -> None:
    events = absolute(lead_track(parse(melody.to_midi_bytes())))
    ons = [(t, m.note, m.velocity) for t, m in events if m.type == "note_on" and m.velocity > 0]
    offs = [(t, m.note) for t, m in events if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0)]
    assert ons == [(int(n.start * 480), n.pitch, n.velocity) for n in melody.notes]
    assert sorted(offs) == sorted((int(n.end * 480), n.pitch) for n in melody.notes)
    end_tick = events[-1][0]
    assert events[-1][1].type == "end_of_track"
    assert end_tick == 16 * 4 * 480


def test_chord_markers(melody: Melody) -> None:
    mid = parse(melody.to_midi_bytes())
    markers = [(t, m.text) for tr in mid.tracks for t, m in absolute(tr) if m.type == "marker"]
    assert markers == [(b * 4 * 480, ["Am", "F", "C", "G"][b % 4]) for b in range(16)]


def test_handwritten_melody_bytes() -> None:
    m = Melody(
        notes=(Note(0, 69, 1, 100), Note(1.5, 72, 0.25, 90), Note(2, 76, 2, 80)),
        bpm=128,
        key="C",
        chords=(ChordSpan("Am", 0, 4), ChordSpan("F/C", 4, 4, inferred=True)),
        bars=2,
    )
    mid = parse(m.to_midi_bytes())
    events = absolute(lead_track(mid))
    assert [(t, m.type, m.note) for t, m in events if m.type.startswith("note")] == [
        (0, "note_on", 69),
        (480, "note_off", 69),
        (720, "note_on", 72),
        (840, "note_off", 72),
        (960, "note_on", 76),
        (1920, "note_off", 76),
    ]
    markers = [(t, m.text) for tr in mid.tracks for t, m in absolute(tr) if m.type == "marker"]
    assert markers == [(0, "Am"), (1920, "F/C?")]  # '?' marks an inferred chord
    assert [m.tempo for tr in mid.tracks for m in tr if m.type == "set_tempo"] == [468750]


# ---- melody_from_midi ------------------------------------------------------------------------


def test_roundtrip_returns_the_same_melody(melody: Melody) -> None:
    back = melody_from_midi(melody.to_midi_bytes())
    assert back.notes == melody.notes
    assert back.bpm == 140.0
    assert back.key == "Am"
    assert [c.symbol for c in back.chords] == [c.symbol for c in melody.chords]
    assert back.chords == melody.chords


@pytest.mark.parametrize("key", ALL_KEYS, ids=lambda k: k.name)
def test_roundtrip_in_every_key(key) -> None:
    m = generate(key, 133, default_progression(key), bars=8, seed=key.tonic)
    back = melody_from_midi(m.to_midi_bytes())
    assert (back.notes, back.bpm, back.key, back.chords) == (m.notes, 133.0, key.name, m.chords)


def test_roundtrip_keeps_inferred_chords_and_fractional_tempo() -> None:
    m = Melody(
        notes=(Note(0, 69, 1), Note(1.25, 71, 0.75), Note(4, 72, 4)),
        bpm=137.5,
        key="Am",
        chords=(ChordSpan("Am", 0, 4, inferred=True), ChordSpan("Dm7", 4, 4)),
        bars=2,
    )
    back = melody_from_midi(m.to_midi_bytes())
    assert back.notes == m.notes
    assert back.bpm == 137.5
    assert back.chords == m.chords


def test_roundtrip_through_a_file(tmp_path, melody: Melody) -> None:
    path = tmp_path / "lead.mid"
    melody.to_midi().save(str(path))
    back = melody_from_midi(path)
    assert back.name == "lead"
    assert back.notes == melody.notes


def test_key_is_estimated_without_a_key_signature() -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    # A C major scale up and down, tonic held: C major.
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60]
    for p in pitches:
        tr.append(mido.Message("note_on", note=p, velocity=90, time=0))
        tr.append(mido.Message("note_off", note=p, velocity=0, time=480 * (2 if p % 12 == 0 else 1)))
    mid.tracks.append(tr)
    buf = io.BytesIO()
    mid.save(file=buf)
    back = melody_from_midi(buf.getvalue())
    assert back.key == "C"
    assert back.bpm == 120.0
    assert back.chords == ()
    assert [n.pitch for n in back.notes] == pitches


@pytest.mark.parametrize("data", [b"", b"not a midi file", b"MThd\x00\x00\x00\x06\x00\x01"])
def test_unreadable_bytes_raise_midi_error(data: bytes) -> None:
    with pytest.raises(MidiError, match="<bytes>: not a readable MIDI file"):
        melody_from_midi(data)


def test_file_without_notes_raises_midi_error() -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)]))
    buf = io.BytesIO()
    mid.save(file=buf)
    with pytest.raises(MidiError, match="no notes"):
        melody_from_midi(buf.getvalue())


# ---- JSON and the model ----------------------------------------------------------------------


def test_dict_and_json_roundtrip(melody: Melody) -> None:
    d = melody.to_dict()
    assert d["key"] == "Am" and d["bpm"] == 140.0 and d["bars"] == 16 and d["program"] == 81
    assert d["notes"][0] == [melody.notes[0].start, melody.notes[0].pitch, melody.notes[0].duration, melody.notes[0].velocity]
    again = Melody.from_dict(d)
    assert again == melody
    assert again.attributes == melody.attributes
    assert Melody.from_json(melody.to_json()) == melody


def test_melody_validates_and_sorts() -> None:
    m = Melody(notes=(Note(2, 64, 1), Note(0, 60, 1)), bpm=140, key="Am")
    assert [n.start for n in m.notes] == [0, 2]
    assert m.length_beats == 3.0 and m.n_bars == 1
    with pytest.raises(ValueError, match="bpm"):
        Melody(notes=(), bpm=0, key="Am")
    with pytest.raises(ValueError, match="'H'"):
        Melody(notes=(), bpm=140, key="H")
    with pytest.raises(ValueError, match="duration"):
        Note(0, 60, 0)
    with pytest.raises(ValueError, match="pitch"):
        Note(0, 128, 1)


def test_melody_set_names_must_be_unique(melody: Melody) -> None:
    s = MelodySet((melody,))
    assert len(s) == 1 and list(s) == [melody]
    with pytest.raises(ValueError, match="repeated"):
        MelodySet((melody, melody))


def test_chord_markers_from_several_tracks_are_ordered_in_time() -> None:
    """Chord text in two tracks (conductor: bars 1 and 3; lead: bar 2) gives three one-bar chords.
    (The reader used to take each span's end from the unsorted list: Am lasted two bars, F vanished.)"""
    mid = mido.MidiFile(ticks_per_beat=480)
    conductor = mido.MidiTrack(
        [mido.MetaMessage("marker", text="Am", time=0), mido.MetaMessage("marker", text="C", time=3840)]
    )
    lead = mido.MidiTrack([mido.MetaMessage("text", text="F", time=1920)])
    lead.append(mido.Message("note_on", note=69, velocity=90, time=0))
    lead.append(mido.Message("note_off", note=69, velocity=0, time=1920))
    lead.append(mido.Message("note_on", note=72, velocity=90, time=0))
    lead.append(mido.Message("note_off", note=72, velocity=0, time=480))
    mid.tracks.extend([conductor, lead])
    buf = io.BytesIO()
    mid.save(file=buf)
    back = melody_from_midi(buf.getvalue(), key="Am")
    assert back.chords == (ChordSpan("Am", 0.0, 4.0), ChordSpan("F", 4.0, 4.0), ChordSpan("C", 8.0, 4.0))
