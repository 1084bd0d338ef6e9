"""Tier 1 (gold) MIDI: the manifest, track listing, lead-track choice and `load_gold`.

The MIDI files are built here with mido, so every expected value (track indices, channels,
programs, note counts, chord spans) is known by construction.
"""

from __future__ import annotations

import csv
import hashlib
import io

import mido
import pytest

from trance_assets.music.gold import (
    MANIFEST_REQUIRED,
    GoldEntry,
    Manifest,
    ManifestError,
    TrackInfo,
    gold_name,
    load_gold,
    midi_tracks,
    parse_manifest,
    pick_lead_track,
)
from trance_assets.music.melody import ChordSpan, Melody, MidiError, Note
from trance_assets.music.rules import generate

TPB = 480
SRC = "tier1/manifest.csv"
HEADER = "file,title,artist,key,bpm,chords,verified_by,verified_on,licence,notes,reference_track,lead_track\n"


# ---- builders --------------------------------------------------------------------------------


def _track(name: str | None, notes, channel: int, program: int | None = None, meta=()) -> mido.MidiTrack:
    """notes: (start_beat, pitch, duration_beats[, velocity]); channel and program are wire values (0-based)."""
    trk = mido.MidiTrack()
    if name is not None:
        trk.append(mido.MetaMessage("track_name", name=name, time=0))
    if program is not None:
        trk.append(mido.Message("program_change", program=program, channel=channel, time=0))
    events = list(meta)
    for s, p, d, *v in notes:
        events.append((round((s + d) * TPB), 0, mido.Message("note_off", note=p, velocity=0, channel=channel)))
        events.append((round(s * TPB), 1, mido.Message("note_on", note=p, velocity=v[0] if v else 100, channel=channel)))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        trk.append(msg.copy(time=tick - now))
        now = tick
    trk.append(mido.MetaMessage("end_of_track", time=0))
    return trk


def _conductor(bpm: float | None = 138, key: str | None = "Am", markers=()) -> mido.MidiTrack:
    meta = []
    if bpm is not None:
        meta.append((0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    if key is not None:
        meta.append((0, 0, mido.MetaMessage("key_signature", key=key)))
    for beat, text in markers:
        meta.append((round(beat * TPB), 0, mido.MetaMessage("marker", text=text)))
    return _track("Song", [], 0, meta=meta)


def _save(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


LEAD = generate("Am", 138, ["Am", "F", "C", "G"], 4, seed=1)  # 43 notes, MIDI 67-86, monophonic
LEAD_NOTES = [(n.start, n.pitch, n.duration, n.velocity) for n in LEAD.notes]
# Pad: a sustained triad per bar (Am F C G) -> 12 notes, 2 of every 3 onsets overlap.
PAD_NOTES = [
    (bar * 4.0, p, 4.0)
    for bar, triad in enumerate([(57, 60, 64), (53, 57, 60), (55, 60, 64), (55, 59, 62)])
    for p in triad
]
# Bass: 16 sixteenths a bar on the chord root -> 64 notes (more than the lead), monophonic.
BASS_NOTES = [(bar * 4.0 + i * 0.25, root, 0.25) for bar, root in enumerate([33, 29, 36, 31]) for i in range(16)]
# Drums on channel 10: a kick on every beat and a hat on every off-beat 8th -> 32 notes.
DRUM_NOTES = [(b * 1.0, 36, 0.25) for b in range(16)] + [(b + 0.5, 42, 0.25) for b in range(16)]


def multitrack(names=("Pad", "Bass", "Drums", "Lead"), programs=True) -> bytes:
    """Type 1: 0 conductor, 1 pad (ch 1, GM 89), 2 bass (ch 2, GM 39), 3 drums (ch 10), 4 lead (ch 3, GM 81)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(_conductor())
    mid.tracks.append(_track(names[0], PAD_NOTES, 0, 88 if programs else None))
    mid.tracks.append(_track(names[1], BASS_NOTES, 1, 38 if programs else None))
    mid.tracks.append(_track(names[2], DRUM_NOTES, 9))
    mid.tracks.append(_track(names[3], LEAD_NOTES, 2, 80 if programs else None))
    return _save(mid)


def type0() -> bytes:
    """Type 0: one track 'song' with the lead (ch 1, GM 81), bass (ch 2, GM 39) and drums (ch 10)."""
    trk = mido.MidiTrack()
    trk.append(mido.MetaMessage("track_name", name="song", time=0))
    trk.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=0))
    trk.append(mido.Message("program_change", program=80, channel=0, time=0))
    trk.append(mido.Message("program_change", program=38, channel=1, time=0))
    events = []
    for ch, notes in ((0, LEAD_NOTES), (1, BASS_NOTES), (9, DRUM_NOTES)):
        for s, p, d, *v in notes:
            events.append((round((s + d) * TPB), 0, mido.Message("note_off", note=p, velocity=0, channel=ch)))
            events.append((round(s * TPB), 1, mido.Message("note_on", note=p, velocity=v[0] if v else 100, channel=ch)))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        trk.append(msg.copy(time=tick - now))
        now = tick
    trk.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=TPB)
    mid.tracks.append(trk)
    return _save(mid)


def lead_file(notes, *, bpm=140.0, key="C", chords=()) -> bytes:
    """A file as `Melody.to_midi` writes it: conductor (tempo, key, chord markers) + 'lead' track."""
    return Melody(tuple(notes), bpm=bpm, key=key, chords=tuple(chords)).to_midi_bytes()


def bare_file(notes) -> bytes:
    """Type 1 with a single unnamed track: no tempo, no key signature, no markers."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(_track(None, [(n.start, n.pitch, n.duration) for n in notes], 0))
    return _save(mid)


# A plain C major line: arpeggios and scale runs (Krumhansl: C major), 16 beats long.
C_MAJOR = [
    Note(float(i), p, 1.0)
    for i, p in enumerate([60, 64, 67, 72, 71, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 60])
]


def entry(file="song.mid", **overrides) -> GoldEntry:
    row = {"file": file, "title": "Song", "artist": "Someone", "key": "", "bpm": "", "chords": "",
           "verified_by": "alice", "verified_on": "2024-05-01", "licence": "CC-BY-4.0", "notes": "",
           "reference_track": "", "lead_track": ""}
    row.update(overrides)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    w.writeheader()
    w.writerow(row)
    m = parse_manifest(buf.getvalue(), SRC)
    assert m.problems == ()
    return m[file]


# ---- the manifest ----------------------------------------------------------------------------


GOOD = (
    HEADER
    + 'gold_01.mid,Aurora,Someone,A minor,138,Am F  C G,alice,2024-05-01,CC-BY-4.0,"hand checked, bar 3 fixed",Demo 01.wav,2\n'
    + "sub/gold_02.mid,Nightfall,Other,,,,bob,,CC0-1.0,,,Lead Synth\n"
    + "\n"
    + "./gold_03.mid,Solace,X,Dm,140.5,Dm Bb,,,,,,\n"
)


def test_good_manifest():
    m = parse_manifest(GOOD, SRC)
    assert isinstance(m, Manifest)
    assert m.problems == ()
    assert list(m) == ["gold_01.mid", "sub/gold_02.mid", "gold_03.mid"]
    e1 = m["gold_01.mid"]
    assert (e1.title, e1.artist, e1.key, e1.bpm) == ("Aurora", "Someone", "Am", 138.0)
    assert e1.chords == ("Am", "F", "C", "G")
    assert (e1.verified_by, e1.verified_on, e1.licence) == ("alice", "2024-05-01", "CC-BY-4.0")
    assert e1.notes == "hand checked, bar 3 fixed" and e1.reference_track == "Demo 01.wav"
    assert e1.lead_track == 2 and e1.line == 2 and e1.verified
    e2 = m["sub/gold_02.mid"]
    assert e2.key is None and e2.bpm is None and e2.chords == () and e2.lead_track == "Lead Synth"
    assert e2.line == 3 and e2.verified and e2.verified_on == ""
    e3 = m["gold_03.mid"]  # './' is dropped; the blank line 4 is skipped but still counted
    assert e3.file == "gold_03.mid" and e3.line == 5 and e3.bpm == 140.5 and e3.key == "Dm"
    assert not e3.verified and e3.licence == "" and e3.lead_track is None
    assert "./gold_03.mid" in m and m.get("nope.mid") is None and len(m) == 3
    d = e1.to_dict()
    assert d["chords"] == ["Am", "F", "C", "G"] and d["verified"] is True and d["row_hash"] == e1.row_hash
    assert m.problem_for("gold_01.mid") is None


def test_license_alias_and_column_order_and_bom():
    text = "\ufeffLicense,file,verified_on,verified_by,bpm,key,artist,title\nMIT,a.mid,,carol,130,Em,Me,A\n"
    m = parse_manifest(text, SRC)
    assert m.problems == ()
    e = m["a.mid"]
    assert e.licence == "MIT" and e.key == "Em" and e.bpm == 130.0 and e.verified_by == "carol"
    assert "licence" in m.columns and "license" not in m.columns


def test_header_errors_raise_with_source_and_line():
    with pytest.raises(ManifestError, match=r"^tier1/manifest\.csv:1: header lacks required column\(s\) bpm, licence"):
        parse_manifest("file,title,artist,key,verified_by,verified_on\na.mid,A,B,Am,x,\n", SRC)
    # The header is the first non-blank line: here line 3.
    with pytest.raises(ManifestError, match=r"^tier1/manifest\.csv:3: header lacks required column\(s\) verified_on"):
        parse_manifest("\n\nfile,title,artist,key,bpm,verified_by,licence\n", SRC)
    with pytest.raises(ManifestError, match=r"^tier1/manifest\.csv:1: empty manifest"):
        parse_manifest(" \n\n", SRC)
    with pytest.raises(ManifestError, match=r"tier1/manifest\.csv:1: column 'licence' appears twice.*'license'"):
        parse_manifest(HEADER.strip() + ",license\n", SRC)
    assert issubclass(ManifestError, ValueError)
    assert set(MANIFEST_REQUIRED) == {"file", "title", "artist", "key", "bpm", "verified_by", "verified_on", "licence"}


def test_bad_rows_are_problems_with_line_numbers_and_do_not_block_others():
    text = (
        HEADER  # 1
        + "good.mid,T,A,Am,138,Am F,alice,,CC0,,,\n"  # 2
        + "badkey.mid,T,A,H#,138,,alice,,CC0,,,\n"  # 3
        + "badbpm.mid,T,A,Am,fast,,alice,,CC0,,,\n"  # 4
        + "zerobpm.mid,T,A,Am,0,,alice,,CC0,,,\n"  # 5
        + "badchord.mid,T,A,Am,138,Am Xq,alice,,CC0,,,\n"  # 6
        + ",T,A,Am,138,,alice,,CC0,,,\n"  # 7
        + "good2.mid,T,A,,-1e400,,alice,,CC0,,,\n"  # 8: -inf
        + "dup.mid,T,A,Am,138,,alice,,CC0,,,\n"  # 9
        + 'multi.mid,T,A,Am,138,,alice,,CC0,"two\nlines",,\n'  # 10-11
        + "dup.mid,T,A,Am,139,,alice,,CC0,,,\n"  # 12
        + "ok3.mid,T,A,Am,138,,alice,,CC0,,,\n"  # 13
        + "extra.mid,T,A,Am,138,,alice,,CC0,,,,surplus\n"  # 14
    )
    m = parse_manifest(text, SRC)
    assert sorted(m) == ["good.mid", "multi.mid", "ok3.mid"]
    assert m["multi.mid"].line == 10 and m["ok3.mid"].line == 13
    got = [(p.line, p.file) for p in m.problems]
    assert got == [(3, "badkey.mid"), (4, "badbpm.mid"), (5, "zerobpm.mid"), (6, "badchord.mid"), (7, ""),
                   (8, "good2.mid"), (12, "dup.mid"), (14, "extra.mid")]
    msg = {p.file: p.message for p in m.problems}
    assert "bad key 'H#'" in msg["badkey.mid"]
    assert "bad bpm 'fast': not a number" in msg["badbpm.mid"]
    assert "bad bpm '0': must be a number > 0" in msg["zerobpm.mid"]
    assert "bad bpm '-1e400'" in msg["good2.mid"]
    assert "malformed chord" in msg["badchord.mid"] and "'Xq'" in msg["badchord.mid"]
    assert msg[""] == "empty file name"
    assert "duplicate row for file 'dup.mid' (also on line 9)" in msg["dup.mid"]
    assert "13 values but the header has 12 columns" in msg["extra.mid"]
    # Problems name the manifest and the line; problem_for finds them by file.
    p = m.problem_for("badbpm.mid")
    assert str(p) == "tier1/manifest.csv:4 (badbpm.mid): bad bpm 'fast': not a number"
    assert m.problem_for("./dup.mid").line == 12 and "dup.mid" not in m
    assert m.problem_for("good.mid") is None


def test_paths_outside_tier1_are_problems():
    text = HEADER + "../x.mid,T,A,,,,a,,L,,,\n/abs/y.mid,T,A,,,,a,,L,,,\nsub\\z.mid,T,A,,,,a,,L,,,\n"
    m = parse_manifest(text, SRC)
    assert list(m) == ["sub/z.mid"]
    assert [p.line for p in m.problems] == [2, 3]
    assert "'..' is not allowed" in m.problems[0].message and "not absolute" in m.problems[1].message


def test_a_file_on_a_bad_and_a_good_row_is_ambiguous():
    text = HEADER + "a.mid,T,A,Zm,,,a,,L,,,\na.mid,T,A,Am,,,a,,L,,,\n"
    m = parse_manifest(text, SRC)
    assert "a.mid" not in m
    assert [(p.line, p.file) for p in m.problems] == [(2, "a.mid"), (3, "a.mid")]
    assert "bad key" in m.problem_for("a.mid").message


def test_row_hash_tracks_changes_of_meaning_only():
    base = parse_manifest(GOOD, SRC)
    changed = parse_manifest(GOOD.replace("A minor,138,", "A minor,139,"), SRC)
    assert changed["gold_01.mid"].row_hash != base["gold_01.mid"].row_hash
    assert changed["sub/gold_02.mid"].row_hash == base["sub/gold_02.mid"].row_hash
    assert changed["gold_03.mid"].row_hash == base["gold_03.mid"].row_hash
    for edit in (("A minor", "Am"), (",138,", ",138.0,"), ("Am F  C G", " Am F C G "), ("Aurora,", " Aurora ,")):
        same = parse_manifest(GOOD.replace(*edit), SRC)
        assert same["gold_01.mid"].row_hash == base["gold_01.mid"].row_hash, edit
    for edit in (("Aurora", "Aurora II"), ("alice", "alicia"), ("Am F  C G", "Am F C"), (",Demo 01.wav,2", ",Demo 01.wav,1")):
        other = parse_manifest(GOOD.replace(*edit), SRC)
        assert other["gold_01.mid"].row_hash != base["gold_01.mid"].row_hash, edit
    # Moving a row (its line changes) does not change its hash.
    lines = GOOD.splitlines(keepends=True)
    moved = parse_manifest(lines[0] + lines[2] + lines[1] + lines[4], SRC)
    assert moved["gold_01.mid"].line == 3 and moved["gold_01.mid"].row_hash == base["gold_01.mid"].row_hash
    assert len(base["gold_01.mid"].row_hash) == 64


# ---- tracks and the lead ---------------------------------------------------------------------


def test_midi_tracks_of_a_type1_file():
    tracks = midi_tracks(multitrack(), "multi.mid")
    assert [(t.index, t.name, t.channels, t.program, t.n_notes, t.is_drum) for t in tracks] == [
        (0, "Song", (), None, 0, False),
        (1, "Pad", (1,), 89, 12, False),
        (2, "Bass", (2,), 39, 64, False),
        (3, "Drums", (10,), None, 32, True),
        (4, "Lead", (3,), 81, 43, False),
    ]
    pad, bass, lead = tracks[1], tracks[2], tracks[4]
    assert pad.polyphony == pytest.approx(8 / 12) and bass.polyphony == 0.0 and lead.polyphony == 0.0
    assert (bass.pitch_min, bass.pitch_max, bass.pitch_median) == (29, 36, 32.0)
    assert (pad.pitch_min, pad.pitch_max) == (53, 64)
    assert (lead.pitch_min, lead.pitch_max) == (67, 86)
    assert lead.notes == LEAD.notes and tracks[0].polyphony is None and tracks[0].pitch_median is None
    assert lead.to_dict()["notes"] == 43


def test_default_pick_is_the_lead_not_the_busiest_track():
    tracks = midi_tracks(multitrack(), "multi.mid")
    idx, reason = pick_lead_track(tracks)
    assert idx == 4
    assert "track 4 'Lead'" in reason and "named like a lead" in reason and "GM program 81" in reason
    assert "2 drum/empty track(s) excluded" in reason
    # Without names and programs, monophony and register still single out the lead
    # (the bass is monophonic and busier, but an octave and more below middle C).
    idx, reason = pick_lead_track(midi_tracks(multitrack(names=("", "", "", ""), programs=False), "x.mid"))
    assert idx == 4 and "monophonic" in reason and "ahead of track 2" in reason


def test_pick_by_preference_index_and_name():
    tracks = midi_tracks(multitrack(), "multi.mid")
    assert pick_lead_track(tracks, 1)[0] == 1
    assert pick_lead_track(tracks, "pad") == (1, "chosen by preference 'pad': track 1 'Pad'")
    assert pick_lead_track(tracks, "BASS")[0] == 2
    assert pick_lead_track(tracks, "2")[0] == 2  # digits that name no track: an index
    assert pick_lead_track(tracks, "lea")[0] == 4  # a unique part of a name
    idx, reason = pick_lead_track(tracks, "drums")
    assert idx == 3 and "drum channel" in reason
    assert pick_lead_track(tracks, "")[0] == 4  # an empty preference is no preference


def test_unknown_preference_lists_the_tracks():
    tracks = midi_tracks(multitrack(), "multi.mid")
    with pytest.raises(MidiError) as err:
        pick_lead_track(tracks, "vocals", label="multi.mid")
    text = str(err.value)
    assert text.startswith("multi.mid: no track named 'vocals'")
    for part in ("0 'Song' (no notes)", "1 'Pad' (ch 1, program 89, 12 notes)", "3 'Drums' (ch 10, 32 notes, drums)",
                 "4 'Lead' (ch 3, program 81, 43 notes)"):
        assert part in text
    with pytest.raises(MidiError, match=r"no track 7 \(available tracks: 0 'Song'"):
        pick_lead_track(tracks, 7)
    with pytest.raises(MidiError, match=r"'Song'.*has no notes"):
        pick_lead_track(tracks, 0)
    with pytest.raises(MidiError, match="no melodic track with notes"):
        pick_lead_track([tracks[0], tracks[3]])


def test_type0_file_is_split_by_channel():
    data = type0()
    tracks = midi_tracks(data, "t0.mid")
    assert [(t.index, t.name, t.channels, t.program, t.n_notes, t.is_drum) for t in tracks] == [
        (0, "song (channel 1)", (1,), 81, 43, False),
        (1, "song (channel 2)", (2,), 39, 64, False),
        (2, "song (channel 10)", (10,), None, 32, True),
    ]
    assert tracks[0].notes == LEAD.notes
    assert pick_lead_track(tracks)[0] == 0
    assert pick_lead_track(tracks, "channel 2")[0] == 1
    r = load_gold(data, file="t0.mid", entry=entry("t0.mid", key="Am"))
    assert r.melody.notes == LEAD.notes and r.track.index == 0 and r.melody.bpm == 140.0


# ---- load_gold -------------------------------------------------------------------------------


def test_multitrack_load_picks_the_lead_or_the_preferred_track():
    data = multitrack()
    r = load_gold(data, file="multi.mid", entry=entry("multi.mid"))
    assert r.track.index == 4 and r.melody.notes == LEAD.notes and r.melody.program == 81
    assert r.melody.key == "Am" and r.melody.attributes["key_source"] == "file"
    assert r.melody.bpm == 138.0 and r.melody.attributes["bpm_source"] == "file"
    assert r.warnings == [] and r.verified
    pad = load_gold(data, file="multi.mid", entry=entry("multi.mid"), lead_track="pad")
    assert pad.track.index == 1 and len(pad.melody.notes) == 12 and pad.melody.program == 89
    assert pad.melody.attributes["lead_track_name"] == "Pad" and "preference 'pad'" in pad.track_reason
    # The manifest's lead_track column is used when the call gives none; the call wins over it.
    assert load_gold(data, file="multi.mid", entry=entry("multi.mid", lead_track="Bass")).track.index == 2
    assert load_gold(data, file="multi.mid", entry=entry("multi.mid", lead_track="1")).track.index == 1
    assert load_gold(data, file="multi.mid", entry=entry("multi.mid", lead_track="Bass"), lead_track=4).track.index == 4
    with pytest.raises(MidiError, match=r"^multi\.mid: no track named 'nope'"):
        load_gold(data, file="multi.mid", entry=entry("multi.mid", lead_track="nope"))


def test_manifest_key_and_bpm_override_the_file():
    data = lead_file(C_MAJOR, bpm=140.0, key="C")
    e = entry("song.mid", key="Am", bpm="138")
    r = load_gold(data, file="song.mid", entry=e)
    assert r.melody.key == "Am" and r.melody.bpm == 138.0
    a = r.melody.attributes
    assert a["key_source"] == "manifest" and a["bpm_source"] == "manifest"
    assert r.warnings == [
        "manifest key Am disagrees with the key estimated from the notes (C, its relative key); the manifest wins",
        "manifest key Am differs from the file's key signature C; the manifest wins",
        "manifest bpm 138 disagrees with the file tempo 140 BPM; the manifest wins",
    ]
    assert r.verified
    # Within 1 BPM and the same key as the notes: no warnings.
    quiet = load_gold(data, file="song.mid", entry=entry("song.mid", key="C major", bpm="140.9"))
    assert quiet.melody.bpm == 140.9 and quiet.melody.key == "C" and quiet.warnings == []
    # An unrelated key is reported with both names.
    far = load_gold(data, file="song.mid", entry=entry("song.mid", key="F#m"))
    assert far.warnings[0] == "manifest key F#m disagrees with the key estimated from the notes (C); the manifest wins"
    assert far.melody.bpm == 140.0 and far.melody.attributes["bpm_source"] == "file"


def test_no_tempo_and_no_key_in_file_or_manifest():
    r = load_gold(bare_file(C_MAJOR), file="bare.mid", entry=entry("bare.mid"))
    assert r.melody.bpm == 120.0 and r.melody.attributes["bpm_source"] == "default"
    assert r.melody.key == "C" and r.melody.attributes["key_source"] == "estimated"
    assert r.warnings == ["no tempo in file or manifest; assuming 120 BPM"]
    assert r.melody.program == 81 and r.track.program is None and r.track.name == ""
    # With a manifest bpm there is nothing to warn about.
    assert load_gold(bare_file(C_MAJOR), file="bare.mid", entry=entry("bare.mid", bpm="132")).warnings == []


def test_chords_from_file_markers_win_over_the_manifest():
    chords = [ChordSpan("Am", 0.0, 8.0), ChordSpan("F", 8.0, 4.0), ChordSpan("E", 12.0, 4.0, inferred=True)]
    data = lead_file(C_MAJOR, key="Am", chords=chords)  # markers 'Am' @0, 'F' @8, 'E?' @12
    r = load_gold(data, file="song.mid", entry=entry("song.mid", chords="Dm C"))
    assert r.melody.chords == (
        ChordSpan("Am", 0.0, 8.0, False),
        ChordSpan("F", 8.0, 4.0, False),
        ChordSpan("E", 12.0, 4.0, True),
    )
    assert r.melody.attributes["chords_source"] == "file"


def test_manifest_chords_one_per_bar_cycled_over_the_melody():
    notes = [Note(i * 2.0, 69 + (i % 3) * 3, 2.0) for i in range(9)]  # last note ends at beat 18: 5 bars
    r = load_gold(lead_file(notes, key="Am"), file="song.mid", entry=entry("song.mid", chords="Am F C G"))
    assert r.melody.bars == 5
    assert r.melody.chords == (
        ChordSpan("Am", 0.0, 4.0, False),
        ChordSpan("F", 4.0, 4.0, False),
        ChordSpan("C", 8.0, 4.0, False),
        ChordSpan("G", 12.0, 4.0, False),
        ChordSpan("Am", 16.0, 4.0, False),
    )
    assert r.melody.attributes["chords_source"] == "manifest"
    # Neither markers nor manifest chords: no chord track.
    none = load_gold(lead_file(notes, key="Am"), file="song.mid", entry=entry("song.mid"))
    assert none.melody.chords == () and none.melody.attributes["chords_source"] == "none"


def test_unverified_entries_and_files_without_a_row():
    data = lead_file(C_MAJOR)
    r = load_gold(data, file="song.mid", entry=entry("song.mid", verified_by=""))
    assert r.verified is False and r.melody.attributes["verified"] is False
    assert r.warnings == ["song.mid: manifest row (line 2) has an empty verified_by: not verified"]
    r = load_gold(data, file="song.mid", entry=None)
    assert r.verified is False
    assert r.warnings == ["song.mid has no manifest row: not verified"]
    a = r.melody.attributes
    assert a["title"] == "" and a["manifest_row_hash"] is None and a["key_source"] == "file"
    with pytest.raises(ValueError, match="entry is for 'other.mid'"):
        load_gold(data, file="song.mid", entry=entry("other.mid"))


def test_provenance_attributes_and_name():
    data = lead_file(C_MAJOR, key="C")
    e = entry("Gold 01 - Aurora.mid", title="Aurora", artist="Me", licence="CC0-1.0", notes="fixed bar 3",
              reference_track="Demo 01.wav", verified_on="2024-06-02", key="C", bpm="140")
    r = load_gold(data, file="Gold 01 - Aurora.mid", entry=e)
    assert r.melody.name == "gold_01_aurora"
    assert r.melody.attributes == {
        "source": "tier1/gold",
        "file": "Gold 01 - Aurora.mid",
        "sha256": hashlib.sha256(data).hexdigest(),
        "title": "Aurora",
        "artist": "Me",
        "licence": "CC0-1.0",
        "verified": True,
        "verified_by": "alice",
        "verified_on": "2024-06-02",
        "notes": "fixed bar 3",
        "reference_track": "Demo 01.wav",
        "manifest_row_hash": e.row_hash,
        "lead_track_index": 1,
        "lead_track_name": "lead",
        "lead_track_reason": r.track_reason,
        "key_source": "manifest",
        "bpm_source": "manifest",
        "chords_source": "none",
        "tempo_meaningful": True,
    }
    assert isinstance(r.track, TrackInfo) and r.track.index == 1
    assert Melody.from_json(r.melody.to_json()) == r.melody  # JSON-safe provenance
    assert gold_name("Artist/My Lead.MID") == "artist_my_lead" and gold_name("./x.mid") == "x"


def test_demo_style_manifest_and_file_roundtrip():
    """A row as `demo.write_demo_data` writes it (verified_by demo-generator, empty verified_on)."""
    from trance_assets.demo import MANIFEST_COLUMNS

    m = generate("Em", 132, ["Em", "C", "D", "Em"], 8, seed=3)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerow({"file": "gold_02_nightfall.mid", "title": "Nightfall", "artist": "trance_assets demo", "key": m.key,
                "bpm": m.bpm, "chords": " ".join(c.symbol for c in m.chords[:4]), "verified_by": "demo-generator",
                "verified_on": "", "licence": "CC0-1.0 (generated demo data)", "notes": "generated; NOT human-verified",
                "reference_track": "Demo 02 - Nightfall.wav"})
    man = parse_manifest(buf.getvalue(), "storage/dataset/tier1/manifest.csv")
    assert man.problems == () and man["gold_02_nightfall.mid"].bpm == 132.0
    r = load_gold(m.to_midi_bytes(), file="gold_02_nightfall.mid", entry=man["gold_02_nightfall.mid"])
    assert r.verified and r.melody.notes == m.notes and r.melody.chords == m.chords
    assert r.melody.key == "Em" and r.melody.bpm == 132.0 and r.melody.bars == 8


def test_corrupt_bytes_raise_midi_error_naming_the_file():
    with pytest.raises(MidiError, match=r"^broken\.mid: not a readable MIDI file"):
        load_gold(b"this is not midi", file="broken.mid", entry=None)
    with pytest.raises(MidiError, match=r"^cut\.mid: not a readable MIDI file"):
        load_gold(multitrack()[:40], file="cut.mid", entry=None)
    with pytest.raises(MidiError, match=r"^empty\.mid: not a readable MIDI file \(empty file\)"):
        midi_tracks(b"", "empty.mid")
    with pytest.raises(MidiError, match=r"^x\.mid: no melodic track"):
        load_gold(bare_file([]), file="x.mid", entry=None)
