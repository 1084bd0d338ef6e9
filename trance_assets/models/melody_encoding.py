"""Magenta's monophonic melody representation and the `attention_rnn` input/label encoding (numpy).

Re-implemented from the facts in /work/shared/docs/MAGENTA-FACTS.md ("Melody RNN, attention_rnn",
"note-seq 0.0.5"); no TensorFlow, no torch, no Dagster.

**Events.** A melody is a 1-D int array with one event per 16th-note step (4 steps per quarter,
16 per bar, 4/4 only): ``NO_EVENT = -2`` (hold whatever is sounding / stay silent),
``NOTE_OFF = -1`` (end the sounding note), ``0..127`` (note-on of that MIDI pitch; the previous
note, if any, ends there).

Pipeline (the order Magenta's dataset pipeline uses)::

    q = quantize_notesequence(ns)                 # seconds -> 16th steps
    for m in extract_melodies(q):                 # or extract_melodies(ns): quantizes itself
        events, shift = squash(m.events)          # to C, into [48, 84)
        inputs, labels = KeyMelodyEncoderDecoder().encode(events)

**Quantization** (`quantize_notesequence`): step = ``int(t * steps_per_second + 0.5)`` with
``steps_per_second = steps_per_quarter * qpm / 60`` and qpm = ``ns.tempos[0].qpm`` (120 when the
sequence has no tempo); a note whose quantized end equals its quantized start gets end = start + 1.
It works directly on the proto's seconds (the beats of `notesequence_to_arrays` would add a
seconds -> beats round trip that can move a time sitting exactly on a half-step boundary).
Tempo and time-signature *changes* are not handled: Magenta splits a sequence at each change
before quantizing; our sequences have one tempo and 4/4 from time 0. A sequence with a time
signature other than 4/4 raises ValueError; extra tempo events after the first are ignored.

**Extraction** (`extract_melodies`), per instrument (ascending instrument number), drums skipped:
notes are taken in (start step, highest pitch first) order from a search start (0 at first). A
melody starts at the bar line at or before its first note. Each further note:

- starts on the same step as the previous note-on (polyphony): with ``ignore_polyphonic_notes``
  it is skipped (so the highest note at a step is kept); without it, the whole rest of that
  instrument is discarded (melodies already found in it are kept);
- starts ``>= gap_bars * 16`` steps after the end of the previous note: the melody ends there;
- else it is written: note-on at its start, NO_EVENT while it sounds, NOTE_OFF at its end. A note
  that starts before the previous one ended cuts it (the events after its start are rewritten).

A trailing NOTE_OFF is dropped. The next melody of the instrument is searched from the first bar
line at or after the end of this one. A melody is kept when it has ``>= min_bars * 16`` steps and
``>= min_unique_pitches`` distinct **pitch classes** (Magenta counts a 12-bin note histogram);
the length check comes first, then a melody longer than ``max_steps`` is truncated to it, then the
pitch-class count is taken on the truncated melody. Magenta's Melody RNN pipeline passes
``ignore_polyphonic_notes=False``; the default here keeps the highest note (the brief's choice).

**Squash** (`squash`): see its docstring.

**Encoding** (`KeyMelodyEncoderDecoder`): see its docstring for every input dimension and label.

**Chords** (`chord_one_hot`): a 25-dim one-hot (no chord, 12 major roots, 12 minor roots) to
append to every step's input for an Improv-RNN-style chord-conditioned model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "NO_EVENT",
    "NOTE_OFF",
    "STEPS_PER_QUARTER",
    "STEPS_PER_BAR",
    "QuantizedNotes",
    "ExtractedMelody",
    "quantize_notesequence",
    "extract_melodies",
    "major_key_histogram",
    "best_major_key",
    "squash",
    "IncrementalInputs",
    "unsquash",
    "KeyMelodyEncoderDecoder",
    "CHORD_DIM",
    "chord_one_hot",
    "NO_CHORD_SYMBOLS",
]

NO_EVENT = -2
NOTE_OFF = -1
STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16  # 4/4 only
_MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)

# _KEY_OF_PC[k, pc] = 1 when pitch class pc is in the major scale of tonic k.
_KEY_OF_PC = np.zeros((12, 12), dtype=np.int64)
for _k in range(12):
    for _s in _MAJOR_STEPS:
        _KEY_OF_PC[_k, (_k + _s) % 12] = 1
del _k, _s


# ---- quantization -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedNotes:
    """Notes of a NoteSequence on the 16th-step grid, one entry per note in proto order."""

    start_step: np.ndarray  # int64
    end_step: np.ndarray  # int64, > start_step
    pitch: np.ndarray  # int64
    velocity: np.ndarray  # int64
    instrument: np.ndarray  # int64
    program: np.ndarray  # int64, 0-based as in the proto
    is_drum: np.ndarray  # bool
    qpm: float
    steps_per_quarter: int

    @property
    def steps_per_bar(self) -> int:
        return self.steps_per_quarter * 4

    @property
    def total_steps(self) -> int:
        return int(self.end_step.max()) if len(self.end_step) else 0

    def __len__(self) -> int:
        return len(self.pitch)


def quantize_notesequence(ns: Any, steps_per_quarter: int = STEPS_PER_QUARTER) -> QuantizedNotes:
    """Quantize a `music_pb2.NoteSequence` to steps as note-seq does (see the module docstring).

    Raises ValueError for a time signature other than 4/4, a qpm <= 0, or a negative note time.
    """
    steps_per_quarter = int(steps_per_quarter)
    if steps_per_quarter < 1:
        raise ValueError(f"steps_per_quarter must be >= 1, got {steps_per_quarter}")
    for ts in ns.time_signatures:
        if (ts.numerator, ts.denominator) != (4, 4):
            raise ValueError(
                f"only 4/4 is supported, got a {ts.numerator}/{ts.denominator} time signature at {ts.time} s"
            )
    qpm = float(ns.tempos[0].qpm) if len(ns.tempos) else 120.0
    if not qpm > 0:
        raise ValueError(f"tempo must be > 0 qpm, got {qpm}")
    steps_per_second = steps_per_quarter * qpm / 60.0
    notes = ns.notes
    n = len(notes)
    start_s = np.fromiter((x.start_time for x in notes), dtype=np.float64, count=n)
    end_s = np.fromiter((x.end_time for x in notes), dtype=np.float64, count=n)
    if n and (start_s.min() < 0 or end_s.min() < 0):
        raise ValueError("note times must be >= 0 s")
    # int() truncates toward zero; the values are >= 0.5 here so it is floor, as note-seq's int().
    start = (start_s * steps_per_second + 0.5).astype(np.int64)
    end = (end_s * steps_per_second + 0.5).astype(np.int64)
    end = np.where(end == start, start + 1, end)
    return QuantizedNotes(
        start_step=start,
        end_step=end,
        pitch=np.fromiter((x.pitch for x in notes), dtype=np.int64, count=n),
        velocity=np.fromiter((x.velocity for x in notes), dtype=np.int64, count=n),
        instrument=np.fromiter((x.instrument for x in notes), dtype=np.int64, count=n),
        program=np.fromiter((x.program for x in notes), dtype=np.int64, count=n),
        is_drum=np.fromiter((x.is_drum for x in notes), dtype=bool, count=n),
        qpm=qpm,
        steps_per_quarter=steps_per_quarter,
    )


# ---- extraction ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedMelody:
    """One extracted melody: `events` (int64) starting at absolute step `start_step` (a bar line)."""

    events: np.ndarray
    start_step: int
    instrument: int

    @property
    def end_step(self) -> int:
        return self.start_step + len(self.events)

    def __len__(self) -> int:
        return len(self.events)


class _Polyphonic(Exception):
    pass


def _one_melody(
    starts: np.ndarray,
    ends: np.ndarray,
    pitches: np.ndarray,
    search_start: int,
    steps_per_bar: int,
    gap_steps: float,
    ignore_polyphonic_notes: bool,
) -> tuple[list[int], int]:
    """The first melody at or after `search_start` from notes sorted by (start, -pitch).

    Returns (events, melody_start_step); events is empty when no note starts at/after the search
    start. Raises _Polyphonic on two onsets at one step when polyphony is not ignored.
    """
    first = int(np.searchsorted(starts, search_start, side="left"))
    if first >= len(starts):
        return [], search_start
    s0 = int(starts[first])
    mel_start = s0 - (s0 - search_start) % steps_per_bar
    events: list[int] = []
    last_on = last_off = -1
    for i in range(first, len(starts)):
        s = int(starts[i]) - mel_start
        e = int(ends[i]) - mel_start
        if events:
            if s == last_on:
                if ignore_polyphonic_notes:
                    continue  # a lower note on the same step: the highest (first) one is kept
                raise _Polyphonic()
            if s - last_off >= gap_steps:
                break
        # Write the note: the melody becomes exactly e + 1 events long (this cuts a previous note
        # still sounding at s, and pads with NO_EVENT up to s when it starts after a rest).
        if len(events) < e + 1:
            events.extend([NO_EVENT] * (e + 1 - len(events)))
        else:
            del events[e + 1 :]
        events[s] = int(pitches[i])
        for j in range(s + 1, e):
            events[j] = NO_EVENT
        events[e] = NOTE_OFF
        last_on, last_off = s, e
    if events and events[-1] == NOTE_OFF:
        events.pop()
    return events, mel_start


def extract_melodies(
    ns_or_quantized: Any,
    *,
    min_bars: int = 7,
    max_steps: int | None = 512,
    min_unique_pitches: int = 5,
    gap_bars: float = 1,
    ignore_polyphonic_notes: bool = True,
    steps_per_quarter: int = STEPS_PER_QUARTER,
) -> list[ExtractedMelody]:
    """Monophonic melodies of a NoteSequence (or of its `QuantizedNotes`), as Magenta extracts them.

    Rules in the module docstring. Returns the kept melodies, instrument by instrument, each in
    time order; each has its `events` and absolute `start_step`.
    """
    q = (
        ns_or_quantized
        if isinstance(ns_or_quantized, QuantizedNotes)
        else quantize_notesequence(ns_or_quantized, steps_per_quarter)
    )
    spb = q.steps_per_bar
    gap_steps = gap_bars * spb
    out: list[ExtractedMelody] = []
    for inst in sorted(set(q.instrument[~q.is_drum].tolist())):
        sel = (q.instrument == inst) & ~q.is_drum
        order = np.lexsort((-q.pitch[sel], q.start_step[sel]))  # by start, then highest pitch
        starts = q.start_step[sel][order]
        ends = q.end_step[sel][order]
        pitches = q.pitch[sel][order]
        search = 0
        while True:
            try:
                events, mel_start = _one_melody(
                    starts, ends, pitches, search, spb, gap_steps, ignore_polyphonic_notes
                )
            except _Polyphonic:
                break  # the rest of this instrument is discarded
            if not events:
                break
            end = mel_start + len(events)
            search = end + (-end) % spb  # next bar line at or after the end
            if len(events) < min_bars * spb:
                continue
            if max_steps is not None and len(events) > max_steps:
                events = events[:max_steps]
            arr = np.asarray(events, dtype=np.int64)
            if len(np.unique(arr[arr >= 0] % 12)) < min_unique_pitches:
                continue
            out.append(ExtractedMelody(events=arr, start_step=int(mel_start), instrument=int(inst)))
    return out


# ---- keys and squash ----------------------------------------------------------------------------


def major_key_histogram(events: Sequence[int]) -> np.ndarray:
    """12 counts: entry k = number of note-ons whose pitch class is in the major scale of tonic k.

    Counted per note-on (not per step or duration), as Magenta's key heuristic does.
    """
    ev = np.asarray(events, dtype=np.int64).reshape(-1)
    pc_counts = np.bincount(ev[ev >= 0] % 12, minlength=12)
    return _KEY_OF_PC @ pc_counts


def best_major_key(events: Sequence[int]) -> int:
    """Tonic pitch class of the major key whose scale holds the most note-ons (ties: lowest)."""
    return int(np.argmax(major_key_histogram(events)))


def _key_to_major_tonic(key: Any) -> int:
    """A key (name like "Am", a `theory.Key`, or a pitch class int = major tonic) -> major tonic."""
    if isinstance(key, (int, np.integer)):
        return int(key) % 12
    from ..music.theory import Key, parse_key

    k = key if isinstance(key, Key) else parse_key(str(key))
    return k.tonic if k.mode == "major" else (k.tonic + 3) % 12  # a minor key: its relative major


def _fold(ev: np.ndarray, min_note: int, max_note: int, on: np.ndarray | None = None) -> np.ndarray:
    """Octave-shift note-ons (`on` mask; default ev >= 0) into [min_note, max_note) (range >= 12)."""
    ev = ev.copy()
    if on is None:
        on = ev >= 0
    p = ev[on]
    low = p < min_note
    p[low] += 12 * ((min_note - p[low] + 11) // 12)
    high = p >= max_note
    p[high] -= 12 * ((p[high] - max_note) // 12 + 1)
    ev[on] = p
    return ev


def squash(
    events: Sequence[int],
    min_note: int = 48,
    max_note: int = 84,
    transpose_to_key: int | None = 0,
    key: Any = None,
) -> tuple[np.ndarray, int]:
    """Transpose a melody to `transpose_to_key` (major tonic pc; 0 = C) and fold it into range.

    Rule (Magenta's `Melody.squash`, re-derived):

    1. melody key K = the major tonic of `key` when given (a minor key counts as its relative
       major: "Am" -> C, so an A-minor melody is not moved by the key step), else
       `best_major_key(events)` (most note-ons in the scale, ties to the lowest pc).
    2. key_diff = transpose_to_key - K (in -11..11, not reduced mod 12).
    3. centre the melody: with c = (lowest + highest note-on) / 2 and target = (min_note +
       max_note - 1) / 2 (65.5 for [48, 84)), add 12 * round((target - (c + key_diff)) / 12)
       (Python's round: halves go to the even number) -> transposition t.
    4. add t to every note-on, then fold each note still outside [min_note, max_note) into it by
       whole octaves (below: into the lowest octave of the range; above: into the highest).

    `transpose_to_key=None`: no transposition (t = 0), only folding. Returns (new events int64,
    t); a melody without note-ons comes back unchanged with t = 0. `unsquash` undoes step 3's
    transposition for generated events (the octave folding is not undone).
    """
    if max_note - min_note < 12:
        raise ValueError(f"the range [{min_note}, {max_note}) must span at least an octave")
    ev = np.asarray(events, dtype=np.int64).reshape(-1).copy()
    notes = ev[ev >= 0]
    if len(notes) == 0:
        return ev, 0
    t = 0
    on = ev >= 0  # taken before transposing: a transposed note may pass below 0 before folding
    if transpose_to_key is not None:
        k = _key_to_major_tonic(key) if key is not None else best_major_key(ev)
        key_diff = int(transpose_to_key) - k
        centre = (int(notes.min()) + int(notes.max())) / 2
        target = (min_note + max_note - 1) / 2
        t = key_diff + 12 * int(round((target - (centre + key_diff)) / 12))
        ev[on] += t
    return _fold(ev, min_note, max_note, on), t


def unsquash(events: Sequence[int], transposition: int) -> np.ndarray:
    """Undo `squash`'s transposition: subtract it from every note-on (clipped to 0..127 by octaves)."""
    ev = np.asarray(events, dtype=np.int64).reshape(-1).copy()
    on = ev >= 0
    ev[on] -= int(transposition)
    return _fold(ev, 0, 128, on)


# ---- the attention_rnn encoding -----------------------------------------------------------------


class KeyMelodyEncoderDecoder:
    """Magenta's `KeyMelodyEncoderDecoder` (attention_rnn): 74 inputs, 40 classes.

    Events must be squashed first: note-ons in [min_note, max_note) (48-84: 36 pitches).

    **Input** at `position` p describes the melody ``events[:p + 1]`` and is used to predict the
    event at p + 1 (`encode` pairs input p with the label of event p + 1). Dimensions (offsets for
    the default 36-pitch range):

    - ``0..35`` current pitch one-hot: the pitch of the most recent note-on at or before p, unless
      a NOTE_OFF came after it (then all zero). A NO_EVENT keeps the note.
    - ``36`` a note is sounding (the one-hot above is set); ``37`` silence (otherwise).
    - ``38`` attack: the most recent note-on / NO_EVENT at or before p was a note-on (a NO_EVENT
      clears it; a NOTE_OFF leaves it as it was, as upstream: ``[60, NOTE_OFF]`` has attack 1 at
      the NOTE_OFF, ``[60, NO_EVENT, NOTE_OFF]`` has 0).
    - ``39`` melodic direction, three-valued: 0 until the melody first changes pitch, then +1 when
      the most recent pitch change between note-ons went up, -1 when it went down. A list of the
      last 3 distinct pitches is kept (most recent last; a repeated pitch moves to the end); a
      note-on higher than the list's last entry sets +1, lower sets -1, equal leaves it.
    - ``40, 41`` lookback repeat: events[p] == events[p - 16] (resp. p - 32), raw events compared
      (NO_EVENT == NO_EVENT counts); 0 when p < the distance.
    - ``42..48`` binary counter of the *next* step, n = p + 1: bit i (i = 0 least significant) is
      +1 when (n >> i) & 1 else -1. So the input predicting step 5 (p = 4) reads 0000101.
    - ``49`` start of bar: the *next* step is a bar line, (p + 1) % 16 == 0 (so it is set on the
      inputs that predict steps 16, 32, ...; step 0 is never predicted).
    - ``50..61`` key of the melody so far: `major_key_histogram(events[:p + 1])` (the whole melody
      up to p: the model is causal, so "the whole melody" is the prefix); every key with the
      maximal count is 1 (ties are all set; no note-on yet -> all 12 are 1). No normalisation.
    - ``62..73`` key of the last 3 distinct pitches (the list above), same multi-hot rule.

    **Labels** (`event_to_label`) for the event at position p, in this order of precedence:
    39 if p < 32 and the event is NO_EVENT (upstream quirk); 39 if p >= 32 and events[p] ==
    events[p - 32]; 38 if p >= 16 and events[p] == events[p - 16]; 37 NOTE_OFF; 36 NO_EVENT;
    else pitch - min_note (0..35).

    **Decoding** (`class_to_event(label, events_so_far)`, the event appended after
    `events_so_far`): 38 / 39 copy the event 16 / 32 steps back (``events_so_far[-16]`` /
    ``[-32]``), or NO_EVENT when fewer steps exist (this resolves the quirk: at p < 32 label 39
    gives NO_EVENT); 37 NOTE_OFF; 36 NO_EVENT; else min_note + label. Hence
    ``class_to_event(event_to_label(ev, p), ev[:p]) == ev[p]`` for every p.
    """

    def __init__(
        self,
        min_note: int = 48,
        max_note: int = 84,
        lookback_distances: Sequence[int] = (16, 32),
        binary_counter_bits: int = 7,
        steps_per_bar: int = STEPS_PER_BAR,
    ) -> None:
        if not 0 <= min_note < max_note <= 128:
            raise ValueError(f"need 0 <= min_note < max_note <= 128, got {min_note}, {max_note}")
        self.min_note = int(min_note)
        self.max_note = int(max_note)
        self.note_range = self.max_note - self.min_note
        self.lookback_distances = tuple(int(d) for d in lookback_distances)
        self.binary_counter_bits = int(binary_counter_bits)
        self.steps_per_bar = int(steps_per_bar)
        nl = len(self.lookback_distances)
        # Input offsets.
        self.off_pitch = 0
        self.off_note = self.note_range  # note, silence
        self.off_attack = self.off_note + 2
        self.off_ascending = self.off_attack + 1
        self.off_lookback = self.off_ascending + 1
        self.off_counter = self.off_lookback + nl
        self.off_bar = self.off_counter + self.binary_counter_bits
        self.off_key = self.off_bar + 1
        self.off_recent_key = self.off_key + 12
        self.input_size = self.off_recent_key + 12
        # Labels.
        self.no_event_label = self.note_range
        self.note_off_label = self.note_range + 1
        self.num_classes = self.note_range + 2 + nl

    def repeat_label(self, i: int) -> int:
        """Label of 'repeat the event lookback_distances[i] steps back'."""
        return self.note_range + 2 + i

    # -- inputs --
    def _check(self, events: Sequence[int]) -> np.ndarray:
        ev = np.asarray(events, dtype=np.int64).reshape(-1)
        bad = (ev < NO_EVENT) | ((ev >= 0) & ((ev < self.min_note) | (ev >= self.max_note)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"event {int(ev[i])} at step {i} is not NO_EVENT, NOTE_OFF or a note-on in "
                f"[{self.min_note}, {self.max_note}) (squash the melody first)"
            )
        return ev

    @staticmethod
    def _key_multi_hot(pc_counts: np.ndarray) -> np.ndarray:
        hist = _KEY_OF_PC @ pc_counts
        return (hist == hist.max()).astype(np.float32)

    def _inputs(self, ev: np.ndarray, upto: int) -> np.ndarray:
        """Input rows for positions 0..upto-1 in one pass (float32 [upto, input_size])."""
        out = np.zeros((upto, self.input_size), dtype=np.float32)
        state = self.incremental()
        for p in range(upto):
            state.push(int(ev[p]), out[p])
        return out

    def incremental(self) -> "IncrementalInputs":
        """A stateful encoder: ``push(event)`` returns the input row for the event just appended
        (what `events_to_input(events, len(events) - 1)` gives, in O(1) instead of O(length)):
        the sampler's way of feeding back one event per step."""
        return IncrementalInputs(self)

    def events_to_input(self, events: Sequence[int], position: int) -> np.ndarray:
        """The input vector (float32 [input_size]) for `position` (see the class docstring)."""
        ev = self._check(events)
        if not 0 <= position < len(ev):
            raise IndexError(f"position {position} outside a melody of {len(ev)} events")
        return self._inputs(ev, position + 1)[position]

    # -- labels --
    def event_to_label(self, events: Sequence[int], position: int) -> int:
        """The class of events[position] (see the class docstring; includes the p < 32 quirk)."""
        ev = self._check(events)
        e = int(ev[position])
        if position < self.lookback_distances[-1] and e == NO_EVENT:
            return self.repeat_label(len(self.lookback_distances) - 1)
        for i in reversed(range(len(self.lookback_distances))):
            d = self.lookback_distances[i]
            if position >= d and e == int(ev[position - d]):
                return self.repeat_label(i)
        if e == NOTE_OFF:
            return self.note_off_label
        if e == NO_EVENT:
            return self.no_event_label
        return e - self.min_note

    def class_to_event(self, label: int, events_so_far: Sequence[int]) -> int:
        """The event a predicted `label` stands for when appended after `events_so_far`."""
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label must be 0..{self.num_classes - 1}, got {label}")
        if label >= self.note_range + 2:
            d = self.lookback_distances[label - self.note_range - 2]
            if len(events_so_far) < d:
                return NO_EVENT
            return int(events_so_far[len(events_so_far) - d])
        if label == self.note_off_label:
            return NOTE_OFF
        if label == self.no_event_label:
            return NO_EVENT
        return self.min_note + label

    def encode(self, events: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(inputs float32 [T-1, input_size], labels int64 [T-1]): input p predicts event p + 1."""
        ev = self._check(events)
        t = max(len(ev) - 1, 0)
        inputs = self._inputs(ev, t)
        labels = np.fromiter((self.event_to_label(ev, p + 1) for p in range(t)), dtype=np.int64, count=t)
        return inputs, labels

    def decode(self, labels: Sequence[int], primer: Sequence[int] = ()) -> np.ndarray:
        """Events from labels: `primer` followed by one event per label (each label predicts the
        event after everything before it)."""
        events = [int(x) for x in primer]
        for lab in labels:
            events.append(self.class_to_event(int(lab), events))
        return np.asarray(events, dtype=np.int64)


# ---- chords -------------------------------------------------------------------------------------

CHORD_DIM = 25
NO_CHORD_SYMBOLS = frozenset({"", "N.C.", "NC", "N.C", "N"})


class IncrementalInputs:
    """Running state of `KeyMelodyEncoderDecoder`'s input features (see that class's docstring):
    one `push` per event, in order. `_inputs` is built on it, so the two cannot disagree."""

    def __init__(self, enc: KeyMelodyEncoderDecoder) -> None:
        self.enc = enc
        self.events: list[int] = []
        self.current: int | None = None
        self.attack = False
        self.direction = 0.0  # 0 = no pitch change yet, +1 up, -1 down
        self.last3: list[int] = []
        self.pc_counts = np.zeros(12, dtype=np.int64)
        self._bits = np.arange(enc.binary_counter_bits)

    def push(self, e: int, row: np.ndarray | None = None) -> np.ndarray:
        """Append event `e` and return (or fill `row` with) the input for its position."""
        enc = self.enc
        e = int(e)
        if e < NO_EVENT or (e >= 0 and not enc.min_note <= e < enc.max_note):
            raise ValueError(
                f"event {e} at step {len(self.events)} is not NO_EVENT, NOTE_OFF or a note-on in "
                f"[{enc.min_note}, {enc.max_note}) (squash the melody first)"
            )
        ev = self.events
        ev.append(e)
        p = len(ev) - 1
        if e == NO_EVENT:
            self.attack = False
        elif e == NOTE_OFF:
            self.current = None
        else:
            self.attack = True
            self.current = e
            last3 = self.last3
            if last3:
                if e > last3[-1]:
                    self.direction = 1.0
                elif e < last3[-1]:
                    self.direction = -1.0
            if e in last3:
                last3.remove(e)
            last3.append(e)
            if len(last3) > 3:
                del last3[0]
            self.pc_counts[e % 12] += 1
        if row is None:
            row = np.zeros(enc.input_size, dtype=np.float32)
        if self.current is not None:
            row[enc.off_pitch + self.current - enc.min_note] = 1.0
            row[enc.off_note] = 1.0
        else:
            row[enc.off_note + 1] = 1.0
        if self.attack:
            row[enc.off_attack] = 1.0
        row[enc.off_ascending] = self.direction
        for i, d in enumerate(enc.lookback_distances):
            if p >= d and ev[p] == ev[p - d]:
                row[enc.off_lookback + i] = 1.0
        n = p + 1
        row[enc.off_counter : enc.off_bar] = np.where((n >> self._bits) & 1, 1.0, -1.0)
        if n % enc.steps_per_bar == 0:
            row[enc.off_bar] = 1.0
        row[enc.off_key : enc.off_key + 12] = enc._key_multi_hot(self.pc_counts)
        recent = np.zeros(12, dtype=np.int64)
        for x in self.last3:
            recent[x % 12] += 1
        row[enc.off_recent_key : enc.off_recent_key + 12] = enc._key_multi_hot(recent)
        return row


def chord_one_hot(symbol: str | None, transpose: int = 0) -> np.ndarray:
    """25-dim one-hot of a chord symbol for chord conditioning (float32).

    Index 0: no chord (None, "", "N.C.", "NC", "N"). 1 + root: a major-type chord; 13 + root: a
    minor-type chord, with root the pitch class (0 = C) after adding `transpose` (pass the
    transposition `squash` applied to the melody so chords and melody stay in the same key).
    Minor-type = the chord has a minor third and no major third (m, m7, m9, dim, dim7, m7b5, ...);
    every other chord (major, 7, maj7, sus2/sus4, 5, aug, 6, add9, ...) counts as major-type. The
    bass of a slash chord is ignored. Raises ValueError on a malformed symbol.
    """
    out = np.zeros(CHORD_DIM, dtype=np.float32)
    if symbol is None or symbol.strip() in NO_CHORD_SYMBOLS:
        out[0] = 1.0
        return out
    from ..music.theory import parse_chord

    c = parse_chord(symbol)
    root = (c.root + int(transpose)) % 12
    iv = {i % 12 for i in c.intervals}
    minor = 3 in iv and 4 not in iv
    out[(13 if minor else 1) + root] = 1.0
    return out
