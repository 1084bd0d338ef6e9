"""Jobs the sensors and schedules target."""

import dagster as dg

from .assets.gold import gold_melody
from .assets.extraction import melody, separated_lead, transcription
from .assets.ingest import reference_audio

# Everything computed per reference track, in order: ingest, separate, transcribe, extract.
reference_track_job = dg.define_asset_job(
    "reference_track_job",
    selection=dg.AssetSelection.assets(reference_audio, separated_lead, transcription, melody),
    description="Process one reference track (one partition of reference_tracks).",
    # The four steps form a chain, so nothing runs in parallel inside a run: executing them in the
    # run's own process saves three Python start-ups per track. Runs still go two at a time.
    executor_def=dg.in_process_executor,
)

# One Tier 1 file: parse, pick the lead, validate (fast; in process).
gold_melody_job = dg.define_asset_job(
    "gold_melody_job",
    selection=dg.AssetSelection.assets(gold_melody),
    description="Read one gold MIDI file (one partition of gold_melodies).",
    executor_def=dg.in_process_executor,
)
