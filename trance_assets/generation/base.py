"""The Generator protocol and the registry of backends.

A generator turns a prompt — key, tempo, chord progression, bar count, seed — into a `Melody`:

    generate(key, bpm, chord_progression, bars, seed) -> Melody

Every generator describes itself (`info`: name, version, checkpoint) so that a benchmark row says
exactly what produced it. Backends register a factory under a name (`register`); a *configuration*
is a backend plus keyword options (`Configuration`), which is what the benchmark compares. The rule
engine is the first backend (`generation.rules`); model backends register themselves the same way.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..music.melody import Melody
from ..music.theory import Chord, Key, parse_chord, parse_key


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    version: str
    checkpoint: str | None = None  # path / hub id / sha256 of the weights; None for rule-based backends
    description: str = ""
    options: dict = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "checkpoint": self.checkpoint, "description": self.description, "options": self.options}


@runtime_checkable
class Generator(Protocol):
    info: GeneratorInfo

    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody: ...


_REGISTRY: dict[str, Callable[..., Generator]] = {}


def register(name: str, factory: Callable[..., Generator]) -> None:
    """Register a backend factory (called with the configuration's options)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name or ""):
        raise ValueError(f"backend names are [a-z0-9_-], got {name!r}")
    _REGISTRY[name] = factory


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_generator(backend: str, /, **options) -> Generator:
    """An instance of a registered backend. Raises KeyError naming the known backends."""
    _load_builtin()
    if backend not in _REGISTRY:
        raise KeyError(f"unknown generator backend {backend!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[backend](**options)


def validate_prompt(key, bpm, chord_progression, bars, seed) -> tuple[Key, list[Chord]]:
    """The prompt every generator takes, checked: (Key, parsed chords), or ValueError saying what is wrong."""
    key_obj = key if isinstance(key, Key) else parse_key(str(key))  # ValueError naming the key
    if isinstance(chord_progression, str) or chord_progression is None:
        raise ValueError("chord_progression must be a list of chord symbols, e.g. ['Am', 'F', 'C', 'G']")
    chords = [parse_chord(s) for s in chord_progression]
    if not chords:
        raise ValueError("chord_progression must contain at least one chord symbol")
    if isinstance(bars, bool) or not isinstance(bars, (int, np.integer)) or bars < 1:
        raise ValueError(f"bars must be a positive integer, got {bars!r}")
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float, np.number)) or not bpm > 0:
        raise ValueError(f"bpm must be > 0, got {bpm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return key_obj, chords


def _load_builtin() -> None:
    from . import hybrid, midi_model, models, rules  # noqa: F401  (register "rules", "melody_rnn", "musicvae", "hybrid", "midi_model"; models import torch)


@dataclass(frozen=True)
class Configuration:
    """A named generator configuration: backend + options (what the benchmark compares)."""

    name: str
    backend: str
    options: dict = field(default_factory=dict, hash=False)

    def make(self) -> Generator:
        return get_generator(self.backend, **self.options)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps([self.backend, self.options], sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    key: str
    bpm: float
    chords: tuple[str, ...]
    bars: int
    seed: int


def prompt_set(n: int, *, bpm: float = 140.0, bars: int = 16, seed: int = 0) -> list[Prompt]:
    """`n` prompts, key × progression × seed, deterministic: keys cycle through the 12 minor keys and
    the 4 most common major keys, progressions through the trance progressions of `music.theory`
    (minor or major to match the key), and each prompt gets its own generation seed."""
    from ..music.theory import ALL_KEYS, MAJOR_PROGRESSIONS, MINOR_PROGRESSIONS, progression_symbols

    minor = [k for k in ALL_KEYS if k.mode == "minor"]
    major = [k for k in ALL_KEYS if k.mode == "major" and k.tonic in (0, 5, 7, 2)]
    keys = minor + major
    out = []
    for i in range(n):
        key = keys[i % len(keys)]
        table = MINOR_PROGRESSIONS if key.mode == "minor" else MAJOR_PROGRESSIONS
        degrees = table[(i // len(keys) + i) % len(table)]
        out.append(Prompt(f"p{i:03d}", key.name, bpm, tuple(progression_symbols(key, degrees)), bars, seed * 100_003 + i))
    return out
