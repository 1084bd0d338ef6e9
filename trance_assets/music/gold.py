"""Tier 1: hand-verified ("gold") MIDI melodies and the manifest that describes them.

Users drop MIDI files plus a `manifest.csv` into `storage/dataset/tier1/`. This module is the pure
domain logic for that folder (no storage, no orchestration):

* `parse_manifest` reads the CSV into `GoldEntry` rows. A missing or invalid *header* raises
  `ManifestError`; a bad *row* becomes a `ManifestProblem` (line, file, message) so that one bad
  row never blocks the other files. Each entry carries a `row_hash` of its normalised row, so a
  changed row can re-run just its file.
* `midi_tracks` lists the tracks of a MIDI file (`TrackInfo`); type-0 files are split by channel.
* `pick_lead_track` chooses the lead: by preference (index or name) or by a documented score.
* `load_gold` turns one file (+ its manifest entry) into a `Melody` with full provenance.

Times are in beats (quarter notes), as everywhere in `trance_assets.music`. MIDI channels in
`TrackInfo` are 1-based (1-16, as in the General MIDI documents: drums are channel 10).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import mido

from .analysis import estimate_key, polyphony_ratio
from .melody import BEATS_PER_BAR, GM_LEAD_PROGRAM, ChordSpan, Melody, MidiError, Note
from .theory import parse_chord, parse_key

__all__ = [
    "GOLD_VERSION",
    "MANIFEST_REQUIRED",
    "MANIFEST_OPTIONAL",
    "MANIFEST_COLUMNS",
    "DEFAULT_BPM",
    "DRUM_CHANNEL",
    "ManifestError",
    "ManifestProblem",
    "GoldEntry",
    "Manifest",
    "parse_manifest",
    "normalise_manifest_path",
    "TrackInfo",
    "midi_tracks",
    "pick_lead_track",
    "lead_score",
    "GoldResult",
    "load_gold",
    "gold_name",
]

# Bump when load_gold's output for the same bytes and manifest row changes (a code version).
GOLD_VERSION = "1.0"

MANIFEST_REQUIRED = ("file", "title", "artist", "key", "bpm", "verified_by", "verified_on", "licence")
MANIFEST_OPTIONAL = ("chords", "notes", "reference_track", "lead_track")
MANIFEST_COLUMNS = MANIFEST_REQUIRED + MANIFEST_OPTIONAL
# Header spellings read as another column ("license" is the US spelling of "licence").
COLUMN_ALIASES = {"license": "licence"}

DEFAULT_BPM = 120.0  # the MIDI default when a file has no tempo event
DRUM_CHANNEL = 10  # 1-based GM percussion channel (9 on the wire)
BPM_TOLERANCE = 1.0  # manifest vs file tempo: a larger difference is reported
SOURCE = "tier1/gold"


# ---- the manifest ----------------------------------------------------------------------------


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing/invalid header); names file, line and cause."""


@dataclass(frozen=True)
class ManifestProblem:
    """One manifest row that could not be used. `file` is '' when the row names no file."""

    line: int
    file: str
    message: str  # the cause, e.g. "bad bpm 'fast': not a number"
    source: str = ""  # the manifest it came from

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source else f"line {self.line}"
        what = f" ({self.file})" if self.file else ""
        return f"{where}{what}: {self.message}"


@dataclass(frozen=True)
class GoldEntry:
    """One valid manifest row. `key` is normalised to the short name ('Am'); `bpm` is > 0 or None."""

    file: str  # relative POSIX path inside tier1/
    title: str
    artist: str
    key: str | None
    bpm: float | None
    verified_by: str
    verified_on: str
    licence: str
    chords: tuple[str, ...] = ()
    notes: str = ""
    reference_track: str = ""
    lead_track: int | str | None = None  # a track index, or a track name
    line: int = 0  # where the row starts in the manifest (1-based; the header is a line too)
    row_hash: str = ""  # sha256 of the normalised row (see `_row_hash`)

    @property
    def verified(self) -> bool:
        return bool(self.verified_by.strip())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chords"] = list(self.chords)
        d["verified"] = self.verified
        return d


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: the usable entries (keyed by file) and the rows that were not usable.

    Behaves like a read-only mapping of file -> GoldEntry (`m[file]`, `file in m`, `m.get(file)`).
    A file with a problem has no entry; `problem_for(file)` says why.
    """

    source: str
    entries: dict[str, GoldEntry]
    problems: tuple[ManifestProblem, ...] = ()
    columns: tuple[str, ...] = ()  # the header, normalised (aliases resolved)

    def problems_for(self, file: str) -> list[ManifestProblem]:
        f = _normalise_lookup(file)
        return [p for p in self.problems if p.file and p.file == f]

    def problem_for(self, file: str) -> ManifestProblem | None:
        """The first problem reported for `file` (None when it has none)."""
        found = self.problems_for(file)
        return found[0] if found else None

    def get(self, file: str, default=None) -> GoldEntry | None:
        return self.entries.get(_normalise_lookup(file), default)

    def __getitem__(self, file: str) -> GoldEntry:
        return self.entries[_normalise_lookup(file)]

    def __contains__(self, file: object) -> bool:
        return isinstance(file, str) and _normalise_lookup(file) in self.entries

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def normalise_manifest_path(name: str) -> str:
    """'./sub\\x.mid' -> 'sub/x.mid'. Raises ValueError for empty, absolute or '..' paths."""
    n = name.strip().replace("\\", "/")
    if not n:
        raise ValueError("empty file name")
    p = PurePosixPath(n)
    if p.is_absolute() or re.match(r"^[A-Za-z]:/", n):
        raise ValueError(f"file {name!r} must be a path relative to tier1/, not absolute")
    parts = [part for part in p.parts if part != "."]
    if ".." in parts:
        raise ValueError(f"file {name!r} must stay inside tier1/ ('..' is not allowed)")
    if not parts:
        raise ValueError("empty file name")
    return "/".join(parts)


def _normalise_lookup(name: str) -> str:
    try:
        return normalise_manifest_path(name)
    except ValueError:
        return name


def parse_manifest(text: str, source: str) -> Manifest:
    """Parse a Tier 1 manifest (CSV with a header row; `source` names it in every message).

    Raises ManifestError (naming `source:line`) when the header is missing, repeats a column, or
    lacks a required column (`MANIFEST_REQUIRED`; `license` is read as `licence`). Every other
    problem is per row and lands in `Manifest.problems`: empty or invalid file name, bad key, bad
    bpm (not a number, or <= 0), malformed chord symbol, bad lead_track, more values than columns,
    and a file listed more than once (then *none* of its rows is used: which one is right is the
    user's call). Blank lines are skipped; quoted fields may span lines (a row's line is where it
    starts). Columns outside `MANIFEST_COLUMNS` are allowed and ignored.
    """
    if text.startswith("\ufeff"):  # a byte-order mark, as spreadsheet programs write
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[int, list[str]]] = []
    prev_end = 0
    try:
        for raw in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if not raw or all(not v.strip() for v in raw):
                continue
            if header is None:
                header, header_line = raw, start
            else:
                rows.append((start, raw))
    except csv.Error as exc:
        raise ManifestError(f"{source}:{reader.line_num}: not readable as CSV ({exc})") from exc
    if header is None:
        raise ManifestError(f"{source}:1: empty manifest (no header row; needs columns {', '.join(MANIFEST_REQUIRED)})")

    columns = [COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    seen: dict[str, int] = {}
    for i, c in enumerate(columns):
        if not c:
            continue
        if c in seen:
            raw_names = f"{header[seen[c]].strip()!r} and {header[i].strip()!r}"
            raise ManifestError(f"{source}:{header_line}: column {c!r} appears twice in the header ({raw_names})")
        seen[c] = i
    missing = [c for c in MANIFEST_REQUIRED if c not in seen]
    if missing:
        raise ManifestError(
            f"{source}:{header_line}: header lacks required column(s) {', '.join(missing)} "
            f"(header: {', '.join(h.strip() for h in header)}; required: {', '.join(MANIFEST_REQUIRED)})"
        )

    parsed: list[GoldEntry] = []
    problems: list[ManifestProblem] = []
    for line, raw in rows:
        values = {c: (raw[i].strip() if i < len(raw) else "") for c, i in seen.items()}
        file_name = values.get("file", "")
        try:
            file_name = normalise_manifest_path(file_name)
        except ValueError as exc:
            problems.append(ManifestProblem(line, "", str(exc), source))
            continue
        try:
            if len(raw) > len(header) and any(v.strip() for v in raw[len(header):]):
                raise ValueError(f"{len(raw)} values but the header has {len(header)} columns")
            parsed.append(_entry(file_name, values, line))
        except ValueError as exc:
            problems.append(ManifestProblem(line, file_name, str(exc), source))

    # A file on several rows (valid or not) is ambiguous: report it, use none of its rows.
    lines_by_file: dict[str, list[int]] = {}
    for e in parsed:
        lines_by_file.setdefault(e.file, []).append(e.line)
    for p in problems:
        if p.file:
            lines_by_file.setdefault(p.file, []).append(p.line)
    duplicated = {f: sorted(ls) for f, ls in lines_by_file.items() if len(ls) > 1}
    for f, ls in duplicated.items():
        for ln in ls[1:]:
            others = ", ".join(str(x) for x in ls if x != ln)
            problems.append(
                ManifestProblem(ln, f, f"duplicate row for file {f!r} (also on line {others}); none of its rows is used", source)
            )
    entries = {e.file: e for e in parsed if e.file not in duplicated}
    problems.sort(key=lambda p: (p.line, p.message))
    return Manifest(source=source, entries=entries, problems=tuple(problems), columns=tuple(columns))


def _entry(file_name: str, v: dict[str, str], line: int) -> GoldEntry:
    key = v.get("key", "")
    if key:
        try:
            key = parse_key(key).name
        except ValueError:
            raise ValueError(f"bad key {key!r} (expected e.g. 'Am', 'C#m', 'Eb', 'F# major')") from None
    bpm_text = v.get("bpm", "")
    bpm = None
    if bpm_text:
        try:
            bpm = float(bpm_text)
        except ValueError:
            raise ValueError(f"bad bpm {bpm_text!r}: not a number") from None
        if not math.isfinite(bpm) or bpm <= 0:
            raise ValueError(f"bad bpm {bpm_text!r}: must be a number > 0")
    chords = tuple(v.get("chords", "").split())
    for sym in chords:
        try:
            parse_chord(sym)
        except ValueError as exc:
            raise ValueError(f"malformed chord in chords column: {exc}") from None
    lead_text = v.get("lead_track", "")
    lead: int | str | None = None
    if lead_text:
        lead = int(lead_text) if re.fullmatch(r"\d+", lead_text) else lead_text
    entry = GoldEntry(
        file=file_name,
        title=v.get("title", ""),
        artist=v.get("artist", ""),
        key=key or None,
        bpm=bpm,
        verified_by=v.get("verified_by", ""),
        verified_on=v.get("verified_on", ""),
        licence=v.get("licence", ""),
        chords=chords,
        notes=v.get("notes", ""),
        reference_track=v.get("reference_track", ""),
        lead_track=lead,
        line=line,
    )
    object.__setattr__(entry, "row_hash", _row_hash(entry))
    return entry


def _row_hash(e: GoldEntry) -> str:
    """sha256 over the normalised values of the known columns (not the line number).

    Whitespace around values and between chord symbols, the key's spelling ('A minor' = 'Am'),
    the bpm's spelling ('138' = '138.0'), column order, the `license` alias and unknown columns do
    not change it; any change of meaning does.
    """
    norm = {
        "file": e.file,
        "title": e.title,
        "artist": e.artist,
        "key": e.key,
        "bpm": None if e.bpm is None else repr(float(e.bpm)),
        "verified_by": e.verified_by,
        "verified_on": e.verified_on,
        "licence": e.licence,
        "chords": list(e.chords),
        "notes": e.notes,
        "reference_track": e.reference_track,
        "lead_track": e.lead_track,
    }
    return hashlib.sha256(json.dumps(norm, sort_keys=True).encode("utf-8")).hexdigest()


# ---- MIDI tracks -----------------------------------------------------------------------------


@dataclass
class TrackInfo:
    """One track of a MIDI file (for type-0 files: one channel of the single track).

    `index` is the position in `midi_tracks`' list; for type-1/2 files it is the file's own track
    index (empty tracks such as a conductor track are listed too). `channels` are 1-based.
    `program` is the first program change (1-based GM number), None when there is none.
    """

    index: int
    name: str
    channels: tuple[int, ...]
    program: int | None
    notes: tuple[Note, ...] = field(default=(), repr=False)
    polyphony: float | None = None
    pitch_min: int | None = None
    pitch_max: int | None = None
    pitch_median: float | None = None
    is_drum: bool = False

    @property
    def n_notes(self) -> int:
        return len(self.notes)

    @property
    def channel(self) -> int | None:
        """The channel when the track uses exactly one, else None."""
        return self.channels[0] if len(self.channels) == 1 else None

    def describe(self) -> str:
        """'2 'Lead' (ch 3, program 81, 64 notes)' — used in messages."""
        bits = []
        if self.channels:
            bits.append("ch " + "/".join(str(c) for c in self.channels))
        if self.program is not None:
            bits.append(f"program {self.program}")
        bits.append(f"{self.n_notes} notes" if self.notes else "no notes")
        if self.is_drum:
            bits.append("drums")
        return f"{self.index} {self.name!r} ({', '.join(bits)})"

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "channels": list(self.channels),
            "program": self.program,
            "notes": self.n_notes,
            "polyphony": self.polyphony,
            "pitch_min": self.pitch_min,
            "pitch_max": self.pitch_max,
            "pitch_median": self.pitch_median,
            "is_drum": self.is_drum,
        }


@dataclass
class _MidiContents:
    tracks: list[TrackInfo]
    tempos_us: list[int]  # set_tempo values in file order (track by track)
    key_signature: str | None
    markers: list[tuple[float, str]]  # (beat, text) of marker/text events that parse as chords
    midi_type: int


def _read_midi(data: bytes, label: str) -> mido.MidiFile:
    if not isinstance(data, (bytes, bytearray)):
        raise MidiError(f"{label}: expected the file's bytes, got {type(data).__name__}")
    if not data:
        raise MidiError(f"{label}: not a readable MIDI file (empty file)")
    try:
        return mido.MidiFile(file=io.BytesIO(bytes(data)))
    except Exception as exc:  # mido raises several types (OSError, EOFError, KeyError, ValueError)
        raise MidiError(f"{label}: not a readable MIDI file ({type(exc).__name__}: {exc})") from exc


def _parse(data: bytes, label: str) -> _MidiContents:
    mid = _read_midi(data, label)
    tpb = mid.ticks_per_beat
    if not isinstance(tpb, int) or tpb <= 0 or tpb >= 0x8000:
        raise MidiError(f"{label}: unsupported time division {tpb!r} (only ticks per beat is supported)")
    tempos: list[int] = []
    key_sig: str | None = None
    markers: list[tuple[float, str]] = []
    tracks: list[TrackInfo] = []
    for t_index, trk in enumerate(mid.tracks):
        now = 0
        tname = ""
        programs: dict[int, int] = {}  # wire channel -> first program (0-based)
        first_program: int | None = None
        active: dict[tuple[int, int], tuple[int, int]] = {}
        notes_by_ch: dict[int, list[Note]] = {}

        def close(ch: int, pitch: int, start: int, vel: int, end: int) -> None:
            if end > start:
                notes_by_ch.setdefault(ch, []).append(Note(start / tpb, pitch, (end - start) / tpb, max(1, min(127, vel))))

        for msg in trk:
            now += msg.time
            if msg.is_meta:
                if msg.type == "set_tempo":
                    tempos.append(msg.tempo)
                elif msg.type == "key_signature" and key_sig is None:
                    key_sig = msg.key
                elif msg.type == "track_name" and not tname:
                    tname = msg.name.strip()
                elif msg.type in ("marker", "text", "cue_marker"):
                    text = msg.text.strip()
                    try:
                        parse_chord(text.rstrip("?"))
                    except ValueError:
                        continue
                    markers.append((now / tpb, text))
                continue
            if msg.type == "program_change":
                programs.setdefault(msg.channel, msg.program)
                if first_program is None:
                    first_program = msg.program
                continue
            if msg.type not in ("note_on", "note_off"):
                continue
            k = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity > 0:
                if k in active:  # re-struck before release: close the sounding note
                    s, v = active.pop(k)
                    close(msg.channel, msg.note, s, v, now)
                active[k] = (now, msg.velocity)
                notes_by_ch.setdefault(msg.channel, [])
            elif k in active:
                s, v = active.pop(k)
                close(msg.channel, msg.note, s, v, now)
        for (ch, pitch), (s, v) in active.items():  # never released: end at the end of the track
            close(ch, pitch, s, v, now)

        if mid.type == 0 and len([c for c, ns in notes_by_ch.items() if ns]) > 1:
            for ch in sorted(c for c, ns in notes_by_ch.items() if ns):
                name = f"{tname} (channel {ch + 1})" if tname else f"channel {ch + 1}"
                prog = programs.get(ch)
                tracks.append(_track_info(len(tracks), name, [ch], prog, notes_by_ch[ch], {ch: len(notes_by_ch[ch])}))
        else:
            all_notes = [n for ns in notes_by_ch.values() for n in ns]
            counts = {c: len(ns) for c, ns in notes_by_ch.items()}
            melodic = [c for c in sorted(counts) if c != DRUM_CHANNEL - 1]
            prog = programs.get(melodic[0]) if melodic and melodic[0] in programs else first_program
            tracks.append(_track_info(t_index if mid.type != 0 else len(tracks), tname, sorted(counts), prog, all_notes, counts))
    return _MidiContents(tracks, tempos, key_sig, markers, mid.type)


def _track_info(index: int, name: str, wire_channels, program0: int | None, notes: list[Note], counts: dict[int, int]) -> TrackInfo:
    notes = sorted(notes)
    pitches = [n.pitch for n in notes]
    drum_notes = counts.get(DRUM_CHANNEL - 1, 0)
    total = sum(counts.values())
    return TrackInfo(
        index=index,
        name=name,
        channels=tuple(c + 1 for c in wire_channels),
        program=None if program0 is None else program0 + 1,
        notes=tuple(notes),
        polyphony=polyphony_ratio(notes),
        pitch_min=min(pitches) if pitches else None,
        pitch_max=max(pitches) if pitches else None,
        pitch_median=float(statistics.median(pitches)) if pitches else None,
        # Drums: most of the notes on GM channel 10 (a track with no notes is drums if it only
        # addresses channel 10).
        is_drum=(drum_notes * 2 > total) if total else (bool(counts) and set(counts) == {DRUM_CHANNEL - 1}),
    )


def midi_tracks(data: bytes, label: str) -> list[TrackInfo]:
    """The tracks of a MIDI file, in file order.

    Type-1/2 files: one TrackInfo per track, `index` = the file's track index (tracks without notes,
    e.g. the conductor track, included). Type-0 files: one TrackInfo per channel that plays notes
    (named '<track name> (channel N)' or 'channel N'), or the single track when at most one channel
    plays. `is_drum`: most notes on channel 10. Raises MidiError naming `label`.
    """
    return _parse(data, label).tracks


# ---- choosing the lead -----------------------------------------------------------------------

_LEAD_NAME = re.compile(r"lead|melod|top\s*line|hook|solo|vocal|vox|theme", re.IGNORECASE)
_ACCOMP_NAME = re.compile(
    r"pad|bass|sub\b|chord|string|drum|kick|snare|hat|perc|clap|cymbal|ride|fx|sfx|riser|choir|organ|comp\b",
    re.IGNORECASE,
)
MONOPHONIC_POLYPHONY = 0.30  # the Tier 1 quality rule's limit

# Score weights (see `lead_score`): names first, then monophony, program, register, activity.
W_NAME_LEAD, W_NAME_ACCOMP = 4.0, -2.0
W_MONOPHONIC = 3.0
W_PROGRAM_SYNTH_LEAD, W_PROGRAM_SOLO, W_PROGRAM_PAD, W_PROGRAM_BASS = 2.0, 1.0, -1.0, -2.0
W_PITCH_MAX = 2.0  # ± per octave above/below middle C, clipped to ±2
W_NOTES = 1.0  # × notes / notes of the busiest candidate


def _program_family(program: int | None) -> tuple[float, str]:
    if program is None:
        return 0.0, ""
    if 81 <= program <= 88:
        return W_PROGRAM_SYNTH_LEAD, "synth lead"
    if 57 <= program <= 80:
        return W_PROGRAM_SOLO, "brass/reed/pipe (solo instrument)"
    if 33 <= program <= 40:
        return W_PROGRAM_BASS, "bass"
    if 89 <= program <= 96 or 49 <= program <= 56:
        return W_PROGRAM_PAD, "pad/ensemble"
    return 0.0, ""


def lead_score(track: TrackInfo, max_notes: int) -> tuple[float, list[str]]:
    """The default heuristic's score of one candidate (higher = more lead-like) and its reasons.

    * name: +4 when it reads like a lead (lead, melody, topline, hook, solo, vocal, theme),
      -2 when it reads like accompaniment (pad, bass, chords, strings, drums, fx, ...);
    * polyphony: +3 when at most 0.30 of the onsets overlap a sounding note (monophonic enough);
    * GM program: +2 synth lead (81-88), +1 brass/reed/pipe (57-80), -1 pad/ensemble (89-96,
      49-56), -2 bass (33-40), 0 otherwise or without a program change;
    * register: (median pitch - 60) / 12, clipped to ±2 (a lead sits above middle C);
    * activity: notes / notes of the busiest candidate (0-1).
    """
    score = 0.0
    why: list[str] = []
    if track.name and _LEAD_NAME.search(track.name):
        score += W_NAME_LEAD
        why.append(f"named like a lead ({track.name!r})")
    elif track.name and _ACCOMP_NAME.search(track.name):
        score += W_NAME_ACCOMP
        why.append(f"named like accompaniment ({track.name!r})")
    poly = track.polyphony if track.polyphony is not None else 1.0
    if poly <= MONOPHONIC_POLYPHONY:
        score += W_MONOPHONIC
        why.append(f"monophonic (polyphony {poly:.2f})")
    else:
        why.append(f"polyphonic (polyphony {poly:.2f})")
    w, family = _program_family(track.program)
    score += w
    if family:
        why.append(f"GM program {track.program} ({family})")
    if track.pitch_median is not None:
        score += max(-W_PITCH_MAX, min(W_PITCH_MAX, (track.pitch_median - 60) / 12))
        why.append(f"median pitch {track.pitch_median:g}")
    score += W_NOTES * (track.n_notes / max_notes if max_notes else 0.0)
    why.append(f"{track.n_notes} notes")
    return score, why


def _resolve_preference(tracks: Sequence[TrackInfo], preference: int | str, label: str) -> TrackInfo:
    def available() -> str:
        return "; ".join(t.describe() for t in tracks) or "none"

    prefix = f"{label}: " if label else ""
    by_index = {t.index: t for t in tracks}
    if isinstance(preference, bool) or not isinstance(preference, (int, str)):
        raise MidiError(f"{prefix}lead track preference must be a track index or name, got {preference!r}")
    if isinstance(preference, int):
        if preference not in by_index:
            raise MidiError(f"{prefix}no track {preference} (available tracks: {available()})")
        return by_index[preference]
    want = preference.strip().lower()
    exact = [t for t in tracks if t.name.strip().lower() == want]
    if exact:
        return exact[0]
    if re.fullmatch(r"\d+", want) and int(want) in by_index:
        return by_index[int(want)]
    partial = [t for t in tracks if want and want in t.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        raise MidiError(
            f"{prefix}lead track {preference!r} is ambiguous: it matches "
            f"{', '.join(repr(t.name) for t in partial)} (available tracks: {available()})"
        )
    raise MidiError(f"{prefix}no track named {preference!r} (available tracks: {available()})")


def pick_lead_track(
    tracks: Sequence[TrackInfo], preference: int | str | None = None, *, label: str = ""
) -> tuple[int, str]:
    """Choose the lead track: returns (TrackInfo.index, the reason in words).

    `preference` (manifest `lead_track` column or run config): an index, or a name matched
    case-insensitively (exactly first, then as a unique part of a name; a string of digits that
    names no track is read as an index). An unknown or ambiguous preference, or one naming a
    track without notes, raises MidiError listing the available tracks.

    Without a preference: drum tracks and tracks without notes are excluded, and the remaining
    candidates are ranked by `lead_score` (ties: more notes, then the lower index).
    """
    prefix = f"{label}: " if label else ""
    if preference is not None and not (isinstance(preference, str) and not preference.strip()):
        t = _resolve_preference(tracks, preference, label)
        if not t.notes:
            raise MidiError(
                f"{prefix}lead track {preference!r} ({t.describe()}) has no notes "
                f"(available tracks: {'; '.join(x.describe() for x in tracks)})"
            )
        reason = f"chosen by preference {preference!r}: track {t.index} {t.name!r}"
        if t.is_drum:
            reason += " (on the drum channel)"
        return t.index, reason
    candidates = [t for t in tracks if t.notes and not t.is_drum]
    if not candidates:
        listing = "; ".join(t.describe() for t in tracks) or "the file has no tracks"
        raise MidiError(f"{prefix}no melodic track with notes (tracks: {listing})")
    max_notes = max(t.n_notes for t in candidates)
    scored = [(lead_score(t, max_notes), t) for t in candidates]
    scored.sort(key=lambda st: (-st[0][0], -st[1].n_notes, st[1].index))
    (best_score, why), best = scored[0]
    excluded = len(tracks) - len(candidates)
    reason = f"track {best.index} {best.name!r}: " + ", ".join(why) + f"; score {best_score:.2f}"
    if len(scored) > 1:
        (next_score, _), runner = scored[1]
        reason += f", ahead of track {runner.index} {runner.name!r} ({next_score:.2f})"
    reason += f" among {len(candidates)} candidate(s)"
    if excluded:
        reason += f" ({excluded} drum/empty track(s) excluded)"
    return best.index, reason


# ---- loading one gold file -------------------------------------------------------------------


@dataclass
class GoldResult:
    melody: Melody
    track: TrackInfo
    track_reason: str
    verified: bool
    warnings: list[str] = field(default_factory=list)


def gold_name(file: str) -> str:
    """The melody name of a Tier 1 file: a slug of its path without the suffix.

    'gold_01_aurora.mid' -> 'gold_01_aurora'; 'Artist/My Lead.MID' -> 'artist_my_lead' (the folder
    is kept so that files with the same stem in different folders get different names).
    """
    p = PurePosixPath(_normalise_lookup(file))
    stem = str(p.with_suffix("")) if p.suffix else str(p)
    slug = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    return slug or "gold_" + hashlib.sha256(file.encode("utf-8")).hexdigest()[:8]


def _cycle_chords(symbols: Sequence[str], bars: int) -> tuple[ChordSpan, ...]:
    return tuple(
        ChordSpan(symbols[b % len(symbols)], float(b * BEATS_PER_BAR), float(BEATS_PER_BAR), inferred=False)
        for b in range(bars)
    )


def _marker_chords(markers: list[tuple[float, str]], end: float) -> tuple[ChordSpan, ...]:
    ordered = sorted(markers)
    spans = []
    for i, (t, text) in enumerate(ordered):
        t_end = ordered[i + 1][0] if i + 1 < len(ordered) else max(end, t + BEATS_PER_BAR)
        if t_end > t:
            spans.append(ChordSpan(text.rstrip("?"), t, t_end - t, inferred=text.endswith("?")))
    return tuple(spans)


def load_gold(
    data: bytes,
    *,
    file: str,
    entry: GoldEntry | None,
    lead_track: int | str | None = None,
) -> GoldResult:
    """Read one Tier 1 MIDI file into a Melody with provenance.

    * lead track: `lead_track` (run config) if given, else the entry's `lead_track`, else the
      `pick_lead_track` heuristic;
    * key: the manifest's, else the file's key signature, else estimated from the notes
      (Krumhansl-Schmuckler); `attributes['key_source']` says which;
    * bpm: the manifest's, else the file's first tempo, else 120 with a warning;
    * chords: the file's chord markers, else the manifest's chords one per bar (cycled over the
      melody's bars, `inferred=False`), else none;
    * warnings: manifest key vs the notes' estimated key, manifest key vs the file's key signature,
      manifest bpm vs file tempo (> 1 BPM), tempo changes, a drum-channel lead, not verified.

    Raises MidiError naming `file` for unreadable bytes, an unknown preferred track, or no notes.
    """
    file_key = _normalise_lookup(file)
    if entry is not None and entry.file != file_key:
        raise ValueError(f"manifest entry is for {entry.file!r}, not {file_key!r}")
    contents = _parse(data, file)
    warnings: list[str] = []

    preference = lead_track if lead_track is not None else (entry.lead_track if entry else None)
    idx, reason = pick_lead_track(contents.tracks, preference, label=file)
    track = next(t for t in contents.tracks if t.index == idx)
    if track.is_drum:
        warnings.append(f"lead track {track.index} {track.name!r} is on the drum channel {DRUM_CHANNEL}")
    notes = track.notes
    estimated = estimate_key(notes).name

    file_key_sig = None
    if contents.key_signature is not None:
        try:
            file_key_sig = parse_key(contents.key_signature).name
        except ValueError:
            warnings.append(f"file key signature {contents.key_signature!r} is not a key; ignored")
    if entry is not None and entry.key:
        key, key_source = entry.key, "manifest"
        if entry.key != estimated:
            relative = parse_key(entry.key).relative_minor_tonic == parse_key(estimated).relative_minor_tonic
            warnings.append(
                f"manifest key {entry.key} disagrees with the key estimated from the notes ({estimated}"
                + (", its relative key" if relative else "") + "); the manifest wins"
            )
        if file_key_sig is not None and file_key_sig != entry.key:
            warnings.append(f"manifest key {entry.key} differs from the file's key signature {file_key_sig}; the manifest wins")
    elif file_key_sig is not None:
        key, key_source = file_key_sig, "file"
    else:
        key, key_source = estimated, "estimated"

    file_bpm = round(mido.tempo2bpm(contents.tempos_us[0]), 3) if contents.tempos_us else None
    if len(set(contents.tempos_us)) > 1:
        warnings.append(f"file has {len(set(contents.tempos_us))} different tempos; using the first ({file_bpm:g} BPM)")
    if entry is not None and entry.bpm is not None:
        bpm, bpm_source = float(entry.bpm), "manifest"
        if file_bpm is not None and abs(file_bpm - bpm) > BPM_TOLERANCE:
            warnings.append(f"manifest bpm {bpm:g} disagrees with the file tempo {file_bpm:g} BPM; the manifest wins")
    elif file_bpm is not None:
        bpm, bpm_source = float(file_bpm), "file"
    else:
        bpm, bpm_source = DEFAULT_BPM, "default"
        warnings.append(f"no tempo in file or manifest; assuming {DEFAULT_BPM:g} BPM")

    end = max(n.end for n in notes)
    bars = max(1, math.ceil(end / BEATS_PER_BAR - 1e-9))
    if contents.markers:
        chords, chords_source = _marker_chords(contents.markers, end), "file"
    elif entry is not None and entry.chords:
        chords, chords_source = _cycle_chords(entry.chords, bars), "manifest"
    else:
        chords, chords_source = (), "none"

    verified = entry is not None and entry.verified
    if entry is None:
        warnings.append(f"{file_key} has no manifest row: not verified")
    elif not entry.verified:
        warnings.append(f"{file_key}: manifest row (line {entry.line}) has an empty verified_by: not verified")

    attributes = {
        "source": SOURCE,
        "file": file_key,
        "sha256": hashlib.sha256(bytes(data)).hexdigest(),
        "title": entry.title if entry else "",
        "artist": entry.artist if entry else "",
        "licence": entry.licence if entry else "",
        "verified": verified,
        "verified_by": entry.verified_by if entry else "",
        "verified_on": entry.verified_on if entry else "",
        "notes": entry.notes if entry else "",
        "reference_track": entry.reference_track if entry else "",
        "manifest_row_hash": entry.row_hash if entry else None,
        "lead_track_index": track.index,
        "lead_track_name": track.name,
        "lead_track_reason": reason,
        "key_source": key_source,
        "bpm_source": bpm_source,
        "chords_source": chords_source,
        "tempo_meaningful": True,
    }
    melody = Melody(
        notes=notes,
        bpm=bpm,
        key=key,
        chords=chords,
        bars=bars,
        program=track.program if track.program is not None else GM_LEAD_PROGRAM,
        name=gold_name(file_key),
        attributes=attributes,
    )
    return GoldResult(melody=melody, track=track, track_reason=reason, verified=verified, warnings=warnings)
