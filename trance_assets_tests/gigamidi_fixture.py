"""A tiny GigaMIDI look-alike: parquet shards in GigaMIDI's column schema, MIDI generated here.

`band_midi` builds a multi-track file the lead picker has to see through: a chordal pad, a bass line,
a monophonic piano arpeggio, the synth lead (a rule-engine melody) and drums on channel 10.
`write_fixture` writes two shards (one in a sub-folder) whose rows exercise the filters; `ROWS`
documents what each row is for.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import mido
import polars as pl

from trance_assets.music.melody import Melody
from trance_assets.music.rules import generate

TPB = 480
PROGRESSION = ["Am", "F", "C", "G"]
CHORD_TONES = {"Am": (57, 60, 64), "F": (53, 57, 60), "C": (48, 52, 55), "G": (55, 59, 62)}
CHORD_ROOTS = {"Am": 33, "F": 29, "C": 36, "G": 31}

# Voice numbering of `band_midi` (note-bearing tracks in file order; the conductor has no notes).
PAD, BASS, PIANO, LEAD, DRUMS = range(5)
# 1-based GM programs and 0-based channels of the band's parts.
PROGRAMS = {PAD: 89, BASS: 39, PIANO: 1, LEAD: 82}
CHANNELS = {PAD: 0, BASS: 1, PIANO: 2, LEAD: 3, DRUMS: 9}

SCHEMA = {
    "split": pl.String,
    "md5": pl.String,
    "music": pl.Binary,
    "NOMML": pl.List(pl.Int64),
    "num_tracks": pl.Int64,
    "TPQN": pl.Int64,
    "tempo": pl.String,
    "loop_track_idx": pl.List(pl.Int64),
    "loop_instrument_type": pl.List(pl.String),
    "loop_start": pl.List(pl.Int64),
    "loop_end": pl.List(pl.Int64),
    "loop_duration_beats": pl.List(pl.Float64),
    "loop_note_density": pl.List(pl.Float64),
    "music_styles_curated": pl.List(pl.String),
    "music_style_scraped": pl.String,
    "music_style_audio_text_Discogs": pl.List(pl.String),
    "music_style_audio_text_Lastfm": pl.List(pl.String),
    "music_style_audio_text_Tagtraum": pl.List(pl.String),
    "title": pl.String,
    "artist": pl.String,
}

CORRUPT_MIDI = b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\x00\x00\x10\x00\x90\x3c"


def lead_melody(seed: int, bars: int = 8, bpm: float = 140.0) -> Melody:
    return generate("Am", bpm, PROGRESSION, bars, seed=seed)


def _track(name: str, events: list[tuple[int, mido.Message]], program: int | None = None, channel: int = 0) -> mido.MidiTrack:
    trk = mido.MidiTrack()
    trk.append(mido.MetaMessage("track_name", name=name, time=0))
    if program is not None:
        trk.append(mido.Message("program_change", program=program - 1, channel=channel, time=0))
    now = 0
    # note_off before note_on at the same tick
    for tick, msg in sorted(events, key=lambda e: (e[0], 0 if e[1].type == "note_off" else 1)):
        trk.append(msg.copy(time=tick - now))
        now = tick
    return trk


def _notes(channel: int, notes: list[tuple[float, int, float]], velocity: int = 90) -> list[tuple[int, mido.Message]]:
    """(start beat, pitch, duration beats) -> absolute-tick note_on / note_off events."""
    out = []
    for start, pitch, dur in notes:
        on, off = int(round(start * TPB)), int(round((start + dur) * TPB))
        out.append((on, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)))
        out.append((off, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    return out


def band_parts(melody: Melody) -> dict[int, list[tuple[float, int, float]]]:
    bars = melody.n_bars
    chords = [PROGRESSION[b % 4] for b in range(bars)]
    pad = [(b * 4.0, p, 4.0) for b, c in enumerate(chords) for p in CHORD_TONES[c]]
    bass = [(b * 4.0 + i * 0.5, CHORD_ROOTS[c], 0.5) for b, c in enumerate(chords) for i in range(8)]
    piano = [(b * 4.0 + i * 0.5, CHORD_TONES[c][i % 3] - 12 + 12 * (i // 3 % 2), 0.5) for b, c in enumerate(chords) for i in range(8)]
    lead = [(n.start, n.pitch, n.duration) for n in melody.notes]
    drums = [(b * 4.0 + i * 0.5, 36 if i % 2 == 0 else 42, 0.25) for b in range(bars) for i in range(8)]
    return {PAD: pad, BASS: bass, PIANO: piano, LEAD: lead, DRUMS: drums}


def band_midi(melody: Melody, *, bpm: float = 140.0, key: str | None = "Am", type0: bool = False, lead_name: str = "Synth") -> bytes:
    """Conductor + pad + bass + piano arpeggio + lead + drums (channel 10), type 1 (or type 0: one
    track holding every channel)."""
    parts = band_parts(melody)
    conductor = [
        mido.MetaMessage("track_name", name="band", time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
    ]
    if key:
        conductor.append(mido.MetaMessage("key_signature", key=key, time=0))
    names = {PAD: "Pad", BASS: "Bass", PIANO: "Piano", LEAD: lead_name, DRUMS: "Drums"}
    mid = mido.MidiFile(type=0 if type0 else 1, ticks_per_beat=TPB)
    if type0:
        events = []
        for voice, notes in parts.items():
            ch = CHANNELS[voice]
            if voice in PROGRAMS:
                events.append((0, mido.Message("program_change", program=PROGRAMS[voice] - 1, channel=ch)))
            events += _notes(ch, notes)
        trk = _track("all", events)
        for m in reversed(conductor[1:]):
            trk.insert(1, m)
        mid.tracks.append(trk)
    else:
        c = mido.MidiTrack(conductor)
        mid.tracks.append(c)
        for voice, notes in parts.items():
            ch = CHANNELS[voice]
            mid.tracks.append(_track(names[voice], _notes(ch, notes), PROGRAMS.get(voice), ch))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _row(music: bytes, tempo: str | None, **cols) -> dict:
    row = {k: None for k in SCHEMA}
    row.update(
        split="train",
        md5=md5_of(music),
        music=music,
        NOMML=[12, 12],
        num_tracks=2,
        TPQN=TPB,
        tempo=tempo,
        loop_track_idx=[],
        loop_instrument_type=[],
        loop_start=[],
        loop_end=[],
        loop_duration_beats=[],
        loop_note_density=[],
        music_styles_curated=[],
    )
    row.update(cols)
    return row


# Loop annotation of the loop row: a bass loop on bars 1-4 and a lead loop on bars 5-8 (ticks).
LOOP_BARS = (4, 8)
LOOP_ANNOTATION = {
    "loop_track_idx": [BASS, LEAD],
    "loop_instrument_type": ["Bass", "Synth Lead"],
    "loop_start": [0, LOOP_BARS[0] * 4 * TPB],
    "loop_end": [LOOP_BARS[0] * 4 * TPB, LOOP_BARS[1] * 4 * TPB],
    "loop_duration_beats": [16.0, 16.0],
    "loop_note_density": [2.0, 3.0],
}


def build_rows() -> tuple[list[dict], list[dict], dict[str, str]]:
    """(shard A rows, shard B rows, {role: md5})."""
    band = band_midi(lead_melody(11), bpm=138)
    electro = lead_melody(12, bpm=130).to_midi_bytes()
    classical = lead_melody(13).to_midi_bytes()
    slow = lead_melody(14, bpm=100).to_midi_bytes()
    fast = lead_melody(15).to_midi_bytes()
    looped = band_midi(lead_melody(17), bpm=140, key=None)
    garbled_tempo = lead_melody(18).to_midi_bytes()
    just_below = lead_melody(19).to_midi_bytes()
    # drums + bass only: readable, but no lead-like track
    no_lead = mido.MidiFile(type=1, ticks_per_beat=TPB)
    parts = band_parts(lead_melody(20, bars=4))
    no_lead.tracks.append(_track("Bass", _notes(1, parts[BASS]), 39, 1))
    no_lead.tracks.append(_track("Drums", _notes(9, parts[DRUMS])))
    buf = io.BytesIO()
    no_lead.save(file=buf)
    no_lead_bytes = buf.getvalue()

    qpm = "Tempo(time=0, qpm={q}, mspq={m}, ttype='Tick')"
    shard_a = [
        _row(band, qpm.format(q=138.0, m=434783), music_style_audio_text_Lastfm=["Trance"], title="Aurora", artist="Fixture Artist"),
        _row(electro, "130", music_styles_curated=["Electronic"]),
        _row(classical, "140", music_styles_curated=["Classical"], music_style_scraped="Baroque"),
        _row(slow, "100.0", music_style_scraped="Trance"),
        _row(fast, "150.5", music_style_audio_text_Tagtraum=["Trance"]),
    ]
    shard_b = [
        _row(CORRUPT_MIDI, "150", music_style_audio_text_Tagtraum=["Electronic Dance"]),
        _row(
            looped,
            "[" + qpm.format(q=140, m=428571) + ", Tempo(time=15360, qpm=70, mspq=857142, ttype='Tick')]",
            music_style_audio_text_Discogs=["Electronic", "Trance"],
            **LOOP_ANNOTATION,
        ),
        _row(garbled_tempo, "unknown", music_styles_curated=["Trance"]),
        _row(just_below, "129.99", music_style_scraped="House"),
        _row(no_lead_bytes, "135", music_styles_curated=["Techno"]),
    ]
    roles = dict(
        band=md5_of(band), electro=md5_of(electro), classical=md5_of(classical), slow=md5_of(slow),
        fast=md5_of(fast), corrupt=md5_of(CORRUPT_MIDI), looped=md5_of(looped), garbled_tempo=md5_of(garbled_tempo),
        just_below=md5_of(just_below), no_lead=md5_of(no_lead_bytes),
    )  # fmt: skip
    return shard_a, shard_b, roles


def write_fixture(root: Path) -> dict[str, str]:
    """Write `root/shard-a.parquet` and `root/more/shard-b.parquet`; returns {role: md5}."""
    shard_a, shard_b, roles = build_rows()
    root.mkdir(parents=True, exist_ok=True)
    (root / "more").mkdir(exist_ok=True)
    pl.DataFrame(shard_a, schema=SCHEMA).write_parquet(root / "shard-a.parquet")
    pl.DataFrame(shard_b, schema=SCHEMA).write_parquet(root / "more" / "shard-b.parquet")
    return roles
