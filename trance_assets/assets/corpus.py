"""The corpus: augmentation, quality filter, listening spot-checks, leak-free splits, training formats,
dataset card. Every asset refreshes by itself after its inputs change (automation conditions) and
re-uses the work of unchanged sources (a new Tier 1 / Tier 2 partition only adds its own examples).
"""

import hashlib
import json
import random
import time

import dagster as dg
import polars as pl

from ..audio.extraction import EXTRACTION_VERSION
from ..constants import CORPUS
from ..corpus.augment import AUGMENT_VERSION
from ..corpus.build import (
    augment_incremental,
    filter_incremental,
    split_table,
    tier1_examples,
    tier2_examples,
    tier3_examples,
    top_rejection_reasons,
)
from ..corpus.card import build_card, source_yields
from ..corpus.examples import from_table
from ..corpus.export import EXPORT_VERSION, REMI_NAME, TFRECORD_NAME, write_metadata, write_remi, write_tfrecords
from ..corpus.filtering import FILTER_VERSION, rule_failures, rule_values
from ..corpus.splits import SPLIT_VERSION, SPLITS, leakage
from ..io_managers import load_partition_values, read_stored, read_value
from ..metadata import md_image, md_table
from ..music.gold import GOLD_VERSION
from ..music.pianoroll import piano_roll_png
from ..music.rules import RULES_VERSION
from ..review import parse_reviews, reviews_template, write_melody_review_material
from ..resources import SettingsResource
from ..storage import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from .automation import AFTER_ITS_ASSET, CORPUS_AUTOMATION
from .extraction import MELODY as TIER2_MELODY
from .gold import GOLD

AUGMENTED = dg.AssetKey(["corpus", "augmented"])
FILTERED = dg.AssetKey(["corpus", "filtered"])
SPLITS_KEY = dg.AssetKey(["corpus", "splits"])
REVIEW_QUEUE = dg.AssetKey(["tier2", "review_queue"])
TIER3_KEYS = {
    "tier3/gigamidi": (dg.AssetKey(["tier3", "gigamidi_melodies"]), "gigamidi-1"),
    "tier3/public_domain": (dg.AssetKey(["tier3", "public_domain_melodies"]), "public-domain-1"),
    "tier3/synthetic": (dg.AssetKey(["tier3", "synthetic_melodies"]), f"rules-{RULES_VERSION}"),
}
CODE_VERSIONS = {"augment": AUGMENT_VERSION, "filter": FILTER_VERSION, "split": SPLIT_VERSION, "export": EXPORT_VERSION}

def _stored(settings: SettingsResource, key: dg.AssetKey):
    """The stored value of an asset, or None when it was never materialized."""
    return read_stored(settings.storage_root, key.path)


def _corpus_dir(settings: SettingsResource):
    return settings.path("dataset", "corpus")


@dg.asset(
    key=AUGMENTED,
    group_name=CORPUS,
    deps=[GOLD, TIER2_MELODY, REVIEW_QUEUE, *(k for k, _ in TIER3_KEYS.values())],
    code_version=f"augment-{AUGMENT_VERSION}",
    kinds={"polars"},
    automation_condition=CORPUS_AUTOMATION,
)
def augmented(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[pl.DataFrame]:
    """Every usable source melody (Tier 1 verified, Tier 2 accepted and corpus-eligible, Tier 3),
    quantised to 16ths, plus its augmented copies: 12 keys, tempo ±5/±10%, octave ±1 where the range
    permits, velocity ±10 in place. Each copy records its parent and transforms."""
    p = settings.get_profile()
    root = settings.storage_root
    t1, t1_skipped = tier1_examples(load_partition_values(root, GOLD.path), code_version=f"gold-{GOLD_VERSION}")
    tier2 = load_partition_values(root, TIER2_MELODY.path)
    queue = _stored(settings, REVIEW_QUEUE)
    eligible = dict(zip(queue["partition_key"].to_list(), queue["corpus_eligible"].to_list())) if queue is not None else None
    if queue is None and tier2:
        context.log.warning("tier2/review_queue is not materialized: review verdicts cannot be applied; accepted Tier 2 melodies are used")
    t2, t2_skipped = tier2_examples(tier2, eligible, code_version=f"extraction-{EXTRACTION_VERSION}")
    t3 = []
    missing = []
    for source, (key, version) in TIER3_KEYS.items():
        value = _stored(settings, key)
        if value is None:
            missing.append(key.to_user_string())
            continue
        t3.extend(tier3_examples(value, source, code_version=version))
    sources = t1 + t2 + t3
    previous = _stored(settings, AUGMENTED)
    outcome = augment_incremental(sources, p.augment_policy(), previous)
    table = outcome.table
    counts = (
        table.group_by(["tier", "source"]).agg(pl.col("source_id").n_unique().alias("sources"), pl.len().alias("examples"), pl.col("licence").unique().sort().str.join("; ").alias("licences")).sort(["tier", "source"])
        if len(table)
        else pl.DataFrame()
    )
    skipped = t1_skipped + t2_skipped
    context.log.info(f"{len(sources)} sources -> {len(table)} examples ({outcome.new_sources} new, {outcome.reused_sources} reused) in {outcome.seconds:.2f} s")
    first = [ex.to_melody() for ex in from_table(table.head(3))] if len(table) else []
    return dg.Output(
        table,
        metadata={
            "sources": len(sources),
            "examples": len(table),
            "new_sources": outcome.new_sources,
            "reused_sources": outcome.reused_sources,
            "seconds": round(outcome.seconds, 3),
            "examples_per_second": round(len(table) / outcome.seconds, 1) if outcome.seconds > 0 else None,
            "policy": p.augment_policy().describe(),
            "augmentation": dg.MetadataValue.json(outcome.stats.as_dict()),
            "by_source": md_table(counts.to_dicts()) if len(counts) else "none",
            "not_used": md_table(skipped, ["partition", "file", "reason"]) if skipped else "none",
            "unverified_tier1_files": "\n".join(s["file"] for s in t1_skipped if s["reason"].startswith("unverified")) or "none",
            "tier3_not_materialized": ", ".join(missing) or "none",
            "example": md_image(piano_roll_png(first), "a source and its first copies") if first else "none",
        },
    )


@dg.asset(key=FILTERED, group_name=CORPUS, code_version=f"filter-{FILTER_VERSION}", kinds={"polars", "miditok"}, automation_condition=CORPUS_AUTOMATION)
def filtered(context: dg.AssetExecutionContext, settings: SettingsResource, augmented: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """The quality filter of EVALUATION.md with per-tier thresholds, including an exact MidiTok REMI
    roundtrip. Every rejection is recorded (file, tier, source, rule, value) in
    storage/dataset/corpus/rejections.{parquet,csv}; accepted examples keep their REMI token ids."""
    p = settings.get_profile()
    thresholds = {t: p.quality_thresholds(t) for t in (1, 2, 3)}
    cache_path = settings.path("cache", "corpus", "verdicts")
    cache = read_value(cache_path) if cache_path.with_name("verdicts.parquet").exists() else None

    def progress(done: int, total: int) -> None:
        context.log.info(f"filtered {done}/{total} examples")

    out = filter_incremental(augmented, thresholds, cache=cache, workers=p.corpus_workers, progress=progress)
    atomic_write_parquet(cache_path.with_name("verdicts.parquet"), out.verdicts)
    corpus = _corpus_dir(settings)
    rej_parquet = atomic_write_parquet(corpus / "rejections.parquet", out.rejections)
    rej_csv = atomic_write_text(corpus / "rejections.csv", out.rejections.write_csv())
    yields = [
        {"tier": t, "sources": d["sources"], "sources_accepted": d["sources_accepted"], "examples": d["examples"], "accepted": d["accepted"], "example_yield": round(d["accepted"] / d["examples"], 3) if d["examples"] else None}
        for t, d in out.by_tier.items()
    ]
    by_rule = out.rejections.group_by(["tier", "rule"]).len().sort(["tier", "len"], descending=[False, True]).to_dicts() if len(out.rejections) else []
    return dg.Output(
        out.accepted,
        metadata={
            "examples": len(augmented),
            "accepted": len(out.accepted),
            "rejected": len(augmented) - len(out.accepted),
            "checked_now": out.checked,
            "verdicts_reused": out.reused,
            "seconds": round(out.seconds, 3),
            "checked_per_second": round(out.checked / out.seconds, 1) if out.seconds > 0 and out.checked else None,
            "thresholds": dg.MetadataValue.json({f"tier{t}": th.__dict__ for t, th in thresholds.items()}),
            "yield_by_tier": md_table(yields),
            "rejections_by_rule": md_table(by_rule),
            "top_rejection_reasons": md_table(top_rejection_reasons(out.rejections)),
            "rejections": md_table(out.rejections.to_dicts(), ["example_id", "tier", "source", "source_file", "rule", "value", "requirement", "detail"]),
            "rejections_table": dg.MetadataValue.path(str(rej_parquet)),
            "rejections_csv": dg.MetadataValue.path(str(rej_csv)),
        },
    )


@dg.asset_check(automation_condition=AFTER_ITS_ASSET, asset=filtered, description="Every accepted example, augmented copies included, satisfies every rule; "
                "the REMI roundtrip is re-verified on a sample with the independent Melody-based implementation.")
def filtered_satisfies_every_rule(context: dg.AssetCheckExecutionContext, settings: SettingsResource, filtered: pl.DataFrame) -> dg.AssetCheckResult:
    from ..formats.remi import remi_roundtrip

    p = settings.get_profile()
    examples = from_table(filtered)
    failing = []
    for ex in examples:
        fails = rule_failures(rule_values(ex), p.quality_thresholds(ex.tier), ex.tempo_meaningful)
        if fails:
            failing.append({"example_id": ex.example_id, "rules": ", ".join(f[0] for f in fails)})
    sample = random.Random(0).sample(examples, min(200, len(examples)))
    remi_bad = [ex.example_id for ex in sample if not remi_roundtrip(ex.to_melody()).ok]
    no_tokens = int((filtered["remi_ids"].list.len() == 0).sum()) if len(filtered) else 0
    return dg.AssetCheckResult(
        passed=not failing and not remi_bad and no_tokens == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "checked": len(examples),
            "failing_rules": len(failing),
            "remi_sample": len(sample),
            "remi_sample_failures": ", ".join(remi_bad[:20]) or "none",
            "without_tokens": no_tokens,
            "failures": md_table(failing[:50]) if failing else "none",
        },
    )


@dg.asset(key=["corpus", "spot_check"], group_name=CORPUS, code_version="1", kinds={"csv"}, automation_condition=CORPUS_AUTOMATION)
def spot_check(context: dg.AssetExecutionContext, settings: SettingsResource, filtered: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Listening spot-check: a seeded random sample of accepted source melodies per tier (the plan's
    20-30), with a piano roll and a rendered WAV each, reviewed in the same reviews file as Tier 2."""
    p = settings.get_profile()
    sources = filtered.filter(pl.col("parent").is_null())
    reviews_dir = settings.path("reviews")
    reviews_file = reviews_dir / "reviews.csv"
    if not reviews_file.exists():
        atomic_write_text(reviews_file, reviews_template())
    reviews = parse_reviews(reviews_file.read_text(), str(reviews_file))
    rows = []
    gallery = []
    for tier in sorted(set(sources["tier"].to_list())):
        ids = sorted(sources.filter(pl.col("tier") == tier)["example_id"].to_list())
        chosen = sorted(random.Random(f"{p.split_seed}:{tier}").sample(ids, min(p.spot_check_per_tier, len(ids))))
        chosen_examples = {ex.example_id: ex for ex in from_table(sources.filter(pl.col("example_id").is_in(chosen)))}
        for eid in chosen:
            ex = chosen_examples[eid]
            folder = reviews_dir / "corpus" / f"tier{tier}" / eid
            stamp = ex.content_hash()[:16]
            made = (folder / "material.json").read_text() if (folder / "material.json").exists() else ""
            if stamp not in made:
                m = ex.to_melody()
                write_melody_review_material(folder, m)
                atomic_write_text(folder / "material.json", json.dumps({"content_hash": stamp, "example_id": eid}))
            r = reviews.get(eid)
            rows.append({"example_id": eid, "tier": tier, "source": ex.source, "source_file": ex.source_file, "verdict": r.verdict if r else "awaiting review", "material": str(folder)})
            if len([g for g in gallery if g[0] == tier]) < 2:
                gallery.append((tier, md_image((folder / "pianoroll.png").read_bytes(), eid).value))
    table = pl.DataFrame(rows, schema={"example_id": pl.String, "tier": pl.Int64, "source": pl.String, "source_file": pl.String, "verdict": pl.String, "material": pl.String})
    per_tier = []
    for tier in sorted(set(table["tier"].to_list())) if len(table) else []:
        t = table.filter(pl.col("tier") == tier)
        reviewed = t.filter(pl.col("verdict") != "awaiting review")
        flagged = t.filter(pl.col("verdict") == "flag")
        per_tier.append({"tier": tier, "queued": len(t), "reviewed": len(reviewed), "flagged": len(flagged), "flagged_share": round(len(flagged) / len(reviewed), 3) if len(reviewed) else None})
    return dg.Output(
        table,
        metadata={
            "queued": len(table),
            "per_tier": md_table(per_tier),
            "reviews_file": dg.MetadataValue.path(str(reviews_file)),
            "how_to_review": "Open each queued example's folder: look at pianoroll.png, listen to melody.wav, then add a row "
            "'example_id,pass|flag,reviewer,YYYY-MM-DD,note' to the reviews file and re-materialize this asset.",
            "queue": md_table(rows, ["example_id", "tier", "source", "verdict", "material"], max_rows=100),
            "piano_rolls": dg.MetadataValue.md("\n\n".join(g for _, g in gallery) or "_none queued_"),
        },
    )


@dg.asset_check(automation_condition=AFTER_ITS_ASSET, asset=spot_check, description="No tier has more than 30% of its reviewed spot-check examples flagged.")
def spot_check_flag_rate(spot_check: pl.DataFrame) -> dg.AssetCheckResult:
    bad = []
    for tier in sorted(set(spot_check["tier"].to_list())) if len(spot_check) else []:
        t = spot_check.filter(pl.col("tier") == tier)
        reviewed = t.filter(pl.col("verdict") != "awaiting review")
        flagged = t.filter(pl.col("verdict") == "flag")
        if len(reviewed) and len(flagged) / len(reviewed) > 0.30:
            bad.append(f"tier {tier}: {len(flagged)}/{len(reviewed)} flagged")
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"tiers_over_limit": "; ".join(bad) or "none", "awaiting_review": int((spot_check["verdict"] == "awaiting review").sum()) if len(spot_check) else 0},
    )


@dg.asset(key=SPLITS_KEY, group_name=CORPUS, code_version=f"split-{SPLIT_VERSION}", kinds={"polars"}, automation_condition=CORPUS_AUTOMATION)
def splits(context: dg.AssetExecutionContext, settings: SettingsResource, filtered: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """80/10/10 per tier, deterministic, grouped by composition: all copies of a source, Tier 1 and
    Tier 2 versions of one reference track, and identical interval sequences share a split.
    Tier 1's test split (sources only) is the evaluation's reference corpus."""
    p = settings.get_profile()
    table, a = split_table(filtered, fractions=p.split_fractions, seed=p.split_seed)
    corpus = _corpus_dir(settings)
    index = table.select("example_id", "split", "group", "tier", "source", "source_id", "parent", "source_file")
    atomic_write_text(corpus / "splits.csv", index.write_csv())
    reference = table.filter((pl.col("tier") == 1) & (pl.col("split") == "test") & pl.col("parent").is_null())
    atomic_write_text(corpus / "reference_corpus.csv", reference.select("example_id", "source_file", "title", "key", "bpm").write_csv())
    summary = (
        table.group_by(["tier", "split"]).agg(pl.col("group").n_unique().alias("groups"), pl.col("source_id").n_unique().alias("sources"), pl.len().alias("examples")).sort(["tier", "split"]).to_dicts()
        if len(table)
        else []
    )
    for row in summary:
        total = sum(r["examples"] for r in summary if r["tier"] == row["tier"])
        row["share"] = round(row["examples"] / total, 3)
    linked = table.filter((pl.col("tier") == 2) & (pl.col("link") != ""))["link"].unique().to_list()
    return dg.Output(
        table,
        metadata={
            "examples": len(table),
            "groups": len(set(a.group.values())),
            "fractions": str(tuple(p.split_fractions)),
            "by_tier_and_split": md_table(summary),
            "tier1_tier2_links": len(linked),
            "reference_corpus": len(reference),
            "reference_corpus_file": dg.MetadataValue.path(str(corpus / "reference_corpus.csv")),
            "splits_index": dg.MetadataValue.path(str(corpus / "splits.csv")),
        },
    )


@dg.asset_check(automation_condition=AFTER_ITS_ASSET, asset=splits, blocking=True, description="Zero leakage: no composition group and no identical pitch-interval sequence in two splits "
                "(interval sequences recomputed from the notes).")
def no_leakage(splits: pl.DataFrame) -> dg.AssetCheckResult:
    examples = from_table(splits)
    rows = [(s, g, ex.interval_signature()) for ex, s, g in zip(examples, splits["split"].to_list(), splits["group"].to_list())]
    leak = leakage(rows)
    return dg.AssetCheckResult(
        passed=leak.clean,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "examples": len(rows),
            "groups_in_several_splits": len(leak.groups_in_several_splits),
            "interval_sequences_in_several_splits": len(leak.intervals_in_several_splits),
            "offending_groups": ", ".join(leak.groups_in_several_splits[:20]) or "none",
        },
    )


def _split_rows(info: dict[str, dict]) -> list[dict]:
    return [{"split": s, **{k: v for k, v in d.items() if k != "path"}} for s, d in info.items()]


@dg.asset(key=["corpus", "remi_tokens"], group_name=CORPUS, code_version=f"export-{EXPORT_VERSION}", kinds={"miditok", "parquet"}, automation_condition=CORPUS_AUTOMATION)
def remi_tokens(context: dg.AssetExecutionContext, settings: SettingsResource, splits: pl.DataFrame) -> dg.MaterializeResult:
    """MidiTok REMI (16th-note grid, 32 velocities, chords, tempos, time signatures; no programs):
    tokenizer.json and the token ids per split as parquet."""
    import tempfile
    from pathlib import Path

    from ..formats.remi import remi_config, remi_tokenizer

    tok = remi_tokenizer()
    with tempfile.TemporaryDirectory() as d:
        tok.save(Path(d) / "tokenizer.json")
        tokenizer_json = (Path(d) / "tokenizer.json").read_bytes()
    corpus = _corpus_dir(settings)
    info = write_remi(corpus, splits, tokenizer_json)
    cfg = remi_config()
    return dg.MaterializeResult(
        metadata={
            "tokenizer": dg.MetadataValue.path(str(corpus / "tokenizer.json")),
            "vocab_size": len(tok),
            "config": dg.MetadataValue.json({"beat_res": {str(k): v for k, v in cfg.beat_res.items()}, "num_velocities": cfg.num_velocities, "use_chords": cfg.use_chords, "use_tempos": cfg.use_tempos, "use_time_signatures": cfg.use_time_signatures, "use_programs": cfg.use_programs}),
            "splits": md_table(_split_rows(info)),
            "files": dg.MetadataValue.md("\n".join(f"- `{d['path']}`" for d in info.values())),
        },
        data_version=dg.DataVersion(hashlib.sha256("\n".join(splits["content_hash"].to_list()).encode()).hexdigest()[:16]),
    )


@dg.asset(key=["corpus", "notesequence_tfrecords"], group_name=CORPUS, code_version=f"export-{EXPORT_VERSION}", kinds={"tensorflow"}, automation_condition=CORPUS_AUTOMATION)
def notesequence_tfrecords(context: dg.AssetExecutionContext, settings: SettingsResource, splits: pl.DataFrame) -> dg.MaterializeResult:
    """note-seq NoteSequence protos in one TFRecord file per split (length + masked CRC32C framing),
    readable by tf.data.TFRecordDataset and Magenta's tools."""
    t0 = time.perf_counter()
    info = write_tfrecords(_corpus_dir(settings), splits)
    seconds = time.perf_counter() - t0
    n = sum(d["examples"] for d in info.values())
    return dg.MaterializeResult(
        metadata={
            "examples": n,
            "seconds": round(seconds, 3),
            "examples_per_second": round(n / seconds, 1) if seconds > 0 else None,
            "splits": md_table(_split_rows(info)),
            "files": dg.MetadataValue.md("\n".join(f"- `{d['path']}`" for d in info.values())),
        }
    )


@dg.asset(key=["corpus", "metadata"], group_name=CORPUS, code_version=f"export-{EXPORT_VERSION}", kinds={"json"}, automation_condition=CORPUS_AUTOMATION)
def metadata(context: dg.AssetExecutionContext, settings: SettingsResource, splits: pl.DataFrame) -> dg.MaterializeResult:
    """One JSON per example (source, tier, original key and BPM, augmentation, licence, content hash,
    parent, transforms, split, group, code versions) and examples.parquet, an index of them all."""
    corpus = _corpus_dir(settings)
    info = write_metadata(corpus, splits, CODE_VERSIONS)
    sample = splits.head(1)
    example = None
    if len(sample):
        row = sample.row(0, named=True)
        example = json.loads((corpus / row["split"] / "metadata" / f"{row['example_id']}.json").read_text())
    return dg.MaterializeResult(
        metadata={
            "examples": sum(d["examples"] for d in info.values()),
            "splits": md_table(_split_rows(info)),
            "index": dg.MetadataValue.path(str(corpus / "examples.parquet")),
            "example": dg.MetadataValue.json(example) if example else "none",
        }
    )


def _criteria(settings: SettingsResource, splits: pl.DataFrame) -> list[dict]:
    """The plan's success criteria with the profile's thresholds, measured on the files on disk."""
    from ..formats.tfrecord import read_tfrecord

    p = settings.get_profile()
    corpus = _corpus_dir(settings)
    sources = splits.filter(pl.col("parent").is_null())
    n_by_tier = {t: sources.filter(pl.col("tier") == t).height for t in (1, 2, 3)}
    rows = [
        {"criterion": "Tier 1 source melodies", "required": f">= {p.min_tier1_sources}", "actual": n_by_tier[1], "ok": n_by_tier[1] >= p.min_tier1_sources},
        {"criterion": "Tier 2 source melodies", "required": f">= {p.min_tier2_sources}", "actual": n_by_tier[2], "ok": n_by_tier[2] >= p.min_tier2_sources},
        {"criterion": "Tier 3 source melodies (before augmentation)", "required": f">= {p.min_tier3_sources}", "actual": n_by_tier[3], "ok": n_by_tier[3] >= p.min_tier3_sources},
    ]
    with_tokens = int((splits["remi_ids"].list.len() > 0).sum()) if len(splits) else 0
    rows.append({"criterion": "REMI roundtrip passed (every corpus example)", "required": "100%", "actual": f"{with_tokens}/{len(splits)}", "ok": with_tokens == len(splits) and len(splits) > 0})
    tf_total, remi_total = 0, 0
    for s in SPLITS:
        path = corpus / s / TFRECORD_NAME
        if path.exists():
            tf_total += sum(1 for _ in read_tfrecord(path))
        rp = corpus / s / REMI_NAME
        if rp.exists():
            remi_total += pl.read_parquet(rp.read_bytes()).height
    rows.append({"criterion": "every example in NoteSequence TFRecords", "required": str(len(splits)), "actual": tf_total, "ok": tf_total == len(splits) and len(splits) > 0})
    rows.append({"criterion": "every example in REMI token files", "required": str(len(splits)), "actual": remi_total, "ok": remi_total == len(splits) and len(splits) > 0})
    return rows


CRITERIA_CHECKS = ("tier1_count", "tier2_count", "tier3_count", "remi_roundtrip_100", "notesequence_complete", "remi_complete")
CARD = dg.AssetKey(["corpus", "dataset_card"])


@dg.asset(
    key=CARD,
    group_name=CORPUS,
    deps=[dg.AssetKey(["corpus", "remi_tokens"]), dg.AssetKey(["corpus", "notesequence_tfrecords"]), dg.AssetKey(["corpus", "metadata"])],
    code_version="card-1",
    kinds={"markdown"},
    automation_condition=CORPUS_AUTOMATION,
    check_specs=[dg.AssetCheckSpec(name, asset=CARD, description=d) for name, d in zip(CRITERIA_CHECKS, (
        "Tier 1 source melodies >= the profile minimum (full: 50).",
        "Tier 2 source melodies >= the profile minimum (full: 300).",
        "Tier 3 source melodies before augmentation >= the profile minimum (full: 500).",
        "Every corpus example passed the REMI roundtrip (100%).",
        "Every example is in the NoteSequence TFRecords (records counted on disk).",
        "Every example is in the REMI token files (rows counted on disk).",
    ))],
)
def dataset_card(context: dg.AssetExecutionContext, settings: SettingsResource, augmented: pl.DataFrame, splits: pl.DataFrame):
    """The dataset card (markdown + histograms): counts per tier, source and split before and after
    augmentation, yields, top rejection reasons, distributions of the training set against the
    reference corpus and their pitch-class KL, and the success criteria."""
    p = settings.get_profile()
    corpus = _corpus_dir(settings)
    rej_path = corpus / "rejections.parquet"
    rejections = pl.read_parquet(rej_path.read_bytes()) if rej_path.exists() else pl.DataFrame({"tier": [], "rule": []})
    source_counts, yields = source_yields(augmented, splits)
    criteria = _criteria(settings, splits)
    links = {name: f"card/{name}.png" for name in ("pitch_classes", "tempo", "keys", "ranges")}
    card = build_card(splits, source_counts=source_counts, rejections=rejections, yields=yields, criteria=criteria, profile=p.name, image_links=links)
    for name in links:
        atomic_write_bytes(corpus / "card" / f"{name}.png", getattr(card.figures, name))
    card_path = atomic_write_text(corpus / "DATASET_CARD.md", card.markdown)
    # The UI shows the same card with the pictures inline.
    ui_md = card.markdown
    for name, link in links.items():
        ui_md = ui_md.replace(f"({link})", "(" + md_image(getattr(card.figures, name)).value.split("(", 1)[1])
    yield dg.MaterializeResult(
        metadata={
            "dataset_card": dg.MetadataValue.md(ui_md),
            "card_file": dg.MetadataValue.path(str(card_path)),
            "kl_train_to_reference_bits": card.kl_train_to_reference_bits if card.kl_train_to_reference_bits is not None else "n/a",
            "examples": len(splits),
            "profile": p.name,
        }
    )
    for name, row in zip(CRITERIA_CHECKS, criteria):
        yield dg.AssetCheckResult(
            check_name=name,
            passed=bool(row["ok"]),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"required": row["required"], "actual": str(row["actual"]), "profile": p.name},
        )
