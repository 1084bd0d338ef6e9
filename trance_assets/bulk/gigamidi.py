"""Tier 3 bulk source: lead melodies from GigaMIDI, read lazily with polars.

GigaMIDI (Hugging Face dataset ``Metacreation/GigaMIDI``, CC BY-NC 4.0, gated: it needs an access
token of an account that accepted the dataset's conditions) ships as parquet shards, one row per MIDI
file. This module scans those shards lazily, keeps the rows whose style labels and tempo suit trance,
and only then reads the MIDI bytes of the surviving rows to pick their lead-like tracks.

Source layout (where the shards come from)
------------------------------------------
- **Local**: ``GigaMidiConfig.local_dir``, searched recursively for ``*.parquet`` (any layout, e.g. a
  ``huggingface-cli download`` of the repository, or a copy of some shards).
- **Hub**: ``hf://datasets/<repo>/<config>/<split>/*.parquet`` read by polars' native Hugging Face
  support with ``storage_options={"token": ...}``. The dataset card's ``configs`` section maps a config
  name to its files: ``v1.1.0`` -> ``v1.1.0/<split>/*.parquet`` (the layout assumed for every config)
  and ``v1.0.0`` -> ``v1.0.0/<split>.parquet`` (one file per split). ``GigaMidiConfig.hf_pattern``
  overrides the path inside the repository for a layout this rule does not cover. Nothing touches the
  network at import time, nor before a scan is collected.

Row schema assumed (GigaMIDI dataset card, "GigaMIDI Entry Fields")
-------------------------------------------------------------------
==========================================  ===============  =====================================
column                                      type             use here
==========================================  ===============  =====================================
``music``                                   binary           raw MIDI file bytes (required)
``md5``                                     string           identity (computed from ``music``
                                                             when the column is absent)
``tempo``                                   string           tempo metadata; seen as
                                                             ``"Tempo(time=0, qpm=140, mspq=...,
                                                             ttype='Tick')"`` (symusic's repr),
                                                             possibly a list of them, or a number
``music_styles_curated``                    list[string]     style labels
``music_style_scraped``                     string           style labels
``music_style_audio_text_Discogs``          list[string]     style labels
``music_style_audio_text_Lastfm``           list[string]     style labels
``music_style_audio_text_Tagtraum``         list[string]     style labels
``loop_track_idx``                          list[int]        track index of each detected loop
``loop_start`` / ``loop_end``               list[int]        loop window of each loop, in ticks
``loop_duration_beats``                     list[float]      loop length in beats
``loop_instrument_type``                    list[string]     instrument type of each loop
``loop_note_density``                       list[float]      notes per beat in each loop
``title`` / ``artist``                      string           provenance when present
``NOMML``                                   list[int]        Note Onset Median Metric Level per
                                                             track (expressive-timing heuristic);
                                                             not used
``TPQN``, ``num_tracks``, ``split``, ...    various          not used
==========================================  ===============  =====================================

Every column but ``music`` is optional. Each style column may be a list of strings or a string (the
type is read from the parquet schema); shards of one scan must agree on types. The loop columns
describe the *non-expressive* loops; the expressive-loop columns (``*__expressive_``) carry no track
index and are not used.

Track numbering: GigaMIDI was annotated with Symusic, which numbers the note-bearing tracks of a file.
This module numbers *voices* the same way as far as it can tell: one voice per (MIDI track, channel)
that holds notes, in track order (a type-0 file, one MIDI track with several channels, gives one voice
per channel), drum voices included in the count. ``loop_track_idx`` is read against that numbering, so
a file whose tracks Symusic would split differently (e.g. by program changes within one channel) can
have its loop annotation attached to the wrong voice; each loop window is checked to hold notes of the
voice before it is used.

Pipeline
--------
``scan_gigamidi`` -> ``filter_gigamidi`` (style + tempo predicates, pushed into the parquet scan, so
``music`` is decoded for surviving rows only) -> batches of surviving rows (``collect_batches``, the
whole dataset is never in memory) -> ``lead_candidates`` per file -> ``Melody`` objects with provenance.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import io
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mido
import polars as pl

from ..music.analysis import pitch_range_semitones, polyphony_ratio
from ..music.melody import BEATS_PER_BAR, ChordSpan, Melody, MidiError, Note, melody_from_midi

SOURCE = "tier3/gigamidi"
LICENCE = "CC BY-NC 4.0"
DEFAULT_REPO = "Metacreation/GigaMIDI"
NOT_CONFIGURED = "no GigaMIDI source configured (set local_dir or hf_config + token)"

STYLE_COLUMNS = (
    "music_styles_curated",
    "music_style_scraped",
    "music_style_audio_text_Discogs",
    "music_style_audio_text_Lastfm",
    "music_style_audio_text_Tagtraum",
)
LOOP_COLUMNS = (
    "loop_track_idx",
    "loop_instrument_type",
    "loop_start",
    "loop_end",
    "loop_duration_beats",
    "loop_note_density",
)
TEXT_COLUMNS = ("title", "artist")
BPM_COLUMN = "gigamidi_bpm"  # the parsed row tempo that `filter_gigamidi` adds

DEFAULT_STYLES = ("trance", "electronic", "edm", "techno", "house", "electronica", "dance")

# Hub configs whose splits are single files (dataset card: `v1.0.0/train.parquet`); every other config
# is read as `<config>/<split>/*.parquet` (the card's v1.1.0 layout).
_SINGLE_FILE_CONFIGS = frozenset({"v1.0.0"})

_MAX_REJECTIONS_LISTED = 1000
_LEAD_NAME_HINT = re.compile(r"lead|melod|solo|vocal|voice|sing|hook|theme", re.IGNORECASE)
_DRUM_CHANNEL = 9  # MIDI channel 10, 0-based


# ---- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GigaMidiConfig:
    """Where GigaMIDI lives and what to keep. Empty `local_dir` and `hf_config` = not configured.

    `styles`: case-insensitive substrings looked for in all five style columns (any match keeps the
    row). BPM, range and note-count bounds are inclusive. `max_files`: 0 = no limit (counts files
    that pass the row filters). `max_melodies_per_file`: 0 = every eligible track.
    `hf_pattern`: a path or glob inside the hub repository replacing `<config>/<split>/*.parquet`.
    When both `local_dir` and the hub are set, the local folder is used.
    """

    local_dir: str = ""
    hf_repo: str = DEFAULT_REPO
    hf_config: str = ""
    hf_split: str = "train"
    token: str = ""
    styles: tuple[str, ...] = DEFAULT_STYLES
    min_bpm: float = 130.0
    max_bpm: float = 150.0
    max_polyphony: float = 0.30
    min_range_semitones: int = 7
    max_range_semitones: int = 36
    min_notes: int = 16
    max_files: int = 0
    max_melodies_per_file: int = 2
    hf_pattern: str = ""

    def __post_init__(self) -> None:
        styles = (self.styles,) if isinstance(self.styles, str) else tuple(self.styles)
        styles = tuple(dict.fromkeys(s.strip().lower() for s in styles if s and s.strip()))
        object.__setattr__(self, "styles", styles)
        if not self.min_bpm <= self.max_bpm:
            raise ValueError(f"min_bpm must be <= max_bpm, got {self.min_bpm} > {self.max_bpm}")
        if not 0.0 <= self.max_polyphony <= 1.0:
            raise ValueError(f"max_polyphony must be within 0-1, got {self.max_polyphony}")
        if not 0 <= self.min_range_semitones <= self.max_range_semitones:
            raise ValueError(
                f"need 0 <= min_range_semitones <= max_range_semitones, got {self.min_range_semitones}, {self.max_range_semitones}"
            )
        for name in ("min_notes", "max_files", "max_melodies_per_file"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def uses_local(self) -> bool:
        return bool(self.local_dir)

    @property
    def uses_hub(self) -> bool:
        return not self.uses_local and bool(self.hf_config and self.token)

    @property
    def configured(self) -> bool:
        return self.uses_local or self.uses_hub

    def describe(self) -> str:
        """The source in words (never the token)."""
        if self.uses_local:
            return f"local GigaMIDI parquet folder {self.local_dir}"
        if self.uses_hub:
            url, _ = hub_source(self)
            return f"Hugging Face {url} (config {self.hf_config}, split {self.hf_split}, token set)"
        return NOT_CONFIGURED


def hub_source(config: GigaMidiConfig) -> tuple[str, dict[str, str]]:
    """The `hf://` path and `storage_options` that `scan_gigamidi` passes to `pl.scan_parquet`.

    Pure string work: no network. Raises ValueError when no hub config name is set.
    """
    if not config.hf_config and not config.hf_pattern:
        raise ValueError("hf_config (or hf_pattern) is required to read GigaMIDI from the hub")
    repo = config.hf_repo.strip("/")
    if config.hf_pattern:
        inner = config.hf_pattern.strip("/")
    elif config.hf_config in _SINGLE_FILE_CONFIGS:
        inner = f"{config.hf_config}/{config.hf_split}.parquet"
    else:
        inner = f"{config.hf_config}/{config.hf_split}/*.parquet"
    options = {"token": config.token} if config.token else {}
    return f"hf://datasets/{repo}/{inner}", options


def local_shards(local_dir: str | Path) -> list[Path]:
    """Every `*.parquet` under `local_dir` (recursive, sorted). Raises FileNotFoundError naming the folder."""
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"GigaMIDI local_dir {root} is not a folder")
    files = sorted(p for p in root.rglob("*.parquet") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no *.parquet files found under GigaMIDI local_dir {root}")
    return files


def scan_gigamidi(config: GigaMidiConfig) -> pl.LazyFrame | None:
    """A lazy scan of the configured shards; None when no source is configured.

    Shards may differ in optional columns (missing ones read as null; extra ones are ignored).
    """
    options = dict(
        parallel="prefiltered",  # decode `music` only for rows the pushed-down predicates keep
        hive_partitioning=False,
        missing_columns="insert",
        extra_columns="ignore",
    )
    if config.uses_local:
        return pl.scan_parquet([str(p) for p in local_shards(config.local_dir)], **options)
    if config.uses_hub:
        url, storage_options = hub_source(config)
        return pl.scan_parquet(url, storage_options=storage_options, **options)
    return None


# ---- lazy filters ----------------------------------------------------------------------------------


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column as one lower-case string per row (list elements joined by newlines)."""
    col = pl.col(name)
    if isinstance(dtype, (pl.List, pl.Array)):
        as_list = col.arr.to_list() if isinstance(dtype, pl.Array) else col
        return as_list.list.eval(pl.element().cast(pl.String)).list.join("\n").str.to_lowercase()
    if dtype == pl.String:
        return col.str.to_lowercase()
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.String)
    return col.cast(pl.String).str.to_lowercase()


def style_columns(schema: Mapping[str, pl.DataType]) -> list[str]:
    return [c for c in STYLE_COLUMNS if c in schema]


def style_match_expr(schema: Mapping[str, pl.DataType], styles: Sequence[str]) -> pl.Expr:
    """True where any style column contains any of `styles` (case-insensitive substring).

    List or string columns alike; nulls never match. No `styles` = everything matches; no style column
    in the schema (with `styles` given) = nothing matches.
    """
    vocab = [s.lower() for s in styles if s]
    if not vocab:
        return pl.lit(True)
    parts = [_as_text(c, schema[c]).str.contains_any(vocab).fill_null(False) for c in style_columns(schema)]
    if not parts:
        return pl.lit(False)
    return pl.any_horizontal(parts)


_NUM = r"(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def tempo_bpm_expr(schema: Mapping[str, pl.DataType], column: str = "tempo") -> pl.Expr:
    """The row tempo in BPM as a Float64 expression (null when absent or unparseable).

    Reads, in order: a `qpm=<n>` field (symusic's `Tempo(...)` repr; the first one when the string
    lists several), a `mspq=<n>` field (60e6 / n), else the first number of a string without `=`
    (`"140"`, `"140.0 bpm"`, `"[140.0, 70.0]"`). Numeric columns are used as they are. Values that are
    not finite and > 0 become null.
    """
    if column not in schema or schema[column] == pl.Null:
        return pl.lit(None, dtype=pl.Float64)
    dtype = schema[column]
    col = pl.col(column)
    if dtype.is_numeric():
        bpm = col.cast(pl.Float64)
    else:
        if isinstance(dtype, pl.List):
            text = col.list.first().cast(pl.String)
        elif dtype == pl.String:
            text = col
        else:
            text = col.cast(pl.String)
        qpm = text.str.extract(r"qpm\s*=\s*" + _NUM, 1).cast(pl.Float64, strict=False)
        mspq = text.str.extract(r"mspq\s*=\s*" + _NUM, 1).cast(pl.Float64, strict=False)
        plain = (
            pl.when(~text.str.contains("=", literal=True))
            .then(text.str.extract(_NUM, 1).cast(pl.Float64, strict=False))
            .otherwise(None)
        )
        from_mspq = pl.when(mspq > 0).then(60_000_000.0 / mspq).otherwise(None)
        bpm = pl.coalesce(qpm, from_mspq, plain)
    return pl.when(bpm.is_finite() & (bpm > 0)).then(bpm).otherwise(None)


def filter_gigamidi(lf: pl.LazyFrame, config: GigaMidiConfig) -> pl.LazyFrame:
    """Rows whose styles match `config.styles` and whose tempo is within [min_bpm, max_bpm].

    Lazy: both predicates are plain column expressions (read from the schema only), which polars
    pushes into the parquet scan, so no other column (in particular `music`) is needed to evaluate
    them. Adds the parsed tempo as `gigamidi_bpm`. Rows with an unparseable tempo are dropped
    (`filter_counts` counts them).
    """
    schema = lf.collect_schema()
    bpm = tempo_bpm_expr(schema)
    keep = style_match_expr(schema, config.styles) & bpm.is_between(config.min_bpm, config.max_bpm, closed="both")
    return lf.filter(keep).with_columns(bpm.alias(BPM_COLUMN))


def filter_counts(lf: pl.LazyFrame, config: GigaMidiConfig) -> dict[str, int]:
    """Row counts at each filter stage, from one pass over the metadata columns only (never `music`):
    rows_scanned, after_style, tempo_unparseable (among the style matches), after_tempo."""
    schema = lf.collect_schema()
    style, bpm = pl.col("_style"), pl.col("_bpm")
    row = (
        # with_columns broadcasts a literal (no style vocabulary, no tempo column) to one value per row
        lf.with_columns(
            style_match_expr(schema, config.styles).fill_null(False).alias("_style"),
            tempo_bpm_expr(schema).alias("_bpm"),
        )
        .select(
            pl.len().alias("rows_scanned"),
            style.sum().alias("after_style"),
            (style & bpm.is_null()).sum().alias("tempo_unparseable"),
            (style & bpm.is_between(config.min_bpm, config.max_bpm, closed="both")).fill_null(False).sum().alias("after_tempo"),
        )
        .collect()
        .row(0, named=True)
    )
    return {k: int(v or 0) for k, v in row.items()}


# ---- lead selection --------------------------------------------------------------------------------


def gm_family(program: int) -> str:
    """General MIDI family of a 1-based program number."""
    families = (
        "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
        "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
    )  # fmt: skip
    if not 1 <= program <= 128:
        return "unknown"
    return families[(program - 1) // 8]


def lead_score(program: int) -> int:
    """How lead-like a 1-based GM program is: 4 synth lead (81-88); 3 brass, reed, pipe (57-80), solo
    strings (41-43), choir / voice (53-55); 2 string ensembles (49-52), synth pads (89-96); 1 piano,
    chromatic percussion, organ, guitar, other strings, synth effects, ethnic; 0 = excluded: bass
    (33-40), contrabass (44), timpani (48), orchestra hit (56), percussive and sound effects (113-128)."""
    if 81 <= program <= 88:
        return 4
    if 57 <= program <= 80 or 41 <= program <= 43 or 53 <= program <= 55:
        return 3
    if 49 <= program <= 52 or 89 <= program <= 96:
        return 2
    if 33 <= program <= 40 or program in (44, 48, 56) or program >= 113 or program < 1:
        return 0
    return 1


@dataclass(frozen=True)
class Loop:
    """One GigaMIDI loop annotation (ticks of the file; `track` in GigaMIDI's track numbering)."""

    track: int
    start_tick: int
    end_tick: int
    duration_beats: float | None = None
    instrument_type: str | None = None
    note_density: float | None = None


def parse_loops(loop_info: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[Loop]:
    """Loop annotations from a row's loop columns (`{"loop_track_idx": [...], "loop_start": [...], ...}`)
    or from a list of per-loop mappings with the same keys (singular values). Malformed entries
    (missing or non-integer track / start / end, end <= start) are skipped."""
    if not loop_info:
        return []
    if isinstance(loop_info, Mapping):
        tracks = list(loop_info.get("loop_track_idx") or [])
        per_loop = [
            {c: _nth(loop_info.get(c), i) for c in LOOP_COLUMNS} for i in range(len(tracks))
        ]
    else:
        per_loop = [dict(item) for item in loop_info]
    loops = []
    for item in per_loop:
        try:
            track, start, end = int(item["loop_track_idx"]), int(item["loop_start"]), int(item["loop_end"])
        except (KeyError, TypeError, ValueError):
            continue
        if end <= start or start < 0 or track < 0:
            continue
        dur, density = item.get("loop_duration_beats"), item.get("loop_note_density")
        kind = item.get("loop_instrument_type")
        loops.append(
            Loop(
                track=track,
                start_tick=start,
                end_tick=end,
                duration_beats=float(dur) if dur is not None else None,
                instrument_type=str(kind) if kind is not None else None,
                note_density=float(density) if density is not None else None,
            )
        )
    return loops


def _nth(values, i: int):
    if values is None or isinstance(values, (str, bytes)):
        return None
    try:
        return values[i]
    except (IndexError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class LeadCandidate:
    """A track chosen as a lead: its statistics, its melody (cut to its loop when it has one) and why."""

    track: int  # voice index (GigaMIDI's track numbering, see the module docstring)
    midi_track: int  # index of the MTrk chunk in the file
    channel: int  # 0-based MIDI channel
    name: str  # the MIDI track name ('' when none)
    program: int  # 1-based GM program (1 when the file sets none, the GM default)
    program_given: bool
    n_notes: int
    polyphony: float
    range_semitones: int
    median_pitch: float
    melody: Melody
    loop: dict | None
    rank: int
    reasons: tuple[str, ...]

    @property
    def family(self) -> str:
        return gm_family(self.program)


@dataclass(frozen=True)
class TrackSurvey:
    """`lead_candidates`' full answer: the ranked candidates and, per rejected voice, why."""

    candidates: list[LeadCandidate]
    rejected: dict[int, str]
    n_voices: int
    ticks_per_beat: int
    key_source: str  # "key_signature" or "estimated"

    def summary(self) -> str:
        if not self.n_voices:
            return "no track holds notes"
        parts = [f"t{i}: {why}" for i, why in sorted(self.rejected.items())]
        return "no lead-like track (" + "; ".join(parts[:12]) + (" ..." if len(parts) > 12 else "") + ")"


@dataclass
class _Voice:
    index: int
    midi_track: int
    channel: int
    name: str
    events: list  # (abs_tick, msg) of this channel in this MIDI track
    program: int | None = None


_CONDUCTOR_META = ("set_tempo", "key_signature", "time_signature", "marker", "text", "cue_marker")


def _read_voices(midi_bytes: bytes, label: str) -> tuple[mido.MidiFile, list, list[_Voice]]:
    try:
        mid = mido.MidiFile(file=io.BytesIO(midi_bytes), clip=True)
    except Exception as exc:  # mido raises OSError, EOFError, KeyError, ValueError, IndexError...
        raise MidiError(f"{label}: not a readable MIDI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(mid.ticks_per_beat, int) or mid.ticks_per_beat <= 0:
        raise MidiError(f"{label}: unsupported time division {mid.ticks_per_beat!r}")
    conductor: list = []
    voices: list[_Voice] = []
    first_program: dict[int, int] = {}  # channel -> first program anywhere in the file (fallback)
    for ti, trk in enumerate(mid.tracks):
        now = 0
        name = ""
        by_channel: dict[int, list] = {}
        sounding: list[int] = []  # channels in the order their first note starts
        programs: dict[int, int] = {}
        for msg in trk:
            now += msg.time
            if msg.is_meta:
                if msg.type == "track_name" and not name:
                    name = msg.name
                elif msg.type in _CONDUCTOR_META:
                    conductor.append((now, msg))
                continue
            ch = getattr(msg, "channel", None)
            if ch is None:
                continue
            if msg.type == "program_change":
                programs.setdefault(ch, msg.program + 1)
                first_program.setdefault(ch, msg.program + 1)
            if msg.type in ("note_on", "note_off", "program_change"):
                by_channel.setdefault(ch, []).append((now, msg))
                if msg.type == "note_on" and msg.velocity > 0 and ch not in sounding:
                    sounding.append(ch)
        for ch in sounding:
            voices.append(_Voice(len(voices), ti, ch, name, by_channel[ch], programs.get(ch)))
    for v in voices:
        if v.program is None:
            v.program = first_program.get(v.channel)
    conductor.sort(key=lambda e: e[0])
    return mid, conductor, voices


def _voice_file(tpb: int, conductor: list, voice: _Voice) -> bytes:
    """A two-track MIDI file: the file's tempo / key / time-signature / marker events, then one voice."""
    out = mido.MidiFile(type=1, ticks_per_beat=tpb)
    for events in (conductor, voice.events):
        trk = mido.MidiTrack()
        now = 0
        for tick, msg in events:
            trk.append(msg.copy(time=tick - now))
            now = tick
        out.tracks.append(trk)
    buf = io.BytesIO()
    out.save(file=buf)
    return buf.getvalue()


def _cut_to_window(melody: Melody, start: float, end: float) -> Melody:
    notes = [
        Note(n.start - start, n.pitch, min(n.end, end) - n.start, n.velocity)
        for n in melody.notes
        if start <= n.start < end and min(n.end, end) > n.start
    ]
    chords = []
    for c in melody.chords:
        s, e = max(c.start, start), min(c.end, end)
        if e > s:
            chords.append(ChordSpan(c.symbol, s - start, e - s, c.inferred))
    length = end - start
    bars = int(round(length / BEATS_PER_BAR))
    exact_bars = bars >= 1 and abs(length - bars * BEATS_PER_BAR) < 1e-6
    return replace(melody, notes=tuple(notes), chords=tuple(chords), bars=bars if exact_bars else None)


def survey_tracks(
    midi_bytes: bytes,
    *,
    label: str = "gigamidi",
    loop_info: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    config: GigaMidiConfig = GigaMidiConfig(),
) -> TrackSurvey:
    """Every voice of the file, checked and ranked; see `lead_candidates`. Raises MidiError when the
    bytes are not a readable MIDI file."""
    mid, conductor, voices = _read_voices(midi_bytes, label)
    tpb = mid.ticks_per_beat
    has_key_sig = any(m.type == "key_signature" for _, m in conductor)
    loops_by_voice: dict[int, list[Loop]] = {}
    for lp in parse_loops(loop_info):
        loops_by_voice.setdefault(lp.track, []).append(lp)

    rejected: dict[int, str] = {}
    eligible: list[tuple[tuple, _Voice, Melody, dict]] = []
    for v in voices:
        if v.channel == _DRUM_CHANNEL:
            rejected[v.index] = "drums (channel 10)"
            continue
        program = v.program or 1
        score = lead_score(program)
        if score == 0:
            rejected[v.index] = f"GM program {program} ({gm_family(program)}) is not lead-like"
            continue
        try:
            melody = melody_from_midi(_voice_file(tpb, conductor, v), track=1, name=f"{label}-t{v.index}")
        except (MidiError, ValueError) as exc:
            rejected[v.index] = f"unreadable track ({exc})"
            continue
        notes = melody.notes
        poly = polyphony_ratio(notes) or 0.0
        rng = pitch_range_semitones(notes) or 0
        if len(notes) < config.min_notes:
            rejected[v.index] = f"{len(notes)} notes < {config.min_notes}"
            continue
        if poly > config.max_polyphony:
            rejected[v.index] = f"polyphony {poly:.2f} > {config.max_polyphony:.2f}"
            continue
        if not config.min_range_semitones <= rng <= config.max_range_semitones:
            rejected[v.index] = f"range {rng} semitones outside {config.min_range_semitones}-{config.max_range_semitones}"
            continue
        median = float(statistics.median(n.pitch for n in notes))
        hint = bool(v.name and _LEAD_NAME_HINT.search(v.name))
        looped = v.index in loops_by_voice
        stats = dict(program=program, score=score, poly=poly, rng=rng, median=median, hint=hint, looped=looped)
        eligible.append(((looped, score + int(hint), median, len(notes)), v, melody, stats))

    eligible.sort(key=lambda e: e[0], reverse=True)
    candidates = []
    for rank, (_, v, melody, st) in enumerate(eligible, start=1):
        program = st["program"]
        reasons = [
            f"GM program {program} ({gm_family(program)}{'' if v.program else ', no program change: GM default'}),"
            f" lead-likeness {st['score']}/4",
            f"{len(melody.notes)} notes >= {config.min_notes}",
            f"polyphony {st['poly']:.2f} <= {config.max_polyphony:.2f}",
            f"range {st['rng']} semitones within {config.min_range_semitones}-{config.max_range_semitones}",
            f"median pitch {st['median']:g} (higher register ranks first)",
        ]
        if st["hint"]:
            reasons.append(f"track name {v.name!r} suggests a lead")
        loop_record = None
        if st["looped"]:
            reasons.insert(0, "loop-annotated track (preferred)")
            melody, loop_record, why = _apply_loop(melody, loops_by_voice[v.index], tpb, config)
            reasons.append(why)
        reasons.append(f"rank {rank} of {len(eligible)} eligible tracks")
        candidates.append(
            LeadCandidate(
                track=v.index,
                midi_track=v.midi_track,
                channel=v.channel,
                name=v.name,
                program=program,
                program_given=v.program is not None,
                n_notes=len(melody.notes),
                polyphony=float(st["poly"]),
                range_semitones=int(st["rng"]),
                median_pitch=st["median"],
                melody=replace(melody, program=program),
                loop=loop_record,
                rank=rank,
                reasons=tuple(reasons),
            )
        )
    return TrackSurvey(
        candidates=candidates,
        rejected=rejected,
        n_voices=len(voices),
        ticks_per_beat=tpb,
        key_source="key_signature" if has_key_sig else "estimated",
    )


def _apply_loop(melody: Melody, loops: list[Loop], tpb: int, config: GigaMidiConfig) -> tuple[Melody, dict | None, str]:
    """Cut to the annotated loop holding the most notes; keep the full track when no loop window
    holds at least `min_notes` notes of this track."""
    best = None
    for lp in loops:
        start, end = lp.start_tick / tpb, lp.end_tick / tpb
        n_in = sum(1 for n in melody.notes if start <= n.start < end)
        if best is None or n_in > best[0]:
            best = (n_in, lp, start, end)
    n_in, lp, start, end = best
    if n_in < max(1, config.min_notes):
        return melody, None, (
            f"loop window ticks {lp.start_tick}-{lp.end_tick} holds {n_in} notes of this track"
            f" (< {config.min_notes}); full track kept"
        )
    cut = _cut_to_window(melody, start, end)
    record = {
        "start_tick": lp.start_tick,
        "end_tick": lp.end_tick,
        "start_beat": start,
        "end_beat": end,
        "duration_beats": lp.duration_beats if lp.duration_beats is not None else end - start,
        "instrument_type": lp.instrument_type,
        "note_density": lp.note_density,
        "ticks_per_beat": tpb,
        "notes": len(cut.notes),
    }
    return cut, record, f"cut to loop window ticks {lp.start_tick}-{lp.end_tick} (beats {start:g}-{end:g})"


def lead_candidates(
    midi_bytes: bytes,
    *,
    label: str,
    loop_info: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    config: GigaMidiConfig = GigaMidiConfig(),
) -> list[LeadCandidate]:
    """The file's lead-like tracks, best first, at most `config.max_melodies_per_file` (0 = all).

    A track qualifies when it is not drums (channel 10), its GM program is not excluded (bass,
    percussive, sound effects; see `lead_score`), it has >= `min_notes` notes, polyphony <=
    `max_polyphony` and a pitch range within [`min_range_semitones`, `max_range_semitones`]. Ranking:
    loop-annotated tracks first (when `loop_info` has loops), then lead-likeness of the GM program
    (+1 for a track name such as "Lead" or "Melody"), then the higher median pitch, then more notes.
    A loop-annotated candidate's melody is cut to its loop window (ticks / ticks-per-beat, moved to
    start at beat 0). Melody names are `<label>-t<track>`; key = the file's key signature, else
    estimated from the track; BPM = the file's first tempo (120 when none).

    Raises MidiError (naming `label`) when the bytes are not a readable MIDI file.
    """
    found = survey_tracks(midi_bytes, label=label, loop_info=loop_info, config=config).candidates
    return found[: config.max_melodies_per_file] if config.max_melodies_per_file else found


# ---- the full pass ---------------------------------------------------------------------------------


@dataclass
class GigaMidiResult:
    melodies: list[Melody] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _labels(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    try:
        return [str(v) for v in value if v is not None and str(v).strip()]
    except TypeError:
        return [str(value)]


def styles_matched(row: Mapping[str, Any], styles: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The vocabulary terms found in the row's style columns, and per column the labels that matched."""
    terms: list[str] = []
    by_column: dict[str, list[str]] = {}
    for col in STYLE_COLUMNS:
        hits = [lab for lab in _labels(row.get(col)) if any(s in lab.lower() for s in styles)]
        if hits:
            by_column[col] = hits
            for s in styles:
                if s not in terms and any(s in h.lower() for h in hits):
                    terms.append(s)
    return terms, by_column


def _empty_report(config: GigaMidiConfig) -> dict:
    return {
        "source": config.describe(),
        "configured": config.configured,
        "licence": LICENCE,
        "rows_scanned": 0,
        "after_style": 0,
        "tempo_unparseable": 0,
        "after_tempo": 0,
        "files_read": 0,
        "files_with_leads": 0,
        "melodies": 0,
        "duplicates": 0,
        "rejections": [],
        "rejections_total": 0,
        "rejection_causes": {},
        "seconds": 0.0,
    }


def gigamidi_melodies(
    config: GigaMidiConfig,
    *,
    log: Callable[[str], Any] = print,
    batch_size: int = 256,
    count_rows: bool = True,
) -> GigaMidiResult:
    """Scan -> filter -> lead candidates -> `Melody` objects with provenance, batch by batch.

    Not configured: no melodies and a report whose `message` says so (never raises). A row whose MIDI
    cannot be read (or that has no lead-like track) becomes a rejection `{md5, reason}`; it never
    raises. A configured source that cannot be scanned (no parquet files, hub unreachable) raises.

    `count_rows`: run the metadata-only counting pass (rows_scanned / after_style / tempo_unparseable /
    after_tempo over the whole source); with False those counts stay None and only the surviving rows
    are read. The report lists at most 1000 rejections (`rejections_total` has the count,
    `rejection_causes` the count per cause).
    """
    t0 = time.perf_counter()
    report = _empty_report(config)
    result = GigaMidiResult(melodies=[], report=report)
    lf = scan_gigamidi(config)
    if lf is None:
        report["message"] = NOT_CONFIGURED
        log(f"GigaMIDI: {NOT_CONFIGURED}")
        report["seconds"] = round(time.perf_counter() - t0, 3)
        return result

    schema = lf.collect_schema()
    if "music" not in schema:
        raise ValueError(f"{config.describe()}: the parquet shards have no 'music' column (columns: {list(schema)[:20]})")
    notes = []
    missing_styles = [c for c in STYLE_COLUMNS if c not in schema]
    if missing_styles:
        notes.append(f"style columns absent: {missing_styles}")
    if "tempo" not in schema:
        notes.append("tempo column absent: every row's tempo is unparseable")
    report["notes"] = notes

    if count_rows:
        report.update(filter_counts(lf, config))
        log(
            f"GigaMIDI {config.describe()}: {report['rows_scanned']} rows, {report['after_style']} match the styles,"
            f" {report['after_tempo']} within {config.min_bpm:g}-{config.max_bpm:g} BPM"
            f" ({report['tempo_unparseable']} with unparseable tempo)"
        )
    else:
        for k in ("rows_scanned", "after_style", "tempo_unparseable", "after_tempo"):
            report[k] = None

    wanted = ["music", BPM_COLUMN] + [c for c in ("md5", "tempo", *TEXT_COLUMNS, *STYLE_COLUMNS, *LOOP_COLUMNS) if c in schema]
    survivors = filter_gigamidi(lf, config).select(wanted)
    if config.max_files:
        survivors = survivors.head(config.max_files)

    seen: set[str] = set()
    names: set[str] = set()
    causes: Counter = Counter()
    rejections: list[dict] = []
    source_location = config.describe()

    def reject(md5: str, reason: str) -> None:
        report["rejections_total"] += 1
        causes[reason.split(":")[0].split(" (")[0]] += 1
        if len(rejections) < _MAX_REJECTIONS_LISTED:
            rejections.append({"md5": md5, "reason": reason})

    for batch in survivors.collect_batches(chunk_size=max(1, batch_size)):
        for row in batch.iter_rows(named=True):
            music = row.get("music")
            md5 = row.get("md5") or (hashlib.md5(music).hexdigest() if music else "")
            md5 = str(md5)
            if md5 in seen:
                report["duplicates"] += 1
                continue
            seen.add(md5)
            if not music:
                reject(md5, "empty music column")
                continue
            label = f"gigamidi-{md5[:12]}"
            loop_info = {c: row.get(c) for c in LOOP_COLUMNS if c in row}
            try:
                survey = survey_tracks(bytes(music), label=label, loop_info=loop_info, config=config)
            except MidiError as exc:
                reject(md5, f"unreadable MIDI: {exc}")
                continue
            except Exception as exc:  # a malformed file must never stop the pass
                reject(md5, f"unreadable MIDI: {type(exc).__name__}: {exc}")
                continue
            report["files_read"] += 1
            chosen = survey.candidates
            if config.max_melodies_per_file:
                chosen = chosen[: config.max_melodies_per_file]
            if not chosen:
                reject(md5, survey.summary())
                continue
            terms, by_column = styles_matched(row, config.styles)
            bpm = float(row[BPM_COLUMN])
            kept = 0
            for cand in chosen:
                name = f"gigamidi-{md5[:12]}-t{cand.track}"
                if name in names:  # two md5s sharing 12 hex digits: keep the name unique
                    name = f"gigamidi-{md5}-t{cand.track}"
                if name in names:
                    continue
                names.add(name)
                attrs = {
                    "source": SOURCE,
                    "licence": LICENCE,
                    "md5": md5,
                    "track": cand.track,
                    "midi_track": cand.midi_track,
                    "channel": cand.channel + 1,
                    "track_name": cand.name,
                    "program": cand.program,
                    "program_family": cand.family,
                    "styles_matched": terms,
                    "style_labels": by_column,
                    "tempo": bpm,
                    "tempo_raw": row.get("tempo"),
                    "tempo_meaningful": True,
                    "key_source": survey.key_source,
                    "source_location": source_location,
                    "loop": cand.loop,
                    "selection": list(cand.reasons),
                    "rank": cand.rank,
                    "polyphony": round(cand.polyphony, 4),
                    "range_semitones": cand.range_semitones,
                }
                for col in TEXT_COLUMNS:
                    value = row.get(col)
                    if isinstance(value, str) and value.strip():
                        attrs[col] = value.strip()
                result.melodies.append(replace(cand.melody, name=name, bpm=bpm, attributes=attrs))
                kept += 1
            if kept:
                report["files_with_leads"] += 1
        log(
            f"GigaMIDI: {report['files_read']} files read, {len(result.melodies)} melodies,"
            f" {report['rejections_total']} rejected so far"
        )

    report["melodies"] = len(result.melodies)
    report["rejections"] = rejections
    report["rejection_causes"] = dict(causes)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    log(
        f"GigaMIDI done: {report['melodies']} melodies from {report['files_with_leads']} of {report['files_read']} files"
        f" ({report['rejections_total']} rejected) in {report['seconds']:.1f} s"
    )
    return result


__all__ = [
    "BPM_COLUMN",
    "DEFAULT_STYLES",
    "LICENCE",
    "NOT_CONFIGURED",
    "SOURCE",
    "STYLE_COLUMNS",
    "GigaMidiConfig",
    "GigaMidiResult",
    "LeadCandidate",
    "Loop",
    "TrackSurvey",
    "filter_counts",
    "filter_gigamidi",
    "gigamidi_melodies",
    "gm_family",
    "hub_source",
    "lead_candidates",
    "lead_score",
    "local_shards",
    "parse_loops",
    "scan_gigamidi",
    "style_match_expr",
    "styles_matched",
    "survey_tracks",
    "tempo_bpm_expr",
]
