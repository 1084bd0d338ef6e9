"""Tier 3 bulk sources: GigaMIDI and public-domain corpora (domain core, no Dagster imports)."""
