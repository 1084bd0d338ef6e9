"""Reference audio intake: copy an inbox file aside, validate the copy, read its declared tempo.

Validation and hashing run on the staged copy, so what is measured is exactly what gets stored,
even if the inbox file changes meanwhile.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..inbox import content_id
from .io import AudioInfo, AudioValidationError, inspect_audio, read_declared_bpm, sha256_file, sidecar_path
from .types import AudioFile, discard_staged


@dataclass(frozen=True)
class ReferenceAudio:
    source: str  # the inbox file
    staged: AudioFile  # temporary copy, validated
    info: AudioInfo
    bpm: float | None
    bpm_source: str  # "sidecar" | "tag" | "unknown"
    content_id: str


def stage_reference_audio(src: Path, *, max_seconds: float, silence_dbfs: float) -> ReferenceAudio:
    """Copy `src` to a temporary file and validate it. Raises AudioValidationError naming `src`."""
    src = Path(src)
    if not src.is_file():
        raise AudioValidationError(src, "file not found (removed from the inbox?)")
    tmpdir = Path(tempfile.mkdtemp(prefix="trance-stage-"))
    staged = AudioFile(str(tmpdir / f"audio{src.suffix.lower()}"), temporary=True)
    try:
        shutil.copyfile(src, staged.path)
        try:
            info = inspect_audio(staged.path, max_seconds=max_seconds, silence_dbfs=silence_dbfs)
        except AudioValidationError as err:
            # Name the inbox file, not the staging copy, in every message.
            raise AudioValidationError(src, err.cause.replace(staged.path, src.name)) from None
        bpm, bpm_source = read_declared_bpm(src)
        side = sidecar_path(src)
        side_sha = sha256_file(side) if side.is_file() else None
    except BaseException:
        discard_staged(staged)
        raise
    return ReferenceAudio(
        source=str(src),
        staged=staged,
        info=info,
        bpm=bpm,
        bpm_source=bpm_source,
        content_id=content_id(info.sha256, side_sha),
    )
