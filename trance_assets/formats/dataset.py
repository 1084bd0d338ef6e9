"""Dataset exports: a MIDI file and its metadata sidecar JSON, written atomically side by side."""

from __future__ import annotations

import json

from upath import UPath

from ..music.melody import Melody
from ..storage import atomic_write_bytes, atomic_write_text


def export_melody(folder: UPath, name: str, melody: Melody, sidecar: dict) -> tuple[UPath, UPath]:
    mid = atomic_write_bytes(folder / f"{name}.mid", melody.to_midi_bytes())
    meta = atomic_write_text(folder / f"{name}.json", json.dumps(sidecar, indent=1, sort_keys=True, default=str))
    return mid, meta


def read_sidecar(folder: UPath, name: str) -> dict | None:
    p = folder / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None
