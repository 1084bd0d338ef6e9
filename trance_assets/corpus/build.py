"""Corpus building steps over tables, incremental: what the corpus assets call.

- `source_examples_*`: melodies of each tier → normalised source `Example`s with provenance.
- `augment_incremental`: augmented table; sources whose content and policy did not change reuse
  their previous rows (a new Tier 1 / Tier 2 partition only adds its own examples).
- `filter_incremental`: verdicts for every augmented example, reusing cached verdicts by
  `verdict_key` (content + thresholds + filter version); returns the accepted table (with REMI
  token ids) and the rejection table (one row per failed rule).

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import polars as pl

from ..music.melody import Melody
from ..music.quality import QualityThresholds
from .augment import AUGMENT_VERSION, AugmentPolicy, AugmentStats, augment
from .examples import Example, concat_tables, empty_table, example_from_melody, from_table, normalise, to_table
from .filtering import FILTER_VERSION, filter_examples, verdict_key
from .splits import DEFAULT_FRACTIONS, Member, SplitAssignment, assign_splits

SYNTHETIC_SOURCE = "tier3/synthetic"


# ---- sources -----------------------------------------------------------------------------------


def link_for_track(partition_key: str) -> str:
    """The composition link of a reference track (shared by its Tier 1 and Tier 2 versions)."""
    return f"track:{partition_key}" if partition_key else ""


TIER1_PROVENANCE = (
    "file", "sha256", "title", "artist", "verified_by", "verified_on", "manifest_row_hash", "lead_track_index", "lead_track_name",
    "lead_track_reason", "key_source", "bpm_source", "chords_source", "reference_track", "reference_partition", "warnings", "code_version",
)
TIER2_PROVENANCE = ("source_sha256", "extraction_method", "date_added", "partition_key", "extraction_version", "code_version")


def _provenance(attributes: dict, keys: tuple[str, ...], code_version: str | None) -> dict:
    prov = {k: attributes.get(k) for k in keys}
    if code_version:
        prov["code_version"] = code_version
    return prov


def tier1_examples(melodies: dict[str, Melody], code_version: str | None = None) -> tuple[list[Example], list[dict]]:
    """Verified, accepted Tier 1 melodies → examples; the rest are listed (partition, reason).
    `code_version`: of the step that made the melodies (else the melody's own attribute)."""
    out, skipped = [], []
    for pk, m in sorted(melodies.items()):
        a = m.attributes
        if not a.get("verified"):
            skipped.append({"partition": pk, "file": a.get("file", ""), "reason": "unverified (no manifest entry or no verified_by)"})
            continue
        if not a.get("accepted", True):
            skipped.append({"partition": pk, "file": a.get("file", ""), "reason": f"rejected by the Tier 1 rules: {a.get('rejection', '')}"})
            continue
        ref = a.get("reference_partition", "")
        out.append(
            normalise(
                example_from_melody(
                    m,
                    source="tier1/gold",
                    licence=a.get("licence", ""),
                    source_file=a.get("source_path") or a.get("file", ""),
                    link=link_for_track(ref),
                    title=a.get("title", ""),
                    name=pk,
                    provenance=_provenance(a, TIER1_PROVENANCE, code_version) | {"partition": pk},
                )
            )
        )
    return out, skipped


def tier2_examples(melodies: dict[str, Melody], eligible: dict[str, bool] | None, code_version: str | None = None) -> tuple[list[Example], list[dict]]:
    """Tier 2 melodies that are accepted and corpus-eligible (review verdicts) → examples."""
    out, skipped = [], []
    for pk, m in sorted(melodies.items()):
        a = m.attributes
        if not a.get("accepted"):
            skipped.append({"partition": pk, "file": a.get("source_track", ""), "reason": f"rejected by the Tier 2 rules: {a.get('rejection', '')}"})
            continue
        if eligible is not None and not eligible.get(pk, False):
            skipped.append({"partition": pk, "file": a.get("source_track", ""), "reason": "kept out by the review queue (batch rejected)"})
            continue
        out.append(
            normalise(
                example_from_melody(
                    m,
                    source="tier2/audio_extraction",
                    licence=a.get("licence", "reference audio: see source track (training use only)"),
                    source_file=a.get("source_track", ""),
                    link=link_for_track(pk),
                    title=a.get("title", "") or pk,
                    name=pk,
                    provenance=_provenance(a, TIER2_PROVENANCE, code_version),
                )
            )
        )
    return out, skipped


def tier3_examples(melodies: Iterable[Melody], source: str, code_version: str | None = None) -> list[Example]:
    """Tier 3 melodies → examples; every attribute is kept as provenance (`code_version` is added
    when the melody does not carry one)."""
    out = []
    for m in melodies:
        a = m.attributes
        if source == SYNTHETIC_SOURCE:
            file = f"rule engine {a.get('generator', '')}".strip()
        else:
            file = a.get("source_location") or a.get("corpus_path") or ""
            if source == "tier3/gigamidi":
                file = f"{file} md5={a.get('md5', '')} track={a.get('track', '')}"
        prov = dict(a)
        if code_version:
            prov.setdefault("code_version", code_version)
        out.append(
            normalise(
                example_from_melody(
                    m,
                    source=source,
                    licence=a.get("licence") or a.get("license", ""),
                    source_file=file,
                    tempo_meaningful=bool(a.get("tempo_meaningful", True)),
                    title=a.get("title", "") or m.name,
                    provenance=prov,
                )
            )
        )
    return out


# ---- augmentation --------------------------------------------------------------------------------


def policy_hash(policy: AugmentPolicy) -> str:
    return hashlib.sha1(json.dumps(asdict(policy), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class AugmentOutcome:
    table: pl.DataFrame
    stats: AugmentStats
    reused_sources: int = 0
    new_sources: int = 0
    seconds: float = 0.0


def augment_incremental(sources: list[Example], policy: AugmentPolicy, previous: pl.DataFrame | None = None) -> AugmentOutcome:
    """Augment every source; rows of sources whose augment key is unchanged come from `previous`."""
    t0 = time.perf_counter()
    ph = policy_hash(policy)
    prev_by_source: dict[str, pl.DataFrame] = {}
    if previous is not None and len(previous) and "augment_key" in previous.columns:
        for (sid,), part in previous.group_by(["source_id"], maintain_order=True):
            prev_by_source[sid] = part
    stats = AugmentStats()
    parts: list[pl.DataFrame] = []
    outcome = AugmentOutcome(empty_table(), stats)
    fresh: list[Example] = []
    fresh_keys: list[str] = []
    for src in sources:
        key = f"{src.content_hash()[:24]}:{ph}:{AUGMENT_VERSION}:{src.example_id}"
        old = prev_by_source.get(src.source_id)
        if old is not None and old["augment_key"][0] == key:
            if fresh:
                parts.append(to_table(fresh, {"augment_key": fresh_keys}))
                fresh, fresh_keys = [], []
            parts.append(old)
            stats.sources += 1
            stats.copies += len(old) - 1
            outcome.reused_sources += 1
            continue
        copies = augment(src, policy, stats)
        fresh.extend(copies)
        fresh_keys.extend([key] * len(copies))
        outcome.new_sources += 1
    if fresh:
        parts.append(to_table(fresh, {"augment_key": fresh_keys}))
    outcome.table = concat_tables(parts)
    outcome.seconds = time.perf_counter() - t0
    return outcome


# ---- filtering ----------------------------------------------------------------------------------

VERDICT_SCHEMA = {
    "verdict_key": pl.String,
    "passed": pl.Boolean,
    "values": pl.String,  # JSON rule -> value
    "failures": pl.String,  # JSON [[rule, value, requirement], ...]
    "remi_detail": pl.String,
    "remi_ids": pl.List(pl.UInt16),
}

REJECTION_SCHEMA = {
    "example_id": pl.String,
    "tier": pl.Int8,
    "source": pl.String,
    "source_file": pl.String,
    "parent": pl.String,
    "transforms": pl.String,
    "rule": pl.String,
    "value": pl.String,
    "requirement": pl.String,
    "detail": pl.String,
}


@dataclass
class FilterOutcome:
    accepted: pl.DataFrame
    rejections: pl.DataFrame
    verdicts: pl.DataFrame  # the cache to pass back next time
    checked: int = 0
    reused: int = 0
    seconds: float = 0.0
    by_tier: dict = field(default_factory=dict)  # tier -> {"examples", "accepted", "sources", "sources_accepted"}


def _fmt_value(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def filter_incremental(
    augmented: pl.DataFrame,
    thresholds_by_tier: dict[int, QualityThresholds],
    *,
    cache: pl.DataFrame | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> FilterOutcome:
    t0 = time.perf_counter()
    examples = from_table(augmented)
    keys = [verdict_key(ex, thresholds_by_tier[ex.tier]) for ex in examples]
    cached: dict[str, dict] = {}
    if cache is not None and len(cache):
        for row in cache.iter_rows(named=True):
            cached[row["verdict_key"]] = row
    todo = [(i, ex) for i, (ex, k) in enumerate(zip(examples, keys)) if k not in cached]
    verdicts = filter_examples([ex for _, ex in todo], thresholds_by_tier, workers=workers, progress=progress)
    for (i, _), v in zip(todo, verdicts):
        cached[keys[i]] = {
            "verdict_key": keys[i],
            "passed": v.passed,
            "values": json.dumps(v.values),
            "failures": json.dumps([list(f) for f in v.failures]),
            "remi_detail": v.remi_detail,
            "remi_ids": v.remi_ids.tolist(),
        }
    rows = [cached[k] for k in keys]
    accepted_idx = [i for i, r in enumerate(rows) if r["passed"]]
    accepted = augmented[accepted_idx] if accepted_idx else augmented.clear()
    accepted = accepted.with_columns(
        pl.Series("remi_ids", [rows[i]["remi_ids"] for i in accepted_idx], dtype=pl.List(pl.UInt16)),
        pl.Series("quality", [rows[i]["values"] for i in accepted_idx], dtype=pl.String),
    )
    rej = {k: [] for k in REJECTION_SCHEMA}
    for ex, r in zip(examples, rows):
        if r["passed"]:
            continue
        for rule, value, req in json.loads(r["failures"]):
            rej["example_id"].append(ex.example_id)
            rej["tier"].append(ex.tier)
            rej["source"].append(ex.source)
            rej["source_file"].append(ex.source_file)
            rej["parent"].append(ex.parent)
            rej["transforms"].append(" ".join(ex.transforms))
            rej["rule"].append(rule)
            rej["value"].append(_fmt_value(value))
            rej["requirement"].append(req)
            rej["detail"].append(r["remi_detail"] if rule == "remi_roundtrip" else "")
    rejections = pl.DataFrame(rej, schema=REJECTION_SCHEMA)
    by_tier: dict[int, dict] = {}
    for ex, r in zip(examples, rows):
        d = by_tier.setdefault(ex.tier, {"examples": 0, "accepted": 0, "sources": set(), "sources_accepted": set()})
        d["examples"] += 1
        d["sources"].add(ex.source_id)
        if r["passed"]:
            d["accepted"] += 1
            d["sources_accepted"].add(ex.source_id)
    by_tier = {t: {**d, "sources": len(d["sources"]), "sources_accepted": len(d["sources_accepted"])} for t, d in sorted(by_tier.items())}
    keep = set(keys)
    cache_out = pl.DataFrame([cached[k] for k in dict.fromkeys(keys)] if keep else [], schema=VERDICT_SCHEMA)
    return FilterOutcome(
        accepted=accepted,
        rejections=rejections,
        verdicts=cache_out,
        checked=len(todo),
        reused=len(examples) - len(todo),
        seconds=time.perf_counter() - t0,
        by_tier=by_tier,
    )


def top_rejection_reasons(rejections: pl.DataFrame, n: int = 10) -> list[dict]:
    if not len(rejections):
        return []
    c = Counter(zip(rejections["tier"].to_list(), rejections["rule"].to_list()))
    return [{"tier": t, "rule": r, "examples": k} for (t, r), k in c.most_common(n)]



# ---- splits -------------------------------------------------------------------------------------


def split_table(filtered: pl.DataFrame, *, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> tuple[pl.DataFrame, SplitAssignment]:
    """The filtered table with `split` and `group` columns (see `splits.assign_splits`): each example
    joins its source's group, sources are linked by `link` and by their pitch-interval sequence."""
    examples = from_table(filtered)
    sigs = {ex.source_id: ex.interval_signature() for ex in examples if ex.parent is None}
    members = [Member(ex.example_id, ex.source_id, ex.tier, ex.link, sigs.get(ex.source_id, "")) for ex in examples]
    a = assign_splits(members, fractions=fractions, seed=seed)
    table = filtered.with_columns(
        pl.Series("split", [a.split[m.example_id] for m in members], dtype=pl.String),
        pl.Series("group", [a.group[m.example_id] for m in members], dtype=pl.String),
    )
    return table, a
