"""Model backends for the generator registry: "melody_rnn" (Melody RNN attention_rnn, optionally
chord-conditioned) and "musicvae" (MusicVAE hierdec-mel).

Importing this module registers both backends (`base.register`); `base.py` does not import it, so
callers do ``import trance_assets.generation.models`` before ``get_generator("melody_rnn", ...)``.
It imports torch (through `trance_assets.models`); no Dagster imports.

Both backends take ``checkpoint`` = a folder written by the model's ``save(dir)`` (``config.json``
+ ``model.safetensors``). ``info.checkpoint`` is the sha256 of the weights file, ``info.version``
is ``"<backend>-<sha1 of the sorted config JSON, 12 hex>"``. Generation is a pure function of the
arguments and the weights: every random draw comes from a ``torch.Generator`` seeded with ``seed``.

Shared conventions (documented choices)
    * Time: one event per 16th step (4 steps per beat, 16 per bar, 4/4). Events -> notes: a note-on
      starts a note, NO_EVENT holds it, it ends at a NOTE_OFF, at the next note-on, or at the end
      of the ``bars * 16`` steps (nothing sounds past ``bars * 4`` beats). Velocity 100.
    * Register: after transposition into the prompt key the whole melody is moved by whole octaves
      so that the centre of its range ((lowest + highest) / 2) is as close as possible to
      ``LEAD_CENTRE`` (78), then any note still outside ``[LEAD_LOW, LEAD_HIGH)`` = [60, 96) is
      folded in by octaves (the rule engine's lead register, MIDI 60-96).
    * Chords: the Melody's chord track is the prompt progression, one chord per bar, cycling when
      the progression is shorter than ``bars`` (as the rule engine does).
    * "Key frame": a minor key counts as its relative major (Am -> C), the same rule as
      `melody_encoding.squash`, so the pitch-class content of the melody is what is transposed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..music.melody import BEATS_PER_BAR, ChordSpan, Melody, Note
from ..music.theory import Chord, Key, parse_chord, parse_key
from ..storage import sha256_file
from .base import validate_prompt
from .base import GeneratorInfo, register

STEPS_PER_BEAT = 4
STEPS_PER_BAR = 16
LEAD_LOW, LEAD_HIGH = 60, 96  # [LEAD_LOW, LEAD_HIGH): the rule engine's lead register
LEAD_CENTRE = 78
NO_EVENT, NOTE_OFF = -2, -1

__all__ = ["MelodyRNNGenerator", "MusicVAEGenerator", "events_to_notes", "major_tonic", "place_in_register"]


# ------------------------------------------------------------------------------------ helpers
def major_tonic(key: Key) -> int:
    """The major tonic pitch class of a key's frame: itself for major, the relative major for minor."""
    return key.tonic if key.mode == "major" else (key.tonic + 3) % 12


def _nearest_shift(pc_diff: int) -> int:
    """A pitch-class difference as the smallest transposition, in -5..6."""
    d = int(pc_diff) % 12
    return d - 12 if d > 6 else d


def place_in_register(pitches: Sequence[int], low: int = LEAD_LOW, high: int = LEAD_HIGH,
                      centre: float = LEAD_CENTRE) -> list[int]:
    """Move all pitches by whole octaves towards `centre`, then fold outliers into [low, high)."""
    if not pitches:
        return []
    mid = (min(pitches) + max(pitches)) / 2
    t = 12 * int(round((centre - mid) / 12))
    out = []
    for p in pitches:
        p = p + t
        while p < low:
            p += 12
        while p >= high:
            p -= 12
        out.append(p)
    return out


def events_to_notes(events: Sequence[int], transpose: int = 0, velocity: int = 100) -> list[Note]:
    """16th-step events -> Notes (beats), transposed by `transpose` and placed in the lead register.

    A note-on starts a note; NO_EVENT holds; NOTE_OFF, the next note-on or the end of `events`
    ends it.
    """
    spans: list[tuple[int, int, int]] = []  # (start step, end step, pitch)
    cur: tuple[int, int] | None = None  # (start, pitch)
    n = len(events)
    for i, e in enumerate(events):
        e = int(e)
        if e == NO_EVENT:
            continue
        if cur is not None:
            spans.append((cur[0], i, cur[1]))
            cur = None
        if e >= 0:
            cur = (i, e)
    if cur is not None:
        spans.append((cur[0], n, cur[1]))
    pitches = place_in_register([p + int(transpose) for _, _, p in spans])
    return [
        Note(start=s / STEPS_PER_BEAT, pitch=int(p), duration=(e - s) / STEPS_PER_BEAT, velocity=velocity)
        for (s, e, _), p in zip(spans, pitches)
    ]




def _torch_generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return g


def _check_temperature(t) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"temperature must be a number > 0, got {t!r}")
    return float(t)


def _checkpoint_dir(checkpoint, backend: str) -> tuple[Path, Path]:
    """(folder, weights file); FileNotFoundError naming the path when either is missing."""
    if checkpoint is None or str(checkpoint) == "":
        raise ValueError(f"{backend}: a checkpoint folder is required (checkpoint=...)")
    d = Path(checkpoint)
    if not d.is_dir():
        raise FileNotFoundError(f"{backend} checkpoint folder not found: {str(d)!r}")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{backend} checkpoint {str(d)!r} has no config.json")
    for name in ("model.safetensors", "model.pt"):
        if (d / name).is_file():
            return d, d / name
    raise FileNotFoundError(f"{backend} checkpoint {str(d)!r} has no model.safetensors")


def _config_hash(config_dict: dict) -> str:
    return hashlib.sha1(json.dumps(config_dict, sort_keys=True).encode()).hexdigest()[:12]


def _checkpoint_info(name: str, config: dict, weights: Path, description: str, checkpoint, temperature: float) -> GeneratorInfo:
    """Version from the model config, checkpoint = sha256 of the weights file."""
    return GeneratorInfo(
        name=name,
        version=f"{name}-{_config_hash(config)}",
        checkpoint=sha256_file(weights),
        description=description,
        options={"checkpoint": str(checkpoint), "temperature": temperature},
    )


def prompt_melody(notes, key_obj: Key, bpm: float, chords: list[Chord], bars: int, name: str, attributes: dict) -> Melody:
    """A generated melody in the prompt's frame: its key, tempo, one chord per bar (cycling)."""
    return Melody(notes=tuple(notes), bpm=float(bpm), key=key_obj.name, chords=_chord_spans(chords, bars), bars=bars, name=name, attributes=attributes)


def shift_to_key(events: Sequence[int], key_obj: Key) -> tuple[int | None, int]:
    """(estimated major tonic, nearest shift to the prompt key's major frame) of events whose key is
    unknown (`best_major_key`); (None, 0) when there is no note-on."""
    from ..models.melody_encoding import best_major_key

    if not any(e >= 0 for e in events):
        return None, 0
    est = best_major_key(events)
    return est, _nearest_shift(major_tonic(key_obj) - est)


def _chord_spans(chords: list[Chord], bars: int) -> tuple[ChordSpan, ...]:
    return tuple(
        ChordSpan(chords[b % len(chords)].symbol, float(b * BEATS_PER_BAR), float(BEATS_PER_BAR))
        for b in range(bars)
    )


def c_frame_chord_rows(model, chords: Sequence[Chord], bars: int, frame: int) -> list[np.ndarray] | None:
    """Per-bar chord one-hots in the model's C frame (None for a model without chord inputs)."""
    from ..models.melody_encoding import chord_one_hot

    if model.config.chord_dim == 0:
        return None
    return [chord_one_hot(chords[b % len(chords)].symbol, transpose=-frame) for b in range(bars)]


@torch.no_grad()
def sample_rnn_events(
    model, primer: Sequence[int], total: int, chord_rows: Sequence[np.ndarray] | None,
    temperature: float, seeds: Sequence[int],
) -> list[list[int]]:
    """Continue the C-frame `primer` events (squashed range, 48-83) to `total` events, one
    continuation per seed, sampled as one batch.

    Input p describes events[:p + 1] and predicts event p + 1 (`KeyMelodyEncoderDecoder`); with
    chord rows it carries the chord of the bar of step p + 1 (the training pairing). Each row draws
    from its own ``torch.Generator`` seeded with its seed, so a continuation does not depend on
    which other seeds share the batch. Features are computed incrementally (one `push` per event).
    """
    from ..models.melody_encoding import KeyMelodyEncoderDecoder

    enc = KeyMelodyEncoderDecoder()
    primer = [int(e) for e in primer]
    if not seeds:
        return []
    if not primer:
        raise ValueError("the primer needs at least one event")
    if len(primer) >= total:
        return [primer[:total] for _ in seeds]

    def with_chord(row: np.ndarray, p: int) -> np.ndarray:
        if chord_rows is None:
            return row
        return np.concatenate([row, chord_rows[min(p + 1, total - 1) // STEPS_PER_BAR]])

    feats = [enc.incremental() for _ in seeds]
    for f in feats:
        for e in primer:
            f.push(e)
    probe = enc.incremental()
    primer_x = np.stack([with_chord(probe.push(e), p) for p, e in enumerate(primer)]).astype(np.float32)
    x = torch.from_numpy(np.repeat(primer_x[None], len(seeds), axis=0))
    was_training = model.training
    model.eval()
    try:
        logits, state = model(x)
        last = logits[:, -1]
        gens = [_torch_generator(s) for s in seeds]
        events = [list(primer) for _ in seeds]
        while True:
            probs = torch.softmax(last / float(temperature), dim=-1)
            rows = []
            for i, ev in enumerate(events):
                label = int(torch.multinomial(probs[i], 1, generator=gens[i]))
                ev.append(enc.class_to_event(label, ev))
                rows.append(with_chord(feats[i].push(ev[-1]), len(ev) - 1))
            if len(events[0]) >= total:
                return events
            out, state = model.step(torch.from_numpy(np.stack(rows).astype(np.float32)), state)
            last = out
    finally:
        model.train(was_training)


# -------------------------------------------------------------------------------- Melody RNN
class MelodyRNNGenerator:
    """Melody RNN (attention_rnn) backend.

    The model works in the squashed C frame (`squash`: melodies transposed so their major key is
    C, minor keys counted as their relative major, note-ons in [48, 84)). Generation:

    * primer: one note-on, the prompt key's tonic in the C frame: pitch 60 (C4) for a major key,
      69 (A4) for a minor key (the relative minor of C, as `squash` maps a minor key);
    * ``bars * 16 - 1`` further steps are sampled (temperature, seeded ``torch.Generator``), each
      sampled label decoded with ``class_to_event`` and fed back through ``events_to_input``;
    * chord-conditioned models (``config.chord_dim > 0``): the input predicting step s carries the
      ``chord_one_hot`` of the prompt chord of bar ``s // 16`` transposed into the C frame
      (``transpose = -major_tonic(key)``), matching the training data (row p = chord at step p+1);
    * back to the prompt key: the events are transposed by ``major_tonic(key)`` taken as the
      nearest shift (-5..6), then placed in the lead register (module docstring).
    """

    name = "melody_rnn"

    def __init__(self, checkpoint: str, temperature: float = 1.0) -> None:
        from ..models.melody_encoding import KeyMelodyEncoderDecoder
        from ..models.melody_rnn import MelodyRNN

        self.temperature = _check_temperature(temperature)
        d, weights = _checkpoint_dir(checkpoint, self.name)
        self.model = MelodyRNN.load(d)
        self.model.eval()
        self.encoder = KeyMelodyEncoderDecoder()
        cfg = self.model.config
        if cfg.input_size != self.encoder.input_size or cfg.num_classes != self.encoder.num_classes:
            raise ValueError(
                f"melody_rnn checkpoint {str(d)!r}: input_size/num_classes {cfg.input_size}/{cfg.num_classes} "
                f"do not match the attention_rnn encoding {self.encoder.input_size}/{self.encoder.num_classes}"
            )
        if cfg.chord_dim not in (0, 25):
            raise ValueError(f"melody_rnn checkpoint {str(d)!r}: chord_dim must be 0 or 25, got {cfg.chord_dim}")
        self.checkpoint_dir = str(d)
        self.info = _checkpoint_info(
            self.name, cfg.to_dict(), weights, f"Melody RNN attention_rnn{' (chord-conditioned)' if cfg.chord_dim else ''} from {d}", checkpoint, self.temperature
        )

    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody:
        key_obj, chords = validate_prompt(key, bpm, chord_progression, bars, seed)
        bars = int(bars)
        total = bars * STEPS_PER_BAR
        frame = major_tonic(key_obj)
        primer = 60 if key_obj.mode == "major" else 69
        events = sample_rnn_events(self.model, [primer], total, c_frame_chord_rows(self.model, chords, bars, frame), self.temperature, [seed])[0]
        notes = events_to_notes(events, transpose=_nearest_shift(frame))
        return prompt_melody(
            notes, key_obj, bpm, chords, bars, f"{self.name}_{key_obj.name}_{seed}",
            {
                "generator": self.name,
                "generator_version": self.info.version,
                "checkpoint_sha256": self.info.checkpoint,
                "seed": int(seed),
                "temperature": self.temperature,
                "progression": [c.symbol for c in chords],
                "primer_pitch_c_frame": primer,
            },
        )


# ---------------------------------------------------------------------------------- MusicVAE
class MusicVAEGenerator:
    """MusicVAE (hierdec-mel) backend.

    * z ~ N(0, I) (``config.z_size``) drawn from a ``torch.Generator`` seeded with ``seed``; the
      same generator then drives the categorical decode at ``temperature`` (``greedy=False``).
    * One decode gives ``config.steps`` (= 256 for the 16-bar model) steps. For ``bars * 16`` steps:
      fewer -> the first ``bars * 16`` steps; more -> the decode is repeated cyclically (the same
      phrase again, as a trance lead repeats its 16 bars) and cut at ``bars * 16``. Models whose
      ``steps_per_bar`` is not 16 are rejected (ValueError): steps are read as 16th notes.
    * Key: MusicVAE data is not transposed to C, so the generated melody's key is estimated
      (`melody_encoding.best_major_key`: the major scale holding most note-ons, ties to the lowest
      pitch class) and the melody is transposed by the nearest shift (-5..6) from that major
      tonic to the prompt key's major frame (a minor key counts as its relative major), then
      placed in the lead register (module docstring). A decode without note-ons gives no notes.
    """

    name = "musicvae"

    def __init__(self, checkpoint: str, temperature: float = 0.5) -> None:
        from ..models.musicvae import MusicVAE

        self.temperature = _check_temperature(temperature)
        d, weights = _checkpoint_dir(checkpoint, self.name)
        self.model = MusicVAE.load(d)
        self.model.eval()
        self.checkpoint_dir = str(d)
        cfg = self.model.config
        if cfg.steps_per_bar != STEPS_PER_BAR:
            raise ValueError(
                f"musicvae checkpoint {str(d)!r}: steps_per_bar must be {STEPS_PER_BAR} (16th steps), "
                f"got {cfg.steps_per_bar}"
            )
        self.info = _checkpoint_info(self.name, cfg.to_dict(), weights, f"MusicVAE hierdec-mel ({cfg.bars} bars, z={cfg.z_size}) from {d}", checkpoint, self.temperature)

    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody:
        from ..models.musicvae import classes_to_events

        key_obj, chords = validate_prompt(key, bpm, chord_progression, bars, seed)
        bars = int(bars)
        total = bars * STEPS_PER_BAR
        g = _torch_generator(seed)
        z = torch.randn(1, self.model.config.z_size, generator=g)
        with torch.no_grad():
            classes = self.model.sample(z, greedy=False, temperature=self.temperature, generator=g)
        decoded = classes_to_events(classes[0])
        reps = -(-total // len(decoded))
        events = (decoded * reps)[:total]
        est, shift = shift_to_key(events, key_obj)
        notes = events_to_notes(events, transpose=shift)
        return prompt_melody(
            notes, key_obj, bpm, chords, bars, f"{self.name}_{key_obj.name}_{seed}",
            {
                "generator": self.name,
                "generator_version": self.info.version,
                "checkpoint_sha256": self.info.checkpoint,
                "seed": int(seed),
                "temperature": self.temperature,
                "progression": [c.symbol for c in chords],
                "estimated_major_tonic": est,
                "transpose": shift,
            },
        )


register("melody_rnn", MelodyRNNGenerator)
register("musicvae", MusicVAEGenerator)
