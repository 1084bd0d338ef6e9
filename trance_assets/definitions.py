"""The code location: every asset, check, job, sensor and resource of trance_assets."""

import dagster as dg

from .assets.ingest import reference_audio
from .assets.synthetic import synthetic_melodies, synthetic_melodies_pass_quality
from .io_managers import StorageIOManager
from .jobs import reference_track_job
from .resources import SettingsResource
from .sensors import reference_audio_sensor

settings = SettingsResource.from_env()

defs = dg.Definitions(
    assets=[reference_audio, synthetic_melodies],
    asset_checks=[synthetic_melodies_pass_quality],
    jobs=[reference_track_job],
    sensors=[reference_audio_sensor],
    resources={"settings": settings, "io_manager": StorageIOManager(settings=settings)},
    # Two cores: at most two steps of one run at a time.
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)
