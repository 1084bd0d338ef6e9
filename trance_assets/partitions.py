"""Partition sets: one key per source file (see inbox.partition_key_for for the key scheme)."""

import dagster as dg

from .constants import GOLD_MELODIES, REFERENCE_TRACKS

reference_tracks = dg.DynamicPartitionsDefinition(name=REFERENCE_TRACKS)

# One key per Tier 1 MIDI file in storage/dataset/tier1/ (same key scheme, relative to that folder).
gold_melodies = dg.DynamicPartitionsDefinition(name=GOLD_MELODIES)
