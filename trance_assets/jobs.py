"""Jobs the sensors and schedules target."""

import dagster as dg

from .assets.extraction import melody, separated_lead, transcription
from .assets.ingest import reference_audio

# Everything computed per reference track, in order: ingest, separate, transcribe, extract.
reference_track_job = dg.define_asset_job(
    "reference_track_job",
    selection=dg.AssetSelection.assets(reference_audio, separated_lead, transcription, melody),
    description="Process one reference track (one partition of reference_tracks).",
)
