"""The event tokenizer of SkyTNT's midi-model (tokenizer v1 and v2), re-implemented from public facts.

Written from `/work/shared/docs/MIDI-MODEL-FACTS.md` (section "Tokenizer"); no upstream code is used.
Pure Python + numpy + mido: no Dagster, no torch.

Scores
------
`MidiScore` holds a file as tracks of events in the MIDI.py "score" style, times in absolute ticks:

- ``["note", start, duration, channel, pitch, velocity]``
- ``["patch_change", t, channel, patch]``
- ``["control_change", t, channel, controller, value]``
- ``["set_tempo", t, tempo_us_per_beat]``
- ``["time_signature", t, nn, dd, cc, bb]`` (``dd`` is the power-of-two exponent: 4/4 -> nn 4, dd 2)
- ``["key_signature", t, sf, mi]`` (``sf`` -7..7 sharps(+)/flats(-), ``mi`` 0 major / 1 minor)

Any other event is ignored. `read_midi_score` / `write_midi_score` convert to and from MIDI bytes.

Token layout
------------
One event is one row of ``max_token_seq = 8`` ids: ``[event id, parameter ids..., pad...]``.
The vocabulary is pad 0, bos 1, eos 2, then the event ids (v1: note 3, patch_change 4,
control_change 5, set_tempo 6; v2 adds time_signature 7, key_signature 8), then one contiguous block
per parameter, in this order (v2 ids; v1 is the same without the last four blocks, shifted down by 2
and with a 256-value bpm block):

=============  ==========  ==========
parameter      v2 ids      v1 ids
=============  ==========  ==========
time1          9-136       7-134
time2          137-152     135-150
duration       153-2200    151-2198
track          2201-2328   2199-2326
channel        2329-2344   2327-2342
pitch          2345-2472   2343-2470
velocity       2473-2600   2471-2598
patch          2601-2728   2599-2726
controller     2729-2856   2727-2854
value          2857-2984   2855-2982
bpm            2985-3368   2983-3238
nn             3369-3384   -
dd             3385-3388   -
sf             3389-3403   -
mi             3404-3405   -
=============  ==========  ==========

vocab_size is 3406 (v2) / 3239 (v1). Event parameters, in row order: note = time1, time2, track,
channel, pitch, velocity, duration (v2) or time1, time2, track, duration, channel, pitch, velocity
(v1); patch_change = time1, time2, track, channel, patch; control_change = time1, time2, track,
channel, controller, value; set_tempo = time1, time2, track, bpm; time_signature = time1, time2,
track, nn, dd; key_signature = time1, time2, track, sf, mi.

Time is counted in 16ths of a beat: ``t = round(16 * tick / ticks_per_beat)``; ``time1`` is the beat
``t // 16`` minus the beat of the previous emitted event (0-127) and ``time2 = t % 16``. Durations are
``round(16 * ticks / ticks_per_beat)`` clamped to 1-2047; ``bpm = int(60e6 / tempo)`` capped at 255 (v1)
or 383 (v2) (truncation, as upstream: a tempo of 434,783 us = 137.9999 BPM gives 137 - this module's
own writers therefore store tempos as ``int(60e6 / bpm)`` so that whole BPMs survive); time signature
``nn - 1`` and ``dd - 1``; key signature ``sf + 7`` and ``mi``. Events are sorted by (beat, time2, track,
type order: time_signature, key_signature, set_tempo, patch_change, control_change, note), then by
their parameters. A bos row ``[1, 0, ...]`` starts and an eos row ``[2, 0, ...]`` ends a sequence.

Events dropped by `MidiTokenizer.tokenize` (parameters out of range; durations and bpm are clamped,
never dropped): track index > 127; channel, pitch, velocity, patch, controller or value outside
0-127; a negative start time; a tempo <= 0; a time signature with nn outside 1-16 or dd outside 1-4
(denominators 2, 4, 8, 16 only); a key signature with sf outside -7..7 or mi not 0/1;
time_signature / key_signature under v1 (no such events). A gap of more than 127 beats between two
consecutive events cannot be written: it is shortened to 127 beats (later events move earlier).

Decoding (`MidiTokenizer.detokenize`) writes 480 ticks per beat (30 ticks per 16th). The returned
track list is indexed by track id (ids not used in between come back as empty tracks); tempo, time
and key signatures always go to track 0. Invalid rows (unknown event id, a parameter id outside its
block, pad rows, bos, rows shorter than the event's arity) are skipped without advancing time;
decoding stops at the first eos.

optimise_midi
-------------
`optimise_score` (applied by `tokenize` when ``optimise_midi`` is on) follows the upstream rules:
channels are renumbered in order of appearance (channel 9 stays the drum channel); each
(channel, source track) pair holding notes becomes its own track, numbered from 1 up in order of
appearance (a patch or CC sitting in a pair without notes goes to that channel's first note track);
tempo, time and key signatures move to track 0; a channel with notes but no patch change gets
program 0 at time 0; patch changes and CCs on channels without notes are dropped; every non-note event
before the first note moves to time 0 (only the last one of each kind per channel / controller is
kept there).

Deviations from upstream (deliberate, documented)
-------------------------------------------------
- KEY SIGNATURES. Upstream v2 treats an sf=0 key signature as "no key", re-detects the key and
  always writes the detected key as MAJOR: an A minor file (sf 0, mi 1) comes out as C major. Here an
  existing key signature is kept exactly as given (A minor stays A minor); a key is detected only
  when the score has no key signature at all: the 7 most frequent pitch classes of the non-drum notes
  must hold >= 70 % of them and form a diatonic set (exactly two semitone steps between neighbouring
  degrees; this is checked as "equals some major scale"), and the key is then written as major, as
  upstream does. ``optimise_score(score, upstream_key_quirk=True)`` reproduces upstream instead: sf=0
  signatures are treated as absent, a detected key is written as major, and when nothing is detected
  the sf=0 signatures are simply dropped. Key detection runs for v2 only (v1 has no key events).
- Upstream's training pipeline skips MIDI files under 3,000 bytes and its quality filter rejects
  single-line (monophonic) melodies. This tokenizer never rejects a file for being small or
  monophonic: a one-track trance lead tokenizes like anything else.

Melodies
--------
`melody_to_score` / `MidiTokenizer.melody_to_tokens` turn the project's `Melody` into a score with a
conductor track (tempo, 4/4, the melody's real key signature) and one lead track;
`MidiTokenizer.tokens_to_melody` goes back, keeping the "highest line": at each onset only the highest
non-drum pitch survives, and each note is cut so that it ends at or before the next onset (a
monophonic result, sorted by start). `key_to_signature` / `signature_to_key` map between
`trance_assets.music.theory` key names and (sf, mi) pairs.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from ..music.melody import GM_LEAD_PROGRAM, Melody, Note
from ..music.theory import MAJOR_STEPS, Key, parse_key

__all__ = [
    "MidiScore",
    "MidiTokenizer",
    "read_midi_score",
    "write_midi_score",
    "optimise_score",
    "detect_key_signature",
    "key_to_signature",
    "signature_to_key",
    "melody_to_score",
    "VERSIONS",
    "OUTPUT_TICKS_PER_BEAT",
]

VERSIONS = ("v1", "v2")
OUTPUT_TICKS_PER_BEAT = 480  # 30 ticks per 16th of a beat
STEPS_PER_BEAT = 16
DRUM_CHANNEL = 9
MAX_TEMPO_US = 0xFFFFFF  # the largest tempo a MIDI set_tempo meta event can hold
SCORE_EVENT_TYPES = ("note", "patch_change", "control_change", "set_tempo", "time_signature", "key_signature")
CONDUCTOR_EVENT_TYPES = ("set_tempo", "time_signature", "key_signature")
# Sort order of event types at the same time and track.
TYPE_ORDER = {
    "time_signature": 0,
    "key_signature": 1,
    "set_tempo": 2,
    "patch_change": 3,
    "control_change": 4,
    "note": 5,
}

# (sf, mi) <-> the key names mido uses in key_signature meta messages.
_MIDO_MAJOR = ("Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#")
_MIDO_MINOR = ("Abm", "Ebm", "Bbm", "Fm", "Cm", "Gm", "Dm", "Am", "Em", "Bm", "F#m", "C#m", "G#m", "D#m", "A#m")
_SIG_TO_MIDO = {(sf, mi): names[sf + 7] for mi, names in ((0, _MIDO_MAJOR), (1, _MIDO_MINOR)) for sf in range(-7, 8)}
_MIDO_TO_SIG = {name: sig for sig, name in _SIG_TO_MIDO.items()}

_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}


# ---- scores --------------------------------------------------------------------------------------
@dataclass
class MidiScore:
    """A MIDI file as tracks of MIDI.py-style score events (absolute ticks; see the module docstring)."""

    ticks_per_beat: int
    tracks: list[list[list]] = field(default_factory=list)

    def events(self, kind: str | None = None) -> list[tuple[int, list]]:
        """(track index, event) pairs, all tracks, optionally only events named `kind`."""
        return [(i, ev) for i, trk in enumerate(self.tracks) for ev in trk if kind is None or ev[0] == kind]


def read_midi_score(source: str | Path | bytes) -> MidiScore:
    """Read a MIDI file (path or bytes) into a `MidiScore`.

    note_on / note_off are paired per (channel, pitch), first on first off (a note_on with velocity 0
    is a note_off); notes still sounding at the end of a track end at the track's last tick. Raises
    ValueError whose message names the source and the cause when the input is not readable MIDI.
    """
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            mid = mido.MidiFile(file=io.BytesIO(bytes(source)))
        else:
            mid = mido.MidiFile(str(source))
    except Exception as exc:  # mido raises OSError, EOFError, KeyError, ValueError, ...
        raise ValueError(f"{label}: not a readable MIDI file ({type(exc).__name__}: {exc})") from exc
    tpb = int(mid.ticks_per_beat)
    if tpb <= 0:
        raise ValueError(f"{label}: unsupported time division (ticks per beat {tpb})")
    tracks: list[list[list]] = []
    for trk in mid.tracks:
        now = 0
        events: list[list] = []
        pending: dict[tuple[int, int], list[list]] = defaultdict(list)
        for msg in trk:
            now += msg.time
            kind = msg.type
            if kind == "note_on" and msg.velocity > 0:
                ev = ["note", now, None, msg.channel, msg.note, msg.velocity]
                events.append(ev)
                pending[(msg.channel, msg.note)].append(ev)
            elif kind in ("note_on", "note_off"):
                queue = pending.get((msg.channel, msg.note))
                if queue:
                    ev = queue.pop(0)
                    ev[2] = now - ev[1]
            elif kind == "program_change":
                events.append(["patch_change", now, msg.channel, msg.program])
            elif kind == "control_change":
                events.append(["control_change", now, msg.channel, msg.control, msg.value])
            elif kind == "set_tempo":
                events.append(["set_tempo", now, msg.tempo])
            elif kind == "time_signature":
                dd = int(msg.denominator).bit_length() - 1
                events.append(["time_signature", now, msg.numerator, dd, msg.clocks_per_click, msg.notated_32nd_notes_per_beat])
            elif kind == "key_signature":
                sig = _MIDO_TO_SIG.get(msg.key)
                if sig is not None:
                    events.append(["key_signature", now, sig[0], sig[1]])
        for queue in pending.values():
            for ev in queue:  # unterminated: ends at the track end
                ev[2] = now - ev[1]
        tracks.append(events)
    return MidiScore(ticks_per_beat=tpb, tracks=tracks)


def write_midi_score(score: MidiScore) -> bytes:
    """A type-1 MIDI file (bytes) with one MIDI track per score track.

    At equal ticks: meta events, then note offs, patch changes, CCs, and note ons. Notes with
    velocity 0 cannot be written (a velocity-0 note_on is a note_off) and are skipped; durations
    under 1 tick are written as 1 tick. Key signatures with an (sf, mi) outside -7..7 / 0..1 are
    skipped. Raises ValueError (from mido) for other out-of-range data.
    """
    mid = mido.MidiFile(type=1, ticks_per_beat=int(score.ticks_per_beat))
    for events in score.tracks:
        timed: list[tuple[int, int, int, mido.Message | mido.MetaMessage]] = []
        for seq, ev in enumerate(events):
            kind = ev[0]
            t = int(ev[1])
            if kind == "note":
                _, start, dur, ch, pitch, vel = ev[:6]
                if vel <= 0:
                    continue
                end = start + max(1, int(dur))
                timed.append((int(start), 4, seq, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
                timed.append((int(end), 1, seq, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
            elif kind == "patch_change":
                timed.append((t, 2, seq, mido.Message("program_change", channel=ev[2], program=ev[3])))
            elif kind == "control_change":
                timed.append((t, 3, seq, mido.Message("control_change", channel=ev[2], control=ev[3], value=ev[4])))
            elif kind == "set_tempo":
                timed.append((t, 0, seq, mido.MetaMessage("set_tempo", tempo=int(ev[2]))))
            elif kind == "time_signature":
                nn, dd = int(ev[2]), int(ev[3])
                cc = int(ev[4]) if len(ev) > 4 else 24
                bb = int(ev[5]) if len(ev) > 5 else 8
                timed.append((t, 0, seq, mido.MetaMessage(
                    "time_signature", numerator=nn, denominator=2**dd, clocks_per_click=cc, notated_32nd_notes_per_beat=bb)))
            elif kind == "key_signature":
                name = _SIG_TO_MIDO.get((int(ev[2]), int(ev[3])))
                if name is not None:
                    timed.append((t, 0, seq, mido.MetaMessage("key_signature", key=name)))
        timed.sort(key=lambda x: (x[0], x[1], x[2]))
        track = mido.MidiTrack()
        now = 0
        for tick, _, _, msg in timed:
            tick = max(0, tick)
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


# ---- keys ----------------------------------------------------------------------------------------
def key_to_signature(key_name: str) -> tuple[int, int]:
    """(sf, mi) of a key's signature: 'Am' -> (0, 1), 'Em' -> (1, 1), 'F#m' -> (3, 1), 'Bbm' -> (-5, 1).

    The key is first normalised to the conventional spelling `theory.Key.name` uses (so 'D#m' is
    read as 'Ebm' -> (-6, 1), 'Gb' as 'F#' -> (6, 0)). Raises ValueError for a malformed key name.
    """
    key = parse_key(key_name)
    spelled = key.name[:-1] if key.mode == "minor" else key.name
    sf = _LETTER_FIFTHS[spelled[0]] + 7 * sum(1 if a == "#" else -1 for a in spelled[1:])
    if key.mode == "minor":
        sf -= 3
    return sf, 1 if key.mode == "minor" else 0


def signature_to_key(sf: int, mi: int) -> str:
    """The `theory` key name of a key signature: (0, 1) -> 'Am', (-1, 0) -> 'F', (6, 1) -> 'Ebm'.

    Enharmonic signatures (sf +-6, +-7) map to the conventional spelling theory.py uses. Raises
    ValueError when sf is outside -7..7 or mi is not 0/1.
    """
    if not -7 <= int(sf) <= 7 or int(mi) not in (0, 1):
        raise ValueError(f"not a key signature: sf={sf!r} mi={mi!r} (sf -7..7, mi 0/1)")
    major_tonic = (7 * int(sf)) % 12
    if mi:
        return Key((major_tonic + 9) % 12, "minor").name
    return Key(major_tonic, "major").name


def detect_key_signature(pitches) -> tuple[int, int] | None:
    """Key signature (sf, 0) detected from pitches (drums excluded by the caller), or None.

    The 7 most frequent pitch classes (ties: lower pitch class first) must hold >= 70 % of the notes
    and form a diatonic set (exactly two semitone steps between neighbouring degrees, i.e. the set
    equals some major scale). The key is returned as major, as upstream does.
    """
    counts = Counter(int(p) % 12 for p in pitches)
    total = sum(counts.values())
    if total == 0:
        return None
    top = sorted(range(12), key=lambda pc: (-counts[pc], pc))[:7]
    if sum(counts[pc] for pc in top) < 0.7 * total:
        return None
    pcs = frozenset(top)
    for tonic in range(12):
        if pcs == frozenset((tonic + s) % 12 for s in MAJOR_STEPS):
            return key_to_signature(Key(tonic, "major").name)
    return None


# ---- optimise_midi -------------------------------------------------------------------------------
def optimise_score(score: MidiScore, *, detect_key: bool = True, upstream_key_quirk: bool = False) -> MidiScore:
    """Apply the `optimise_midi` rules (see the module docstring) and return a new score.

    `detect_key`: detect a key signature when the score has none (v2 behaviour). With
    `upstream_key_quirk` sf=0 signatures count as absent, as upstream v2 does: they are replaced by
    the detected key (written as major) or dropped when nothing is detected. The input is not
    modified; times, durations and ticks_per_beat are kept (only events before the first note move).
    """
    flat: list[tuple[int, int, int, list]] = []  # (time, source track, order, event)
    order = 0
    for ti, trk in enumerate(score.tracks):
        for ev in trk:
            if ev and ev[0] in SCORE_EVENT_TYPES:
                flat.append((int(ev[1]), ti, order, list(ev)))
                order += 1
    flat.sort(key=lambda x: (x[0], x[1], x[2]))

    note_channels = {ev[3] for _, _, _, ev in flat if ev[0] == "note"}
    # Channels in order of appearance; 9 stays the drum channel.
    channel_map: dict[int, int] = {}
    free = [c for c in range(16) if c != DRUM_CHANNEL]
    for _, _, _, ev in flat:
        if ev[0] in ("note", "patch_change", "control_change"):
            ch = ev[3] if ev[0] == "note" else ev[2]
            if ch in note_channels and ch not in channel_map:
                channel_map[ch] = DRUM_CHANNEL if ch == DRUM_CHANNEL else (free.pop(0) if free else ch)
    # One track per (source track, channel) pair holding notes, from 1 up in order of appearance.
    track_map: dict[tuple[int, int], int] = {}
    first_track_of_channel: dict[int, int] = {}
    for _, ti, _, ev in flat:
        if ev[0] == "note" and (ti, ev[3]) not in track_map:
            track_map[(ti, ev[3])] = len(track_map) + 1
            first_track_of_channel.setdefault(ev[3], track_map[(ti, ev[3])])
    first_note = min((t for t, _, _, ev in flat if ev[0] == "note"), default=None)

    out: list[list[list]] = [[] for _ in range(len(track_map) + 1)]
    early: dict[tuple, tuple[int, list]] = {}  # events moved to time 0: the last of each kind wins
    patched: set[int] = set()
    for t, ti, _, ev in flat:
        kind = ev[0]
        if kind == "note":
            dest = track_map[(ti, ev[3])]
            ev[3] = channel_map[ev[3]]
            out[dest].append(ev)
            continue
        if kind in CONDUCTOR_EVENT_TYPES:
            dest = 0
            slot: tuple = (kind,)
        else:
            ch = ev[2]
            if ch not in note_channels:
                continue  # patch / CC on a channel without notes
            dest = track_map.get((ti, ch), first_track_of_channel[ch])
            ev[2] = channel_map[ch]
            if kind == "patch_change":
                patched.add(ch)
                slot = (kind, ev[2])
            else:
                slot = (kind, ev[2], ev[3])
        if first_note is not None and t < first_note:
            ev[1] = 0
            early[slot] = (dest, ev)
        else:
            out[dest].append(ev)
    for dest, ev in early.values():
        out[dest].append(ev)
    for ch in sorted(note_channels - patched):
        out[first_track_of_channel[ch]].append(["patch_change", 0, channel_map[ch], 0])

    keys = [ev for ev in out[0] if ev[0] == "key_signature"]
    if upstream_key_quirk:
        out[0] = [ev for ev in out[0] if not (ev[0] == "key_signature" and ev[2] == 0)]
        keys = [ev for ev in keys if ev[2] != 0]
    if detect_key and not keys:
        pitches = [ev[4] for trk in out[1:] for ev in trk if ev[0] == "note" and ev[3] != DRUM_CHANNEL]
        sig = detect_key_signature(pitches)
        if sig is not None:
            out[0].append(["key_signature", 0, sig[0], sig[1]])
    for trk in out:
        trk.sort(key=lambda ev: (ev[1], TYPE_ORDER[ev[0]]))
    return MidiScore(ticks_per_beat=score.ticks_per_beat, tracks=out)


# ---- the tokenizer -------------------------------------------------------------------------------
class MidiTokenizer:
    """SkyTNT midi-model tokenizer v1 / v2 (see the module docstring for the layout and deviations)."""

    def __init__(self, version: str = "v2", optimise_midi: bool = True) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown midi-model tokenizer version {version!r} (known: {', '.join(VERSIONS)})")
        self.version = version
        self.optimise_midi = bool(optimise_midi)
        self.pad_id = 0
        self.bos_id = 1
        self.eos_id = 2
        self.max_token_seq = 8
        timing = ["time1", "time2", "track"]
        if version == "v1":
            note = timing + ["duration", "channel", "pitch", "velocity"]
        else:
            note = timing + ["channel", "pitch", "velocity", "duration"]
        self.events: dict[str, list[str]] = {
            "note": note,
            "patch_change": timing + ["channel", "patch"],
            "control_change": timing + ["channel", "controller", "value"],
            "set_tempo": timing + ["bpm"],
        }
        self.event_parameters: dict[str, int] = {
            "time1": 128,
            "time2": 16,
            "duration": 2048,
            "track": 128,
            "channel": 16,
            "pitch": 128,
            "velocity": 128,
            "patch": 128,
            "controller": 128,
            "value": 128,
            "bpm": 256 if version == "v1" else 384,
        }
        if version == "v2":
            self.events["time_signature"] = timing + ["nn", "dd"]
            self.events["key_signature"] = timing + ["sf", "mi"]
            self.event_parameters.update({"nn": 16, "dd": 4, "sf": 15, "mi": 2})
        next_id = 3
        self.event_ids: dict[str, int] = {}
        for name in self.events:
            self.event_ids[name] = next_id
            next_id += 1
        self.id_events: dict[int, str] = {i: name for name, i in self.event_ids.items()}
        self.parameter_ids: dict[str, list[int]] = {}
        for name, n in self.event_parameters.items():
            self.parameter_ids[name] = list(range(next_id, next_id + n))
            next_id += n
        self.vocab_size = next_id
        self._param_base = {name: ids[0] for name, ids in self.parameter_ids.items()}
        self.max_bpm = self.event_parameters["bpm"] - 1

    def __repr__(self) -> str:
        return f"MidiTokenizer(version={self.version!r}, optimise_midi={self.optimise_midi})"

    # ---- config ----------------------------------------------------------------------------------
    def to_config(self) -> dict:
        """The `tokenizer` block of a midi-model config.json."""
        return {
            "version": self.version,
            "optimise_midi": self.optimise_midi,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "max_token_seq": self.max_token_seq,
            "vocab_size": self.vocab_size,
            "events": {k: list(v) for k, v in self.events.items()},
            "event_parameters": dict(self.event_parameters),
        }

    @classmethod
    def from_config(cls, config: dict) -> "MidiTokenizer":
        """Rebuild from a config.json `tokenizer` block; ValueError when a given field disagrees."""
        if not isinstance(config, dict) or "version" not in config:
            raise ValueError("tokenizer config must be a dict with a 'version' field")
        tok = cls(config["version"], bool(config.get("optimise_midi", False)))
        expected = tok.to_config()
        for key in ("pad_id", "bos_id", "eos_id", "max_token_seq", "vocab_size", "events", "event_parameters"):
            if key not in config:
                continue
            got = config[key]
            if key == "events" and isinstance(got, dict):
                got = {k: list(v) for k, v in got.items()}
            if got != expected[key]:
                raise ValueError(
                    f"tokenizer config field {key!r} = {config[key]!r} does not match version "
                    f"{tok.version} (expected {expected[key]!r})"
                )
        return tok

    # ---- rows ------------------------------------------------------------------------------------
    def event_to_row(self, name: str, params: list[int]) -> list[int]:
        """Row of `max_token_seq` ids for an event and its parameter VALUES (e.g. pitch 60).

        Raises ValueError for an unknown event, a wrong number of parameters or a value out of range.
        """
        if name not in self.events:
            raise ValueError(f"unknown event {name!r} for tokenizer {self.version}")
        names = self.events[name]
        if len(params) != len(names):
            raise ValueError(f"event {name!r} takes {len(names)} parameters {names}, got {len(params)}")
        row = [self.event_ids[name]]
        for pname, value in zip(names, params):
            v = int(value)
            if not 0 <= v < self.event_parameters[pname]:
                raise ValueError(f"{name} parameter {pname}={value} out of range 0-{self.event_parameters[pname] - 1}")
            row.append(self._param_base[pname] + v)
        return row + [self.pad_id] * (self.max_token_seq - len(row))

    def row_to_event(self, row) -> tuple[str, list[int]] | None:
        """(event name, parameter VALUES) of a row, or None when the row is not a valid event."""
        if len(row) < 1:
            return None
        name = self.id_events.get(int(row[0]))
        if name is None:
            return None
        names = self.events[name]
        if len(row) < 1 + len(names):
            return None
        values = []
        for pname, tid in zip(names, row[1:]):
            v = int(tid) - self._param_base[pname]
            if not 0 <= v < self.event_parameters[pname]:
                return None
            values.append(v)
        return name, values

    # ---- scores <-> tokens -----------------------------------------------------------------------
    def optimise(self, score: MidiScore, upstream_key_quirk: bool = False) -> MidiScore:
        """`optimise_score` for this version (key detection for v2 only)."""
        return optimise_score(score, detect_key=self.version == "v2", upstream_key_quirk=upstream_key_quirk)

    def tokenize(self, score: MidiScore, add_bos_eos: bool = True) -> np.ndarray:
        """int64 array [N, 8] of event rows (bos first and eos last when `add_bos_eos`)."""
        if self.optimise_midi:
            score = self.optimise(score)
        tpb = score.ticks_per_beat
        if tpb <= 0:
            raise ValueError(f"ticks_per_beat must be > 0, got {tpb}")
        items: list[tuple[tuple, str, dict[str, int]]] = []
        for ti, trk in enumerate(score.tracks):
            for ev in trk:
                if not ev or ev[0] not in self.events:
                    continue
                kind = ev[0]
                tick = ev[1]
                if tick < 0:
                    continue
                t = int(round(STEPS_PER_BEAT * tick / tpb))
                vals = self._event_values(kind, ev, tpb)
                if vals is None:
                    continue
                vals["track"] = ti
                if any(not 0 <= v < self.event_parameters[p] for p, v in vals.items()):
                    continue
                names = [p for p in self.events[kind] if p not in ("time1", "time2", "track")]
                sort_key = (t, ti, TYPE_ORDER[kind], tuple(vals[p] for p in names))
                items.append((sort_key, kind, vals))
        items.sort(key=lambda x: x[0])
        rows: list[list[int]] = []
        if add_bos_eos:
            rows.append([self.bos_id] + [self.pad_id] * (self.max_token_seq - 1))
        last_beat = 0
        for (t, *_), kind, vals in items:
            beat = t // STEPS_PER_BEAT
            vals["time1"] = min(beat - last_beat, self.event_parameters["time1"] - 1)
            vals["time2"] = t % STEPS_PER_BEAT
            last_beat = beat
            rows.append(self.event_to_row(kind, [vals[p] for p in self.events[kind]]))
        if add_bos_eos:
            rows.append([self.eos_id] + [self.pad_id] * (self.max_token_seq - 1))
        return np.asarray(rows, dtype=np.int64).reshape(-1, self.max_token_seq)

    def _event_values(self, kind: str, ev: list, tpb: int) -> dict[str, int] | None:
        try:
            if kind == "note":
                dur = int(round(STEPS_PER_BEAT * ev[2] / tpb))
                return {"duration": max(1, min(2047, dur)), "channel": int(ev[3]), "pitch": int(ev[4]), "velocity": int(ev[5])}
            if kind == "patch_change":
                return {"channel": int(ev[2]), "patch": int(ev[3])}
            if kind == "control_change":
                return {"channel": int(ev[2]), "controller": int(ev[3]), "value": int(ev[4])}
            if kind == "set_tempo":
                if ev[2] <= 0:
                    return None
                return {"bpm": min(int(60e6 / ev[2]), self.max_bpm)}
            if kind == "time_signature":
                return {"nn": int(ev[2]) - 1, "dd": int(ev[3]) - 1}
            if kind == "key_signature":
                return {"sf": int(ev[2]) + 7, "mi": int(ev[3])}
        except (IndexError, TypeError, ValueError):
            return None
        return None

    def detokenize(self, tokens) -> MidiScore:
        """Decode rows into a `MidiScore` at 480 ticks per beat (see the module docstring).

        Accepts any 2-D integer array with rows of width >= 1; raises ValueError otherwise.
        """
        arr = np.asarray(tokens)
        if arr.ndim != 2 or arr.shape[1] < 1:
            raise ValueError(f"tokens must be a 2-D array with rows of width >= 1, got shape {arr.shape}")
        step = OUTPUT_TICKS_PER_BEAT // STEPS_PER_BEAT
        tracks: dict[int, list[list]] = {0: []}
        beat = 0
        for row in arr.tolist():
            if int(row[0]) == self.eos_id:
                break
            decoded = self.row_to_event(row)
            if decoded is None:
                continue
            kind, values = decoded
            p = dict(zip(self.events[kind], values))
            beat += p["time1"]
            tick = (beat * STEPS_PER_BEAT + p["time2"]) * step
            if kind == "note":
                tracks.setdefault(p["track"], []).append(["note", tick, p["duration"] * step, p["channel"], p["pitch"], p["velocity"]])
            elif kind == "patch_change":
                tracks.setdefault(p["track"], []).append(["patch_change", tick, p["channel"], p["patch"]])
            elif kind == "control_change":
                tracks.setdefault(p["track"], []).append(["control_change", tick, p["channel"], p["controller"], p["value"]])
            elif kind == "set_tempo":
                tracks[0].append(["set_tempo", tick, _bpm_to_tempo(p["bpm"])])
            elif kind == "time_signature":
                tracks[0].append(["time_signature", tick, p["nn"] + 1, p["dd"] + 1, 24, 8])
            elif kind == "key_signature":
                tracks[0].append(["key_signature", tick, p["sf"] - 7, p["mi"]])
        n = max(tracks) + 1
        return MidiScore(ticks_per_beat=OUTPUT_TICKS_PER_BEAT, tracks=[tracks.get(i, []) for i in range(n)])

    # ---- melodies --------------------------------------------------------------------------------
    def melody_to_tokens(self, melody: Melody, add_bos_eos: bool = True) -> np.ndarray:
        """Tokens of a melody (via `melody_to_score`; its real key signature is kept by optimise)."""
        return self.tokenize(melody_to_score(melody), add_bos_eos=add_bos_eos)

    def tokens_to_melody(
        self,
        tokens,
        *,
        key: str | None = None,
        bpm: float | None = None,
        bars: int | None = None,
        name: str = "",
    ) -> Melody:
        """A monophonic `Melody` from tokens: the "highest line" of all non-drum notes.

        At each onset only the highest pitch is kept; each note is cut to end at or before the next
        onset; velocity-0 notes are dropped. key = `key`, else the first key signature, else "C";
        bpm = `bpm`, else the first tempo, else 120. With `bars`, notes starting at or after
        ``bars * 4`` beats are dropped and notes crossing that point are cut. program = the patch in
        effect on the first kept note's channel (+1, GM is 1-based), else the GM lead program.
        """
        score = self.detokenize(tokens)
        tpb = score.ticks_per_beat
        notes = [ev for _, ev in score.events("note") if ev[3] != DRUM_CHANNEL and ev[5] > 0 and ev[2] > 0]
        limit = bars * 4 * tpb if bars is not None else None
        if limit is not None:
            notes = [ev for ev in notes if ev[1] < limit]
        by_onset: dict[int, list] = {}
        for ev in notes:
            cur = by_onset.get(ev[1])
            if cur is None or (ev[4], ev[2]) > (cur[4], cur[2]):
                by_onset[ev[1]] = ev
        line = [by_onset[t] for t in sorted(by_onset)]
        out: list[Note] = []
        for i, ev in enumerate(line):
            end = ev[1] + ev[2]
            if i + 1 < len(line):
                end = min(end, line[i + 1][1])
            if limit is not None:
                end = min(end, limit)
            if end > ev[1]:
                out.append(Note(ev[1] / tpb, int(ev[4]), (end - ev[1]) / tpb, int(ev[5])))
        if key is None:
            sigs = sorted((ev[1], ev[2], ev[3]) for _, ev in score.events("key_signature"))
            key = signature_to_key(sigs[0][1], sigs[0][2]) if sigs else "C"
        if bpm is None:
            tempos = sorted((ev[1], ev[2]) for _, ev in score.events("set_tempo"))
            bpm = round(60e6 / tempos[0][1], 3) if tempos else 120.0
        program = GM_LEAD_PROGRAM
        if line:
            ch = line[0][3]
            patches = sorted((ev[1], ev[3]) for _, ev in score.events("patch_change") if ev[2] == ch)
            before = [p for t, p in patches if t <= line[0][1]]
            if before or patches:
                program = (before[-1] if before else patches[0][1]) + 1
        return Melody(notes=tuple(out), bpm=float(bpm), key=key, bars=bars, program=program, name=name)


def _bpm_to_tempo(bpm: int) -> int:
    """Tempo (us per beat) for a whole BPM, truncated so that int(60e6 / tempo) gives the BPM back."""
    return min(int(60e6 / max(1, int(bpm))), MAX_TEMPO_US)


def melody_to_score(melody: Melody, track: int = 1, channel: int = 0) -> MidiScore:
    """A 480-tpb score of a melody: track 0 = tempo, 4/4 and the melody's key signature;
    track `track` = patch change (program - 1) at 0, then the notes on `channel`."""
    if track < 0:
        raise ValueError(f"track must be >= 0, got {track}")
    if not 0 <= channel <= 15:
        raise ValueError(f"channel must be 0-15, got {channel}")
    tpb = OUTPUT_TICKS_PER_BEAT
    sf, mi = key_to_signature(melody.key)
    tracks: list[list[list]] = [[] for _ in range(track + 1)]
    tracks[0] += [
        ["set_tempo", 0, min(int(60e6 / melody.bpm), MAX_TEMPO_US)],
        ["time_signature", 0, 4, 2, 24, 8],
        ["key_signature", 0, sf, mi],
    ]
    tracks[track].append(["patch_change", 0, channel, melody.program - 1])
    for n in melody.notes:
        start = int(round(n.start * tpb))
        tracks[track].append(["note", start, max(1, int(round(n.end * tpb)) - start), channel, n.pitch, n.velocity])
    return MidiScore(ticks_per_beat=tpb, tracks=tracks)
