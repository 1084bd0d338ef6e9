"""Tier 3, synthetic: melodies from the project's own rule engine."""


import time

import dagster as dg

from ..constants import TIER3
from ..metadata import md_image, md_table
from ..music.melody import MelodySet
from ..music.pianoroll import piano_roll_png
from ..music.quality import QualityThresholds
from ..music.rules import RULES_VERSION
from ..music.summary import key_counts, melody_row
from ..music.synthetic import SYNTHETIC_LICENSE, synthetic_melodies as make_synthetic
from ..resources import SettingsResource
from .automation import AFTER_ITS_ASSET, BULK_AUTOMATION


@dg.asset(key=["tier3", "synthetic_melodies"], group_name=TIER3, code_version=f"rules-{RULES_VERSION}", kinds={"midi"}, automation_condition=BULK_AUTOMATION)
def synthetic_melodies(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[MelodySet]:
    """Tier 3: rule-engine melodies across keys, progressions, densities and registers (labelled synthetic)."""
    profile = settings.get_profile()
    t0 = time.perf_counter()
    melodies = make_synthetic(
        profile.synthetic_count,
        seed=profile.synthetic_seed,
        bars_choices=profile.synthetic_bars,
        bpm_range=profile.synthetic_bpm_range,
    )
    seconds = time.perf_counter() - t0
    rows = [melody_row(m, QualityThresholds.for_tier(3)) for m in melodies]
    failing = [r for r in rows if not r["passes_quality"]]
    context.log.info(f"{len(melodies)} synthetic melodies in {seconds:.2f} s; {len(failing)} fail the Tier 3 rules")
    return dg.Output(
        melodies,
        metadata={
            "count": len(melodies),
            "passing_tier3_quality": len(rows) - len(failing),
            "licence": SYNTHETIC_LICENSE,
            "generator": f"rules {RULES_VERSION}",
            "seed": profile.synthetic_seed,
            "profile": profile.name,
            "seconds": round(seconds, 3),
            "melodies_per_second": round(len(melodies) / seconds, 1) if seconds > 0 else None,
            "keys": dg.MetadataValue.json(key_counts(melodies)),
            "summary": md_table(rows, ["name", "key", "bpm", "bars", "notes", "range_semitones", "scale_compliance", "progression"]),
            "examples": md_image(piano_roll_png(melodies.melodies[:4]), "piano roll of the first melodies")
            if len(melodies)
            else "none",
        },
    )


@dg.asset_check(automation_condition=AFTER_ITS_ASSET, asset=synthetic_melodies, description="Every synthetic melody passes the Tier 3 quality rules.")
def synthetic_melodies_pass_quality(synthetic_melodies: MelodySet) -> dg.AssetCheckResult:
    rows = [melody_row(m, QualityThresholds.for_tier(3)) for m in synthetic_melodies]
    failing = [r for r in rows if not r["passes_quality"]]
    return dg.AssetCheckResult(
        passed=not failing,
        metadata={"checked": len(rows), "failing": len(failing), "failures": md_table(failing, ["name", "quality_failures"])},
    )
