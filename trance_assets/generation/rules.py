"""The rule engine as a generator backend ("rules"): options are `music.rules.RuleParams` fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from ..music.melody import Melody
from ..music.rules import RULES_VERSION, RuleParams, generate
from .base import GeneratorInfo, register


class RuleGenerator:
    def __init__(self, **params) -> None:
        known = {f.name for f in fields(RuleParams)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown rule-engine option(s) {sorted(unknown)}; known: {sorted(known)}")
        self.params = dict(params)
        self.info = GeneratorInfo(
            name="rules",
            version=f"rules-{RULES_VERSION}",
            checkpoint=None,
            description="trance_assets rule engine (chord-tone anchoring, motifs, cadences)",
            options=dict(params),
        )

    def generate(self, key: str, bpm: float, chord_progression: Sequence[str], bars: int, seed: int) -> Melody:
        return generate(key, bpm, list(chord_progression), bars, seed, **self.params)


register("rules", RuleGenerator)
