"""Tier 1 in Dagster: `tier1/melody` per gold MIDI file (lead choice, run config, unverified and
rejected files, its check), the `gold_melodies_sensor`, and the nightly backfill schedule."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import mido
import pytest

from trance_assets.assets.gold import GOLD, gold_melody
from trance_assets.demo import MANIFEST_COLUMNS
from trance_assets.gold_inbox import read_manifest
from trance_assets.inbox import partition_key_for
from trance_assets.io_managers import read_value
from trance_assets.music.melody import Melody, Note
from trance_assets.music.rules import generate
from trance_assets.schedules import NIGHTLY_CRON, nightly_gold_backfill, pending_partitions
from trance_assets.sensors import gold_melodies_sensor

OP = "tier1__melody"
TPB = 480
PROGRESSION = ["Am", "F", "C", "G"]
CHORD_TONES = {"Am": (57, 60, 64), "F": (53, 57, 60), "C": (48, 52, 55), "G": (55, 59, 62)}
ROOTS = {"Am": 33, "F": 29, "C": 36, "G": 31}
# Track indices of `band_file` (0 is the conductor track).
PAD, BASS, DRUMS, LEAD = 1, 2, 3, 4


# ---- files ---------------------------------------------------------------------------------------


def lead_melody(seed: int = 7, bars: int = 8, key: str = "Am", bpm: float = 138) -> Melody:
    return generate(key, bpm, PROGRESSION, bars, seed=seed)


def _track(name: str, notes: list[tuple[float, int, float]], channel: int, program: int | None) -> mido.MidiTrack:
    trk = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    if program is not None:
        trk.append(mido.Message("program_change", program=program - 1, channel=channel, time=0))
    events = []
    for start, pitch, dur in notes:
        events.append((round(start * TPB), 1, mido.Message("note_on", note=pitch, velocity=90, channel=channel)))
        events.append((round((start + dur) * TPB), 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        trk.append(msg.copy(time=tick - now))
        now = tick
    return trk


def band_parts(lead: Melody) -> dict[int, list[tuple[float, int, float]]]:
    bars = lead.n_bars
    chords = [PROGRESSION[b % 4] for b in range(bars)]
    return {
        PAD: [(b * 4.0, p, 4.0) for b, c in enumerate(chords) for p in CHORD_TONES[c]],
        BASS: [(b * 4.0 + i * 0.5, ROOTS[c], 0.5) for b, c in enumerate(chords) for i in range(8)],
        DRUMS: [(b * 4.0 + i * 0.5, 36 if i % 2 == 0 else 42, 0.25) for b in range(bars) for i in range(8)],
        LEAD: [(n.start, n.pitch, n.duration) for n in lead.notes],
    }


def band_file(lead: Melody, bpm: float = 138) -> bytes:
    """Type-1 MIDI: conductor, Pad (chords, GM 89), Bass (GM 39), Drums (channel 10), Lead (GM 82)."""
    parts = band_parts(lead)
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.append(mido.MidiTrack([
        mido.MetaMessage("track_name", name="song", time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
    ]))  # fmt: skip
    mid.tracks.append(_track("Pad", parts[PAD], 0, 89))
    mid.tracks.append(_track("Bass", parts[BASS], 1, 39))
    mid.tracks.append(_track("Drums", parts[DRUMS], 9, None))
    mid.tracks.append(_track("Lead", parts[LEAD], 3, 82))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def chromatic_melody() -> Melody:
    """19 quarter notes A3..D#5, one after the other: every Tier 1 rule but scale compliance passes."""
    return Melody(tuple(Note(float(i), 57 + i, 0.9) for i in range(19)), 138, "Am")


def put(root: Path, rel: str, data: bytes, age_s: float = 60.0) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    t = time.time_ns() - int(age_s * 1e9)
    os.utime(p, ns=(t, t))
    return p


def row(file: str, title: str, key: str = "Am", bpm: float = 138, verified_by: str = "tester", **extra) -> dict:
    r = {
        "file": file,
        "title": title,
        "artist": "test artist",
        "key": key,
        "bpm": bpm,
        "chords": " ".join(PROGRESSION),
        "verified_by": verified_by,
        "verified_on": "2026-01-01",
        "licence": "CC0-1.0",
        "notes": "",
        "reference_track": "",
    }
    r.update(extra)
    return r


def write_manifest(root: Path, rows: list[dict], extra_columns: tuple[str, ...] = ()) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS) + list(extra_columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path = root / "manifest.csv"
    path.write_text(buf.getvalue())
    return path


def tier1(settings) -> Path:
    return settings.local_dataset_dir("tier1")


def materialize(instance, resources, rel: str, run_config: dict | None = None, raise_on_error: bool = True):
    pk = partition_key_for(rel)
    instance.add_dynamic_partitions("gold_melodies", [pk])
    return dg.materialize(
        [gold_melody], instance=instance, resources=resources, partition_key=pk, run_config=run_config or {}, raise_on_error=raise_on_error
    )


def meta(result) -> dict:
    [mat] = result.asset_materializations_for_node(OP)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def check(result) -> dg.AssetCheckEvaluation:
    [ev] = result.get_asset_check_evaluations()
    assert (ev.asset_key, ev.check_name) == (GOLD, "tier1_rules")
    return ev


def stored(settings, rel: str) -> Melody:
    return read_value(settings.path("assets", "tier1", "melody", partition_key_for(rel)))


def pitches(notes) -> list[tuple[float, int]]:
    return sorted((round(n[0] if isinstance(n, tuple) else n.start, 3), n[1] if isinstance(n, tuple) else n.pitch) for n in notes)


# ---- the asset -----------------------------------------------------------------------------------


def test_op_name_and_partitions():
    assert gold_melody.op.name == OP
    assert gold_melody.partitions_def == dg.DynamicPartitionsDefinition(name="gold_melodies")
    assert gold_melody.check_keys == {dg.AssetCheckKey(GOLD, "tier1_rules")}


def test_multitrack_file_the_lead_is_chosen(settings, resources, instance):
    root = tier1(settings)
    lead = lead_melody()
    src = put(root, "band.mid", band_file(lead))
    write_manifest(root, [row("band.mid", "Band")])

    result = materialize(instance, resources, "band.mid")
    assert result.success
    md = meta(result)
    assert md["lead_track"].startswith(f"{LEAD} 'Lead': ")
    assert (md["verified"], md["accepted"], md["status"]) == (True, True, "verified")
    assert (md["key"], md["bpm"], md["key_source"], md["bpm_source"]) == ("Am", 138.0, "manifest", "manifest")
    assert md["verified_by"] == "tester" and md["title"] == "Band" and md["licence"] == "CC0-1.0"
    assert md["manifest_problem"] == "none" and md["rejection"] == "none"
    assert md["notes"] == len(lead.notes)
    assert md["file"] == str(src)

    m = stored(settings, "band.mid")
    assert pitches(m.notes) == pitches(lead.notes)
    assert m.name == partition_key_for("band.mid")
    a = m.attributes
    assert a["source_path"] == str(src) and a["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert a["lead_track_index"] == LEAD and a["accepted"] is True and a["verified"] is True
    assert a["manifest_row_hash"] == read_manifest(root)["band.mid"].row_hash
    ev = check(result)
    assert ev.passed is True and ev.severity == dg.AssetCheckSeverity.WARN


def test_lead_track_run_config_picks_the_pad(settings, resources, instance):
    root = tier1(settings)
    lead = lead_melody()
    put(root, "band.mid", band_file(lead))
    write_manifest(root, [row("band.mid", "Band")])

    result = materialize(instance, resources, "band.mid", run_config={"ops": {OP: {"config": {"lead_track": "pad"}}}})
    assert result.success
    md = meta(result)
    assert md["lead_track"].startswith(f"{PAD} 'Pad': chosen by preference 'pad'")
    assert pitches(stored(settings, "band.mid").notes) == pitches(band_parts(lead)[PAD])
    # A chordal pad is no Tier 1 lead: recorded as a rejection, the run still succeeds.
    assert md["accepted"] is False and "polyphony" in md["rejection"]
    assert md["status"] == "rejected by the Tier 1 rules (not used)"
    assert check(result).passed is False


def test_lead_track_index_in_config_and_manifest_column(settings, resources, instance):
    root = tier1(settings)
    lead = lead_melody(seed=8)
    put(root, "band.mid", band_file(lead))
    put(root, "band_bass.mid", band_file(lead))
    write_manifest(root, [row("band.mid", "Band"), row("band_bass.mid", "Band (bass)", lead_track="bass")], extra_columns=("lead_track",))

    by_index = meta(materialize(instance, resources, "band.mid", run_config={"ops": {OP: {"config": {"lead_track": str(BASS)}}}}))
    assert by_index["lead_track"].startswith(f"{BASS} 'Bass': chosen by preference {BASS}")

    from_manifest = meta(materialize(instance, resources, "band_bass.mid"))
    assert from_manifest["lead_track"].startswith(f"{BASS} 'Bass': chosen by preference 'bass'")
    assert pitches(stored(settings, "band_bass.mid").notes) == pitches(band_parts(lead)[BASS])

    # The run config wins over the manifest's column.
    overridden = meta(materialize(instance, resources, "band_bass.mid", run_config={"ops": {OP: {"config": {"lead_track": "Lead"}}}}))
    assert overridden["lead_track"].startswith(f"{LEAD} 'Lead': chosen by preference 'Lead'")
    assert pitches(stored(settings, "band_bass.mid").notes) == pitches(lead.notes)


def test_file_without_a_manifest_row_is_unverified_and_the_run_succeeds(settings, resources, instance):
    root = tier1(settings)
    put(root, "listed.mid", lead_melody(seed=3).to_midi_bytes())
    put(root, "loose.mid", lead_melody(seed=4).to_midi_bytes())
    put(root, "unsigned.mid", lead_melody(seed=5).to_midi_bytes())
    write_manifest(root, [row("listed.mid", "Listed"), row("unsigned.mid", "Unsigned", verified_by="")])

    result = materialize(instance, resources, "loose.mid")
    assert result.success
    md = meta(result)
    assert md["verified"] is False and md["status"] == "UNVERIFIED (not used)"
    assert md["verified_by"] == "none" and md["licence"] == "none given"
    assert "no manifest row" in md["warnings"]
    # The melody itself is fine; only the verification is missing.
    assert md["accepted"] is True and md["key_source"] in ("file", "estimated")
    ev = check(result)
    assert ev.passed is False and ev.severity == dg.AssetCheckSeverity.WARN
    assert ev.metadata["verified"].value is False
    assert stored(settings, "loose.mid").attributes["verified"] is False

    unsigned = materialize(instance, resources, "unsigned.mid")
    assert unsigned.success
    assert meta(unsigned)["verified"] is False and "empty verified_by" in meta(unsigned)["warnings"]
    assert check(unsigned).passed is False


def test_broken_manifest_header_makes_files_unverified_and_is_reported(settings, resources, instance):
    root = tier1(settings)
    put(root, "a.mid", lead_melody(seed=3).to_midi_bytes())
    (root / "manifest.csv").write_text("file,title\na.mid,A\n")
    result = materialize(instance, resources, "a.mid")
    assert result.success
    md = meta(result)
    assert md["verified"] is False
    assert "lacks required column" in md["manifest_problem"]


def test_file_failing_the_tier1_scale_rule_is_not_accepted(settings, resources, instance):
    root = tier1(settings)
    put(root, "chromatic.mid", chromatic_melody().to_midi_bytes())
    write_manifest(root, [row("chromatic.mid", "Chromatic")])

    result = materialize(instance, resources, "chromatic.mid")
    assert result.success
    md = meta(result)
    assert md["verified"] is True and md["accepted"] is False
    assert md["rejection"].startswith("scale_compliance=") and "needs >= 0.9" in md["rejection"]
    assert ";" not in md["rejection"]  # the only failing rule
    assert md["scale_compliance"] == pytest.approx(12 / 19)  # A natural + harmonic minor: 12 of 19 notes
    assert md["status"] == "rejected by the Tier 1 rules (not used)"
    ev = check(result)
    assert ev.passed is False and ev.severity == dg.AssetCheckSeverity.WARN
    a = stored(settings, "chromatic.mid").attributes
    assert a["accepted"] is False and a["rejection"] == md["rejection"]


def test_a_registered_partition_without_its_file_fails(settings, resources, instance):
    put(tier1(settings), "present.mid", lead_melody().to_midi_bytes())
    result = materialize(instance, resources, "gone.mid", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no MIDI file" in failure.step_failure_data.error.message


def test_data_version_follows_bytes_and_manifest_row(settings, resources, instance):
    root = tier1(settings)
    src = put(root, "a.mid", lead_melody().to_midi_bytes())
    write_manifest(root, [row("a.mid", "A")])

    def version():
        result = materialize(instance, resources, "a.mid")
        [mat] = result.asset_materializations_for_node(OP)
        return mat.tags["dagster/data_version"]

    v1 = version()
    assert v1 == hashlib.sha256(src.read_bytes()).hexdigest()[:16] + ":" + read_manifest(root)["a.mid"].row_hash[:8]
    write_manifest(root, [row("a.mid", "A (retitled)")])
    v2 = version()
    assert v2 != v1 and v2.split(":")[0] == v1.split(":")[0]


# ---- the sensor ----------------------------------------------------------------------------------


def run_sensor(instance, settings, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})
    result = gold_melodies_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def added(result: dg.SensorResult) -> list[str]:
    keys = []
    for req in result.dynamic_partitions_requests:
        assert isinstance(req, dg.AddDynamicPartitionsRequest)
        assert req.partitions_def_name == "gold_melodies"
        keys.extend(req.partition_keys)
    return keys


def test_sensor_registers_partitions_and_requests_runs(settings, instance):
    assert gold_melodies_sensor.job_name == "gold_melody_job"
    assert gold_melodies_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    root = tier1(settings)
    files = {"a.mid": put(root, "a.mid", lead_melody(seed=1).to_midi_bytes()), "sub/b.mid": put(root, "sub/b.mid", lead_melody(seed=2).to_midi_bytes())}
    put(root, "fresh.mid", lead_melody(seed=3).to_midi_bytes(), age_s=-30)  # mtime ahead of the clock: not settled
    write_manifest(root, [row("a.mid", "A")])
    rows = read_manifest(root)

    r1 = run_sensor(instance, settings, None)
    keys = {rel: partition_key_for(rel) for rel in files}
    assert sorted(added(r1)) == sorted(keys.values())
    expected = {
        keys["a.mid"]: f"{keys['a.mid']}:{hashlib.sha256(files['a.mid'].read_bytes()).hexdigest()[:16]}:{rows['a.mid'].row_hash[:8]}",
        keys["sub/b.mid"]: f"{keys['sub/b.mid']}:{hashlib.sha256(files['sub/b.mid'].read_bytes()).hexdigest()[:16]}:none",
    }
    assert {r.partition_key: r.run_key for r in r1.run_requests} == expected
    assert {r.partition_key: r.tags["trance/source_file"] for r in r1.run_requests} == {keys[rel]: rel for rel in files}

    # The instance applies the partition request; the next tick (with the cursor) has nothing to do.
    instance.add_dynamic_partitions("gold_melodies", added(r1))
    r2 = run_sensor(instance, settings, r1.cursor)
    assert (r2.run_requests, r2.dynamic_partitions_requests) == ([], [])

    # A corrected manifest row re-runs just that file, with a new run key.
    write_manifest(root, [row("a.mid", "A"), row("sub/b.mid", "B")])
    r3 = run_sensor(instance, settings, r2.cursor)
    assert added(r3) == []
    [req] = r3.run_requests
    assert req.partition_key == keys["sub/b.mid"]
    assert req.run_key == expected[keys["sub/b.mid"]][: -len("none")] + read_manifest(root)["sub/b.mid"].row_hash[:8]

    # The settled file arrives on a later tick.
    os.utime(root / "fresh.mid", ns=(time.time_ns() - 10**10,) * 2)
    r4 = run_sensor(instance, settings, r3.cursor)
    assert added(r4) == [partition_key_for("fresh.mid")]
    assert [r.partition_key for r in r4.run_requests] == [partition_key_for("fresh.mid")]


# ---- the schedules -------------------------------------------------------------------------------


def test_pending_partitions():
    assert pending_partitions(["c", "a", "d", "b"], {"b"}, 10) == ["a", "c", "d"]
    assert pending_partitions(["c", "a", "d", "b"], {"b"}, 2) == ["a", "c"]
    assert pending_partitions(["a", "b"], {"a", "b", "z"}, 10) == []
    assert pending_partitions([], set(), 10) == []
    assert pending_partitions(["a"], set(), 0) == []


@pytest.fixture
def persistent_instance():
    """Schedule contexts need a persistent instance (build_schedule_context keeps only its ref)."""
    with dg.instance_for_test() as inst:
        yield inst


def evaluate(schedule, instance, settings, when: datetime, *, as_daemon: bool = False):
    """The schedule's result for the tick at `when`: the function's own return value, or (as_daemon)
    the ScheduleExecutionData the daemon gets, resolved against the code location.

    The context is used as a context manager: it opens an instance from the ref, and only its exit
    closes that instance again (and restores Dagster's context-local state storage)."""
    kwargs = {}
    if as_daemon:
        from trance_assets.definitions import defs

        kwargs["repository_def"] = defs.get_repository_def()
    with dg.build_schedule_context(instance=instance, resources={"settings": settings}, scheduled_execution_time=when, **kwargs) as context:
        return schedule.evaluate_tick(context) if as_daemon else schedule(context)


def test_nightly_gold_backfill_runs_only_pending_partitions(settings, resources, persistent_instance):
    instance = persistent_instance
    assert nightly_gold_backfill.cron_schedule == NIGHTLY_CRON == "0 3 * * *"
    assert nightly_gold_backfill.job_name == "gold_melody_job"
    assert nightly_gold_backfill.default_status == dg.DefaultScheduleStatus.RUNNING
    when = datetime(2026, 3, 14, 3, 0, tzinfo=timezone.utc)
    nothing = evaluate(nightly_gold_backfill, instance, settings, when)
    assert isinstance(nothing, dg.SkipReason) and nothing.skip_message == "all 0 partition(s) of gold_melodies are materialized"

    root = tier1(settings)
    rels = ["a.mid", "b.mid", "c.mid"]
    for i, rel in enumerate(rels):
        put(root, rel, lead_melody(seed=20 + i).to_midi_bytes())
    keys = [partition_key_for(r) for r in rels]
    instance.add_dynamic_partitions("gold_melodies", keys)
    assert materialize(instance, resources, "b.mid").success

    requests = evaluate(nightly_gold_backfill, instance, settings, when)
    pending = sorted(k for k in keys if k != partition_key_for("b.mid"))
    assert all(isinstance(r, dg.RunRequest) for r in requests)
    assert [r.partition_key for r in requests] == pending
    assert [r.run_key for r in requests] == [f"nightly:2026-03-14:{k}" for k in pending]
    assert all(r.tags == {"trance/launched_by": "nightly backfill"} for r in requests)
    # Evaluated as the daemon does (against the code location, which resolves the partitions).
    data = evaluate(nightly_gold_backfill, instance, settings, when, as_daemon=True)
    assert [(r.partition_key, r.run_key) for r in data.run_requests] == [(r.partition_key, r.run_key) for r in requests]
    assert all(r.tags["dagster/partition"] == r.partition_key for r in data.run_requests)
    # The next night's run keys differ, so a partition still pending is tried again.
    later = evaluate(nightly_gold_backfill, instance, settings, datetime(2026, 3, 15, 3, 0, tzinfo=timezone.utc))
    assert [r.run_key for r in later] == [f"nightly:2026-03-15:{k}" for k in pending]

    for rel in ("a.mid", "c.mid"):
        assert materialize(instance, resources, rel).success
    direct = evaluate(nightly_gold_backfill, instance, settings, when)
    assert isinstance(direct, dg.SkipReason)
    assert direct.skip_message == "all 3 partition(s) of gold_melodies are materialized"
    data = evaluate(nightly_gold_backfill, instance, settings, when, as_daemon=True)
    assert not data.run_requests and data.skip_message == direct.skip_message
