"""Jobs the sensors and schedules target."""

import dagster as dg

from .assets.ingest import reference_audio

# Everything computed per reference track. Later stages join this selection.
reference_track_job = dg.define_asset_job(
    "reference_track_job",
    selection=dg.AssetSelection.assets(reference_audio),
    description="Process one reference track (one partition of reference_tracks).",
)
