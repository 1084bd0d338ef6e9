"""Melody generators behind one protocol, and the registry the benchmark and the CLI use (domain core)."""
