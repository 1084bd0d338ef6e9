"""Small value types for audio payloads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AudioFile:
    """An audio file on disk, passed between stages by reference (the IO manager copies the bytes)."""

    path: str
    suffix: str = ""
    temporary: bool = False  # a staging copy: the IO manager moves it into storage and deletes it
    info: dict = field(default_factory=dict, compare=False)  # provenance stored beside the file

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


@dataclass(frozen=True)
class Stems:
    """A separation: the isolated lead and the residual (everything else), with provenance."""

    lead: "np.ndarray"  # float32 (n, channels)
    residual: "np.ndarray"
    sample_rate: int
    info: dict  # separator, separator_version, fallback_reason, sources, seconds, ...


def write_stems(folder: Path, stems: Stems) -> None:
    import json

    import soundfile as sf

    sf.write(folder / "lead.wav", stems.lead, stems.sample_rate, subtype="FLOAT")
    sf.write(folder / "residual.wav", stems.residual, stems.sample_rate, subtype="FLOAT")
    (folder / "stems.json").write_text(json.dumps({"sample_rate": stems.sample_rate, **stems.info}, indent=1, sort_keys=True, default=str))


def read_stems(folder) -> Stems:
    """`folder`: a local Path or a UPath."""
    import io
    import json

    import soundfile as sf

    info = json.loads((folder / "stems.json").read_text())
    lead, sr = sf.read(io.BytesIO((folder / "lead.wav").read_bytes()), dtype="float32", always_2d=True)
    residual, _ = sf.read(io.BytesIO((folder / "residual.wav").read_bytes()), dtype="float32", always_2d=True)
    return Stems(lead, residual, int(info.pop("sample_rate", sr)), info)
