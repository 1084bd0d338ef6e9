"""Names used across the Dagster layer: defined once here."""

# Asset groups (one per stage).
INGEST = "ingest"
TIER1 = "tier1"
TIER2 = "tier2"
TIER3 = "tier3"
CORPUS = "corpus"
MODELS = "models"
EVALUATION = "evaluation"

# Concurrency pools (limits in dagster.yaml: `concurrency.pools`).
POOL_HEAVY = "heavy"  # source separation and model training: one at a time on a 2-core machine

# Partition sets.
REFERENCE_TRACKS = "reference_tracks"
GOLD_MELODIES = "gold_melodies"

# Environment variables read when the code location loads.
ENV_PROFILE = "TRANCE_PROFILE"
ENV_PROFILE_OVERRIDES = "TRANCE_PROFILE_OVERRIDES"  # JSON object of Profile fields
ENV_STORAGE = "TRANCE_STORAGE"
ENV_INBOX = "TRANCE_INBOX"
# GigaMIDI source (Tier 3): a local folder of its parquet shards, or the hub config name + a token.
ENV_GIGAMIDI_DIR = "TRANCE_GIGAMIDI_DIR"
ENV_GIGAMIDI_CONFIG = "TRANCE_GIGAMIDI_CONFIG"
ENV_HF_TOKEN = "HF_TOKEN"
# models/midi_model_base: a published midi-model checkpoint (hub id or folder) instead of pre-training here
ENV_MIDI_MODEL_BASE = "TRANCE_MIDI_MODEL_BASE"
ENV_MIDI_MODEL_REVISION = "TRANCE_MIDI_MODEL_REVISION"

SENSOR_INTERVAL_SECONDS = 10
# Magenta checkpoints to import instead of pre-training (models/<family>_base).
ENV_MAGENTA = {"melody_rnn": "TRANCE_MELODY_RNN_MAGENTA", "musicvae": "TRANCE_MUSICVAE_MAGENTA"}
