"""Partition sets: one key per source file (see inbox.partition_key_for for the key scheme)."""

import dagster as dg

from .constants import REFERENCE_TRACKS

reference_tracks = dg.DynamicPartitionsDefinition(name=REFERENCE_TRACKS)
