"""The melody model every stage passes around, and its MIDI / JSON forms.

Times are in beats (quarter notes); 4/4 throughout. A `Melody` carries its key and its chord
track (one `ChordSpan` per span) so that later stages can score chord-tone ratios without
re-analysing the notes.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import mido

from .theory import Key, parse_chord, parse_key

TICKS_PER_BEAT = 480
BEATS_PER_BAR = 4
# General MIDI program 81 "Lead 1 (square)", 1-based as in the GM table; the byte on the wire is 80.
GM_LEAD_PROGRAM = 81


class MidiError(ValueError):
    """A MIDI file could not be read as a melody; the message names the file and the cause."""


@dataclass(frozen=True, order=True)
class Note:
    start: float  # beats from the start of the melody
    pitch: int  # MIDI note number
    duration: float  # beats
    velocity: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"note pitch must be 0-127, got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"note velocity must be 1-127, got {self.velocity}")
        if self.duration <= 0:
            raise ValueError(f"note duration must be > 0 beats, got {self.duration}")
        if self.start < 0:
            raise ValueError(f"note start must be >= 0 beats, got {self.start}")

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class ChordSpan:
    symbol: str
    start: float  # beats
    duration: float  # beats
    inferred: bool = False  # True when estimated from the notes or audio, not given

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Melody:
    notes: tuple[Note, ...]
    bpm: float
    key: str  # short key name, e.g. "Am" (see theory.Key.name)
    chords: tuple[ChordSpan, ...] = ()
    bars: int | None = None  # nominal length; None = derived from the last note
    program: int = GM_LEAD_PROGRAM  # 1-based GM program number
    name: str = ""
    attributes: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", tuple(sorted(self.notes)))
        object.__setattr__(self, "chords", tuple(sorted(self.chords, key=lambda c: c.start)))
        if not self.bpm > 0:
            raise ValueError(f"melody bpm must be > 0, got {self.bpm}")
        parse_key(self.key)  # validates

    @property
    def key_obj(self) -> Key:
        return parse_key(self.key)

    @property
    def length_beats(self) -> float:
        if self.bars is not None:
            return float(self.bars * BEATS_PER_BAR)
        return max((n.end for n in self.notes), default=0.0)

    @property
    def n_bars(self) -> int:
        if self.bars is not None:
            return self.bars
        return int(-(-self.length_beats // BEATS_PER_BAR))

    @property
    def pitches(self) -> list[int]:
        return [n.pitch for n in self.notes]

    def chord_at(self, beat: float) -> ChordSpan | None:
        for c in self.chords:
            if c.start <= beat < c.end:
                return c
        return None

    def with_notes(self, notes) -> "Melody":
        return replace(self, notes=tuple(notes))

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "key": self.key,
            "bpm": self.bpm,
            "bars": self.bars,
            "program": self.program,
            "notes": [[n.start, n.pitch, n.duration, n.velocity] for n in self.notes],
            "chords": [asdict(c) for c in self.chords],
            "attributes": self.attributes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Melody":
        return cls(
            notes=tuple(Note(float(s), int(p), float(du), int(v)) for s, p, du, v in d["notes"]),
            bpm=float(d["bpm"]),
            key=d["key"],
            chords=tuple(ChordSpan(**c) for c in d.get("chords", [])),
            bars=d.get("bars"),
            program=int(d.get("program", GM_LEAD_PROGRAM)),
            name=d.get("name", ""),
            attributes=dict(d.get("attributes", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Melody":
        return cls.from_dict(json.loads(text))

    # ---- MIDI ---------------------------------------------------------------------------
    def to_midi(self) -> mido.MidiFile:
        """Type-1 MIDI: a conductor track (tempo, 4/4, key, chord markers) and the lead track."""
        mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
        conductor = mido.MidiTrack()
        conductor.append(mido.MetaMessage("track_name", name=self.name or "melody", time=0))
        conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.bpm), time=0))
        conductor.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
        conductor.append(mido.MetaMessage("key_signature", key=self.key, time=0))
        events = [(_ticks(c.start), mido.MetaMessage("marker", text=c.symbol + ("?" if c.inferred else ""))) for c in self.chords]
        _append_absolute(conductor, events, end_tick=_ticks(self.length_beats))
        mid.tracks.append(conductor)

        lead = mido.MidiTrack()
        lead.append(mido.MetaMessage("track_name", name="lead", time=0))
        lead.append(mido.Message("program_change", program=self.program - 1, channel=0, time=0))
        events = []
        for n in self.notes:
            events.append((_ticks(n.end), mido.Message("note_off", note=n.pitch, velocity=0, channel=0)))
            events.append((_ticks(n.start), mido.Message("note_on", note=n.pitch, velocity=n.velocity, channel=0)))
        _append_absolute(lead, events, end_tick=_ticks(self.length_beats))
        mid.tracks.append(lead)
        return mid

    def to_midi_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.to_midi().save(file=buf)
        return buf.getvalue()


def _ticks(beats: float) -> int:
    return int(round(beats * TICKS_PER_BEAT))


def _append_absolute(track: mido.MidiTrack, events: list, end_tick: int) -> None:
    # Sort by time; at equal times note_off (inserted first above) stays before note_on.
    events = sorted(enumerate(events), key=lambda ie: (ie[1][0], 0 if ie[1][1].type == "note_off" else 1, ie[0]))
    now = 0
    for _, (tick, msg) in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))


def melody_from_midi(
    source: str | Path | bytes,
    *,
    track: int | str | None = None,
    key: str | None = None,
    name: str = "",
) -> Melody:
    """Read a MIDI file into a Melody.

    `track`: index or name of the track holding the lead; by default the track with the most notes
    (drum channel 10 excluded). Tempo = the first tempo event (120 BPM when none). Key = `key`, else
    the file's key signature, else estimated from the notes. Marker / text events that parse as chord
    symbols become the chord track. Raises MidiError naming the file and the cause.
    """
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        mid = mido.MidiFile(file=io.BytesIO(source)) if isinstance(source, bytes) else mido.MidiFile(str(source))
    except Exception as exc:  # mido raises several types (OSError, EOFError, KeyError, ValueError)
        raise MidiError(f"{label}: not a readable MIDI file ({type(exc).__name__}: {exc})") from exc
    tpb = mid.ticks_per_beat
    tempo_us = None
    key_sig = None
    chords: list[tuple[float, str]] = []
    per_track: list[list[Note]] = []
    names: list[str] = []
    for trk in mid.tracks:
        now = 0
        active: dict[tuple[int, int], tuple[int, int]] = {}
        notes: list[Note] = []
        tname = ""
        for msg in trk:
            now += msg.time
            if msg.is_meta:
                if msg.type == "set_tempo" and tempo_us is None:
                    tempo_us = msg.tempo
                elif msg.type == "key_signature" and key_sig is None:
                    key_sig = msg.key
                elif msg.type == "track_name":
                    tname = msg.name
                elif msg.type in ("marker", "text", "cue_marker"):
                    sym = msg.text.strip().rstrip("?")
                    try:
                        parse_chord(sym)
                    except ValueError:
                        continue
                    chords.append((now / tpb, msg.text.strip()))
                continue
            if msg.type not in ("note_on", "note_off") or msg.channel == 9:
                continue
            k = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                if k in active:  # re-struck before release: close the sounding note
                    s, v = active.pop(k)
                    if now > s:
                        notes.append(Note(s / tpb, msg.note, (now - s) / tpb, v))
                active[k] = (now, msg.velocity)
            elif k in active:
                s, v = active.pop(k)
                if now > s:
                    notes.append(Note(s / tpb, msg.note, (now - s) / tpb, max(1, v)))
        per_track.append(notes)
        names.append(tname)
    if track is None:
        idx = max(range(len(per_track)), key=lambda i: len(per_track[i])) if per_track else 0
    elif isinstance(track, int):
        if not 0 <= track < len(per_track):
            raise MidiError(f"{label}: track {track} does not exist (file has {len(per_track)} tracks)")
        idx = track
    else:
        if track not in names:
            raise MidiError(f"{label}: no track named {track!r} (tracks: {names})")
        idx = names.index(track)
    notes = per_track[idx] if per_track else []
    if not notes:
        raise MidiError(f"{label}: no notes in the selected track")
    bpm = round(mido.tempo2bpm(tempo_us), 3) if tempo_us else 120.0
    if key is None:
        if key_sig is not None:
            key = _mido_key_to_name(key_sig)
        else:
            from .analysis import estimate_key

            key = estimate_key(notes).name
    spans = []
    end = max(n.end for n in notes)
    chords.sort()  # markers from several tracks arrive track by track, not in time order
    for i, (t, text) in enumerate(chords):
        t_end = chords[i + 1][0] if i + 1 < len(chords) else max(end, t + BEATS_PER_BAR)
        sym = text.rstrip("?")
        if t_end > t:
            spans.append(ChordSpan(sym, t, t_end - t, inferred=text.endswith("?")))
    return Melody(notes=tuple(notes), bpm=bpm, key=key, chords=tuple(spans), name=name or Path(label).stem)


def _mido_key_to_name(key_sig: str) -> str:
    return parse_key(key_sig).name


@dataclass(frozen=True)
class MelodySet:
    """An ordered collection of uniquely named melodies (one storage object: a folder of files)."""

    melodies: tuple[Melody, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "melodies", tuple(self.melodies))
        names = [m.name for m in self.melodies]
        if any(not n for n in names):
            raise ValueError("every melody in a MelodySet needs a name")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"melody names must be unique in a MelodySet; repeated: {dupes[:5]}")

    def __len__(self) -> int:
        return len(self.melodies)

    def __iter__(self):
        return iter(self.melodies)
