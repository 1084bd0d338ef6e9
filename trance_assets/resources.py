"""Resources: the settings (profile + locations) every asset reads."""


import os

import dagster as dg
from pydantic import Field
from upath import UPath

from .constants import ENV_INBOX, ENV_PROFILE, ENV_STORAGE
from .profiles import Profile, get_profile
from .storage import as_upath


class SettingsResource(dg.ConfigurableResource):
    """Profile and locations. Storage is a local path or any fsspec URL (s3://bucket/prefix, ...)."""

    profile: str = Field(default="demo", description="Run profile: 'demo' (small, CPU, minutes) or 'full' (the plan's sizes).")
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
        return cls(profile=os.environ.get(ENV_PROFILE, "demo"), storage_url=storage, inbox_dir=inbox)

    def get_profile(self) -> Profile:
        return get_profile(self.profile)

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

    def path(self, *parts: str) -> UPath:
        """A location under the storage root, e.g. settings.path('dataset', 'tier1')."""
        return self.storage_root.joinpath(*parts)
