"""Training examples for the Melody RNN and MusicVAE from NoteSequence TFRecords (numpy + torch).

Reads the corpus export (``storage/dataset/corpus/<split>/notesequences.tfrecord``, one serialized
``music_pb2.NoteSequence`` per record, see ``corpus.export``) with our own TFRecord reader and turns
it into model inputs following Magenta's dataset pipelines (facts: shared/docs/MAGENTA-FACTS.md).

Melody RNN (`melody_rnn_examples`)
    quantize (4 steps/quarter) -> `extract_melodies` (min 7 bars, max 512 steps, >= 5 unique pitch
    classes, gap 1 bar; polyphony: the highest note is kept, see melody_encoding) -> `squash` to C
    in [48, 84) -> `KeyMelodyEncoderDecoder.encode` -> inputs float32 [T-1, 74], labels int64
    [T-1]. With ``chord_conditioned=True`` each example also carries ``chords`` float32 [T-1, 25]:
    row p is the `chord_one_hot` of the CHORD_SYMBOL annotation sounding at the step that input p
    predicts (melody step p + 1, as Magenta's Improv RNN pairs control i + 1 with event input i),
    transposed by the squash shift. A chord lasts until the next annotation; before the first one
    it is "no chord". Annotation times (seconds) are quantized like note times.

MusicVAE (`musicvae_examples`) -- `OneHotMelodyConverter` (16-bar melody):
    notes outside MIDI 21..108 are dropped, then melodies are extracted with min 1 bar, gap 1 bar,
    >= 1 unique pitch, no length cap, highest note kept on polyphony, and padded with NO_EVENT to a
    whole number of bars (Magenta's ``pad_end``); every window of ``bars * 16`` steps with a hop of
    one bar is taken, de-duplicated, and at most ``max_per_sequence`` are kept per NoteSequence
    (Magenta samples them at random; here a random subset drawn from a generator seeded by the
    sequence id, so the choice is reproducible), then mapped to classes (0 no-event, 1 note-off,
    2 + pitch - 21).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .melody_encoding import (
    CHORD_DIM,
    NO_EVENT,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    KeyMelodyEncoderDecoder,
    chord_one_hot,
    extract_melodies,
    quantize_notesequence,
    squash,
)

__all__ = [
    "read_notesequences",
    "melody_rnn_examples",
    "musicvae_examples",
    "musicvae_slices",
    "chord_symbols_per_step",
    "pad_batch",
]


def read_notesequences(path: str | os.PathLike) -> list[Any]:
    """All `music_pb2.NoteSequence`s of a TFRecord file (CRC-checked), in file order."""
    from ..formats.notesequence import music_pb2
    from ..formats.tfrecord import read_tfrecord

    out = []
    for data in read_tfrecord(path):
        ns = music_pb2.NoteSequence()
        ns.ParseFromString(data)
        out.append(ns)
    return out


def chord_symbols_per_step(ns: Any, n_steps: int, steps_per_quarter: int = STEPS_PER_QUARTER) -> list[str | None]:
    """The CHORD_SYMBOL text sounding at each absolute quantized step 0..n_steps-1 (None: no chord)."""
    from ..formats.notesequence import music_pb2

    qpm = float(ns.tempos[0].qpm) if len(ns.tempos) else 120.0
    sps = steps_per_quarter * qpm / 60.0
    anns = sorted(
        (int(a.time * sps + 0.5), i, a.text)
        for i, a in enumerate(ns.text_annotations)
        if a.annotation_type == music_pb2.NoteSequence.TextAnnotation.CHORD_SYMBOL
    )
    out: list[str | None] = [None] * n_steps
    for j, (start, _, text) in enumerate(anns):
        end = anns[j + 1][0] if j + 1 < len(anns) else n_steps
        for s in range(max(start, 0), min(end, n_steps)):
            out[s] = text
    return out


def _safe_chord(symbol: str | None, transpose: int) -> np.ndarray:
    try:
        return chord_one_hot(symbol, transpose)
    except ValueError:
        return chord_one_hot(None)


def melody_rnn_examples(
    sequences: Iterable[Any],
    *,
    chord_conditioned: bool = False,
    max_steps: int = 512,
    min_bars: int = 7,
    min_unique_pitches: int = 5,
    gap_bars: float = 1,
) -> list[dict]:
    """Melody RNN training examples (see the module docstring).

    Each example: ``inputs`` float32 [T-1, 74], ``labels`` int64 [T-1] (0..39), ``length`` T-1,
    ``sequence_id`` (the NoteSequence id), ``start_step`` (absolute step of the melody's first
    event), ``instrument``, ``transpose`` (the squash shift), and with ``chord_conditioned``
    ``chords`` float32 [T-1, 25]. Melodies of fewer than 2 events give no example.
    """
    enc = KeyMelodyEncoderDecoder()
    out: list[dict] = []
    for ns in sequences:
        q = quantize_notesequence(ns)
        mels = extract_melodies(
            q, min_bars=min_bars, max_steps=max_steps, min_unique_pitches=min_unique_pitches,
            gap_bars=gap_bars,
        )
        chord_steps = None
        for m in mels:
            events, shift = squash(m.events)
            inputs, labels = enc.encode(events)
            if len(labels) == 0:
                continue
            ex = {
                "inputs": inputs,
                "labels": labels,
                "length": int(len(labels)),
                "sequence_id": ns.id,
                "start_step": int(m.start_step),
                "instrument": int(m.instrument),
                "transpose": int(shift),
            }
            if chord_conditioned:
                if chord_steps is None:
                    total = max(q.total_steps, max(x.end_step for x in mels)) + 1
                    chord_steps = chord_symbols_per_step(ns, total)
                cache: dict[str | None, np.ndarray] = {}
                rows = []
                for p in range(len(labels)):
                    sym = chord_steps[m.start_step + p + 1]
                    if sym not in cache:
                        cache[sym] = _safe_chord(sym, shift)
                    rows.append(cache[sym])
                ex["chords"] = np.stack(rows).astype(np.float32)
            out.append(ex)
    return out


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def musicvae_slices(
    ns: Any, *, bars: int = 16, max_per_sequence: int | None = 5, min_pitch: int = 21,
    max_pitch: int = 108,
) -> list[np.ndarray]:
    """The event windows (int64 [bars * 16]) `musicvae_examples` takes from one NoteSequence."""
    from ..formats.notesequence import music_pb2

    filtered = music_pb2.NoteSequence()
    filtered.CopyFrom(ns)
    keep = [n for n in ns.notes if min_pitch <= n.pitch <= max_pitch]
    del filtered.notes[:]
    filtered.notes.extend(keep)
    mels = extract_melodies(
        filtered, min_bars=1, max_steps=None, min_unique_pitches=1, gap_bars=1,
        ignore_polyphonic_notes=True,
    )
    width = bars * STEPS_PER_BAR
    seen: set[bytes] = set()
    slices: list[np.ndarray] = []
    for m in mels:
        ev = m.events
        pad = (-len(ev)) % STEPS_PER_BAR
        if pad:
            ev = np.concatenate([ev, np.full(pad, NO_EVENT, dtype=np.int64)])
        for end in range(width, len(ev) + 1, STEPS_PER_BAR):
            w = np.ascontiguousarray(ev[end - width : end])
            key = w.tobytes()
            if key in seen:
                continue
            seen.add(key)
            slices.append(w)
    if max_per_sequence is not None and len(slices) > max_per_sequence:
        rng = np.random.default_rng(_seed_of(ns.id or ns.filename or ""))
        pick = np.sort(rng.choice(len(slices), size=max_per_sequence, replace=False))
        slices = [slices[i] for i in pick]
    return slices


def musicvae_examples(
    sequences: Iterable[Any], *, bars: int = 16, max_per_sequence: int | None = 5,
    return_ids: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """MusicVAE class arrays int64 [N, bars * 16] (classes 0..89); see the module docstring.

    With ``return_ids`` also the NoteSequence id of each row (provenance).
    """
    from .musicvae import events_to_classes

    rows: list[np.ndarray] = []
    ids: list[str] = []
    for ns in sequences:
        for w in musicvae_slices(ns, bars=bars, max_per_sequence=max_per_sequence):
            rows.append(events_to_classes(w))
            ids.append(ns.id)
    arr = (
        np.stack(rows).astype(np.int64) if rows else np.zeros((0, bars * STEPS_PER_BAR), dtype=np.int64)
    )
    return (arr, ids) if return_ids else arr


def pad_batch(
    examples: Sequence[dict], *, max_len: int | None = None, with_chords: bool | None = None,
    device: Any = None,
) -> dict:
    """Zero-pad Melody RNN examples into a batch for `melody_rnn.train_step`.

    Returns ``inputs`` float32 [B, T, 74], ``labels`` int64 [B, T] (padding 0), ``lengths`` int64
    [B] and, when ``with_chords`` (default: every example has ``chords``), ``chords`` float32
    [B, T, 25]. T = the longest example (truncated to ``max_len`` when given).
    """
    import torch

    if not examples:
        raise ValueError("pad_batch needs at least one example")
    if with_chords is None:
        with_chords = all("chords" in e for e in examples)
    lens = [len(e["labels"]) for e in examples]
    t = max(lens) if max_len is None else min(max(lens), int(max_len))
    b = len(examples)
    width = examples[0]["inputs"].shape[1]
    inputs = np.zeros((b, t, width), dtype=np.float32)
    labels = np.zeros((b, t), dtype=np.int64)
    lengths = np.zeros(b, dtype=np.int64)
    chords = np.zeros((b, t, CHORD_DIM), dtype=np.float32) if with_chords else None
    for i, e in enumerate(examples):
        n = min(lens[i], t)
        inputs[i, :n] = e["inputs"][:n]
        labels[i, :n] = e["labels"][:n]
        lengths[i] = n
        if chords is not None:
            chords[i, :n] = e["chords"][:n]
    out = {
        "inputs": torch.from_numpy(inputs),
        "labels": torch.from_numpy(labels),
        "lengths": torch.from_numpy(lengths),
    }
    if chords is not None:
        out["chords"] = torch.from_numpy(chords)
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out
