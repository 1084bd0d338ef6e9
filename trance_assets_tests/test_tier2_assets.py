"""Tier 2 on a real instance: reference_audio → separated_lead → transcription → melody per partition
(rendered trance arrangements, white noise and a corrupt file in the inbox), the stored files and the
dataset export, metadata, asset checks, provenance, and the review queue with its batch check.

One module-scoped world materializes every partition once; the tests read what it recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mido
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from trance_assets.assets.extraction import melody, review_batches_pass, review_queue, separated_lead, transcription
from trance_assets.assets.ingest import reference_audio
from trance_assets.audio.separation import DSP_NAME
from trance_assets.audio.synth import render_arrangement
from trance_assets.inbox import partition_key_for
from trance_assets.io_managers import StorageIOManager, read_value
from trance_assets.music.melody import Melody
from trance_assets.music.quality import QualityThresholds
from trance_assets.music.rules import generate
from trance_assets.music.theory import MINOR_PROGRESSIONS, parse_key, progression_symbols
from trance_assets.resources import SeparatorResource, SettingsResource, TranscriberResource
from trance_assets.review import REVIEW_COLUMNS
from trance_assets.storage import as_upath, atomic_write_text

SR = 44100
PER_TRACK = [reference_audio, separated_lead, transcription, melody]
MELODY_KEY = dg.AssetKey(["tier2", "melody"])
CHECKS = ("non_empty", "tempo_in_range", "scale_compliance", "tier2_rules")
# (file, key, bpm, progression, seed, declares bpm in a sidecar)
TRACKS = (
    ("Aurora.wav", "Am", 138, 0, 1001, True),
    ("Nightfall.wav", "Em", 132, 1, 1002, False),
)
NOISE = "White Noise.wav"
CORRUPT = "broken.wav"


def render_track(path: Path, key: str, bpm: float, prog: int, seed: int, bars: int = 8) -> Melody:
    chords = progression_symbols(parse_key(key), MINOR_PROGRESSIONS[prog])
    m = generate(key, bpm, chords, bars, seed=seed, density=0.5, span=20)
    sf.write(str(path), render_arrangement(m, sr=SR, seed=seed), SR, subtype="PCM_16")
    return m


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meta(mat) -> dict:
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@dataclass
class World:
    settings: SettingsResource
    resources: dict
    instance: dg.DagsterInstance
    storage: Path
    inbox: Path
    keys: dict  # file name -> partition key
    results: dict  # file name -> ExecuteInProcessResult
    truth: dict  # file name -> rendered Melody

    def melody_mat(self, name: str):
        [mat] = self.results[name].asset_materializations_for_node("tier2__melody")
        return mat


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tier2")
    inbox = root / "inbox"
    inbox.mkdir()
    settings = SettingsResource(profile="demo", storage_url=str(root / "storage"), inbox_dir=str(inbox))
    resources = {
        "settings": settings,
        "io_manager": StorageIOManager(settings=settings),
        "separator": SeparatorResource(method="dsp"),
        "transcriber": TranscriberResource(),
    }
    truth = {}
    for name, key, bpm, prog, seed, declares in TRACKS:
        if declares:
            (inbox / name).with_suffix(".json").write_text(json.dumps({"bpm": bpm}))
        truth[name] = render_track(inbox / name, key, bpm, prog, seed)
    noise = np.random.default_rng(7).standard_normal((10 * SR, 2)) * 0.3
    sf.write(str(inbox / NOISE), np.clip(noise, -1, 1).astype(np.float32), SR, subtype="PCM_16")
    buf = io.BytesIO()
    sf.write(buf, np.zeros((2 * SR, 2), dtype=np.float32) + 0.1, SR, format="WAV", subtype="PCM_16")
    (inbox / CORRUPT).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header declares the full length

    names = [TRACKS[0][0], CORRUPT, TRACKS[1][0], NOISE]  # the corrupt file in between: later runs unaffected
    keys = {n: partition_key_for(n) for n in names}
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("reference_tracks", list(keys.values()))
        results = {}
        for n in names:
            with pytest.MonkeyPatch.context() as mp:
                if n == NOISE:
                    # Force the noise melody under Tier 2 on a rule that has a check (it is rejected
                    # anyway, for its range, which no check covers).
                    mp.setattr(QualityThresholds, "for_tier", classmethod(lambda cls, tier, **o: cls(min_notes=10_000, min_scale_compliance=0.7)))
                results[n] = dg.materialize(PER_TRACK, partition_key=keys[n], instance=instance, resources=resources, raise_on_error=False)
        yield World(settings, resources, instance, root / "storage", inbox, keys, results, truth)


GOOD = [t[0] for t in TRACKS]


@pytest.mark.parametrize("name", GOOD)
def test_good_partitions_materialize_every_asset(world, name):
    result = world.results[name]
    assert result.success
    key = world.keys[name]
    done = {ev.asset_key.to_user_string() for ev in result.get_asset_materialization_events()}
    assert done == {"reference_audio", "tier2/separated_lead", "tier2/transcription", "tier2/melody"}
    for k in ("reference_audio", "tier2/separated_lead", "tier2/transcription", "tier2/melody"):
        assert key in world.instance.get_materialized_partitions(dg.AssetKey.from_user_string(k))


@pytest.mark.parametrize("name", GOOD)
def test_stored_files_and_stems_provenance(world, name):
    key = world.keys[name]
    assets = world.storage / "assets"
    stems = assets / "tier2" / "separated_lead" / f"{key}.stems"
    assert sorted(p.name for p in stems.iterdir()) == ["lead.wav", "residual.wav", "stems.json"]
    info = json.loads((stems / "stems.json").read_text())
    assert info["separator"] == DSP_NAME == "dsp:hpss-band-centre"
    assert info["fallback_reason"] is None
    assert info["content_hash"] == sha256(world.inbox / name)
    lead, sr = sf.read(str(stems / "lead.wav"), always_2d=True)
    assert sr == SR and lead.shape[1] == 2 and np.abs(lead).max() > 0.01

    events = pl.read_parquet(assets / "tier2" / "transcription" / f"{key}.parquet")
    assert {"onset_s", "offset_s", "pitch", "amplitude"} <= set(events.columns)
    assert events.height >= 16

    stored = read_value(as_upath(assets / "tier2" / "melody" / key))
    assert isinstance(stored, Melody) and stored.name == key
    assert (assets / "tier2" / "melody" / f"{key}.melody.json").is_file()
    midi = mido.MidiFile(str(assets / "tier2" / "melody" / f"{key}.mid"))
    assert sum(1 for msg in midi if msg.type == "note_on" and msg.velocity > 0) == len(stored.notes)


@pytest.mark.parametrize("name", GOOD)
def test_dataset_export_with_provenance(world, name):
    key = world.keys[name]
    dataset = world.storage / "dataset" / "tier2"
    side = json.loads((dataset / f"{key}.json").read_text())
    assert side["source_sha256"] == sha256(world.inbox / name)
    assert side["partition_key"] == key
    assert side["source_track"] == str(world.inbox / name)
    assert side["tier"] == 2 and side["accepted"] is True and side["rejection"] == ""
    assert side["extraction_method"]["separator"] == "dsp:hpss-band-centre"
    assert side["extraction_method"]["separator_fallback_reason"] is None
    midi = mido.MidiFile(str(dataset / f"{key}.mid"))
    assert sum(1 for msg in midi if msg.type == "note_on" and msg.velocity > 0) == side["notes"] > 0
    assert not (dataset / "rejected" / f"{key}.json").exists()


def test_melody_metadata(world):
    truth = {name: world.truth[name] for name in GOOD}
    for name, declares in ((TRACKS[0][0], True), (TRACKS[1][0], False)):
        m = meta(world.melody_mat(name))
        assert m["accepted"] is True and m["rejection"] == "none"
        assert m["key"] == truth[name].key
        assert abs(m["bpm"] - truth[name].bpm) <= 1.0
        assert m["bpm_source"] == ("declared" if declares else "estimated")
        assert m["notes"] >= 16 and m["scale_compliance"] >= 0.7
        assert m["separator"] == "dsp:hpss-band-centre"
        assert m["piano_roll"].startswith("![piano roll](data:image/png;base64,")
        assert m["sidecar"] == str(world.storage / "dataset" / "tier2" / f"{world.keys[name]}.json")
    assert meta(world.melody_mat(TRACKS[0][0]))["bpm"] == 138.0  # the declared tempo, exactly
    ref = meta(world.results[TRACKS[0][0]].asset_materializations_for_node("reference_audio")[0])
    assert (ref["bpm"], ref["bpm_source"]) == (138.0, "sidecar")


@pytest.mark.parametrize("name", GOOD)
def test_asset_checks_recorded_and_pass(world, name):
    key = world.keys[name]
    evals = {e.check_name: e for e in world.results[name].get_asset_check_evaluations()}
    assert set(evals) == set(CHECKS)
    assert all(e.passed and e.asset_key == MELODY_KEY for e in evals.values())
    # Partitioned checks: each evaluation belongs to its track, so one track never hides another's.
    assert {e.partition for e in evals.values()} == {key}
    for check in CHECKS:
        history = world.instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(MELODY_KEY, check), limit=20)
        mine = [r for r in history if r.run_id == world.results[name].run_id]
        assert len(mine) == 1
        assert mine[0].status.value == "SUCCEEDED"
        assert world.instance.get_run_by_id(mine[0].run_id).tags["dagster/partition"] == key


def test_lineage_melody_carries_the_source_hash(world):
    for name in GOOD:
        key = world.keys[name]
        ref = meta(world.results[name].asset_materializations_for_node("reference_audio")[0])
        assert ref["content_hash"] == sha256(world.inbox / name)
        value = read_value(as_upath(world.storage / "assets" / "tier2" / "melody" / key))
        assert value.attributes["source_sha256"] == ref["content_hash"]
        assert value.attributes["partition_key"] == key
        mat = world.melody_mat(name)
        # Dagster's own provenance: the melody was computed from that reference_audio materialization.
        [record] = world.instance.fetch_materializations(
            dg.AssetRecordsFilter(reference_audio.key, asset_partitions=[key]), limit=5
        ).records
        assert record.asset_materialization.tags["dagster/data_version"] == ref["content_id"]
        assert mat.tags["dagster/input_event_pointer/reference_audio"] == str(record.storage_id)


def test_corrupt_file_fails_at_reference_audio_only(world):
    result = world.results[CORRUPT]
    assert not result.success
    failures = [ev for ev in result.all_events if ev.is_step_failure]
    assert [ev.step_key for ev in failures] == ["reference_audio"]
    description = failures[0].step_failure_data.user_failure_data.description
    assert description.startswith(f"{world.inbox / CORRUPT}: truncated")
    assert result.get_asset_materialization_events() == []
    key = world.keys[CORRUPT]
    for asset in PER_TRACK:
        assert key not in world.instance.get_materialized_partitions(asset.key)
    # The runs before and after it are unaffected.
    assert world.instance.get_materialized_partitions(MELODY_KEY) == {world.keys[n] for n in (*GOOD, NOISE)}
    assert not list((world.storage / "dataset" / "tier2").rglob(f"{key}.*"))
    assert (world.inbox / CORRUPT).exists()


def test_rejected_melody_is_recorded_not_failed(world):
    result = world.results[NOISE]
    key = world.keys[NOISE]
    assert result.success
    m = meta(world.melody_mat(NOISE))
    assert m["accepted"] is False
    assert "notes=" in m["rejection"] and "needs >= 10000" in m["rejection"]
    assert "range_octaves" in m["rejection"]  # noise is rejected on its own merits too
    dataset = world.storage / "dataset" / "tier2"
    assert sorted(p.name for p in (dataset / "rejected").iterdir()) == [f"{key}.json", f"{key}.mid"]
    assert not (dataset / f"{key}.json").exists() and not (dataset / f"{key}.mid").exists()
    side = json.loads((dataset / "rejected" / f"{key}.json").read_text())
    assert side["accepted"] is False and side["rejection"] == m["rejection"]
    assert side["source_sha256"] == sha256(world.inbox / NOISE)

    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evals) == set(CHECKS)
    assert evals["non_empty"].passed is False
    assert evals["non_empty"].severity == dg.AssetCheckSeverity.WARN
    assert evals["non_empty"].metadata["minimum"].value == 10_000
    # The summary check fails whenever the melody is rejected, whatever rule rejected it.
    assert evals["tier2_rules"].passed is False and evals["tier2_rules"].partition == key
    assert evals["tier2_rules"].metadata["rejection"].value == m["rejection"]
    record = world.instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(MELODY_KEY, "non_empty"), limit=20)
    [mine] = [r for r in record if r.run_id == result.run_id]
    assert mine.status.value == "FAILED"
    assert world.instance.get_run_by_id(mine.run_id).tags["dagster/partition"] == key
    assert mine.event.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.WARN


# ---- review queue --------------------------------------------------------------------------------


def materialize_review(world) -> tuple[dg.ExecuteInProcessResult, pl.DataFrame]:
    result = dg.materialize([review_queue, review_batches_pass], instance=world.instance, resources=world.resources)
    assert result.success
    table = pl.read_parquet(world.storage / "assets" / "tier2" / "review_queue.parquet")
    return result, table


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_melody(folder: Path, key: str, batch: str, accepted: bool = True) -> None:
    m = generate("Dm", 140, ["Dm", "Bb", "F", "C"], 2, seed=len(key))
    fake = Melody(m.notes, m.bpm, m.key, m.chords, m.bars, name=key, attributes={"accepted": accepted, "date_added": batch})
    atomic_write_text(as_upath(folder / f"{key}.melody.json"), fake.to_json())


def test_review_queue_batches_and_verdicts(world):
    melodies = world.storage / "assets" / "tier2" / "melody"
    a, b = world.keys[TRACKS[0][0]], world.keys[TRACKS[1][0]]
    batch = json.loads((world.storage / "dataset" / "tier2" / f"{a}.json").read_text())["date_added"]
    assert json.loads((world.storage / "dataset" / "tier2" / f"{b}.json").read_text())["date_added"] == batch
    # Four more accepted melodies in the same batch, sorted between the two real ones, and one in an
    # older batch: the batch of today has 6 accepted tracks, so its 1st and 6th are queued.
    fakes = [f"fake-{i:02d}" for i in range(1, 5)]
    assert a < min(fakes) and max(fakes) < b
    for k in fakes:
        fake_melody(melodies, k, batch)
    fake_melody(melodies, "fake-old", "2000-01-01")
    dataset_before = tree(world.storage / "dataset")

    result, table = materialize_review(world)
    reviews = world.storage / "reviews" / "reviews.csv"
    assert reviews.read_text() == ",".join(REVIEW_COLUMNS) + "\n"
    noise = world.keys[NOISE]
    assert table["partition_key"].to_list() == sorted([a, b, noise, "fake-old", *fakes])  # the corrupt track is absent
    queued = set(table.filter(pl.col("queued"))["partition_key"])
    assert queued == {a, b, "fake-old"}
    rows = {r["partition_key"]: r for r in table.to_dicts()}
    assert rows[noise]["accepted"] is False and rows[noise]["queued"] is False and rows[noise]["corpus_eligible"] is False
    assert {rows[k]["batch_status"] for k in (a, b, noise, *fakes)} == {"pending"}
    assert rows[a]["verdict"] == rows[b]["verdict"] == "awaiting review"
    for k in (a, b):
        folder = world.storage / "reviews" / batch / k
        assert rows[k]["review_material"] == str(folder)
        assert sorted(p.name for p in folder.iterdir()) == ["lead_isolated.wav", "material.json", "melody_resynth.wav", "pianoroll.png"]
        assert (folder / "pianoroll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        audio, sr = sf.read(str(folder / "lead_isolated.wav"))
        assert sr == SR and np.abs(audio).max() > 0.1
    assert not (world.storage / "reviews" / "2000-01-01" / "fake-old").exists()  # no stems: no material
    [mat] = result.asset_materializations_for_node("tier2__review_queue")
    assert (mat.metadata["queued"].value, mat.metadata["awaiting_review"].value, mat.metadata["rejected_batches"].value) == (3, 3, 0)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "review_batches_pass" and check.passed is True

    # 1 of the 2 queued tracks of today's batch flagged: 50% > 30%, the batch is rejected.
    with reviews.open("a") as f:
        f.write(f"{a},pass,alice,2026-11-24,clean\n{b},flag,alice,2026-11-24,octave errors\n")
    result, table = materialize_review(world)
    rows = {r["partition_key"]: r for r in table.to_dicts()}
    todays = [a, b, noise, *fakes]
    assert {rows[k]["batch_status"] for k in todays} == {"rejected"}
    assert [rows[k]["corpus_eligible"] for k in todays] == [False] * len(todays)
    assert (rows["fake-old"]["batch_status"], rows["fake-old"]["corpus_eligible"]) == ("pending", True)
    assert (rows[a]["verdict"], rows[b]["verdict"]) == ("pass", "flag")
    [check] = result.get_asset_check_evaluations()
    assert check.passed is False
    assert check.metadata["rejected_batches"].value == batch
    assert check.metadata["melodies_kept_out_of_corpus"].value == len(todays)
    record = world.instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(review_queue.key, "review_batches_pass"))
    assert (record.run_id, record.status.value) == (result.run_id, "FAILED")

    # A re-review: the later row replaces the flag, the batch is approved, the check passes again.
    with reviews.open("a") as f:
        f.write(f"{b},pass,bob,2026-11-25,re-listened: fine\n")
    result, table = materialize_review(world)
    rows = {r["partition_key"]: r for r in table.to_dicts()}
    assert {rows[k]["batch_status"] for k in todays} == {"approved"}
    assert [rows[k]["corpus_eligible"] for k in todays] == [k != noise for k in todays]
    [check] = result.get_asset_check_evaluations()
    assert check.passed is True
    record = world.instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(review_queue.key, "review_batches_pass"))
    assert (record.run_id, record.status.value) == (result.run_id, "SUCCEEDED")

    assert tree(world.storage / "dataset") == dataset_before  # verdicts never move or delete dataset files



def test_review_queue_refreshes_by_automation():
    """What review_queue_automation evaluates: the queue is requested while missing, not again once
    it is up to date, and again when a track's melody lands."""
    from trance_assets.definitions import defs

    queue = dg.AssetKey(["tier2", "review_queue"])
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("reference_tracks", ["track-a"])
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert tick.get_num_requested(queue) == 1  # missing
        instance.report_runless_asset_event(dg.AssetMaterialization(queue))
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_num_requested(queue) == 0  # up to date
        instance.report_runless_asset_event(dg.AssetMaterialization(MELODY_KEY, partition="track-a"))
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_num_requested(queue) == 1  # a melody changed
