"""The corpus quality filter of EVALUATION.md, as pure functions over a Melody.

`check_melody` returns every rule's measured value and whether it passed, so callers can record
rejections with the rule and the value (never just a boolean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .analysis import polyphony_ratio, scale_compliance
from .melody import Melody

SCALE_COMPLIANCE_BY_TIER = {1: 0.90, 2: 0.70, 3: 0.60}


@dataclass(frozen=True)
class QualityThresholds:
    min_notes: int = 8
    min_range_octaves: float = 1.0
    max_range_octaves: float = 3.0
    min_bpm: float = 120.0
    max_bpm: float = 160.0
    max_polyphony: float = 0.30
    min_scale_compliance: float = 0.60

    @classmethod
    def for_tier(cls, tier: int, **overrides) -> "QualityThresholds":
        if tier not in SCALE_COMPLIANCE_BY_TIER:
            raise ValueError(f"tier must be 1, 2 or 3, got {tier!r}")
        return cls(**{"min_scale_compliance": SCALE_COMPLIANCE_BY_TIER[tier], **overrides})


@dataclass(frozen=True)
class RuleResult:
    rule: str
    value: float | int | None
    passed: bool
    requirement: str


@dataclass(frozen=True)
class QualityReport:
    results: tuple[RuleResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def reason(self) -> str:
        """One line naming every failed rule with its value and requirement ('' when passed)."""
        return "; ".join(f"{r.rule}={_fmt(r.value)} (needs {r.requirement})" for r in self.failures)

    def as_dict(self) -> dict:
        return {r.rule: r.value for r in self.results}


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def check_melody(
    melody: Melody, thresholds: QualityThresholds, *, tempo_meaningful: bool = True
) -> QualityReport:
    """Apply the EVALUATION.md corpus rules (all but the REMI roundtrip, see formats.remi)."""
    t = thresholds
    notes = melody.notes
    results = [RuleResult("notes", len(notes), len(notes) >= t.min_notes, f">= {t.min_notes}")]
    if notes:
        octaves = (max(n.pitch for n in notes) - min(n.pitch for n in notes)) / 12
    else:
        octaves = None
    results.append(
        RuleResult(
            "range_octaves",
            octaves,
            octaves is not None and t.min_range_octaves <= octaves <= t.max_range_octaves,
            f"{t.min_range_octaves:g}-{t.max_range_octaves:g} octaves",
        )
    )
    if tempo_meaningful:
        results.append(
            RuleResult("bpm", melody.bpm, t.min_bpm <= melody.bpm <= t.max_bpm, f"{t.min_bpm:g}-{t.max_bpm:g} BPM")
        )
    poly = polyphony_ratio(notes)
    results.append(RuleResult("polyphony", poly, poly is not None and poly <= t.max_polyphony, f"<= {t.max_polyphony:g}"))
    comp = scale_compliance(notes, melody.key_obj)
    results.append(
        RuleResult(
            "scale_compliance", comp, comp is not None and comp >= t.min_scale_compliance, f">= {t.min_scale_compliance:g}"
        )
    )
    return QualityReport(tuple(results))
