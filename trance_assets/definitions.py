"""The code location: every asset, check, job, sensor and resource of trance_assets."""

import dagster as dg

from .assets.extraction import melody, review_batches_pass, review_queue, separated_lead, transcription
from .assets.ingest import reference_audio
from .assets.synthetic import synthetic_melodies, synthetic_melodies_pass_quality
from .io_managers import StorageIOManager
from .jobs import reference_track_job
from .resources import SeparatorResource, SettingsResource, TranscriberResource
from .sensors import automation_sensor, reference_audio_sensor

settings = SettingsResource.from_env()

defs = dg.Definitions(
    assets=[reference_audio, separated_lead, transcription, melody, review_queue, synthetic_melodies],
    asset_checks=[review_batches_pass, synthetic_melodies_pass_quality],
    jobs=[reference_track_job],
    sensors=[reference_audio_sensor, automation_sensor],
    resources={
        "settings": settings,
        "io_manager": StorageIOManager(settings=settings),
        "separator": SeparatorResource.from_env(),
        "transcriber": TranscriberResource(),
    },
    # Two cores: at most two steps of one run at a time.
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)
