"""Melodies as note-seq `NoteSequence` protobufs, the input Magenta's training pipelines read.

What is filled in (see /work/shared/docs/MAGENTA-FACTS.md for what Magenta expects):

- `notes`: one `NoteSequence.Note` per note, in the order given: pitch, velocity (1-127), start_time /
  end_time in **seconds** (seconds = beats * 60 / bpm), `instrument`, `program`, `is_drum=False`.
- `tempos`: one tempo, qpm = bpm, at time 0 (Magenta's quantization reads `tempos[0].qpm`).
- `time_signatures`: 4/4 at time 0 (the project is 4/4 throughout).
- `key_signatures`: one at time 0; `key` is the tonic pitch class (the `KeySignature.Key` enum value:
  C = 0 ... B = 11, e.g. A minor -> A = 9) and `mode` MAJOR or MINOR. This is the convention of
  note-seq's MIDI reader/writer (pretty_midi key number = key + 12 * mode).
- `text_annotations`: one CHORD_SYMBOL annotation per chord, `text` = the symbol, `time` = its start
  in seconds (a chord lasts until the next one; span lengths and the "inferred" flag are not kept).
- `ticks_per_quarter` = 220 (the pretty_midi / Magenta default), `total_time` = end of the last note.
- `source_info`: source_type SCORE_BASED (times are exact beat positions at one fixed tempo, i.e.
  musical time, not a timed performance), encoding_type MIDI (the project's melodies live as MIDI /
  JSON with MIDI semantics), parser left unset (UNKNOWN_PARSER: none of note-seq's parsers made it).
- `sequence_metadata.title` / `genre` when given.

**Programs.** The `program` argument is the 1-based General MIDI program number, as in
`Melody.program` (81 = "Lead 1 (square)"). NoteSequence stores the 0-based MIDI byte (as pretty_midi
and the program-change message do), so 81 is written as 80; `notesequence_to_arrays` converts back
to 1-based.

Importing this module imports the `note_seq` package (about 1.5 s: its `__init__` pulls in pandas,
bokeh, librosa, ...); modules loaded with the code location import it lazily.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..music.theory import Key, parse_key

__all__ = [
    "music_pb2",
    "TICKS_PER_QUARTER",
    "DEFAULT_PROGRAM",
    "notesequence_from_arrays",
    "melody_to_notesequence",
    "notesequence_to_arrays",
]

# Importing note_seq costs about 1.5 s: callers that are imported at code-location load import this
# module lazily (see corpus.export).
with warnings.catch_warnings():  # note_seq imports pydub, which warns when ffmpeg is absent (unused here)
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    from note_seq.protobuf import music_pb2  # noqa: E402

TICKS_PER_QUARTER = 220  # pretty_midi's and Magenta's default resolution
DEFAULT_PROGRAM = 81  # 1-based GM "Lead 1 (square)"; 80 on the wire
BEATS_PER_BAR = 4

_NS = music_pb2.NoteSequence
_MODES = {"major": _NS.KeySignature.MAJOR, "minor": _NS.KeySignature.MINOR}
_MODE_NAMES = {v: k for k, v in _MODES.items()}


def _check_gm_program(program: int) -> int:
    program = int(program)
    if not 1 <= program <= 128:
        raise ValueError(f"program must be a 1-based General MIDI program 1-128, got {program}")
    return program


def notesequence_from_arrays(
    start_beats: Sequence[float],
    duration_beats: Sequence[float],
    pitch: Sequence[int],
    velocity: Sequence[int],
    *,
    bpm: float,
    key: str,
    chords: Sequence[tuple[str, float]] = (),
    id: str = "",
    filename: str = "",
    collection_name: str = "",
    program: int = DEFAULT_PROGRAM,
    instrument: int = 0,
    title: str = "",
    genre: Sequence[str] = (),
) -> Any:
    """A `music_pb2.NoteSequence` for a monophonic (or any) note list given in beats.

    `start_beats`, `duration_beats`, `pitch`, `velocity`: equal-length sequences (lists or numpy
    arrays), one entry per note; notes are written in this order. `bpm` > 0 converts beats to
    seconds; `key` is a key name `theory.parse_key` reads ("Am", "C#m", "Bb", "F# major");
    `chords`: (symbol, start_beats) pairs; `program`: 1-based GM program (stored 0-based, see the
    module docstring). Raises ValueError on mismatched lengths or out-of-range values.
    """
    bpm = float(bpm)
    if not bpm > 0 or not np.isfinite(bpm):
        raise ValueError(f"bpm must be a finite number > 0, got {bpm}")
    k = parse_key(key)
    program = _check_gm_program(program)
    instrument = int(instrument)

    starts = np.asarray(start_beats, dtype=np.float64).reshape(-1)
    durs = np.asarray(duration_beats, dtype=np.float64).reshape(-1)
    pitches = np.asarray(pitch).reshape(-1)
    vels = np.asarray(velocity).reshape(-1)
    n = len(starts)
    if not (len(durs) == len(pitches) == len(vels) == n):
        raise ValueError(
            f"note arrays differ in length: start_beats {n}, duration_beats {len(durs)}, "
            f"pitch {len(pitches)}, velocity {len(vels)}"
        )
    if n:
        if not (np.all(np.isfinite(starts)) and np.all(np.isfinite(durs))):
            raise ValueError("note starts and durations must be finite")
        if np.any(starts < 0):
            raise ValueError(f"note starts must be >= 0 beats, got {starts.min()}")
        if np.any(durs <= 0):
            raise ValueError(f"note durations must be > 0 beats, got {durs.min()}")
        if np.any(pitches != np.round(pitches)) or pitches.min() < 0 or pitches.max() > 127:
            raise ValueError("note pitches must be integers 0-127")
        if np.any(vels != np.round(vels)) or vels.min() < 1 or vels.max() > 127:
            raise ValueError("note velocities must be integers 1-127")

    start_s = (starts * 60.0 / bpm).tolist()
    end_s = ((starts + durs) * 60.0 / bpm).tolist()
    pitches_l = pitches.astype(np.int64).tolist()
    vels_l = vels.astype(np.int64).tolist()

    ns = _NS(
        id=id,
        filename=filename,
        collection_name=collection_name,
        ticks_per_quarter=TICKS_PER_QUARTER,
    )
    ns.tempos.add(time=0.0, qpm=bpm)
    ns.time_signatures.add(time=0.0, numerator=4, denominator=4)
    ns.key_signatures.add(time=0.0, key=k.tonic, mode=_MODES[k.mode])
    ns.source_info.source_type = _NS.SourceInfo.SCORE_BASED
    ns.source_info.encoding_type = _NS.SourceInfo.MIDI
    if title:
        ns.sequence_metadata.title = title
    if genre:
        ns.sequence_metadata.genre.extend(list(genre))

    # is_drum=False and instrument=0 are proto3 defaults: leaving them out is the same message
    # (and ~20% faster to build).
    wire_program = program - 1
    add = ns.notes.add
    if instrument == 0:
        for s, e, p, v in zip(start_s, end_s, pitches_l, vels_l):
            add(pitch=p, velocity=v, start_time=s, end_time=e, program=wire_program)
    else:
        for s, e, p, v in zip(start_s, end_s, pitches_l, vels_l):
            add(pitch=p, velocity=v, start_time=s, end_time=e, program=wire_program, instrument=instrument)
    ns.total_time = max(end_s) if n else 0.0

    for i, chord in enumerate(chords):
        symbol, start = chord
        start = float(start)
        if not np.isfinite(start) or start < 0:
            raise ValueError(f"chord {i} ({symbol!r}) must start at a finite time >= 0 beats, got {start}")
        ns.text_annotations.add(
            time=start * 60.0 / bpm,
            text=str(symbol),
            annotation_type=_NS.TextAnnotation.CHORD_SYMBOL,
        )
    return ns


def melody_to_notesequence(melody, **kw) -> Any:
    """`notesequence_from_arrays` for a `trance_assets.music.melody.Melody`.

    Takes notes, bpm, key, chords (symbol and start of each `ChordSpan`) and the 1-based program
    from the melody; `id` and `title` default to `melody.name`. Keyword arguments override any of
    them (and pass the other options through).
    """
    notes = melody.notes
    args = dict(
        bpm=melody.bpm,
        key=melody.key,
        chords=[(c.symbol, c.start) for c in melody.chords],
        program=melody.program,
        id=melody.name,
        title=melody.name,
    )
    args.update(kw)
    return notesequence_from_arrays(
        [n.start for n in notes],
        [n.duration for n in notes],
        [n.pitch for n in notes],
        [n.velocity for n in notes],
        **args,
    )


def notesequence_to_arrays(ns) -> dict:
    """The inverse of `notesequence_from_arrays`, for tests and later stages.

    Returns a dict with numpy arrays `start_beats`, `duration_beats` (float64), `pitch`, `velocity`,
    `program` (1-based GM), `instrument`, `is_drum` (one entry per note, in proto order) and `bpm`
    (first tempo's qpm; 120, note-seq's default, if there is none), `key` (a `Key.name` such as "Am",
    or None when there is no key signature or its mode is neither major nor minor), `chords` (list
    of (symbol, start_beats) from CHORD_SYMBOL annotations), `total_beats`, `id`, `filename`,
    `collection_name`, `title`. Beats are computed from seconds with the first tempo.
    """
    bpm = float(ns.tempos[0].qpm) if len(ns.tempos) else 120.0
    to_beats = bpm / 60.0
    notes = ns.notes
    n = len(notes)
    start_s = np.fromiter((x.start_time for x in notes), dtype=np.float64, count=n)
    end_s = np.fromiter((x.end_time for x in notes), dtype=np.float64, count=n)
    key = None
    if len(ns.key_signatures):
        ks = ns.key_signatures[0]
        mode = _MODE_NAMES.get(ks.mode)
        if mode is not None:
            key = Key(int(ks.key) % 12, mode).name
    return {
        "start_beats": start_s * to_beats,
        "duration_beats": (end_s - start_s) * to_beats,
        "pitch": np.fromiter((x.pitch for x in notes), dtype=np.int64, count=n),
        "velocity": np.fromiter((x.velocity for x in notes), dtype=np.int64, count=n),
        "program": np.fromiter((x.program + 1 for x in notes), dtype=np.int64, count=n),
        "instrument": np.fromiter((x.instrument for x in notes), dtype=np.int64, count=n),
        "is_drum": np.fromiter((x.is_drum for x in notes), dtype=bool, count=n),
        "bpm": bpm,
        "key": key,
        "chords": [
            (a.text, a.time * to_beats)
            for a in ns.text_annotations
            if a.annotation_type == _NS.TextAnnotation.CHORD_SYMBOL
        ],
        "total_beats": ns.total_time * to_beats,
        "id": ns.id,
        "filename": ns.filename,
        "collection_name": ns.collection_name,
        "title": ns.sequence_metadata.title,
    }
