"""The inbox sensor on a real Dagster instance: partitions, run requests, cursors, restarts."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from trance_assets.assets.ingest import reference_audio
from trance_assets.inbox import InboxCursor, partition_key_for
from trance_assets.jobs import reference_track_job
from trance_assets.sensors import latest_content_id, reference_audio_sensor


def put(inbox: Path, rel: str, data: bytes, age_s: float = 60.0) -> Path:
    p = inbox / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    t = time.time_ns() - int(age_s * 1e9)
    os.utime(p, ns=(t, t))
    return p


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_sensor(instance, settings, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})
    result = reference_audio_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def added_keys(result: dg.SensorResult) -> list[str]:
    keys = []
    for req in result.dynamic_partitions_requests:
        assert isinstance(req, dg.AddDynamicPartitionsRequest), req  # never a delete
        assert req.partitions_def_name == "reference_tracks"
        keys.extend(req.partition_keys)
    return keys


def test_sensor_definition():
    assert reference_audio_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert reference_audio_sensor.job_name == reference_track_job.name == "reference_track_job"


def test_new_file_then_unchanged_touched_changed(instance, settings, inbox):
    src = put(inbox, "Sunrise Anthem.wav", b"RIFF first version")
    key = partition_key_for("Sunrise Anthem.wav")

    r1 = run_sensor(instance, settings, None)
    assert added_keys(r1) == [key]
    assert len(r1.run_requests) == 1
    req = r1.run_requests[0]
    digest = sha(src)
    assert req.partition_key == key
    assert req.run_key == f"{key}:{digest[:16]}:{src.stat().st_mtime_ns}"
    assert req.tags == {"trance/source_file": "Sunrise Anthem.wav", "trance/content_id": digest[:16]}
    assert json.loads(r1.cursor)["files"]["Sunrise Anthem.wav"]["sha256"] == digest

    # Next tick with the returned cursor: nothing to do.
    r2 = run_sensor(instance, settings, r1.cursor)
    assert (r2.run_requests, r2.dynamic_partitions_requests) == ([], [])

    # Touched (new mtime, same bytes): no run.
    t = time.time_ns() - 30 * 10**9
    os.utime(src, ns=(t, t))
    r3 = run_sensor(instance, settings, r2.cursor)
    assert (r3.run_requests, r3.dynamic_partitions_requests) == ([], [])
    assert json.loads(r3.cursor)["files"]["Sunrise Anthem.wav"]["mtime_ns"] == t

    # Changed content: a new run key, the same partition, no new partition.
    put(inbox, "Sunrise Anthem.wav", b"RIFF second version", age_s=20)
    r4 = run_sensor(instance, settings, r3.cursor)
    assert r4.dynamic_partitions_requests == []
    assert [(r.partition_key, r.run_key) for r in r4.run_requests] == [(key, f"{key}:{sha(src)[:16]}:{src.stat().st_mtime_ns}")]
    assert r4.run_requests[0].run_key != req.run_key


def test_removed_file_is_kept_as_missing_without_deleting_the_partition(instance, settings, inbox):
    put(inbox, "a.wav", b"a")
    put(inbox, "b.wav", b"b")
    r1 = run_sensor(instance, settings, None)
    assert sorted(added_keys(r1)) == sorted([partition_key_for("a.wav"), partition_key_for("b.wav")])
    (inbox / "a.wav").unlink()
    r2 = run_sensor(instance, settings, r1.cursor)
    assert (r2.run_requests, r2.dynamic_partitions_requests) == ([], [])
    files = json.loads(r2.cursor)["files"]
    assert (files["a.wav"]["missing"], files["b.wav"]["missing"]) == (True, False)
    assert files["a.wav"]["key"] == partition_key_for("a.wav")


def test_half_written_file_is_picked_up_once_stable_across_two_ticks(instance, settings, inbox):
    assert settings.get_profile().settle_seconds == 2.0
    p = put(inbox, "copying.wav", b"half")
    now = time.time_ns()
    os.utime(p, ns=(now, now))  # being written right now
    r1 = run_sensor(instance, settings, None)
    assert (r1.run_requests, r1.dynamic_partitions_requests) == ([], [])
    assert json.loads(r1.cursor)["pending"] == {"copying.wav": [4, now, None]}
    # Still growing on the next tick: still waiting.
    p.write_bytes(b"half and more")
    now2 = time.time_ns()
    os.utime(p, ns=(now2, now2))
    r2 = run_sensor(instance, settings, r1.cursor)
    assert r2.run_requests == []
    assert json.loads(r2.cursor)["pending"] == {"copying.wav": [13, now2, None]}
    # Same (size, mtime) as the previous tick: settled, even though younger than 2 s.
    r3 = run_sensor(instance, settings, r2.cursor)
    assert [r.partition_key for r in r3.run_requests] == [partition_key_for("copying.wav")]
    assert added_keys(r3) == [partition_key_for("copying.wav")]
    assert json.loads(r3.cursor)["pending"] == {}


def test_cursor_survives_a_restart(instance, settings, inbox):
    put(inbox, "one.wav", b"1")
    put(inbox, "two.flac", b"2")
    r1 = run_sensor(instance, settings, None)
    assert len(r1.run_requests) == 2
    saved = json.dumps(json.loads(r1.cursor))  # stored and read back as plain text
    with dg.DagsterInstance.ephemeral() as fresh:  # a new daemon process / instance handle
        r2 = run_sensor(fresh, settings, saved)
    assert (r2.run_requests, r2.dynamic_partitions_requests) == ([], [])
    assert InboxCursor.from_json(r2.cursor).files == InboxCursor.from_json(r1.cursor).files


def test_lost_cursor_after_materialization_registers_but_does_not_rerun(instance, settings, inbox, resources, write_wav):
    write_wav(inbox / "done.wav", seconds=1.0)
    write_wav(inbox / "todo.wav", seconds=1.0, seed=1)
    done, todo = partition_key_for("done.wav"), partition_key_for("todo.wav")
    instance.add_dynamic_partitions("reference_tracks", [done])
    result = dg.materialize([reference_audio], partition_key=done, instance=instance, resources=resources)
    assert result.success
    assert latest_content_id(instance, done) == sha(inbox / "done.wav")[:16]
    assert latest_content_id(instance, todo) is None

    r = run_sensor(instance, settings, None)  # cursor lost
    assert sorted(added_keys(r)) == sorted([done, todo])
    assert [req.partition_key for req in r.run_requests] == [todo]

    # The stored content is stale once the file changes: a lost cursor then does rerun it.
    write_wav(inbox / "done.wav", seconds=1.5)
    r = run_sensor(instance, settings, None)
    assert sorted(req.partition_key for req in r.run_requests) == sorted([done, todo])


def test_sidecar_change_retriggers(instance, settings, inbox):
    put(inbox, "a.wav", b"audio")
    r1 = run_sensor(instance, settings, None)
    side = put(inbox, "a.json", b'{"bpm": 138}', age_s=10)
    r2 = run_sensor(instance, settings, r1.cursor)
    key = partition_key_for("a.wav")
    expected = hashlib.sha256(b"audio").hexdigest()[:16] + "-" + hashlib.sha256(side.read_bytes()).hexdigest()[:8]
    mtime = (inbox / "a.wav").stat().st_mtime_ns
    assert [(r.partition_key, r.run_key) for r in r2.run_requests] == [(key, f"{key}:{expected}:{mtime}")]
    assert r2.dynamic_partitions_requests == []
    put(inbox, "a.json", b'{"bpm": 140}', age_s=5)
    r3 = run_sensor(instance, settings, r2.cursor)
    assert len(r3.run_requests) == 1 and r3.run_requests[0].run_key not in (r1.run_requests[0].run_key, r2.run_requests[0].run_key)


def test_hidden_and_non_audio_files_are_ignored(instance, settings, inbox):
    put(inbox, ".partial.wav", b"x")
    put(inbox, ".Trash/old.wav", b"x")
    put(inbox, "readme.txt", b"x")
    put(inbox, "cover.png", b"x")
    put(inbox, "orphan.json", b"{}")
    r = run_sensor(instance, settings, None)
    assert (r.run_requests, r.dynamic_partitions_requests) == ([], [])
    assert json.loads(r.cursor)["files"] == {}


def test_budget_defers_the_rest_to_the_next_tick(instance, settings, inbox, monkeypatch):
    from trance_assets.profiles import PROFILES, get_profile

    for i in range(5):
        put(inbox, f"t{i}.wav", f"track {i}".encode())
    # The profile's per-tick budget, shrunk for the test.
    monkeypatch.setitem(PROFILES, "demo", get_profile("demo", max_new_files_per_tick=2))
    assert settings.get_profile().max_new_files_per_tick == 2
    seen, cursor = [], None
    for expected in (2, 2, 1, 0):
        r = run_sensor(instance, settings, cursor)
        assert len(r.run_requests) == expected
        seen += [req.partition_key for req in r.run_requests]
        cursor = r.cursor
    assert seen == [partition_key_for(f"t{i}.wav") for i in range(5)]


def test_non_utf8_file_name_does_not_block_the_sensor(instance, settings, inbox):
    put(inbox, "good.wav", b"g")
    raw = os.path.join(os.fsencode(inbox), b"caf\xe9.wav")
    with open(raw, "wb") as f:
        f.write(b"x")
    os.utime(raw, ns=(time.time_ns() - 60 * 10**9,) * 2)
    r = run_sensor(instance, settings, None)
    assert [req.partition_key for req in r.run_requests] == [partition_key_for("good.wav")]
