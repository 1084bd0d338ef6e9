"""The "midi_model" generator backend: SkyTNT midi-model (re-implemented in `models.midi_model`)
sampled event by event with KV caches, turned into a monophonic trance lead.

Pieces (numpy only; torch is imported lazily by the torch backend, onnxruntime by the ONNX one):

* `allowed_ids(tokenizer, slot, event, allowed_events)` — the sampling masks of the facts sheet:
  slot 0 = the event ids (optionally only `allowed_events`) ∪ {eos}; slot k ≥ 1 = the id block of
  the event's k-th parameter; slots past the event's arity = pad only. Precomputed once per
  tokenizer (read-only arrays, shared).
* `sample(logits, mask, temperature, top_p, top_k, rng)` — softmax(logits / T) × mask → top-p →
  top-k → renormalise → draw. Temperature 0 / None = argmax over the allowed ids. A masked id is
  never returned (NaN logits count as -inf; when every allowed logit is -inf the draw is uniform
  over the allowed ids).
* `build_primer(tokenizer, key=, bpm=, chords=, bars=, mode=, previous=, program=)` — the prompt
  as event rows (a `Primer`: rows, origin, scheduled pad events, lead track/channel).
* `generate_tokens(stepper, tokenizer, primer_rows, ...)` — the KV-cache loop over any
  `models.midi_model.EventStepper` (`TorchStepper`, `OnnxStepper`).
* `MidiModelGenerator` — the Generator protocol, registered as ``"midi_model"``.

Primer layout (tracks and channels, the `optimise_midi` conventions the model was trained on)
    * track 0: the conductor — time_signature 4/4, key_signature of the REAL key (``mi = 1`` for a
      minor key; A minor stays sf 0 mi 1, it is never rewritten as its relative major), set_tempo —
      all at time 0, after a bos row.
    * track 1, channel 0: the LEAD — a patch_change to ``program - 1`` (GM is 1-based) at time 0.
      Generated events are constrained (masks) to note events on track 1 / channel 0 with
      velocity ≥ 1 and duration ≥ 1, and the melody is read back from track 1 / channel 0 only.
    * track 2, channel 1 ("chords" and "previous" modes): the chord PAD — a patch_change to GM
      program 90 (Pad 2 "warm", byte 89) and, per bar, the bar's chord as sustained notes (root
      in octave 3 + the chord's intervals, at most 4 notes, velocity 48, one bar long). The pad of
      the first generated bar is in the primer; the pads of later bars are *scheduled*: they are
      fed to the model (not sampled) as soon as it samples an event at or after the bar line, so
      the model always hears the current chord before it writes into the bar (the sampled event
      then follows with its beat delta re-encoded).
    * "previous" mode: the previous melody's notes on the lead track/channel at beats
      [0, previous bars × 4), each bar with its pad (the previous melody's own chord spans, else the
      prompt progression cycled so that it arrives at chords[0] on the first new bar); the new
      melody starts at the bar after it (the origin). Anything sampled before the origin (possible
      only when there is no pad) is not part of the melody.

Timing: time1 is the beat delta from the previous event, time2 the 16th inside the beat (absolute,
as the tokenizer writes it), so an event's absolute time (in 16ths of a beat) is
``16 × (beat of the previous event + time1) + time2``. Generation stops at eos, at ``max_events``
sampled events, or — with ``bars`` — at the first sampled event starting at or after
``origin + bars × 4`` beats (that event is dropped).
"""

from __future__ import annotations

import hashlib
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..music.melody import BEATS_PER_BAR, GM_LEAD_PROGRAM, ChordSpan, Melody
from ..music.theory import Chord, Key, parse_chord, parse_key
from .base import GeneratorInfo, register, validate_prompt

__all__ = [
    "GENERATOR_VERSION",
    "LEAD_TRACK",
    "LEAD_CHANNEL",
    "PAD_TRACK",
    "PAD_CHANNEL",
    "PAD_PROGRAM",
    "Primer",
    "allowed_ids",
    "sample",
    "build_primer",
    "generate_tokens",
    "event_times",
    "rows_to_lead_melody",
    "MidiModelGenerator",
]

GENERATOR_VERSION = "midi-model-gen-1"
STEPS_PER_BEAT = 16  # the tokenizer's time grid: 16ths of a beat
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
LEAD_TRACK, LEAD_CHANNEL = 1, 0
PAD_TRACK, PAD_CHANNEL = 2, 1
PAD_PROGRAM = 90  # GM "Pad 2 (warm)", 1-based like Melody.program
PAD_VELOCITY = 48
PAD_BASE = 48  # C3: the pad's root octave
MAX_CONTEXT = 4096  # events the published models were trained with
PRIMER_MODES = ("meta", "chords", "previous")
BACKENDS = ("torch", "onnx")
_TYPE_ORDER = {"time_signature": 0, "key_signature": 1, "set_tempo": 2, "patch_change": 3, "control_change": 4, "note": 5}


# ------------------------------------------------------------------------------------ masks
_MASKS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def _mask_table(tokenizer) -> dict:
    try:
        return _MASKS[tokenizer]
    except (KeyError, TypeError):
        pass
    v = int(tokenizer.vocab_size)
    table: dict = {}
    pad = np.zeros(v, dtype=bool)
    pad[tokenizer.pad_id] = True
    pad.setflags(write=False)
    table["pad"] = pad
    for name, params in tokenizer.events.items():
        for k, pname in enumerate(params, start=1):
            m = np.zeros(v, dtype=bool)
            m[np.asarray(tokenizer.parameter_ids[pname], dtype=np.int64)] = True
            m.setflags(write=False)
            table[(name, k)] = m
    try:
        _MASKS[tokenizer] = table
    except TypeError:  # not weak-referenceable: recomputed per call
        pass
    return table


def allowed_ids(tokenizer, slot: int, event: str | None, allowed_events: Sequence[str] | None = None) -> np.ndarray:
    """bool [V]: the ids that may appear in `slot` of a row (read-only, shared; copy to modify).

    slot 0 -> the event ids (only those of `allowed_events` when given) ∪ {eos}; slot k >= 1 -> the
    id block of `event`'s k-th parameter; k past the event's arity -> pad only.
    """
    table = _mask_table(tokenizer)
    slot = int(slot)
    if slot == 0:
        names = tuple(tokenizer.events) if allowed_events is None else tuple(allowed_events)
        key = ("slot0", names)
        m = table.get(key)
        if m is None:
            unknown = [n for n in names if n not in tokenizer.event_ids]
            if unknown:
                raise ValueError(f"unknown event(s) {unknown} for this tokenizer (known: {list(tokenizer.event_ids)})")
            m = np.zeros(int(tokenizer.vocab_size), dtype=bool)
            m[[tokenizer.event_ids[n] for n in names]] = True
            m[tokenizer.eos_id] = True
            m.setflags(write=False)
            table[key] = m
        return m
    if slot < 0 or slot >= int(tokenizer.max_token_seq):
        raise ValueError(f"slot must be 0-{tokenizer.max_token_seq - 1}, got {slot}")
    if event is None or event not in tokenizer.events:
        raise ValueError(f"slot {slot} needs a known event name, got {event!r} (known: {list(tokenizer.events)})")
    if slot > len(tokenizer.events[event]):
        return table["pad"]
    return table[(event, slot)]


def _constraint_masks(tokenizer, constraints: Mapping[str, Iterable[int]] | None) -> dict[str, np.ndarray]:
    """parameter name -> bool [V] of the allowed VALUES' ids (narrowing that parameter's block)."""
    out: dict[str, np.ndarray] = {}
    for pname, values in (constraints or {}).items():
        if pname not in tokenizer.parameter_ids:
            raise ValueError(f"constraint on unknown parameter {pname!r} (known: {list(tokenizer.parameter_ids)})")
        ids = tokenizer.parameter_ids[pname]
        vals = [int(x) for x in values]
        bad = [x for x in vals if not 0 <= x < len(ids)]
        if bad or not vals:
            raise ValueError(f"constraint {pname}={list(values)!r}: values must be 0-{len(ids) - 1} and not empty")
        m = np.zeros(int(tokenizer.vocab_size), dtype=bool)
        m[[ids[x] for x in vals]] = True
        out[pname] = m
    return out


# --------------------------------------------------------------------------------- sampling
def _sample_row(logits: np.ndarray, mask: np.ndarray, temperature, top_p, top_k, rng: np.random.Generator) -> int:
    allowed = np.flatnonzero(mask)
    if allowed.size == 0:
        raise ValueError("sampling mask allows no token")
    z = logits[allowed].astype(np.float64)
    z[np.isnan(z)] = -np.inf
    if temperature is None or temperature == 0:
        if np.all(z == -np.inf):
            return int(allowed[0])
        return int(allowed[int(np.argmax(z))])
    if not temperature > 0:
        raise ValueError(f"temperature must be >= 0 or None, got {temperature!r}")
    top = z.max()
    if top == -np.inf:  # nothing allowed has any mass: uniform over the allowed ids
        p = np.ones(z.size)
    elif top == np.inf:  # +inf logits share all the mass
        p = (z == np.inf).astype(np.float64)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (z - top) / float(temperature)  # <= 0, the best allowed id is exactly 0
        scaled[np.isnan(scaled)] = -np.inf  # (inf - inf): cannot happen for finite top, kept safe
        p = np.exp(scaled)
    order = np.argsort(-p, kind="stable")
    p = p[order]
    total = p.sum()
    p = p / total
    keep = p.size
    if top_p is not None and top_p < 1:
        cum = np.cumsum(p)
        keep = min(keep, int(np.searchsorted(cum, float(top_p), side="left")) + 1)  # smallest prefix with mass >= top_p
    if top_k is not None and top_k > 0:
        keep = min(keep, int(top_k))
    keep = max(1, keep)
    kept = p[:keep]
    cum = np.cumsum(kept)
    u = rng.random() * cum[-1]
    i = min(int(np.searchsorted(cum, u, side="right")), keep - 1)
    while kept[i] <= 0 and i > 0:  # never a zero-mass id (float edge cases)
        i -= 1
    return int(allowed[order[i]])


def sample(logits, mask, temperature: float | None = 1.0, top_p: float | None = 0.94, top_k: int | None = 20,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """ids [B] (int64) drawn from logits [B, V] under mask [B, V] or [V] (bool).

    softmax(logits / T) × mask → keep the smallest most-probable set with mass ≥ `top_p` → at most
    `top_k` of them → renormalise → draw with `rng`. ``temperature`` 0 or None: argmax over the
    allowed ids (ties: the lowest id). ``top_p`` None / ≥ 1 and ``top_k`` None / ≤ 0 disable those
    filters. A masked id is never returned; a row whose mask allows nothing is a ValueError.
    """
    logits = np.asarray(logits)
    if logits.ndim == 1:
        logits = logits[None]
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 1:
        mask = np.broadcast_to(mask, logits.shape)
    if mask.shape != logits.shape:
        raise ValueError(f"mask shape {mask.shape} does not match logits {logits.shape}")
    if rng is None:
        rng = np.random.default_rng()
    return np.asarray([_sample_row(logits[b], mask[b], temperature, top_p, top_k, rng) for b in range(logits.shape[0])], dtype=np.int64)


# ----------------------------------------------------------------------------------- primer
@dataclass
class Primer:
    """The prompt as event rows.

    rows: int64 [N, 8], bos first. origin: absolute time (16ths of a beat) where the new melody
    starts. scheduled: (absolute time, row) events fed to the model during generation as time
    passes (the pads of bars 1.. of the new melody), sorted by time; their time1/time2 are
    re-encoded when they are fed. lead_track / lead_channel: where the lead is written.
    """

    rows: np.ndarray
    origin: int = 0
    scheduled: list[tuple[int, list[int]]] = field(default_factory=list)
    lead_track: int = LEAD_TRACK
    lead_channel: int = LEAD_CHANNEL
    mode: str = "meta"


def _pad_notes(chord: Chord) -> list[int]:
    return [PAD_BASE + chord.root + i for i in chord.intervals[:4]]


def _encode_timed(tokenizer, items: list[tuple[int, int, str, list[int]]], last_beat: int = 0) -> tuple[list[list[int]], int]:
    """(abs time, track, event, [params after time1/time2]) -> rows sorted as the tokenizer sorts
    (time, track, type order, params), time1 / time2 encoded from `last_beat`."""
    rows = []
    for t, track, name, rest in sorted(items, key=lambda x: (x[0], x[1], _TYPE_ORDER.get(x[2], 9), x[3])):
        beat = t // STEPS_PER_BEAT
        rows.append(tokenizer.event_to_row(name, [beat - last_beat, t % STEPS_PER_BEAT, track, *rest]))
        last_beat = beat
    return rows, last_beat


def _note_params(tokenizer, channel: int, pitch: int, velocity: int, duration: int) -> list[int]:
    """A note's parameters after time1, time2, track, in the tokenizer's order (v1 / v2)."""
    vals = {"channel": channel, "pitch": pitch, "velocity": velocity, "duration": max(1, min(2047, int(duration)))}
    return [vals[p] for p in tokenizer.events["note"][3:]]


def build_primer(tokenizer, *, key: str, bpm: float, chords: Sequence[str] = (), bars: int = 1, mode: str = "meta",
                 previous: Melody | None = None, program: int = GM_LEAD_PROGRAM) -> Primer:
    """The prompt rows for `generate_tokens` (layout: module docstring).

    mode "meta": bos + time signature, key signature (real key, mi 1 for minor), tempo and the
    lead's patch change, all at time 0. "chords": also the chord pad (track 2 / channel 1), bar 0
    in the rows, bars 1..bars-1 scheduled. "previous": "chords" preceded by `previous`'s notes on
    the lead track/channel (the new melody starts at the bar after it).
    """
    if mode not in PRIMER_MODES:
        raise ValueError(f"primer mode must be one of {PRIMER_MODES}, got {mode!r}")
    if not 1 <= int(program) <= 128:
        raise ValueError(f"program must be a 1-based GM program 1-128, got {program!r}")
    from ..formats.midi_tokenizer import key_to_signature

    key_obj = parse_key(key) if isinstance(key, str) else key
    chord_objs = [c if isinstance(c, Chord) else parse_chord(c) for c in chords]
    if mode == "previous" and previous is None:
        raise ValueError("primer mode 'previous' needs a previous melody")
    if mode == "chords" and not chord_objs:
        raise ValueError("primer mode 'chords' needs at least one chord")
    items: list[tuple[int, int, str, list[int]]] = []
    if "time_signature" in tokenizer.events:
        items.append((0, 0, "time_signature", [4 - 1, 2 - 1]))  # 4/4: nn 4, dd 2 (stored minus one)
    if "key_signature" in tokenizer.events:
        sf, mi = key_to_signature(key_obj.name)
        items.append((0, 0, "key_signature", [sf + 7, mi]))
    items.append((0, 0, "set_tempo", [max(1, min(int(round(float(bpm))), tokenizer.event_parameters["bpm"] - 1))]))
    items.append((0, LEAD_TRACK, "patch_change", [LEAD_CHANNEL, int(program) - 1]))
    with_pad = mode in ("chords", "previous") and bool(chord_objs)
    if with_pad:
        items.append((0, PAD_TRACK, "patch_change", [PAD_CHANNEL, PAD_PROGRAM - 1]))

    def pad_items(bar: int, chord: Chord, t0: int) -> list[tuple[int, int, str, list[int]]]:
        t = t0 + bar * STEPS_PER_BAR
        return [(t, PAD_TRACK, "note", _note_params(tokenizer, PAD_CHANNEL, p, PAD_VELOCITY, STEPS_PER_BAR)) for p in _pad_notes(chord)]

    origin = 0
    if mode == "previous":
        prev_bars = int(previous.n_bars)
        origin = prev_bars * STEPS_PER_BAR
        for n in previous.notes:
            t = int(round(n.start * STEPS_PER_BEAT))
            if t >= origin:
                continue
            dur = int(round(n.end * STEPS_PER_BEAT)) - t
            items.append((t, LEAD_TRACK, "note", _note_params(tokenizer, LEAD_CHANNEL, n.pitch, n.velocity, dur)))
        if with_pad:
            for b in range(prev_bars):
                span = previous.chord_at(b * BEATS_PER_BAR + 1e-9) if previous.chords else None
                chord = parse_chord(span.symbol) if span is not None else chord_objs[(b - prev_bars) % len(chord_objs)]
                items += pad_items(b, chord, 0)
    scheduled: list[tuple[int, list[int]]] = []
    if with_pad:
        items += pad_items(0, chord_objs[0], origin)
        for b in range(1, int(bars)):
            for t, track, name, rest in pad_items(b, chord_objs[b % len(chord_objs)], origin):
                scheduled.append((t, tokenizer.event_to_row(name, [0, t % STEPS_PER_BEAT, track, *rest])))
    rows, _ = _encode_timed(tokenizer, items)
    bos = [tokenizer.bos_id] + [tokenizer.pad_id] * (tokenizer.max_token_seq - 1)
    return Primer(rows=np.asarray([bos] + rows, dtype=np.int64), origin=origin, scheduled=scheduled, mode=mode)


# ------------------------------------------------------------------------------- generation
def event_times(tokenizer, rows) -> np.ndarray:
    """Absolute start time (16ths of a beat) of every row; -1 for rows that are not valid events
    (bos, eos, pad, malformed — they do not advance time, as `detokenize` reads them)."""
    out = np.full(len(rows), -1, dtype=np.int64)
    beat = 0
    for i, row in enumerate(np.asarray(rows).tolist()):
        ev = tokenizer.row_to_event(row)
        if ev is None:
            continue
        p = dict(zip(tokenizer.events[ev[0]], ev[1]))
        beat += p["time1"]
        out[i] = beat * STEPS_PER_BEAT + p["time2"]
    return out


def generate_tokens(
    stepper,
    tokenizer,
    primer,
    *,
    max_events: int,
    temperature: float | None = 1.0,
    top_p: float | None = 0.94,
    top_k: int | None = 20,
    rng: np.random.Generator | None = None,
    allowed_events: Sequence[str] | None = ("note",),
    stop: Callable[[np.ndarray], bool] | None = None,
    allow_eos: bool = True,
    constraints: Mapping[str, Iterable[int]] | None = None,
    bars: int | None = None,
    origin: int | None = None,
    scheduled: Sequence[tuple[int, Sequence[int]]] = (),
    report: dict | None = None,
) -> np.ndarray:
    """Continue `primer` (int64 [N, 8], or a `Primer`) -> rows [N + M, 8] (primer, then the new events).

    One sequence (batch 1). Per new event: `token_start(hidden)` → sample the event id (slot-0 mask:
    `allowed_events` ∪ eos) → per parameter slot `token_next(previous id)` → sample under that
    slot's mask (narrowed by `constraints`: parameter name -> allowed values, e.g.
    ``{"channel": [0]}``; ``allow_eos=False`` takes eos out of the slot-0 mask) → the row, padded to 8, goes through `net_step`. Stops at eos (not
    appended), after `max_events` sampled events, when ``stop(rows so far)`` is true (the event that
    triggered it is kept), or — with `bars` — at the first event starting at or after
    ``origin + bars * 64`` 16ths (dropped; `origin` defaults to the primer's last event time).
    `scheduled` (absolute time, row) events are fed, not sampled, once a sampled event reaches their
    time (their time1 / time2 re-encoded; the sampled event's time1 too). `report`, when given, gets
    ``stopped_by`` ("eos" | "bars" | "max_events" | "stop" | "context"), ``events`` (sampled events
    kept) and ``scheduled_fed``.
    """
    if isinstance(primer, Primer):
        if origin is None:
            origin = primer.origin
        if not scheduled:
            scheduled = primer.scheduled
        primer = primer.rows
    rows = [list(map(int, r)) for r in np.asarray(primer, dtype=np.int64).reshape(-1, tokenizer.max_token_seq)]
    if not rows:
        raise ValueError("the primer needs at least one row (bos)")
    if len(rows) >= MAX_CONTEXT:
        raise ValueError(f"the primer has {len(rows)} events; the model's context is {MAX_CONTEXT}")
    if rng is None:
        rng = np.random.default_rng(0)
    times = event_times(tokenizer, rows)
    valid = times[times >= 0]
    last_time = int(valid[-1]) if valid.size else 0
    last_beat = last_time // STEPS_PER_BEAT
    if origin is None:
        origin = last_time
    end_time = origin + int(bars) * STEPS_PER_BAR if bars is not None else None
    pending = sorted(((int(t), list(map(int, r))) for t, r in scheduled), key=lambda x: x[0])
    slot0 = allowed_ids(tokenizer, 0, None, allowed_events)
    if not allow_eos:
        slot0 = slot0.copy()
        slot0[tokenizer.eos_id] = False
        if not slot0.any():
            raise ValueError("allowed_events is empty and eos is not allowed: nothing can be sampled")
    narrowed = _constraint_masks(tokenizer, constraints)
    masks: dict[tuple[str, int], np.ndarray] = {}
    for name, params in tokenizer.events.items():
        for k, pname in enumerate(params, start=1):
            m = allowed_ids(tokenizer, k, name)
            if pname in narrowed:
                m = m & narrowed[pname]
            masks[(name, k)] = m
    pad_row_tail = [tokenizer.pad_id] * tokenizer.max_token_seq
    n_time_slots = 2  # time1, time2 are slots 1 and 2 of every event

    if getattr(stepper, "supports_rows", False):
        # Only the span of ids the slot's mask allows goes through lm_head (the same values there;
        # every other id is masked anyway): 1.5x faster on the medium size with INT8 ONNX.
        spans: dict[int, slice] = {}

        def logits_in(step, arg, mask):
            key = id(mask)
            if key not in spans:
                allowed = np.flatnonzero(mask)
                spans[key] = slice(int(allowed[0]), int(allowed[-1]) + 1)
            span = spans[key]
            full = np.full((1, tokenizer.vocab_size), -np.inf, dtype=np.float32)
            full[:, span] = step(arg, rows=span)
            return full
    else:
        def logits_in(step, arg, mask):
            return step(arg)

    stepper.start(1)
    hidden = stepper.net_step(np.asarray([rows], dtype=np.int64))
    stopped_by = "max_events"
    generated = 0
    fed = 0
    while generated < max_events:
        if len(rows) >= MAX_CONTEXT:
            stopped_by = "context"
            break
        logits = logits_in(stepper.token_start, hidden, slot0)
        ev_id = int(sample(logits, slot0, temperature, top_p, top_k, rng)[0])
        if ev_id == tokenizer.eos_id:
            stopped_by = "eos"
            break
        name = tokenizer.id_events[ev_id]
        params = tokenizer.events[name]
        row = [ev_id]
        t_abs = None
        for k in range(1, len(params) + 1):
            logits = logits_in(stepper.token_next, np.asarray([row[-1]], dtype=np.int64), masks[(name, k)])
            row.append(int(sample(logits, masks[(name, k)], temperature, top_p, top_k, rng)[0]))
            if k == n_time_slots:
                time1 = row[1] - tokenizer.parameter_ids["time1"][0]
                time2 = row[2] - tokenizer.parameter_ids["time2"][0]
                t_abs = (last_beat + time1) * STEPS_PER_BEAT + time2
                if end_time is not None and t_abs >= end_time:
                    break
        if end_time is not None and t_abs is not None and t_abs >= end_time:
            stopped_by = "bars"
            break
        row += pad_row_tail[: tokenizer.max_token_seq - len(row)]
        new_rows: list[list[int]] = []
        while pending and pending[0][0] <= t_abs:
            t_s, r_s = pending.pop(0)
            b = t_s // STEPS_PER_BEAT
            r_s = list(r_s)
            r_s[1] = tokenizer.parameter_ids["time1"][b - last_beat] if b >= last_beat else tokenizer.parameter_ids["time1"][0]
            r_s[2] = tokenizer.parameter_ids["time2"][t_s % STEPS_PER_BEAT]
            last_beat = max(last_beat, b)
            new_rows.append(r_s)
            fed += 1
        if new_rows:  # the sampled event's beat delta is now counted from the scheduled events
            row[1] = tokenizer.parameter_ids["time1"][t_abs // STEPS_PER_BEAT - last_beat]
        new_rows.append(row)
        last_beat = t_abs // STEPS_PER_BEAT
        rows += new_rows
        generated += 1
        hidden = stepper.net_step(np.asarray([new_rows], dtype=np.int64))
        if stop is not None and stop(np.asarray(rows, dtype=np.int64)):
            stopped_by = "stop"
            break
    if report is not None:
        report.update({"stopped_by": stopped_by, "events": generated, "scheduled_fed": fed})
    return np.asarray(rows, dtype=np.int64).reshape(-1, tokenizer.max_token_seq)


def rows_to_lead_melody(tokenizer, rows, *, origin: int = 0, start_row: int = 0, lead_track: int = LEAD_TRACK, lead_channel: int = LEAD_CHANNEL,
                        key: str, bpm: float, bars: int | None, name: str = "", program: int = GM_LEAD_PROGRAM) -> Melody:
    """The lead's notes (track `lead_track`, channel `lead_channel`, rows from `start_row` on — the
    primer's own notes excluded —, starting at or after `origin`) as a monophonic Melody with times from `origin` (`MidiTokenizer.tokens_to_melody`: highest
    line, notes cut at the next onset and at ``bars * 4`` beats)."""
    rows = np.asarray(rows, dtype=np.int64)
    times = event_times(tokenizer, rows)
    items = []
    for row, t in list(zip(rows.tolist(), times.tolist()))[start_row:]:
        if t < origin:
            continue
        ev = tokenizer.row_to_event(row)
        if ev is None or ev[0] != "note":
            continue
        p = dict(zip(tokenizer.events["note"], ev[1]))
        if p["track"] != lead_track or p["channel"] != lead_channel:
            continue
        items.append((t - origin, lead_track, "note", [p[q] for q in tokenizer.events["note"][3:]]))
    body, _ = _encode_timed(tokenizer, items)
    bos = [tokenizer.bos_id] + [tokenizer.pad_id] * (tokenizer.max_token_seq - 1)
    melody = tokenizer.tokens_to_melody(np.asarray([bos] + body, dtype=np.int64), key=key, bpm=bpm, bars=bars, name=name)
    return replace(melody, program=int(program))


# -------------------------------------------------------------------------------- generator
_CACHE: dict[tuple, tuple] = {}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _file_stamp(paths: Sequence[Path]) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


def _sha256_files(paths: Sequence[Path]) -> str:
    from ..storage import sha256_file

    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _resolve_model_folder(model) -> Path:
    """A local checkpoint folder, or the download folder of a hub id; FileNotFoundError naming it."""
    s = str(model)
    d = Path(s).expanduser()
    if d.is_dir():
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"midi_model: model folder {s!r} has no config.json (not a MidiModel.save_pretrained folder)")
        return d
    if _HUB_ID.fullmatch(s) and not s.startswith((".", "~")):
        from ..models.midi_model import _download

        return _download(s, revision=None, token=None)
    raise FileNotFoundError(f"midi_model: model folder not found: {s!r} (a folder written by MidiModel.save_pretrained, or a hub id owner/name)")


def _weights_file(d: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin", "model.ckpt"):
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"midi_model: model folder {str(d)!r} has no model.safetensors / pytorch_model.bin / model.ckpt")


def _onnx_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and (p.suffix in (".onnx", ".data") or p.name.endswith(".onnx_data") or p.name.endswith(".onnx.data")))


def _load_torch(folder: Path):
    """(model, tokenizer, sha256 of the weights), cached per (folder, 'torch', file stamp)."""
    weights = _weights_file(folder)
    key = (str(folder.resolve()), "torch", _file_stamp([folder / "config.json", weights]))
    hit = _CACHE.get(key)
    if hit is None:
        from ..models.midi_model import MidiModel

        model = MidiModel.from_pretrained(folder)
        hit = (model, model.tokenizer, _sha256_files([weights]))
        _CACHE[key] = hit
    return hit


def _load_onnx(onnx_dir, tokenizer_folder: Path | None):
    """(OnnxStepper, tokenizer, sha256 over the ONNX files), cached per (folder, 'onnx', file stamp)."""
    import json

    from ..formats.midi_tokenizer import MidiTokenizer

    if onnx_dir is None or str(onnx_dir) == "":
        raise ValueError("midi_model: backend 'onnx' needs onnx_dir=<folder of the ONNX export>")
    d = Path(str(onnx_dir)).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"midi_model: ONNX folder not found: {str(d)!r}")
    try:
        from ..models import midi_model_onnx as mo
    except ImportError as e:
        raise ImportError(f"midi_model: backend 'onnx' needs trance_assets.models.midi_model_onnx and onnxruntime: {e}") from e
    required = [*getattr(mo, "GRAPHS", ()), *(f for f in (getattr(mo, "EXPORT_FILE", None), getattr(mo, "CONFIG_FILE", None)) if f)]
    files = _onnx_files(d)
    missing = [f for f in required if not (d / f).is_file()]
    if missing or not any(p.suffix == ".onnx" for p in files):
        raise FileNotFoundError(f"midi_model: ONNX folder {str(d)!r} lacks the exported model files "
                                f"({', '.join(missing) if missing else 'no *.onnx file'}); export the model to ONNX first")
    stamp_files = files + ([d / "config.json"] if (d / "config.json").is_file() else [])
    key = (str(d.resolve()), "onnx", _file_stamp(stamp_files))
    hit = _CACHE.get(key)
    if hit is None:
        cfg = d / "config.json" if (d / "config.json").is_file() else (tokenizer_folder / "config.json" if tokenizer_folder else None)
        if cfg is None or not cfg.is_file():
            raise FileNotFoundError(f"midi_model: no config.json (tokenizer) in the ONNX folder {str(d)!r} nor a model folder given")
        tokenizer = MidiTokenizer.from_config(json.loads(cfg.read_text())["tokenizer"])
        hit = (mo.OnnxStepper(d), tokenizer, _sha256_files(files))
        _CACHE[key] = hit
    return hit


def _chord_spans(chords: list[Chord], bars: int) -> tuple[ChordSpan, ...]:
    return tuple(ChordSpan(chords[b % len(chords)].symbol, float(b * BEATS_PER_BAR), float(BEATS_PER_BAR)) for b in range(bars))




class MidiModelGenerator:
    """SkyTNT-style midi-model backend ("midi_model").

    Options: ``model`` (a `MidiModel.save_pretrained` folder or a hub id), ``backend`` "torch" |
    "onnx" (``onnx_dir``: the ONNX export folder; the tokenizer comes from its config.json, else
    from ``model``'s), ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``primer`` ("meta" |
    "chords"; "previous" needs a previous melody and is for `build_primer` callers),
    ``max_events`` (default ``bars * 16 + 16``), ``program`` (1-based GM program of the lead),
    ``label``, ``allow_eos`` (False: the model cannot end before ``bars``). Per prompt: `build_primer` → `generate_tokens` (notes only, track 1 / channel 0,
    velocity ≥ 1, duration ≥ 1, stop at ``bars * 4`` beats) → `rows_to_lead_melody`. Random draws
    come from ``numpy.random.default_rng(seed)``: the melody is a pure function of the prompt,
    the options and the weights. Models are cached per (folder, backend, file stamp) across
    instances (an ONNX stepper is shared: not for concurrent threads).
    """

    name = "midi_model"

    def __init__(self, model: str | None = None, backend: str = "torch", onnx_dir: str | None = None,
                 temperature: float | None = 1.0, top_p: float | None = 0.94, top_k: int | None = 20,
                 primer: str = "chords", max_events: int | None = None, program: int = GM_LEAD_PROGRAM,
                 label: str = "", allow_eos: bool = True) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"midi_model: backend must be one of {BACKENDS}, got {backend!r}")
        if primer not in ("meta", "chords"):
            raise ValueError(f"midi_model: primer must be 'meta' or 'chords', got {primer!r}")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0):
            raise ValueError(f"midi_model: temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise ValueError(f"midi_model: top_p must be in (0, 1], got {top_p!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"midi_model: top_k must be an integer >= 0 (0 = off), got {top_k!r}")
        if max_events is not None and (isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1):
            raise ValueError(f"midi_model: max_events must be a positive integer, got {max_events!r}")
        if isinstance(program, bool) or not isinstance(program, int) or not 1 <= program <= 128:
            raise ValueError(f"midi_model: program must be a 1-based GM program 1-128, got {program!r}")
        if not isinstance(allow_eos, bool):
            raise ValueError(f"midi_model: allow_eos must be true or false, got {allow_eos!r}")
        self.allow_eos = allow_eos
        self.backend = backend
        self.temperature = None if temperature is None else float(temperature)
        self.top_p = None if top_p is None else float(top_p)
        self.top_k = top_k
        self.primer = primer
        self.max_events = max_events
        self.program = program
        self.label = label
        if backend == "torch":
            if model is None or str(model) == "":
                raise ValueError("midi_model: a model is required (model=<save_pretrained folder or hub id>)")
            folder = _resolve_model_folder(model)
            self._model, self.tokenizer, sha = _load_torch(folder)
            source = str(folder)
        else:
            folder = _resolve_model_folder(model) if model else None
            self._stepper, self.tokenizer, sha = _load_onnx(onnx_dir, folder)
            source = str(onnx_dir)
        options = {"model": None if model is None else str(model), "backend": backend, "onnx_dir": None if onnx_dir is None else str(onnx_dir),
                   "temperature": temperature, "top_p": top_p, "top_k": top_k, "primer": primer, "max_events": max_events,
                   "program": program, "label": label, "allow_eos": allow_eos}
        self.info = GeneratorInfo(
            name=self.name,
            version=GENERATOR_VERSION,
            checkpoint=sha,
            description=f"{label + ': ' if label else ''}midi-model ({self.tokenizer.version}, {backend}) from {source}, "
                        f"primer {primer}, T={temperature} top_p={top_p} top_k={top_k}",
            options=options,
        )

    def _stepper_now(self):
        if self.backend == "torch":
            from ..models.midi_model import TorchStepper

            return TorchStepper(self._model)
        return self._stepper

    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody:
        key_obj, chords = validate_prompt(key, bpm, chord_progression, bars, seed)
        bars = int(bars)
        tok = self.tokenizer
        t0 = time.perf_counter()
        primer = build_primer(tok, key=key_obj.name, bpm=float(bpm), chords=[c.symbol for c in chords], bars=bars,
                              mode=self.primer, program=self.program)
        report: dict = {}
        max_events = self.max_events if self.max_events is not None else bars * 16 + 16
        rows = generate_tokens(
            self._stepper_now(), tok, primer, max_events=max_events, temperature=self.temperature, top_p=self.top_p,
            top_k=self.top_k, rng=np.random.default_rng(int(seed) & 0xFFFF_FFFF_FFFF_FFFF), allowed_events=("note",), allow_eos=self.allow_eos,
            constraints={"track": [primer.lead_track], "channel": [primer.lead_channel], "velocity": range(1, 128),
                         "duration": range(1, tok.event_parameters["duration"])},
            bars=bars, report=report,
        )
        seconds = time.perf_counter() - t0
        name = f"{self.name}_{key_obj.name}_{seed}"
        melody = rows_to_lead_melody(tok, rows, origin=primer.origin, start_row=len(primer.rows), lead_track=primer.lead_track,
                                     lead_channel=primer.lead_channel, key=key_obj.name, bpm=float(bpm), bars=bars, name=name,
                                     program=self.program)
        return replace(
            melody,
            chords=_chord_spans(chords, bars),
            attributes={
                "generator": self.name,
                "generator_version": self.info.version,
                "checkpoint_sha256": self.info.checkpoint,
                "backend": self.backend,
                "seed": int(seed),
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "primer": self.primer,
                "primer_events": int(len(primer.rows)),
                "events_generated": int(report["events"]),
                "scheduled_fed": int(report["scheduled_fed"]),
                "stopped_by": report["stopped_by"],
                "seconds": round(seconds, 4),
                "progression": [c.symbol for c in chords],
                "lead_track": primer.lead_track,
                "lead_channel": primer.lead_channel,
                "label": self.label,
            },
        )


register("midi_model", MidiModelGenerator)
