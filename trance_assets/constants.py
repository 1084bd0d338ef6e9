"""Names used across the Dagster layer: defined once here."""

# Asset groups (one per stage).
INGEST = "ingest"
TIER2 = "tier2"
TIER3 = "tier3"

# Concurrency pools (limits in dagster.yaml: `concurrency.pools`).
POOL_HEAVY = "heavy"  # source separation and model training: one at a time on a 2-core machine

# Partition sets.
REFERENCE_TRACKS = "reference_tracks"

# Environment variables read when the code location loads.
ENV_PROFILE = "TRANCE_PROFILE"
ENV_STORAGE = "TRANCE_STORAGE"
ENV_INBOX = "TRANCE_INBOX"

SENSOR_INTERVAL_SECONDS = 10
