"""Small value types for audio payloads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AudioFile:
    """An audio file on disk, passed between stages by reference (the IO manager copies the bytes)."""

    path: str
    suffix: str = ""
    temporary: bool = False  # a staging copy: the IO manager moves it into storage and deletes it

    def __post_init__(self) -> None:
        if not self.suffix:
            object.__setattr__(self, "suffix", Path(self.path).suffix.lower())


def discard_staged(audio: AudioFile) -> None:
    """Delete a temporary staging copy and its folder (no-op for files that are not temporary)."""
    if not audio.temporary:
        return
    p = Path(audio.path)
    p.unlink(missing_ok=True)
    try:
        p.parent.rmdir()
    except OSError:
        pass
