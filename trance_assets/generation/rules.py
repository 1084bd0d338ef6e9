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
        for f in fields(RuleParams):  # check the values now, not at the first generate() call
            if f.name not in params:
                continue
            v, default = params[f.name], f.default
            if isinstance(default, bool):
                ok = isinstance(v, bool)
            elif isinstance(default, (int, float)) or default is None:
                ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or (default is None and v is None)
            else:
                ok = True
            if not ok:
                raise ValueError(f"rule-engine option {f.name} must be {'true/false' if isinstance(default, bool) else 'a number'}, got {v!r}")
        RuleParams(**params).validate()
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
