"""The corpus end to end in Dagster: demo Tier 1 files (registered by `gold_melodies_sensor`),
synthetic and GigaMIDI (fixture shards) Tier 3 melodies → augmented → filtered → spot-check →
splits → REMI / NoteSequence / metadata → dataset card, with every check; then one more gold file
and the incremental re-materialization of `corpus/augmented` and `corpus/filtered`.

One module-scoped world runs the pipeline once (about half a minute); the tests read what it
recorded. Files written by the first corpus run that the incremental step rewrites are snapshotted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from gigamidi_fixture import write_fixture
from trance_assets.assets import corpus
from trance_assets.assets.bulk import GigaMidiResource, gigamidi_melodies
from trance_assets.assets.gold import gold_melody
from trance_assets.assets.synthetic import synthetic_melodies
from trance_assets.bulk.gigamidi import NOT_CONFIGURED
from trance_assets.corpus.splits import SPLITS
from trance_assets.demo import MANIFEST_COLUMNS, write_demo_data
from trance_assets.formats.tfrecord import read_tfrecord
from trance_assets.inbox import partition_key_for
from trance_assets.io_managers import StorageIOManager
from trance_assets.music.melody import Melody, Note
from trance_assets.music.rules import generate
from trance_assets.profiles import get_profile
from trance_assets.resources import SettingsResource
from trance_assets.sensors import gold_melodies_sensor

DEMO_GOLD = 10  # the demo profile needs >= 10 Tier 1 sources (min_tier1_sources)
UNLISTED = "unlisted.mid"  # no manifest row: unverified
CHROMATIC = "chromatic.mid"  # verified, fails the Tier 1 scale rule
LATE = "gold_late.mid"  # arrives after the first corpus build
ASSETS = [
    corpus.augmented,
    corpus.filtered,
    corpus.spot_check,
    corpus.splits,
    corpus.remi_tokens,
    corpus.notesequence_tfrecords,
    corpus.metadata,
    corpus.dataset_card,
]
CHECKS = [corpus.filtered_satisfies_every_rule, corpus.spot_check_flag_rate, corpus.no_leakage]
CRITERIA = ("tier1_count", "tier2_count", "tier3_count", "remi_roundtrip_100", "notesequence_complete", "remi_complete")


def values(mat) -> dict:
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def node_meta(result, node: str) -> dict:
    [mat] = result.asset_materializations_for_node(node)
    return values(mat)


def aged(path: Path, age_s: float = 60.0) -> None:
    t = time.time_ns() - int(age_s * 1e9)
    os.utime(path, ns=(t, t))


def append_manifest_rows(tier1: Path, rows: list[dict]) -> None:
    path = tier1 / "manifest.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writerows(rows)
    path.write_text(path.read_text() + buf.getvalue())


def manifest_row(file: str, m: Melody, title: str) -> dict:
    return {
        "file": file, "title": title, "artist": "corpus test", "key": m.key, "bpm": m.bpm,
        "chords": "", "verified_by": "corpus-test", "verified_on": "2026-01-01",
        "licence": "CC0-1.0", "notes": "", "reference_track": "",
    }  # fmt: skip


@dataclass
class World:
    settings: SettingsResource
    storage: Path
    tier1: Path
    corpus_dir: Path
    gigamidi_dir: Path
    gigamidi_roles: dict
    sensor_first: dg.SensorResult
    sensor_late: dg.SensorResult
    gold: dict  # partition key -> tier1/melody metadata
    synthetic_count: int
    gigamidi: dict  # tier3/gigamidi_melodies metadata
    first: dg.ExecuteInProcessResult  # the corpus run
    checks: dict  # (asset, check) -> AssetCheckEvaluation
    rejections_first: pl.DataFrame
    augmented_first: pl.DataFrame
    augmented_late: dict  # metadata of the incremental corpus/augmented run
    filtered_late: dict
    augmented_table_late: pl.DataFrame
    late_key: str
    meta: dict = field(default_factory=dict)  # node -> metadata of the first corpus run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("corpus")
    (tmp / "inbox").mkdir()
    settings = SettingsResource(profile="demo", storage_url=str(tmp / "storage"), inbox_dir=str(tmp / "inbox"))
    giga_dir = tmp / "gigamidi"
    roles = write_fixture(giga_dir)
    resources = {"settings": settings, "io_manager": StorageIOManager(settings=settings), "gigamidi": GigaMidiResource(local_dir=str(giga_dir))}

    summary = write_demo_data(settings.storage_url, tracks=0, tier1_extra=DEMO_GOLD, inbox=tmp / "inbox", log=lambda *a: None)
    tier1 = settings.local_dataset_dir("tier1")
    assert Path(summary["tier1"]) == tier1 and summary["tier1_files"] == DEMO_GOLD and summary["tracks"] == []
    (tier1 / UNLISTED).write_bytes(generate("Em", 140, ["Em", "C", "G", "D"], 8, seed=77).to_midi_bytes())
    chromatic = Melody(tuple(Note(float(i), 57 + i, 0.9) for i in range(19)), 138, "Am")
    (tier1 / CHROMATIC).write_bytes(chromatic.to_midi_bytes())
    append_manifest_rows(tier1, [manifest_row(CHROMATIC, chromatic, "Chromatic")])
    for p in tier1.iterdir():
        aged(p)

    with dg.DagsterInstance.ephemeral() as instance:

        def sensor_tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})
            result = gold_melodies_sensor(ctx)
            for req in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            return result

        def run_gold(result) -> dict:
            out = {}
            for req in result.run_requests:
                r = dg.materialize([gold_melody], instance=instance, resources=resources, partition_key=req.partition_key, tags=req.tags)
                out[req.partition_key] = node_meta(r, "tier1__melody")
            return out

        sensor_first = sensor_tick(None)
        gold = run_gold(sensor_first)

        synth = dg.materialize([synthetic_melodies], instance=instance, resources=resources)
        giga = dg.materialize([gigamidi_melodies], instance=instance, resources=resources)

        first = dg.materialize([*ASSETS, *CHECKS], instance=instance, resources=resources)
        corpus_dir = Path(settings.storage_url) / "dataset" / "corpus"
        checks = {(e.asset_key.to_user_string(), e.check_name): e for e in first.get_asset_check_evaluations()}
        rejections_first = pl.read_parquet(corpus_dir / "rejections.parquet")
        augmented_first = pl.read_parquet(Path(settings.storage_url) / "assets" / "corpus" / "augmented.parquet")
        meta = {n: node_meta(first, n) for n in ("corpus__augmented", "corpus__filtered", "corpus__splits", "corpus__dataset_card", "corpus__metadata", "corpus__spot_check")}

        # One more gold file and its manifest row: the sensor registers it, its partition runs, and
        # the corpus re-uses everything it already had.
        late = generate("Dm", 141, ["Dm", "Bb", "F", "C"], 16, seed=4242)
        (tier1 / LATE).write_bytes(late.to_midi_bytes())
        append_manifest_rows(tier1, [manifest_row(LATE, late, "Late arrival")])
        aged(tier1 / LATE)
        sensor_late = sensor_tick(sensor_first.cursor)
        gold.update(run_gold(sensor_late))
        aug_late = dg.materialize([corpus.augmented], instance=instance, resources=resources)
        filt_late = dg.materialize([corpus.augmented, corpus.filtered], selection=[corpus.FILTERED], instance=instance, resources=resources)

        yield World(
            settings=settings,
            storage=Path(settings.storage_url),
            tier1=tier1,
            corpus_dir=corpus_dir,
            gigamidi_dir=giga_dir,
            gigamidi_roles=roles,
            sensor_first=sensor_first,
            sensor_late=sensor_late,
            gold=gold,
            synthetic_count=node_meta(synth, "tier3__synthetic_melodies")["count"],
            gigamidi=node_meta(giga, "tier3__gigamidi_melodies"),
            first=first,
            checks=checks,
            rejections_first=rejections_first,
            augmented_first=augmented_first,
            augmented_late=node_meta(aug_late, "corpus__augmented"),
            filtered_late=node_meta(filt_late, "corpus__filtered"),
            augmented_table_late=pl.read_parquet(Path(settings.storage_url) / "assets" / "corpus" / "augmented.parquet"),
            late_key=partition_key_for(LATE),
            meta=meta,
        )


# ---- inputs ----------------------------------------------------------------------------------------


def test_gold_partitions_from_the_sensor(world):
    demo_files = [f"gold_extra_{i:02d}.mid" for i in range(1, DEMO_GOLD + 1)]
    first_keys = {partition_key_for(f) for f in [*demo_files, UNLISTED, CHROMATIC]}
    assert {r.partition_key for r in world.sensor_first.run_requests} == first_keys
    assert {r.partition_key for r in world.sensor_late.run_requests} == {world.late_key}
    assert set(world.gold) == first_keys | {world.late_key}
    for f in demo_files:
        md = world.gold[partition_key_for(f)]
        assert (md["verified"], md["accepted"], md["verified_by"]) == (True, True, "demo-generator"), f
    assert world.gold[partition_key_for(UNLISTED)]["verified"] is False
    chrom = world.gold[partition_key_for(CHROMATIC)]
    assert chrom["verified"] is True and chrom["accepted"] is False and "scale_compliance" in chrom["rejection"]


def test_gigamidi_fixture_source_materializes_melodies(world):
    md = world.gigamidi
    assert md["configured"] is True and md["count"] > 0
    assert md["licence"] == "CC BY-NC 4.0"
    assert md["source"] == f"local GigaMIDI parquet folder {world.gigamidi_dir}"
    stored = world.storage / "assets" / "tier3" / "gigamidi_melodies.melodies"
    index = pl.read_parquet(stored / "index.parquet")
    assert index.height == md["count"]
    for name in index["name"]:
        a = json.loads((stored / f"{name}.json").read_text())["attributes"]
        assert a["licence"] == "CC BY-NC 4.0" and a["md5"] in world.gigamidi_roles.values()


def test_gigamidi_without_a_source_materializes_nothing_and_says_so(settings, resources, instance):
    result = dg.materialize([gigamidi_melodies], instance=instance, resources={**resources, "gigamidi": GigaMidiResource()})
    assert result.success
    md = node_meta(result, "tier3__gigamidi_melodies")
    assert md["count"] == 0 and md["configured"] is False
    assert "no GigaMIDI source configured" in md["status"]
    assert md["source"] == NOT_CONFIGURED and md["licence"] == "CC BY-NC 4.0"
    assert md["examples"] == "none"
    stored = Path(settings.storage_url) / "assets" / "tier3" / "gigamidi_melodies.melodies" / "index.parquet"
    assert pl.read_parquet(stored).height == 0


# ---- the first corpus build ---------------------------------------------------------------------


def test_the_corpus_run_succeeds_with_every_asset(world):
    assert world.first.success
    done = {e.asset_key.to_user_string() for e in world.first.get_asset_materialization_events()}
    assert done == {a.key.to_user_string() for a in ASSETS}


def test_quality_and_leakage_checks_pass(world):
    assert set(world.checks) == {
        ("corpus/filtered", "filtered_satisfies_every_rule"),
        ("corpus/spot_check", "spot_check_flag_rate"),
        ("corpus/splits", "no_leakage"),
        *(("corpus/dataset_card", name) for name in CRITERIA),
    }
    rules = world.checks[("corpus/filtered", "filtered_satisfies_every_rule")]
    assert rules.passed and rules.metadata["failing_rules"].value == 0 and rules.metadata["without_tokens"].value == 0
    assert rules.metadata["checked"].value == world.meta["corpus__filtered"]["accepted"]
    leak = world.checks[("corpus/splits", "no_leakage")]
    assert leak.passed and leak.metadata["groups_in_several_splits"].value == 0
    assert leak.metadata["interval_sequences_in_several_splits"].value == 0
    spot = world.checks[("corpus/spot_check", "spot_check_flag_rate")]
    assert spot.passed and spot.metadata["awaiting_review"].value == world.meta["corpus__spot_check"]["queued"] > 0


def test_success_criteria(world):
    profile = get_profile("demo")
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    sources = splits.filter(pl.col("parent").is_null())
    n = {t: sources.filter(pl.col("tier") == t).height for t in (1, 2, 3)}
    assert n[1] == DEMO_GOLD  # the unverified and the rejected file are not sources
    assert 0 < n[3] <= world.synthetic_count + world.gigamidi["count"]
    c = {name: world.checks[("corpus/dataset_card", name)] for name in CRITERIA}
    for ev in c.values():
        assert ev.severity == dg.AssetCheckSeverity.WARN
        assert ev.metadata["profile"].value == "demo"

    assert c["tier1_count"].passed and c["tier1_count"].metadata["actual"].value == str(n[1])
    # No Tier 2 melodies in this world: the criterion correctly fails and says how many there are.
    assert not c["tier2_count"].passed
    assert c["tier2_count"].metadata["actual"].value == "0"
    assert c["tier2_count"].metadata["required"].value == f">= {profile.min_tier2_sources}" == ">= 6"
    # Tier 3 without the public-domain tunes: synthetic + GigaMIDI fixture, under the demo's 100.
    assert n[3] < profile.min_tier3_sources == 100
    assert not c["tier3_count"].passed and c["tier3_count"].metadata["actual"].value == str(n[3])
    total = splits.height
    assert c["remi_roundtrip_100"].passed and c["remi_roundtrip_100"].metadata["actual"].value == f"{total}/{total}"
    assert c["notesequence_complete"].passed and c["notesequence_complete"].metadata["actual"].value == str(total)
    assert c["remi_complete"].passed and c["remi_complete"].metadata["actual"].value == str(total)


def test_files_on_disk(world):
    root = world.corpus_dir
    splits = pl.read_csv(root / "splits.csv")
    assert splits.height == world.meta["corpus__filtered"]["accepted"] == world.meta["corpus__splits"]["examples"]
    assert set(splits["split"]) == set(SPLITS) == {"train", "validation", "test"}
    for split in SPLITS:
        part = splits.filter(pl.col("split") == split)
        assert sum(1 for _ in read_tfrecord(root / split / "notesequences.tfrecord")) == part.height, split
        remi = pl.read_parquet(root / split / "remi_tokens.parquet")
        assert sorted(remi["example_id"]) == sorted(part["example_id"]), split
        assert (remi["n_tokens"] > 0).all()
        names = sorted(p.stem for p in (root / split / "metadata").glob("*.json"))
        assert names == sorted(part["example_id"]), split
    tokenizer = json.loads((root / "tokenizer.json").read_text())
    assert tokenizer
    card = (root / "DATASET_CARD.md").read_text()
    assert "Tier 2 source melodies" in card and "demo" in card
    for name in ("pitch_classes", "tempo", "keys", "ranges"):
        assert (root / "card" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert world.meta["corpus__dataset_card"]["examples"] == splits.height
    assert (root / "rejections.parquet").exists() and (root / "rejections.csv").exists()
    assert pl.read_parquet(root / "examples.parquet").height == splits.height


def test_copies_share_their_source_split(world):
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    by_source = splits.group_by("source_id").agg(pl.col("split").n_unique().alias("n"))
    assert by_source["n"].max() == 1
    copies = splits.filter(pl.col("parent").is_not_null())
    assert copies.height > splits.height / 2


def test_metadata_json_leads_back_to_the_tier1_file(world):
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    copy = splits.filter((pl.col("tier") == 1) & pl.col("parent").is_not_null()).row(0, named=True)
    meta = json.loads((world.corpus_dir / copy["split"] / "metadata" / f"{copy['example_id']}.json").read_text())
    assert meta["example_id"] == copy["example_id"] and meta["tier"] == 1 and meta["source"] == "tier1/gold"
    assert meta["parent"] == meta["source_id"] and meta["augmentation"]
    # The source example, in the same split, names the same file.
    src = json.loads((world.corpus_dir / copy["split"] / "metadata" / f"{meta['source_id']}.json").read_text())
    assert src["parent"] is None and src["source_file"] == meta["source_file"]
    path = Path(meta["source_file"])
    assert path.is_file() and path.parent == world.tier1
    prov = meta["provenance"]
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["file"] == path.name and prov["partition"] == partition_key_for(path.name)
    assert prov["verified_by"] == "demo-generator"
    assert meta["licence"] == "CC0-1.0 (generated demo data)"
    assert meta["code_versions"]["augment"] == "1" and meta["code_versions"]["export"] == "1"


def tier1_source_metadata(world) -> dict:
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    row = splits.filter((pl.col("tier") == 1) & pl.col("parent").is_null()).row(0, named=True)
    return json.loads((world.corpus_dir / row["split"] / "metadata" / f"{row['example_id']}.json").read_text())


def test_tier1_metadata_records_the_source_step_and_the_lead_track(world):
    meta = tier1_source_metadata(world)
    assert meta["code_versions"]["source_step"] == "gold-1.0"
    prov = meta["provenance"]
    # The track tier1/melody chose (its metadata: "<index> '<name>': <reason>").
    chosen = world.gold[prov["partition"]]["lead_track"]
    assert chosen.startswith(f"{prov['lead_track_index']} {prov['lead_track_name']!r}: ")
    assert chosen.endswith(prov["lead_track_reason"])
    assert prov["lead_track_index"] == 1  # Melody.to_midi: conductor track 0, the lead track 1


def test_a_transposed_copy_keeps_the_original_key_and_bpm(world):
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    copy = splits.filter((pl.col("tier") == 1) & pl.col("example_id").str.contains("~tr")).row(0, named=True)
    meta = json.loads((world.corpus_dir / copy["split"] / "metadata" / f"{copy['example_id']}.json").read_text())
    src = json.loads((world.corpus_dir / copy["split"] / "metadata" / f"{meta['source_id']}.json").read_text())
    assert meta["key"] != src["key"]
    assert (meta["original_key"], meta["original_bpm"]) == (src["key"], src["bpm"])
    assert any(t.startswith("transpose:") for t in meta["augmentation"])


def test_gigamidi_examples_name_their_shard_row(world):
    splits = pl.read_csv(world.corpus_dir / "splits.csv")
    giga = splits.filter((pl.col("source") == "tier3/gigamidi") & pl.col("parent").is_null())
    assert giga.height > 0
    row = giga.row(0, named=True)
    meta = json.loads((world.corpus_dir / row["split"] / "metadata" / f"{row['example_id']}.json").read_text())
    assert meta["licence"] == "CC BY-NC 4.0"
    assert str(world.gigamidi_dir) in meta["source_file"] and f"md5={meta['provenance']['md5']}" in meta["source_file"]
    assert meta["provenance"]["md5"] in world.gigamidi_roles.values()
    assert meta["code_versions"]["source_step"] == "gigamidi-1"


def test_unverified_and_rejected_tier1_files_are_not_used(world):
    md = world.meta["corpus__augmented"]
    assert md["unverified_tier1_files"] == UNLISTED
    assert UNLISTED in md["not_used"] and CHROMATIC in md["not_used"] and "rejected by the Tier 1 rules" in md["not_used"]
    assert md["tier3_not_materialized"] == "tier3/public_domain_melodies"
    tier1_sources = world.augmented_first.filter((pl.col("tier") == 1) & pl.col("parent").is_null())
    assert tier1_sources.height == DEMO_GOLD
    assert md["sources"] == DEMO_GOLD + world.synthetic_count + world.gigamidi["count"]
    assert md["examples"] == world.augmented_first.height


def test_rejection_table_is_in_the_filtered_metadata(world):
    md = world.meta["corpus__filtered"]
    rej = world.rejections_first
    assert md["examples"] == world.augmented_first.height
    assert md["rejected"] == md["examples"] - md["accepted"] == rej["example_id"].n_unique()
    assert md["rejected"] > 0
    assert md["rejections_table"] == str(world.corpus_dir / "rejections.parquet")
    assert md["rejections_csv"] == str(world.corpus_dir / "rejections.csv")
    table = md["rejections"]
    for row in rej.head(5).iter_rows(named=True):
        assert row["example_id"] in table and row["rule"] in table
    accepted = set(pl.read_csv(world.corpus_dir / "splits.csv")["example_id"])
    assert set(rej["example_id"]) == set(world.augmented_first["example_id"]) - accepted
    assert (md["checked_now"], md["verdicts_reused"]) == (md["examples"], 0)


# ---- incremental --------------------------------------------------------------------------------


def test_a_new_gold_file_adds_only_its_own_examples_to_augmented(world):
    before = world.meta["corpus__augmented"]
    after = world.augmented_late
    assert after["new_sources"] == 1
    assert after["reused_sources"] == before["sources"]
    assert after["sources"] == before["sources"] + 1
    new_id = f"t1-{world.late_key}"
    new_rows = world.augmented_table_late.filter(pl.col("source_id") == new_id)
    assert new_rows.height > 1  # the source and its copies
    assert after["examples"] == before["examples"] + new_rows.height
    # Every old row is kept as it was.
    old = world.augmented_table_late.filter(pl.col("source_id") != new_id).sort("example_id")
    assert old.equals(world.augmented_first.sort("example_id"))


def test_filtered_reuses_verdicts_and_checks_only_the_new_examples(world):
    md = world.filtered_late
    new_examples = world.augmented_table_late.height - world.augmented_first.height
    assert md["verdicts_reused"] == world.augmented_first.height > 0
    assert md["checked_now"] == new_examples > 0
    assert md["examples"] == world.augmented_table_late.height
