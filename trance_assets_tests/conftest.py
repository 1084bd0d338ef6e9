"""Shared fixtures: settings on temporary folders, real musical audio files, a Dagster instance.

Kept generic and cheap: Dagster is imported only inside the fixtures that need it, so tests of the
pure core do not pay for it.
"""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest


@functools.lru_cache(maxsize=16)
def _melody_audio(sr: int, seed: int) -> np.ndarray:
    """A saw rendering of a rule-engine melody, mono float32 at `sr` (about 12 s long)."""
    from trance_assets.audio.synth import render_saw
    from trance_assets.music.rules import generate

    melody = generate(key="Am", bpm=120, chord_progression=["Am", "F", "C", "G"], bars=3, seed=seed)
    audio = render_saw(melody, sr=sr)
    audio.setflags(write=False)
    return audio


def musical_audio(seconds: float = 2.0, sr: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """`seconds` of real musical audio, float32 of shape (frames, channels), peak about -1 dBFS.

    Channel c is the melody delayed by 100*c samples and scaled by 0.8**c, so channels differ.
    Different seeds give different melodies (different bytes).
    """
    frames = int(round(seconds * sr))
    mono = _melody_audio(sr, seed)
    reps = math.ceil((frames + 100 * channels) / len(mono))
    mono = np.tile(mono, reps)
    cols = [0.8**c * np.roll(mono, 100 * c)[:frames] for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(
    path: str | os.PathLike,
    seconds: float = 2.0,
    sr: int = 44100,
    channels: int = 2,
    subtype: str | None = "PCM_16",
    format: str | None = None,
    seed: int = 0,
    age_seconds: float | None = 60.0,
) -> Path:
    """Write real audio to `path` (format from the suffix unless given) and return the path.

    `age_seconds`: set the file's mtime that far in the past, so an inbox sensor sees it as
    settled (None leaves the mtime as written, i.e. now).
    """
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), musical_audio(seconds, sr, channels, seed), sr, subtype=subtype, format=format)
    if age_seconds is not None:
        set_age(path, age_seconds)
    return path


def set_age(path: str | os.PathLike, age_seconds: float) -> int:
    """Set mtime (and atime) to `age_seconds` before now; returns the new mtime in ns."""
    mtime = time.time_ns() - int(age_seconds * 1e9)
    os.utime(path, ns=(mtime, mtime))
    return mtime


@pytest.fixture
def write_wav():
    """`write_wav(path, seconds=2, sr=44100, channels=2, subtype='PCM_16', ...)` -> Path (see write_audio)."""
    return write_audio


@pytest.fixture
def settings(tmp_path):
    """SettingsResource (demo profile) on tmp_path/storage with the inbox at tmp_path/inbox."""
    from trance_assets.resources import SettingsResource

    (tmp_path / "inbox").mkdir(exist_ok=True)
    return SettingsResource(profile="demo", storage_url=str(tmp_path / "storage"), inbox_dir=str(tmp_path / "inbox"))


@pytest.fixture
def inbox(settings) -> Path:
    return Path(settings.inbox_dir)


@pytest.fixture
def resources(settings) -> dict:
    """The resources the project's assets need: settings and the storage IO manager."""
    from trance_assets.io_managers import StorageIOManager

    return {"settings": settings, "io_manager": StorageIOManager(settings=settings)}


@pytest.fixture
def instance():
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny recurrent models are dominated by per-op overhead: intra-op threads only add contention
    (8x slower on a busy 2-core box). Use with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
