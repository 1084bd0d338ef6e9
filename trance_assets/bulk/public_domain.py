"""Tier 3, public domain: monophonic folk and fiddle tunes from music21's bundled ABC corpus.

Three collections ship with music21 (no network needed): the Essen folksong collection, Ryan's
Mammoth Collection (1883) and O'Neill's "Music of Ireland" (1903, 1850 tunes). Each is a folder of ABC files;
an Essen or O'Neill's file holds tens to hundreds of tunes, a Ryan's Mammoth file holds one.

Pipeline of this module (no Dagster imports: domain core):

1. `list_source_files` enumerates the ABC files of the chosen collections with the sha256 of
   their bytes.
2. `parse_source_file` / `parse_abc_text` turn one file into one plain, JSON-able record per tune:
   notes as ``[start_beats, pitch, duration_beats, velocity]`` in quarter-note beats (ties merged,
   rests and grace notes dropped, chords reduced to their top note), chord symbols converted to
   the syntax of `trance_assets.music.theory.parse_chord`, the key as a `parse_key` name, the
   notated tempo, and a `skip_reason` (None when the tune is usable). Only 4/4, 2/4 and 2/2 are
   kept, re-barred as 4/4 (offsets are quarter-note beats; bars of irregular length, i.e.
   anacruses and incomplete bars, are laid out so that every full bar starts on a bar line, see
   `_rebar`). Parsing never raises: a broken tune or file becomes a record with a skip reason
   naming the file and the exception.
3. `public_domain_melodies` walks the files in a seeded order, taking usable tunes round-robin
   across the collections (so a small count samples every collection), parses tunes in worker
   processes (spawned, so a threaded caller is safe) in chunks of `CHUNK_TUNES` tunes so that a
   500-tune Essen file is not parsed whole for the four tunes a small run needs, caches each
   file's records as JSON under ``cache_dir/<sha256>.json`` (content hash + `PARSER_VERSION`),
   drops duplicate tunes (overlapping O'Neill's files), and builds `Melody` objects re-timed to
   the profile tempo.

Determinism: the selected melodies depend only on the corpus bytes, `count`, `collections` and
`seed` — never on the number of workers, on the cache, or on which parse finished first (parsing
ahead is speculative; the walk order is fixed).

Licences: music21 distributes these encodings with its corpus. The tunes are traditional and the
printed sources (1883, 1903) are out of copyright; the Essen encodings, however, are distributed
with permission "for non-commercial distribution and use" (music21/corpus/essenFolksong/
license.txt). Each melody's `licence` is therefore per collection (`COLLECTION_LICENCES`: Ryan's and
O'Neill's public domain, Essen non-commercial only), with a `licence_note` explaining it; drop
"essen" from the profile's collections for a corpus that must be usable commercially.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..music.melody import GM_LEAD_PROGRAM, ChordSpan, Melody, Note
from ..music.theory import Key, parse_chord

SOURCE = "tier3/public_domain"
PD_LICENCE = "public domain (music21 bundled corpus)"
# Bump when the records `parse_abc_text` produces change: cached records of another version are ignored.
PARSER_VERSION = "1"

COLLECTIONS: dict[str, str] = {
    "essen": "essenFolksong",
    "ryans_mammoth": "ryansMammoth",
    "oneills": "oneills1850",
}
COLLECTION_DESCRIPTIONS: dict[str, str] = {
    "essen": "Essen Folksong Collection (EsAC; mostly German and Chinese folk songs), ABC by Seymour Schlien",
    "ryans_mammoth": "Ryan's Mammoth Collection (Boston, 1883): 1050 reels, jigs and hornpipes, one tune per file",
    "oneills": "O'Neill's Music of Ireland (Chicago, 1903): 1850 Irish airs and dance tunes",
}
COLLECTION_LICENCE_NOTES: dict[str, str] = {
    "essen": (
        "traditional tunes; music21 states the encodings' legal status is unclear and that permission was "
        "given for non-commercial distribution and use (essenFolksong/license.txt)"
    ),
    "ryans_mammoth": "traditional tunes from an 1883 printed collection (out of copyright), encodings bundled with music21",
    "oneills": "traditional tunes from a 1903 printed collection (out of copyright), encodings bundled with music21",
}

COLLECTION_LICENCES: dict[str, str] = {
    "essen": "non-commercial use only (Essen Folksong Collection encodings, see music21 essenFolksong/license.txt)",
    "ryans_mammoth": "public domain (Ryan's Mammoth Collection, 1883)",
    "oneills": "public domain (O'Neill's Music of Ireland, 1903)",
}

KEPT_TIME_SIGNATURES = ("4/4", "2/4", "2/2")
TIME_SIGNATURE_NOTE = "only 4/4, 2/4 and 2/2 kept: trance is 4/4"
MIN_NOTES = 8
# A tune whose sounding events are more than this share chords is a harmonised setting, not a melody.
MAX_CHORD_EVENT_SHARE = 0.5
# With the notated key's tonic, the better of major / minor must cover this share of the note
# durations; otherwise the notated key is taken to be wrong and the key is estimated from the notes.
MIN_KEY_FIT = 0.8
BEATS_PER_BAR = 4
CHUNK_TUNES = 32  # tunes per parse task (the unit of work and of laziness; results do not depend on it)

_EPS = 1e-6
_MINOR_MODES = {"minor", "dorian", "phrygian", "aeolian", "locrian"}


# ---- source files ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SourceFile:
    collection: str
    corpus_path: str  # relative to music21's corpus folder, POSIX separators
    path: Path
    sha256: str
    size: int


def corpus_root() -> Path:
    """music21's bundled corpus folder."""
    from music21 import common

    return Path(common.getCorpusFilePath())


def _check_collections(collections: Iterable[str]) -> tuple[str, ...]:
    cols = tuple(collections)
    unknown = [c for c in cols if c not in COLLECTIONS]
    if unknown:
        raise ValueError(f"unknown public-domain collection(s) {unknown}; known: {sorted(COLLECTIONS)}")
    if len(set(cols)) != len(cols):
        raise ValueError(f"collections listed twice: {list(cols)}")
    return cols


def list_source_files(collections: Iterable[str] = tuple(COLLECTIONS)) -> list[SourceFile]:
    """Every ``*.abc`` file of the collections, sorted by (collection, corpus path)."""
    cols = _check_collections(collections)
    root = corpus_root()
    out = []
    for c in cols:
        folder = root / COLLECTIONS[c]
        if not folder.is_dir():
            raise FileNotFoundError(f"music21 corpus folder for {c!r} not found: {folder} (is the corpus installed?)")
        for p in folder.glob("*.abc"):
            data = p.read_bytes()
            out.append(
                SourceFile(
                    collection=c,
                    corpus_path=p.relative_to(root).as_posix(),
                    path=p,
                    sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data),
                )
            )
    return sorted(out)


def _corpus_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(corpus_root().resolve()).as_posix()
    except ValueError:
        return path.name


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_X_LINE = re.compile(r"^X:", re.MULTILINE)
_K_FIELD = re.compile(r"^K:[ \t]*([^\s%]*)", re.MULTILINE)


def split_abc_tunes(text: str) -> tuple[str, list[str]]:
    """(file header, tune texts): a tune starts at a line beginning with ``X:``.

    Text without any ``X:`` line is one tune with an empty header.
    """
    starts = [m.start() for m in _X_LINE.finditer(text)]
    if not starts:
        return "", [text]
    header = text[: starts[0]]
    tunes = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    return header, tunes


# ---- parsing one tune ------------------------------------------------------------------------------


def _blank_record(collection: str, corpus_path: str, tune_index: int | None) -> dict:
    return {
        "collection": collection,
        "corpus_path": corpus_path,
        "tune_index": tune_index,
        "number": None,
        "title": "",
        "time_signature": None,
        "time_signatures": [],
        "key": None,
        "key_notated": None,
        "key_source": None,
        "tempo": None,
        "anacrusis_beats": 0.0,
        "end_beats": 0.0,
        "notes": [],
        "chords": [],
        "no_chord": [],
        "chords_dropped": 0,
        "dropped_chord_symbols": [],
        "grace_notes_dropped": 0,
        "chord_events": 0,
        "n_parts": 0,
        "skip_reason": None,
        "skip_category": None,
    }


_RECORD_KEYS = frozenset(_blank_record("", "", None))


def _skip(rec: dict, category: str, reason: str) -> dict:
    rec["skip_category"] = category
    rec["skip_reason"] = reason
    return rec


_M21_CHORD = re.compile(r"^([A-G])([#-]*)(.*?)(?:/([A-G])([#-]*))?$")
_QUALITY_ALIASES = {"o": "dim", "o7": "dim7", "mi": "m", "mi7": "m7", "min": "m", "/o7": "m7b5"}


def convert_chord_symbol(figure: str) -> str | None:
    """music21 chord-symbol figure ('B-maj7', 'F#m7/C#') -> `parse_chord` syntax ('Bbmaj7'), or None."""
    m = _M21_CHORD.match(figure.strip())
    if not m:
        return None
    root = m.group(1) + m.group(2).replace("-", "b")
    quality = _QUALITY_ALIASES.get(m.group(3), m.group(3))
    sym = root + quality + (f"/{m.group(4)}{m.group(5).replace('-', 'b')}" if m.group(4) else "")
    try:
        parse_chord(sym)
    except ValueError:
        return None
    return sym


def _key_from_notes(notes: list[list]) -> Key:
    from ..music.analysis import estimate_key

    return estimate_key([Note(s, p, d, v) for s, p, d, v in notes])


def _choose_key(notated, notated_text: str | None, notes: list[list]) -> tuple[Key, str]:
    """(key, how it was found). The notated tonic is kept (folk tunes end on it); major or minor is
    chosen by which scale covers more of the note durations (ties: the notated mode; church modes
    map to the major / minor key on the same tonic). No usable key field, or a notated key that fits
    the notes poorly: Krumhansl-Schmuckler estimate from the notes."""
    from music21 import key as m21key

    weights = Counter()
    for _s, p, d, _v in notes:
        weights[p % 12] += d
    total = sum(weights.values()) or 1.0
    usable = isinstance(notated, m21key.Key) and (notated_text or "").lower() not in ("", "none")
    if usable:
        tonic = notated.tonic.pitchClass
        major, minor = Key(tonic, "major"), Key(tonic, "minor")
        fit_major = sum(w for pc, w in weights.items() if pc in set(major.scale_pcs())) / total
        fit_minor = sum(w for pc, w in weights.items() if pc in minor.allowed_pcs()) / total
        notated_mode = "minor" if notated.mode in _MINOR_MODES else "major"
        if fit_major > fit_minor + _EPS:
            mode = "major"
        elif fit_minor > fit_major + _EPS:
            mode = "minor"
        else:
            mode = notated_mode
        if max(fit_major, fit_minor) >= MIN_KEY_FIT:
            return Key(tonic, mode), ("notated" if mode == notated_mode and notated.mode in ("major", "minor") else "notated tonic, mode from notes")
        return _key_from_notes(notes), "estimated (notated key fits the notes poorly)"
    return _key_from_notes(notes), "estimated (no key notated)"


def _measure_time_signatures(measures: list) -> list[tuple[int, object]]:
    """(measure position, TimeSignature) of the metres that govern the tune.

    music21's ABC translator gives a short bar (a pickup to a later strain, an incomplete bar before
    a double bar) a time signature of its own length (1/8, 1/16, ...) and restores the metre on the
    next bar. Such a one-bar signature, shorter than the one restored right after it, is not a
    change of metre and is left out.
    """
    found = []
    for i, m in enumerate(measures):
        ts = m.timeSignature
        if ts is None:
            continue
        bar = float(ts.barDuration.quarterLength)
        nxt = measures[i + 1].timeSignature if i + 1 < len(measures) else None
        one_bar = abs(float(m.duration.quarterLength) - bar) < _EPS
        if one_bar and (
            (nxt is not None and float(nxt.barDuration.quarterLength) > bar + _EPS)
            or (i + 1 == len(measures) and found and float(found[-1][1].barDuration.quarterLength) > bar + _EPS)
        ):
            continue
        found.append((i, ts))
    return found


def _rebar(measures: list, sigs: list[tuple[int, object]]):
    """Lay the measures out on 4/4-compatible bar lines: (offset -> beats, end beats, anacrusis beats).

    Offsets are quarter-note beats, so 2/4 (2 beats a bar), 2/2 and 4/4 (4 beats) need no scaling;
    what needs care are the bars of irregular length. Every full bar starts on a bar line of its
    metre; a bar shorter than the metre is an anacrusis when a full bar follows it (right-aligned
    to the next bar line, or filling the rest of an incomplete bar just before it, as at a strain's
    repeat) and an incomplete bar otherwise (left-aligned). An opening anacrusis ends on beat 4,
    so the first full bar starts the second 4/4 bar.
    """
    bars = []
    gov = iter(sigs)
    cur = next(gov, None)
    pending = next(gov, None)
    for i, m in enumerate(measures):
        while pending is not None and pending[0] <= i:
            cur, pending = pending, next(gov, None)
        bars.append(Fraction(cur[1].barDuration.quarterLength))
    # exact arithmetic (music21 gives Fractions for triplets); floats only on the way out
    old = [Fraction(m.offset) for m in measures]
    new = []
    pos = Fraction(0)
    open_short = None  # length of the incomplete bar just placed (its bar still has room)
    pickup = Fraction(0)
    for i, m in enumerate(measures):
        d, bar = Fraction(m.duration.quarterLength), bars[i]
        next_full = i + 1 < len(measures) and Fraction(measures[i + 1].duration.quarterLength) >= bars[i + 1]
        if d >= bar:
            new.append(pos)
            pos += bar * math.ceil(d / bar)
            open_short = None
        elif d == 0:
            new.append(pos)
        elif next_full:
            if i == 0:
                pickup = d
                new.append(BEATS_PER_BAR - d)
                pos = Fraction(BEATS_PER_BAR)
            elif open_short is not None and open_short + d <= bar:
                new.append(pos - d)
            else:
                new.append(pos + bar - d)
                pos += bar
            open_short = None
        else:
            new.append(pos)
            pos += bar
            open_short = d

    def place(offset) -> float:
        off = Fraction(offset)
        j = max(0, bisect.bisect_right(old, off) - 1)
        return float(new[j] + (off - old[j]))

    return place, float(pos), float(pickup)


def _tune_record(parts: list, rec: dict, notated_key_text: str | None) -> dict:
    """Fill `rec` from the music21 parts of one tune."""
    from music21 import chord as m21chord
    from music21 import harmony, meter, note, stream, tempo
    from music21 import key as m21key

    rec["n_parts"] = len(parts)
    if not parts:
        return _skip(rec, f"fewer than {MIN_NOTES} notes", f"fewer than {MIN_NOTES} notes (no music)")

    def mean_pitch(p) -> float:
        ps = [n.pitch.midi for n in p.recurse().notes if isinstance(n, note.Note)]
        ps += [max(x.midi for x in c.pitches) for c in p.recurse().notes if isinstance(c, m21chord.Chord) and not isinstance(c, harmony.ChordSymbol)]
        return sum(ps) / len(ps) if ps else -1.0

    part = parts[0] if len(parts) == 1 else max(parts, key=mean_pitch)  # the top line
    flat = part.flatten()

    measures = list(part.getElementsByClass(stream.Measure))
    if measures:
        sigs = _measure_time_signatures(measures)
    else:
        sigs = [(0, ts) for ts in flat.getElementsByClass(meter.TimeSignature)]
    real = [ts.ratioString for _i, ts in sigs]
    rec["time_signatures"] = list(dict.fromkeys(real))
    rec["time_signature"] = real[0] if real else None
    marks = list(flat.getElementsByClass(tempo.MetronomeMark))
    if marks:
        q = marks[0].getQuarterBPM()
        rec["tempo"] = float(q) if q else None
    keys = list(flat.getElementsByClass(m21key.KeySignature))
    notated = keys[0] if keys else None
    if isinstance(notated, m21key.Key):
        rec["key_notated"] = f"{notated.tonic.name} {notated.mode}"
    elif notated is not None:
        rec["key_notated"] = f"{notated.sharps} sharps" if notated.sharps >= 0 else f"{-notated.sharps} flats"

    if not real:
        return _skip(rec, "no time signature", "no time signature (free metre)")
    bad = [x for x in rec["time_signatures"] if x not in KEPT_TIME_SIGNATURES]
    if bad:
        if len(rec["time_signatures"]) > 1:
            change = " -> ".join(rec["time_signatures"])
            return _skip(rec, "time signature change", f"time signature changes {change} ({TIME_SIGNATURE_NOTE})")
        return _skip(rec, f"time signature {bad[0]}", f"time signature {bad[0]} ({TIME_SIGNATURE_NOTE})")

    place, end, pickup = _rebar(measures, sigs) if measures else ((lambda off: float(off)), float(flat.highestTime), 0.0)
    rec["anacrusis_beats"] = pickup

    events = []  # (start, pitch, duration, tie type)
    chords_raw = []
    grace = chord_events = 0
    for el in flat:
        if isinstance(el, harmony.ChordSymbol):
            chords_raw.append((place(el.offset), el))
            continue
        if not isinstance(el, (note.Note, m21chord.Chord)):
            continue  # rests, unpitched, clefs, ...
        if el.duration.isGrace or el.quarterLength <= 0:
            grace += 1
            continue
        if isinstance(el, m21chord.Chord):
            if not el.pitches:
                continue
            chord_events += 1
            pitch = max(p.midi for p in el.pitches)
        else:
            pitch = el.pitch.midi
        events.append((place(el.offset), int(pitch), float(el.quarterLength), el.tie.type if el.tie else None))
    rec["grace_notes_dropped"] = grace
    rec["chord_events"] = chord_events

    # one line: the top note at each onset; ties merged (same pitch, contiguous); overlaps cut
    events.sort(key=lambda e: (e[0], -e[1]))
    notes: list[list] = []
    open_tie = False
    for start, pitch, dur, tie in events:
        if notes and abs(notes[-1][0] - start) < _EPS:
            continue  # a lower note at the same onset
        if notes:
            prev = notes[-1]
            if open_tie and prev[1] == pitch and abs(prev[0] + prev[2] - start) < _EPS and tie in ("stop", "continue"):
                prev[2] = start + dur - prev[0]
                open_tie = tie == "continue"
                continue
            if prev[0] + prev[2] > start + _EPS:
                prev[2] = start - prev[0]
        notes.append([start, pitch, dur, 100])
        open_tie = tie in ("start", "continue")
    rec["notes"] = notes
    rec["end_beats"] = max(end, max((n[0] + n[2] for n in notes), default=0.0))

    chords, dropped, no_chord = [], [], []
    for start, cs in sorted(chords_raw, key=lambda c: c[0]):
        if isinstance(cs, harmony.NoChord):
            no_chord.append(start)  # "N.C.": ends the chord before it
            continue
        sym = convert_chord_symbol(cs.figure or "")
        if sym is None:
            dropped.append(cs.figure or "")
        else:
            chords.append([sym, start])
    rec["chords"] = chords
    rec["no_chord"] = no_chord
    rec["chords_dropped"] = len(dropped)
    rec["dropped_chord_symbols"] = dropped

    if any(not 0 <= n[1] <= 127 for n in notes):
        return _skip(rec, "pitch out of MIDI range", "pitch out of MIDI range 0-127")
    sounding = len(events)
    if sounding and chord_events / sounding > MAX_CHORD_EVENT_SHARE:
        return _skip(rec, "polyphonic", f"polyphonic ({chord_events} of {sounding} events are chords)")
    if len(notes) < MIN_NOTES:
        return _skip(rec, f"fewer than {MIN_NOTES} notes", f"fewer than {MIN_NOTES} notes ({len(notes)})")
    k, how = _choose_key(notated, notated_key_text, notes)
    rec["key"] = k.name
    rec["key_source"] = how
    return rec


_UNBEAMED_PART = None


def _unbeamed_part():
    """A music21 Part whose makeBeams is a no-op: music21's ABC translator beams every part, which
    is notation only (no offset or duration changes) and about two thirds of its parse time."""
    global _UNBEAMED_PART
    if _UNBEAMED_PART is None:
        from music21 import stream

        class UnbeamedPart(stream.Part):
            def makeBeams(self, *args, **kwargs):  # noqa: N802 (music21's name)
                return None

        _UNBEAMED_PART = UnbeamedPart
    return _UNBEAMED_PART()


def _abc_parts(handler, *, beams: bool = False) -> tuple[list, str, int | None]:
    """(parts, title, X: number) of one tune's ABCHandler, as music21's `abcToStreamScore` builds
    them (one part per voice, the header tokens prepended to each), without the Score wrapper."""
    from music21 import abcFormat
    from music21.abcFormat import translate

    title, number = "", None
    for t in handler.tokens:
        if not isinstance(t, abcFormat.ABCMetadata):
            continue
        if t.isVersion():
            m = re.match(r"(\d+).(\d+).?(\d+)?", t.data.replace("abc-version", "").strip())
            if m:
                handler.abcVersion = handler.returnAbcVersionFromMatch(m)
        elif t.isTitle() and not title:
            title = t.data
        elif t.isReferenceNumber() and number is None:
            try:
                number = int(t.data)
            except ValueError:
                pass
    voices = handler.splitByVoice()
    handlers = [voices[0]] if len(voices) == 1 else [voices[0] + v for v in voices[1:]]
    parts = [translate.abcToStreamPart(h, inputM21=None if beams else _unbeamed_part()) for h in handlers]
    if title:  # music21's metadata normalises it ("Maid of Athlone, The" -> "The Maid of Athlone")
        from music21 import metadata

        md = metadata.Metadata()
        md.add("title", title)
        title = str(md.title or title)
    return parts, title.strip(), number


def _parse_one(text: str, collection: str, corpus_path: str, tune_index: int, *, beams: bool = False) -> dict:
    from music21 import abcFormat

    rec = _blank_record(collection, corpus_path, tune_index)
    try:
        handler = abcFormat.ABCFile().readstr(text)
        if handler.definesReferenceNumbers():
            pieces = handler.splitByReferenceNumber()
            if len(pieces) == 1:
                handler = next(iter(pieces.values()))
        parts, title, number = _abc_parts(handler, beams=beams)
        rec["title"], rec["number"] = title, number
        k = _K_FIELD.search(text[text.find("X:"):] if "X:" in text else text)
        return _tune_record(parts, rec, k.group(1) if k else None)
    except Exception as exc:  # music21 raises many types on malformed ABC
        return _skip(rec, "parse error", f"parse error in {corpus_path} tune {tune_index}: {type(exc).__name__}: {exc}")


def _parse_chunk(collection: str, corpus_path: str, header: str, items: Sequence[tuple[int, str]]) -> list[dict]:
    """Worker entry point: parse tunes (index, text) of one file; the file header precedes each."""
    return [_parse_one(header + text, collection, corpus_path, i) for i, text in items]


def _file_error(collection: str, corpus_path: str, exc: BaseException) -> dict:
    return _skip(
        _blank_record(collection, corpus_path, None),
        "file error",
        f"cannot parse {corpus_path}: {type(exc).__name__}: {exc}",
    )


def parse_abc_text(text: str, collection: str, *, corpus_path: str = "<text>") -> list[dict]:
    """Every tune of an ABC text -> one JSON-able record each (see the module docstring). Never raises."""
    try:
        header, tunes = split_abc_tunes(text)
        if not any(_K_FIELD.search(t) for t in tunes) and not _K_FIELD.search(header):
            raise ValueError("no ABC tune found (no K: field)")
        return _parse_chunk(collection, corpus_path, header, list(enumerate(tunes)))
    except Exception as exc:
        return [_file_error(collection, corpus_path, exc)]


def parse_source_file(path: str | os.PathLike, collection: str) -> list[dict]:
    """Every tune of one ABC file -> one JSON-able record each. Never raises: an unreadable file
    gives one record whose `skip_reason` names the file and the exception."""
    p = Path(path)
    corpus_path = _corpus_path(p)
    try:
        text = _decode(p.read_bytes())
    except Exception as exc:
        return [_file_error(collection, corpus_path, exc)]
    return parse_abc_text(text, collection, corpus_path=corpus_path)


# ---- records -> melodies ---------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def melody_name(collection: str, corpus_path: str, tune_index: int) -> str:
    return f"pd-{_slug(collection)}-{_slug(Path(corpus_path).stem)}-{tune_index}"


def record_to_melody(record: dict, *, bpm: float, file_sha256: str, name: str | None = None, program: int = GM_LEAD_PROGRAM) -> Melody:
    """A usable record -> a Melody re-timed to `bpm` (notated tempi mean nothing for trance)."""
    if record.get("skip_reason"):
        raise ValueError(f"record is not usable: {record['skip_reason']}")
    notes = tuple(Note(float(s), int(p), float(d), int(v)) for s, p, d, v in record["notes"])
    end = max(float(record["end_beats"]), max((n.end for n in notes), default=0.0))
    marks = [(float(t), s) for s, t in record["chords"]] + [(float(t), None) for t in record.get("no_chord", [])]
    marks.sort(key=lambda c: c[0])
    spans = []
    for i, (t, sym) in enumerate(marks):
        t_end = marks[i + 1][0] if i + 1 < len(marks) else end
        if sym is not None and t_end > t + _EPS:
            spans.append(ChordSpan(sym, t, t_end - t, inferred=False))
    collection = record["collection"]
    return Melody(
        notes=notes,
        bpm=float(bpm),
        key=record["key"],
        chords=tuple(spans),
        bars=max(1, math.ceil(end / BEATS_PER_BAR - _EPS)),
        program=program,
        name=name or melody_name(collection, record["corpus_path"], record["tune_index"]),
        attributes={
            "source": SOURCE,
            "licence": COLLECTION_LICENCES.get(collection, PD_LICENCE),
            "licence_note": COLLECTION_LICENCE_NOTES.get(collection, ""),
            "collection": collection,
            "corpus_path": record["corpus_path"],
            "file_sha256": file_sha256,
            "tune_index": record["tune_index"],
            "number": record.get("number"),
            "title": record.get("title", ""),
            "time_signature": record.get("time_signature"),
            "key_notated": record.get("key_notated"),
            "key_source": record.get("key_source"),
            "anacrusis_beats": record.get("anacrusis_beats", 0.0),
            "chords_dropped": record.get("chords_dropped", 0),
            "original_tempo": record.get("tempo"),
            "tempo_meaningful": True,  # re-timed to the profile tempo
            "retimed": True,
            "parser_version": PARSER_VERSION,
        },
    )


def _fingerprint(record: dict) -> str:
    """Identity of a tune's notes (onsets relative to the first note): catches a tune printed twice."""
    notes = record["notes"]
    t0 = notes[0][0] if notes else 0.0
    body = [(round(s - t0, 4), p, round(d, 4)) for s, p, d, _v in notes]
    return hashlib.sha1(json.dumps(body).encode()).hexdigest()


# ---- cache -----------------------------------------------------------------------------------------


def _cache_path(cache_dir: Path, sha: str) -> Path:
    return cache_dir / f"{sha}.json"


def _read_cache(cache_dir: Path, sha: str, log: Callable[[str], None]) -> list | None:
    """Per-tune records (None where not parsed yet) or None when absent / unreadable / stale."""
    p = _cache_path(cache_dir, sha)
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text())
        ok = (
            isinstance(d, dict)
            and d.get("parser_version") == PARSER_VERSION
            and d.get("sha256") == sha
            and isinstance(d.get("records"), list)
            and d.get("n_tunes") == len(d["records"])
            and all(r is None or (isinstance(r, dict) and _RECORD_KEYS <= r.keys()) for r in d["records"])
        )
    except (OSError, ValueError) as exc:
        log(f"public domain: ignoring unreadable cache file {p.name} ({type(exc).__name__}: {exc})")
        return None
    if not ok:
        log(f"public domain: ignoring stale or malformed cache file {p.name}")
        return None
    return d["records"]


def _write_cache(cache_dir: Path, sha: str, records: list) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = _cache_path(cache_dir, sha)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    payload = {"parser_version": PARSER_VERSION, "sha256": sha, "n_tunes": len(records), "records": records}
    try:
        tmp.write_text(json.dumps(payload, separators=(",", ":")))
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---- the walk --------------------------------------------------------------------------------------


@dataclass
class PublicDomainResult:
    melodies: list[Melody]
    report: dict


@dataclass
class _FileState:
    sf: SourceFile
    records: list | None = None  # per tune index; None entries not parsed yet
    header: str = ""
    texts: list[str] = field(default_factory=list)
    opened: bool = False
    walked: bool = False
    from_cache: bool = False
    parsed_here: bool = False
    dirty: bool = False

    def chunk_range(self, k: int) -> range:
        n = len(self.records)
        return range(k * CHUNK_TUNES, min(n, (k + 1) * CHUNK_TUNES))

    @property
    def n_chunks(self) -> int:
        return -(-len(self.records) // CHUNK_TUNES)

    def chunk_ready(self, k: int) -> bool:
        return all(self.records[i] is not None for i in self.chunk_range(k))


def _worker_init() -> None:  # pragma: no cover - runs in the worker processes
    import music21.abcFormat.translate  # noqa: F401  (warm the import once per worker)


def public_domain_melodies(
    count: int,
    *,
    bpm: float = 138.0,
    collections: Sequence[str] = tuple(COLLECTIONS),
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    seed: int = 0,
    log: Callable[[str], None] = print,
    program: int = GM_LEAD_PROGRAM,
    log_every: int = 10,
) -> PublicDomainResult:
    """Up to `count` usable public-domain melodies, re-timed to `bpm`.

    Files of each collection are walked in a seeded shuffled order; tunes are taken round-robin
    across `collections` (one per collection in turn; an exhausted collection drops out), skipping
    unusable tunes and duplicates of tunes already taken. Fewer than `count` melodies come back only
    when the collections run out (`report['shortfall']`; the whole corpus holds about 6,150).

    `workers` > 1: tunes are parsed in that many spawned processes (safe in a threaded caller; a
    caller script needs the usual ``if __name__ == "__main__"`` guard), started only when something
    has to be parsed; <= 1: in this process. `cache_dir`: per-file records are read from and
    written to ``<sha256>.json`` there (unreadable or other-version files are ignored and
    rewritten). `log` gets a progress line every `log_every` parsed chunks and a summary.
    """
    t0 = time.perf_counter()
    cols = _check_collections(collections)
    if not bpm > 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    cache = Path(cache_dir) if cache_dir is not None else None
    files = list_source_files(cols)
    seen_sha: set[str] = set()
    order: dict[str, list[_FileState]] = {c: [] for c in cols}
    duplicate_files = 0
    for c in cols:
        fs = [f for f in files if f.collection == c]
        random.Random(f"{seed}:{c}").shuffle(fs)
        for f in fs:
            if f.sha256 in seen_sha:
                duplicate_files += 1
                continue
            seen_sha.add(f.sha256)
            order[c].append(_FileState(f))
    n_files_total = sum(len(v) for v in order.values())

    stats = Counter()
    per_col = {c: Counter() for c in cols}
    skipped = Counter()
    futures: dict[Future, tuple[_FileState, int]] = {}
    submitted: set[tuple[str, int]] = set()
    executor: ProcessPoolExecutor | None = None
    pool_broken = False
    t_parse0 = None

    def open_file(st: _FileState) -> None:
        if st.opened:
            return
        st.opened = True
        c = st.sf.collection
        if cache is not None:
            recs = _read_cache(cache, st.sf.sha256, log)
            if recs is not None:
                st.records, st.from_cache = recs, True
                if all(r is not None for r in recs):
                    return
        try:
            text = _decode(st.sf.path.read_bytes())
            header, tunes = split_abc_tunes(text)
            if not any(_K_FIELD.search(t) for t in tunes) and not _K_FIELD.search(header):
                raise ValueError("no ABC tune found (no K: field)")
        except Exception as exc:
            st.records = [_file_error(c, st.sf.corpus_path, exc)]
            st.dirty = True
            return
        if st.records is None or len(st.records) != len(tunes):
            st.records = [None] * len(tunes)
        st.header, st.texts = header, tunes

    def store(st: _FileState, recs: list[dict]) -> None:
        for r in recs:
            st.records[r["tune_index"]] = r
        st.dirty = st.parsed_here = True
        stats["chunks_parsed"] += 1
        stats["tunes_parsed"] += len(recs)
        if cache is not None and all(r is not None for r in st.records):
            _write_cache(cache, st.sf.sha256, st.records)
            st.dirty = False
        if stats["chunks_parsed"] % log_every == 0:
            elapsed = time.perf_counter() - (t_parse0 or t0)
            touched = sum(s.parsed_here for v in order.values() for s in v)
            log(
                f"public domain: parsed {touched}/{n_files_total} files ({stats['chunks_parsed']} chunks), "
                f"{stats['tunes_parsed']} tunes, {stats['tunes_parsed'] / max(elapsed, 1e-9):.1f} tunes/s"
            )

    def task_args(st: _FileState, k: int):
        items = [(i, st.texts[i]) for i in st.chunk_range(k)]
        return (st.sf.collection, st.sf.corpus_path, st.header, items)

    def submit(st: _FileState, k: int) -> None:
        nonlocal executor, t_parse0
        key = (st.sf.sha256, k)
        if key in submitted:
            return
        submitted.add(key)
        if t_parse0 is None:
            t_parse0 = time.perf_counter()
        if executor is None:
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        futures[executor.submit(_parse_chunk, *task_args(st, k))] = (st, k)

    def collect(block: bool) -> None:
        nonlocal pool_broken
        if not futures:
            return
        done, _ = wait(list(futures), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in sorted(done, key=lambda f: (futures[f][0].sf, futures[f][1])):
            st, k = futures.pop(fut)
            try:
                recs = fut.result()
            except Exception as exc:  # the task or its worker died: parse here (never cache a crash)
                if isinstance(exc, BrokenProcessPool):
                    pool_broken = True
                log(f"public domain: worker failed on {st.sf.corpus_path} chunk {k} ({type(exc).__name__}: {exc}); parsing it in-process")
                recs = _parse_chunk(*task_args(st, k))
            store(st, recs)

    cursor = {c: [0, 0] for c in cols}  # (file position, tune index) of the next record each collection walks
    rate = {c: [1, 2] for c in cols}  # usable / walked, Laplace-smoothed: for planning parses ahead only

    def upcoming(c: str, limit: int) -> list[tuple[_FileState, int, int]]:
        """(file, chunk, tunes not yet walked in it) for the next chunks collection `c` walks."""
        fi, ti = cursor[c]
        out = []
        while fi < len(order[c]) and len(out) < limit:
            st = order[c][fi]
            open_file(st)
            for k in range(ti // CHUNK_TUNES, st.n_chunks):
                r = st.chunk_range(k)
                out.append((st, k, len(r) - max(0, ti - r.start)))
                if len(out) >= limit:
                    break
            fi, ti = fi + 1, 0
        return out

    def prefetch() -> None:
        """Keep the pool busy with the chunks the walk will most likely need next: those of the
        collections whose expected supply of usable tunes is furthest below their share."""
        remaining = count - len(melodies)
        if executor is None or pool_broken or remaining <= 0 or not active:
            return  # the pool starts only when the walk needs a parse (a fully cached run spawns nothing)
        need = -(-remaining // len(active))
        plans = {c: upcoming(c, 64) for c in active}
        supply = dict.fromkeys(active, 0.0)
        for c in active:
            for st, k, n in plans[c]:
                if (st.sf.sha256, k) in submitted or st.chunk_ready(k):
                    supply[c] += n * rate[c][0] / rate[c][1]
        while len(futures) < 2 * workers:
            best = None
            for c in active:
                if supply[c] >= need:
                    continue
                nxt = next(((st, k, n) for st, k, n in plans[c] if (st.sf.sha256, k) not in submitted and not st.chunk_ready(k)), None)
                if nxt is not None and (best is None or supply[c] < supply[best[0]]):
                    best = (c, nxt)
            if best is None:
                return
            c, (st, k, n) = best
            submit(st, k)
            supply[c] += n * rate[c][0] / rate[c][1]

    def ensure_chunk(st: _FileState, k: int) -> None:
        nonlocal t_parse0
        if st.chunk_ready(k):
            return
        if workers <= 1 or pool_broken:
            if t_parse0 is None:
                t_parse0 = time.perf_counter()
            store(st, _parse_chunk(*task_args(st, k)))
            return
        submit(st, k)
        prefetch()
        while not st.chunk_ready(k):
            collect(block=True)
            prefetch()

    active = list(cols)
    fingerprints: dict[str, str] = {}
    melodies: list[Melody] = []
    used_names: set[str] = set()

    def next_usable(c: str) -> Melody | None:
        while True:
            fi, ti = cursor[c]
            if fi >= len(order[c]):
                return None
            st = order[c][fi]
            open_file(st)
            if not st.walked:
                st.walked = True
                per_col[c]["files"] += 1
            if ti >= len(st.records):
                cursor[c] = [fi + 1, 0]
                continue
            k = ti // CHUNK_TUNES
            if ti % CHUNK_TUNES == 0 or not st.chunk_ready(k):
                prefetch()
                ensure_chunk(st, k)
            collect(block=False)
            cursor[c] = [fi, ti + 1]
            rec = dict(st.records[ti], collection=c, corpus_path=st.sf.corpus_path)
            stats["tunes_seen"] += 1
            per_col[c]["tunes_seen"] += 1
            rate[c][1] += 1
            stats["chords_dropped"] += rec.get("chords_dropped") or 0
            if rec["skip_reason"]:
                skipped[rec["skip_category"] or "other"] += 1
                per_col[c]["skipped"] += 1
                continue
            fp = _fingerprint(rec)
            if fp in fingerprints:
                skipped["duplicate"] += 1
                per_col[c]["skipped"] += 1
                continue
            name = melody_name(c, st.sf.corpus_path, ti)
            if name in used_names:  # two file stems with the same slug
                name = f"{name}-{st.sf.sha256[:8]}"
            try:
                melody = record_to_melody(rec, bpm=bpm, file_sha256=st.sf.sha256, name=name, program=program)
            except (KeyError, TypeError, ValueError) as exc:  # a record no Melody accepts: skip it, loudly
                log(f"public domain: {st.sf.corpus_path} tune {ti} is not a valid melody ({type(exc).__name__}: {exc})")
                skipped["invalid record"] += 1
                per_col[c]["skipped"] += 1
                continue
            fingerprints[fp] = f"{st.sf.corpus_path}#{ti}"
            rate[c][0] += 1
            used_names.add(name)
            return melody

    try:
        while len(melodies) < count and active:
            for c in list(active):
                if len(melodies) >= count:
                    break
                m = next_usable(c)
                if m is None:
                    active.remove(c)
                    continue
                melodies.append(m)
                per_col[c]["kept"] += 1
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
            for fut, (st, k) in list(futures.items()):  # parses that finished anyway: keep them for the cache
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    store(st, fut.result())
            futures.clear()
        if cache is not None:
            for v in order.values():
                for st in v:
                    if st.dirty and st.records is not None:
                        _write_cache(cache, st.sf.sha256, st.records)
                        st.dirty = False

    seconds = time.perf_counter() - t0
    files_parsed = sum(st.parsed_here for v in order.values() for st in v)
    report = {
        "requested": count,
        "bpm": float(bpm),
        "seed": seed,
        "collections": list(cols),
        "workers": workers,
        "files_available": n_files_total,
        "duplicate_files": duplicate_files,
        "files_walked": sum(st.walked for v in order.values() for st in v),
        "files_parsed": files_parsed,
        "cache_hits": sum(st.walked and st.from_cache for v in order.values() for st in v),
        "chunks_parsed": stats["chunks_parsed"],
        "tunes_parsed": stats["tunes_parsed"],
        "tunes_seen": stats["tunes_seen"],
        "tunes_kept": len(melodies),
        "skipped": dict(sorted(skipped.items())),
        "chords_dropped": stats["chords_dropped"],
        "seconds": round(seconds, 3),
        "tunes_per_second": round(stats["tunes_seen"] / seconds, 2) if seconds > 0 else None,
        "parsed_tunes_per_second": round(stats["tunes_parsed"] / seconds, 2) if seconds > 0 and stats["tunes_parsed"] else None,
        "shortfall": max(0, count - len(melodies)),
        "per_collection": {c: {k: per_col[c][k] for k in ("files", "tunes_seen", "skipped", "kept")} for c in cols},
        "parser_version": PARSER_VERSION,
    }
    log(
        f"public domain: {len(melodies)}/{count} melodies from {report['files_walked']} files "
        f"({report['cache_hits']} from cache, {files_parsed} parsed), {report['tunes_seen']} tunes seen, "
        f"{report['tunes_parsed']} parsed, {report['tunes_per_second']} tunes/s in {seconds:.1f} s"
    )
    if report["shortfall"]:
        log(f"public domain: collections exhausted, {report['shortfall']} short of {count}")
    return PublicDomainResult(melodies=melodies, report=report)
