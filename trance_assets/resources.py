"""Resources: the settings (profile + locations) every asset reads."""


import os

import dagster as dg
from pydantic import Field
from upath import UPath

from .constants import ENV_HF_TOKEN, ENV_INBOX, ENV_MIDI_MODEL_BASE, ENV_MIDI_MODEL_REVISION, ENV_PROFILE, ENV_PROFILE_OVERRIDES, ENV_STORAGE
from .profiles import Profile, get_profile, parse_overrides
from .storage import as_upath


class SettingsResource(dg.ConfigurableResource):
    """Profile and locations. Storage is a local path or any fsspec URL (s3://bucket/prefix, ...)."""

    profile: str = Field(default="demo", description="Run profile: 'demo' (small, CPU, minutes) or 'full' (the plan's sizes).")
    profile_overrides: str = Field(
        default="",
        description='Profile fields to change, as a JSON object, e.g. {"melody_rnn_steps": [2000, 500, 500]} (lists for tuples).',
    )
    storage_url: str = Field(default="storage", description="Root of everything the pipeline writes: a local path or an fsspec URL.")
    inbox_dir: str = Field(
        default="",
        description="Folder the reference-audio sensor watches (local). Empty: <storage>/inbox/reference_audio.",
    )

    @classmethod
    def from_env(cls) -> "SettingsResource":
        storage = os.environ.get(ENV_STORAGE, "storage")
        if "://" not in storage:
            storage = str(as_upath(storage))
        inbox = os.environ.get(ENV_INBOX, "")
        return cls(profile=os.environ.get(ENV_PROFILE, "demo"), storage_url=storage, inbox_dir=inbox,
                   profile_overrides=os.environ.get(ENV_PROFILE_OVERRIDES, ""))

    def get_profile(self) -> Profile:
        return get_profile(self.profile, **parse_overrides(self.profile_overrides))

    @property
    def storage_root(self) -> UPath:
        return as_upath(self.storage_url)

    @property
    def inbox_path(self):
        from pathlib import Path

        if self.inbox_dir:
            return Path(self.inbox_dir).expanduser().resolve()
        root = self.storage_root
        if root.protocol not in ("", "file", "local"):
            raise ValueError(
                f"storage_url {self.storage_url!r} is remote; set inbox_dir ({ENV_INBOX}) to a local folder to watch"
            )
        return Path(root.path) / "inbox" / "reference_audio"

    def local_dataset_dir(self, *parts: str):
        """A local folder under <storage>/dataset/ that a sensor can watch (Tier 1 gold MIDI)."""
        from pathlib import Path

        root = self.storage_root
        if root.protocol not in ("", "file", "local"):
            raise ValueError(f"storage_url {self.storage_url!r} is remote; the Tier 1 folder must be local to be watched")
        return Path(root.path).joinpath("dataset", *parts)

    def path(self, *parts: str) -> UPath:
        """A location under the storage root, e.g. settings.path('dataset', 'tier1')."""
        return self.storage_root.joinpath(*parts)


class SeparatorResource(dg.ConfigurableResource):
    """Lead separation: Demucs (hub cache or a local repo folder) or the DSP fallback."""

    method: str = Field(default="auto", description="'auto' (Demucs when its weights load, else the DSP fallback), 'demucs' (or fail) or 'dsp'.")
    model: str = Field(default="htdemucs", description="Demucs model name (a 4-stem model: the lead is its 'other' stem).")
    repo: str = Field(default="", description="Local folder with <name>.th / <name>.yaml Demucs files; empty: the Hugging Face cache.")
    allow_download: bool = Field(default=False, description="May the Hugging Face hub be contacted to fetch weights?")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda'.")
    segment: float = Field(default=0.0, description="Seconds per Demucs chunk; 0: the model's default.")
    overlap: float = Field(default=0.25, description="Demucs chunk overlap (0-1).")
    shifts: int = Field(default=0, description="Demucs random shifts (0 keeps results reproducible).")
    threads: int = Field(default=2, description="torch CPU threads during separation.")

    @classmethod
    def from_env(cls) -> "SeparatorResource":
        from .audio.separation import SeparatorConfig

        c = SeparatorConfig.from_env()
        return cls(method=c.method, model=c.model, repo=c.repo or "", allow_download=c.allow_download, device=c.device, threads=c.threads)

    def config(self):
        from .audio.separation import SeparatorConfig

        c = SeparatorConfig(
            method=self.method,
            model=self.model,
            repo=self.repo or None,
            allow_download=self.allow_download,
            device=self.device,
            segment=self.segment or None,
            overlap=self.overlap,
            shifts=self.shifts,
            threads=self.threads,
        )
        c.validate()
        return c


class TranscriberResource(dg.ConfigurableResource):
    """Basic Pitch (ONNX model shipped with the package, on onnxruntime)."""

    onset_threshold: float = Field(default=0.6, description="Onset posterior needed to start a note.")
    frame_threshold: float = Field(default=0.3, description="Frame posterior needed to continue a note.")
    minimum_note_ms: float = Field(default=50.0, description="Shortest note kept, in ms.")
    minimum_hz: float = Field(default=0.0, description="Lowest frequency transcribed (0: no limit).")
    maximum_hz: float = Field(default=0.0, description="Highest frequency transcribed (0: no limit).")
    repeat_onset_threshold: float = Field(default=0.5, description="Onset peak that marks a re-struck note inside a held one (0: off).")

    def config(self):
        from .audio.transcription import TranscriberConfig

        c = TranscriberConfig(
            onset_threshold=self.onset_threshold,
            frame_threshold=self.frame_threshold,
            minimum_note_ms=self.minimum_note_ms,
            minimum_hz=self.minimum_hz or None,
            maximum_hz=self.maximum_hz or None,
            repeat_onset_threshold=self.repeat_onset_threshold or None,
        )
        c.validate()
        return c


class MidiModelResource(dg.ConfigurableResource):
    """Where models/midi_model_base comes from: a published midi-model checkpoint (a Hugging Face hub
    id such as skytnt/midi-model-tv2o-medium, or a local folder with config.json + weights), or —
    empty, the offline default — a small model pre-trained here on Tier 3."""

    base_model: str = Field(
        default="",
        description="Hub id (e.g. skytnt/midi-model-tv2o-medium) or local checkpoint folder; empty: pre-train the profile's "
        "midi_model_size on the Tier 3 train split.",
    )
    revision: str = Field(default="", description="Hub revision (branch, tag or commit) of base_model; empty: the default branch.")
    hf_token_env: str = Field(default=ENV_HF_TOKEN, description="Environment variable holding a Hugging Face token (gated or private repos).")

    @classmethod
    def from_env(cls) -> "MidiModelResource":
        return cls(base_model=os.environ.get(ENV_MIDI_MODEL_BASE, ""), revision=os.environ.get(ENV_MIDI_MODEL_REVISION, ""))

    def token(self) -> str | None:
        return os.environ.get(self.hf_token_env) or None
