"""Evaluation of generated melodies: metrics, prompt sets, statistics and listening tests."""
