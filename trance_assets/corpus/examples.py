"""Corpus examples: one melody plus everything needed to trace it back to its source file.

The corpus stages (augment → filter → split → formats) handle thousands of examples, so an
`Example` keeps its notes as numpy arrays (onset and duration in beats, pitch, velocity) instead of
`Note` objects, and a set of examples is stored as one polars table (`to_table` / `from_table`)
with list columns for the notes.

Identity and provenance:

- `example_id`: `t<tier>-<source name>` for a source melody, plus one `~<transform>` per augmentation
  (`t1-gold-01-aurora~tr+3`). Characters are limited to `[a-z0-9._+~-]`, so ids are file names.
- `source_id`: the id of the source example every copy descends from; `parent`: the example a copy
  was made from (None for a source).
- `transforms`: every change applied since the source file, in order — the normalisation
  (`quantise:1/16`, `trim:<n>bars`) and the augmentations (`transpose:+3`, `tempo:x0.95`,
  `octave:-1`, `velocity:±10`).
- `link`: a composition identity shared across tiers (a Tier 1 file and the Tier 2 extraction of the
  same reference track carry the same link), so the splitter keeps them together.
- `provenance`: source-specific facts (manifest row, partition key, GigaMIDI md5 and track, music21
  corpus path, rule-engine parameters, ...), JSON-able.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from ..music.melody import GM_LEAD_PROGRAM, ChordSpan, Melody, Note

POSITIONS_PER_BEAT = 4  # the corpus grid: 16th notes (the REMI tokenizer's resolution)
BEATS_PER_BAR = 4

TIER_SOURCES = {
    "tier1/gold": 1,
    "tier2/audio_extraction": 2,
    "tier3/gigamidi": 3,
    "tier3/public_domain": 3,
    "tier3/synthetic": 3,
}

_ID_BAD = re.compile(r"[^a-z0-9._+~-]+")


def safe_id(text: str) -> str:
    """Lower-case, every run of characters outside [a-z0-9._+~-] turned into one '-'."""
    return _ID_BAD.sub("-", text.lower()).strip("-") or "x"


@dataclass(frozen=True)
class Example:
    example_id: str
    tier: int
    source: str  # one of TIER_SOURCES
    source_id: str
    parent: str | None
    transforms: tuple[str, ...]
    key: str
    bpm: float
    start: np.ndarray  # float64 beats
    duration: np.ndarray  # float64 beats
    pitch: np.ndarray  # int16 MIDI
    velocity: np.ndarray  # int16 1-127
    chords: tuple[tuple[str, float, float, bool], ...] = ()  # (symbol, start, duration, inferred)
    licence: str = ""
    source_file: str = ""
    link: str = ""
    tempo_meaningful: bool = True
    program: int = GM_LEAD_PROGRAM
    title: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def n_notes(self) -> int:
        return int(self.pitch.size)

    @property
    def end_beats(self) -> float:
        return float((self.start + self.duration).max()) if self.pitch.size else 0.0

    @property
    def bars(self) -> int:
        return int(np.ceil(self.end_beats / BEATS_PER_BAR)) if self.pitch.size else 0

    def content_hash(self) -> str:
        """sha256 of what a model sees: notes, key, tempo, chords (not ids or provenance)."""
        h = hashlib.sha256()
        h.update(f"{self.key}|{self.bpm:.6f}|{self.program}|".encode())
        for a, dt in ((self.start, np.float64), (self.duration, np.float64), (self.pitch, np.int16), (self.velocity, np.int16)):
            h.update(np.ascontiguousarray(a, dtype=dt).tobytes())
        h.update(json.dumps(self.chords).encode())
        return h.hexdigest()

    def interval_signature(self) -> str:
        """sha1 of the pitch-interval sequence (transposition- and tempo-invariant): for leakage checks."""
        order = np.lexsort((self.pitch, self.start))
        iv = np.diff(self.pitch[order].astype(np.int16))
        return hashlib.sha1(iv.astype(np.int16).tobytes()).hexdigest()

    def to_melody(self) -> Melody:
        notes = tuple(Note(float(s), int(p), float(d), int(v)) for s, p, d, v in zip(self.start, self.pitch, self.duration, self.velocity))
        chords = tuple(ChordSpan(sym, float(s), float(d), bool(inf)) for sym, s, d, inf in self.chords)
        return Melody(notes, self.bpm, self.key, chords, name=self.example_id, program=self.program, attributes=self.metadata())

    def metadata(self) -> dict:
        """The JSON-able description of this example (without notes): provenance and identity."""
        return {
            "example_id": self.example_id,
            "tier": self.tier,
            "source": self.source,
            "source_id": self.source_id,
            "source_file": self.source_file,
            "licence": self.licence,
            "parent": self.parent,
            "transforms": list(self.transforms),
            "link": self.link,
            "title": self.title,
            "key": self.key,
            "bpm": self.bpm,
            "tempo_meaningful": self.tempo_meaningful,
            "program": self.program,
            "notes": self.n_notes,
            "bars": self.bars,
            "chords": [c[0] for c in self.chords][:64],
            "content_hash": self.content_hash(),
            "provenance": self.provenance,
        }


def example_from_melody(
    melody: Melody,
    *,
    source: str,
    licence: str,
    source_file: str,
    link: str = "",
    tempo_meaningful: bool = True,
    title: str = "",
    provenance: dict | None = None,
    name: str | None = None,
) -> Example:
    """A source example (no parent, no transforms yet) from a Melody."""
    if source not in TIER_SOURCES:
        raise ValueError(f"unknown corpus source {source!r}; expected one of {sorted(TIER_SOURCES)}")
    tier = TIER_SOURCES[source]
    notes = melody.notes
    return Example(
        example_id=f"t{tier}-{safe_id(name or melody.name)}",
        tier=tier,
        source=source,
        source_id=f"t{tier}-{safe_id(name or melody.name)}",
        parent=None,
        transforms=(),
        key=melody.key,
        bpm=float(melody.bpm),
        start=np.array([n.start for n in notes], dtype=np.float64),
        duration=np.array([n.duration for n in notes], dtype=np.float64),
        pitch=np.array([n.pitch for n in notes], dtype=np.int16),
        velocity=np.array([n.velocity for n in notes], dtype=np.int16),
        chords=tuple((c.symbol, float(c.start), float(c.duration), bool(c.inferred)) for c in melody.chords),
        licence=licence,
        source_file=source_file,
        link=link,
        tempo_meaningful=tempo_meaningful,
        program=melody.program,
        title=title or melody.name,
        # What the source file said, before any transform (copies share this dict).
        provenance={**(provenance or {}), "source_key": melody.key, "source_bpm": float(melody.bpm)},
    )


def normalise(ex: Example, positions_per_beat: int = POSITIONS_PER_BEAT) -> Example:
    """Onsets and ends snapped to the corpus grid (a note never shrinks to nothing: at least one
    step), notes sorted, and leading empty bars trimmed. Each change is recorded in `transforms`."""
    step = 1.0 / positions_per_beat
    start = np.round(ex.start * positions_per_beat) / positions_per_beat
    end = np.round((ex.start + ex.duration) * positions_per_beat) / positions_per_beat
    end = np.maximum(end, start + step)
    duration = end - start
    transforms = list(ex.transforms)
    if not (np.array_equal(start, ex.start) and np.array_equal(duration, ex.duration)):
        transforms.append(f"quantise:1/{positions_per_beat * 4}")
    order = np.lexsort((ex.pitch, start))
    start, duration, pitch, velocity = start[order], duration[order], ex.pitch[order], ex.velocity[order]
    chords = ex.chords
    if start.size:
        trim_bars = int(start[0] // BEATS_PER_BAR)
        if trim_bars > 0:
            shift = trim_bars * BEATS_PER_BAR
            start = start - shift
            chords = tuple(
                (sym, max(0.0, s - shift), (s + d) - max(shift, s), inf) for sym, s, d, inf in chords if s + d > shift
            )
            transforms.append(f"trim:{trim_bars}bars")
    return replace(ex, start=start, duration=duration, pitch=pitch, velocity=velocity, chords=chords, transforms=tuple(transforms))


# ---- tables ------------------------------------------------------------------------------------

TABLE_SCHEMA = {
    "example_id": pl.String,
    "tier": pl.Int8,
    "source": pl.String,
    "source_id": pl.String,
    "parent": pl.String,
    "transforms": pl.List(pl.String),
    "key": pl.String,
    "bpm": pl.Float64,
    "start": pl.List(pl.Float64),
    "duration": pl.List(pl.Float64),
    "pitch": pl.List(pl.Int16),
    "velocity": pl.List(pl.Int16),
    "chords": pl.String,  # JSON [[symbol, start, duration, inferred], ...]
    "licence": pl.String,
    "source_file": pl.String,
    "link": pl.String,
    "tempo_meaningful": pl.Boolean,
    "program": pl.Int16,
    "title": pl.String,
    "provenance": pl.String,  # JSON
    "content_hash": pl.String,
}


def to_table(examples: Sequence[Example], extra: dict[str, Sequence] | None = None) -> pl.DataFrame:
    """Examples as one polars table (TABLE_SCHEMA columns, plus `extra` columns given as lists)."""
    cols: dict[str, list] = {k: [] for k in TABLE_SCHEMA}
    for ex in examples:
        cols["example_id"].append(ex.example_id)
        cols["tier"].append(ex.tier)
        cols["source"].append(ex.source)
        cols["source_id"].append(ex.source_id)
        cols["parent"].append(ex.parent)
        cols["transforms"].append(list(ex.transforms))
        cols["key"].append(ex.key)
        cols["bpm"].append(ex.bpm)
        cols["start"].append(ex.start)
        cols["duration"].append(ex.duration)
        cols["pitch"].append(ex.pitch)
        cols["velocity"].append(ex.velocity)
        cols["chords"].append(json.dumps([list(c) for c in ex.chords]))
        cols["licence"].append(ex.licence)
        cols["source_file"].append(ex.source_file)
        cols["link"].append(ex.link)
        cols["tempo_meaningful"].append(ex.tempo_meaningful)
        cols["program"].append(ex.program)
        cols["title"].append(ex.title)
        cols["provenance"].append(json.dumps(ex.provenance, sort_keys=True, default=str))
        cols["content_hash"].append(ex.content_hash())
    series = []
    for name, dtype in TABLE_SCHEMA.items():
        if isinstance(dtype, pl.List):
            inner = np.float64 if dtype.inner == pl.Float64 else np.int16
            values = cols[name] if name == "transforms" else [np.asarray(a, dtype=inner) for a in cols[name]]
            s = pl.Series(name, values, dtype=dtype)
            if s.dtype != dtype:  # equal-length numpy arrays come out as a fixed-size Array column
                s = s.cast(dtype)
            series.append(s)
        else:
            series.append(pl.Series(name, cols[name], dtype=dtype))
    df = pl.DataFrame(series)
    if extra:
        df = df.with_columns([pl.Series(k, list(v)) for k, v in extra.items()])
    return df


def from_table(df: pl.DataFrame) -> list[Example]:
    """The examples of a table written by `to_table` (extra columns are ignored)."""
    out = []
    cols = {k: df[k].to_list() for k in TABLE_SCHEMA if k not in ("start", "duration", "pitch", "velocity")}
    arrays = {}
    for k, dt in (("start", np.float64), ("duration", np.float64), ("pitch", np.int16), ("velocity", np.int16)):
        s = df[k]
        offsets = np.concatenate([[0], np.cumsum(s.list.len().fill_null(0).to_numpy().astype(np.int64))]).astype(np.int64)
        # explode() turns an empty list into one null: dropping nulls leaves exactly the values.
        flat = np.asarray(s.explode().drop_nulls().to_numpy(), dtype=dt) if offsets[-1] else np.array([], dtype=dt)
        arrays[k] = (flat, offsets)
    for i in range(len(df)):
        def arr(k):
            flat, off = arrays[k]
            return flat[off[i] : off[i + 1]].copy()

        out.append(
            Example(
                example_id=cols["example_id"][i],
                tier=int(cols["tier"][i]),
                source=cols["source"][i],
                source_id=cols["source_id"][i],
                parent=cols["parent"][i],
                transforms=tuple(cols["transforms"][i] or ()),
                key=cols["key"][i],
                bpm=float(cols["bpm"][i]),
                start=arr("start"),
                duration=arr("duration"),
                pitch=arr("pitch"),
                velocity=arr("velocity"),
                chords=tuple((c[0], float(c[1]), float(c[2]), bool(c[3])) for c in json.loads(cols["chords"][i])),
                licence=cols["licence"][i],
                source_file=cols["source_file"][i],
                link=cols["link"][i],
                tempo_meaningful=bool(cols["tempo_meaningful"][i]),
                program=int(cols["program"][i]),
                title=cols["title"][i],
                provenance=json.loads(cols["provenance"][i]),
            )
        )
    return out


def empty_table() -> pl.DataFrame:
    return pl.DataFrame(schema=TABLE_SCHEMA)


def concat_tables(tables: Iterable[pl.DataFrame]) -> pl.DataFrame:
    tables = [t for t in tables if t is not None and len(t)]
    return pl.concat(tables, how="diagonal_relaxed") if tables else empty_table()
