"""The automation conditions the assets use (declarative automation, evaluated by
`automation_sensor`).

Each trigger is remembered until the asset is requested or materialized, then forgotten: an asset is
requested once per reason, so a run that fails (or skips, like a model with no training data yet)
is not re-requested on every tick; the next upstream update, code change or a click on Materialize
brings it back. Unlike `AutomationCondition.eager()`, a missing asset is requested on the very first
evaluation (a fresh instance has no history to protect) and a missing dependency does not block it
(the corpus builds from whichever tiers have material).
"""

import dagster as dg

AC = dg.AutomationCondition
_HANDLED = (AC.newly_requested() | AC.newly_updated()).with_label("requested or updated")


def _once(trigger: dg.AutomationCondition) -> dg.AutomationCondition:
    return trigger.since(_HANDLED)


# Tier 3 sources (no upstream): when missing or their code changed.
BULK_AUTOMATION = _once(AC.newly_missing() | AC.code_version_changed()) & ~AC.in_progress()

# Corpus, evaluation and models: after any input changed, when missing, or their code changed; never
# while an input is still being materialized.
CORPUS_AUTOMATION = (
    _once(AC.any_deps_updated() | AC.newly_missing() | AC.code_version_changed())
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
)

# The review queue: when any track's melody changes (after the per-track runs land; never blocked by a
# partition that failed, e.g. a corrupt file's).
REVIEW_AUTOMATION = _once(AC.any_deps_updated() | AC.newly_missing()) & ~AC.any_deps_in_progress() & ~AC.in_progress()


def waiting_for(keys, condition: dg.AutomationCondition = CORPUS_AUTOMATION) -> dg.AutomationCondition:
    """`condition`, held back while one of `keys` (direct dependencies it reads as inputs) has never
    been materialized and is not requested in the same tick: e.g. the benchmark report waits for the
    models it compares, a fine-tune for its base, the INT8 export for the fp32 one."""
    absent = AC.any_deps_match(AC.missing() & ~AC.will_be_requested()).allow(dg.AssetSelection.assets(*keys))
    return condition & ~absent.with_label("an input asset is missing")


# Checks. Declarative automation requests assets, not their checks: a check needs a condition of
# its own to run in automation's runs. WITH_ITS_ASSET: exactly when its asset is requested (same
# run) — for checks computed by the asset's own op (multi-assets that may be subset). AFTER_ITS_ASSET:
# with its asset, or after the asset was materialized by a run that did not run the check — for
# stand-alone @asset_check ops.
WITH_ITS_ASSET = AC.any_deps_match(AC.will_be_requested()).with_label("its asset is requested")
AFTER_ITS_ASSET = AC.any_deps_updated()
