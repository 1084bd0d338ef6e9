"""The inbox planner (pure core, no Dagster): what one sensor tick decides, under exact time control."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import trance_assets.inbox as inbox_mod
from trance_assets.inbox import (
    FileState,
    InboxCursor,
    RunPlan,
    content_id,
    find_inbox_file,
    partition_key_for,
    plan_inbox,
    scan_inbox,
)

S = 10**9  # ns per second
T0 = 1_700_000_000 * S  # a fixed "file written" time; every `now_ns` below is relative to it


def put(root: Path, rel: str, data: bytes, mtime_ns: int = T0) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, ns=(mtime_ns, mtime_ns))
    return p


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tick(root: Path, cursor: InboxCursor | None = None, now_ns: int = T0 + 10 * S, **kw):
    plan = plan_inbox(root, cursor or InboxCursor(), now_ns=now_ns, settle_seconds=2.0, **kw)
    # Every cursor must survive the JSON round trip the sensor puts it through.
    again = InboxCursor.from_json(plan.cursor.to_json())
    assert (again.files, again.pending) == (plan.cursor.files, plan.cursor.pending)
    return plan


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "inbox"
    r.mkdir()
    return r


# ---- scanning ---------------------------------------------------------------------------------


def test_scan_finds_audio_recursively_and_skips_hidden_and_other_files(root):
    put(root, "b.wav", b"bb")
    put(root, "a/Track.FLAC", b"aaa")
    put(root, "a/Track.json", b'{"bpm": 138}', mtime_ns=T0 + 5)
    put(root, "c.mp3", b"c")
    put(root, ".hidden.wav", b"h")
    put(root, ".cache/x.wav", b"x")
    put(root, "sub/.git/y.flac", b"y")
    put(root, "notes.txt", b"n")
    put(root, "cover.jpg", b"j")
    put(root, "d.json", b"{}")
    (root / "folder.wav").mkdir()  # a folder with an audio suffix is not a file
    states = scan_inbox(root)
    assert states == [
        FileState("a/Track.FLAC", 3, T0, (12, T0 + 5)),
        FileState("b.wav", 2, T0, None),
        FileState("c.mp3", 1, T0, None),
    ]


def test_scan_of_a_missing_folder_is_empty(tmp_path):
    assert scan_inbox(tmp_path / "nope") == []
    plan = tick(tmp_path / "nope")
    assert (plan.runs, plan.new_partitions, plan.missing) == ([], [], [])


def test_file_names_that_are_not_utf8_are_skipped_and_reported(root):
    put(root, "good.wav", b"g")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.wav"), "wb") as f:  # Latin-1 name
        f.write(b"x")
    os.utime(os.path.join(os.fsencode(root), b"caf\xe9.wav"), ns=(T0, T0))
    unusable: list[str] = []
    assert [s.rel for s in scan_inbox(root, unusable)] == ["good.wav"]
    assert unusable == ["caf\\udce9.wav"]
    plan = tick(root)
    assert [r.rel for r in plan.runs] == ["good.wav"]
    assert plan.unusable == ["caf\\udce9.wav"]
    json.loads(plan.cursor.to_json())


# ---- one file through its life ------------------------------------------------------------------


def test_new_file_gets_a_partition_and_a_run(root):
    data = b"RIFF-new-file"
    put(root, "My Track.wav", data)
    plan = tick(root)
    key = partition_key_for("My Track.wav")
    cid = sha(data)[:16]
    assert plan.new_partitions == [key]
    mtime = (root / "My Track.wav").stat().st_mtime_ns
    assert plan.runs == [RunPlan(key, "My Track.wav", sha(data), cid, mtime)]
    assert plan.runs[0].run_key == f"{key}:{cid}:{mtime}"
    assert (plan.waiting, plan.deferred, plan.missing, plan.unchanged) == ([], [], [], 0)
    assert plan.cursor.files == {
        "My Track.wav": {
            "key": key,
            "size": len(data),
            "mtime_ns": T0,
            "sha256": sha(data),
            "sidecar": None,
            "sidecar_sha256": None,
            "missing": False,
        }
    }
    assert plan.cursor.pending == {}


def test_unchanged_file_costs_no_read_and_no_run(root, monkeypatch):
    put(root, "a.wav", b"one")
    first = tick(root)

    def no_read(path, *a, **k):
        raise AssertionError(f"hashed {path} although nothing changed")

    monkeypatch.setattr(inbox_mod, "sha256_file", no_read)
    second = tick(root, first.cursor, now_ns=T0 + 20 * S)
    assert (second.runs, second.new_partitions, second.unchanged) == ([], [], 1)
    assert second.cursor.files == first.cursor.files


def test_touched_file_is_rehashed_but_not_rerun(root):
    put(root, "a.wav", b"same bytes")
    first = tick(root)
    os.utime(root / "a.wav", ns=(T0 + 30 * S, T0 + 30 * S))
    second = tick(root, first.cursor, now_ns=T0 + 40 * S)
    assert (second.runs, second.new_partitions, second.unchanged) == ([], [], 1)
    assert second.cursor.files["a.wav"]["mtime_ns"] == T0 + 30 * S
    assert second.cursor.files["a.wav"]["sha256"] == sha(b"same bytes")


def test_changed_content_runs_again_under_a_new_run_key_for_the_same_partition(root):
    put(root, "a.wav", b"version one")
    first = tick(root)
    put(root, "a.wav", b"version two!", mtime_ns=T0 + 30 * S)
    second = tick(root, first.cursor, now_ns=T0 + 40 * S)
    key = partition_key_for("a.wav")
    assert second.new_partitions == []
    assert second.runs == [RunPlan(key, "a.wav", sha(b"version two!"), sha(b"version two!")[:16], T0 + 30 * S)]
    assert second.runs[0].run_key != first.runs[0].run_key
    assert second.runs[0].partition_key == first.runs[0].partition_key == key


def test_same_size_same_mtime_edit_is_not_seen(root):
    # Documented limit: the (size, mtime) fast path trusts the filesystem's mtime.
    put(root, "a.wav", b"AAAA")
    first = tick(root)
    put(root, "a.wav", b"BBBB")  # same size, mtime forced back to T0
    assert tick(root, first.cursor, now_ns=T0 + 20 * S).runs == []


def test_removed_file_is_marked_missing_and_nothing_runs(root):
    put(root, "a.wav", b"aaa")
    put(root, "b.wav", b"bbb")
    first = tick(root)
    (root / "a.wav").unlink()
    second = tick(root, first.cursor, now_ns=T0 + 20 * S)
    assert (second.runs, second.new_partitions, second.missing) == ([], [], ["a.wav"])
    assert second.cursor.files["a.wav"] == {**first.cursor.files["a.wav"], "missing": True}
    assert second.cursor.files["b.wav"]["missing"] is False
    # Still missing on the next tick; nothing is forgotten.
    third = tick(root, second.cursor, now_ns=T0 + 30 * S)
    assert third.missing == ["a.wav"]
    assert third.cursor.files["a.wav"]["missing"] is True


def test_removed_file_put_back_unchanged_does_not_rerun_but_changed_does(root):
    put(root, "a.wav", b"aaa")
    c = tick(root).cursor
    (root / "a.wav").unlink()
    c = tick(root, c, now_ns=T0 + 20 * S).cursor
    put(root, "a.wav", b"aaa", mtime_ns=T0 + 25 * S)  # same bytes, new mtime
    back = tick(root, c, now_ns=T0 + 40 * S)
    assert (back.runs, back.new_partitions, back.missing) == ([], [], [])
    assert back.cursor.files["a.wav"]["missing"] is False
    (root / "a.wav").unlink()
    c = tick(root, back.cursor, now_ns=T0 + 50 * S).cursor
    put(root, "a.wav", b"new!", mtime_ns=T0 + 55 * S)
    changed = tick(root, c, now_ns=T0 + 70 * S)
    assert [r.content_id for r in changed.runs] == [sha(b"new!")[:16]]
    assert changed.new_partitions == []


# ---- files still being written -------------------------------------------------------------------


def test_half_written_file_waits_until_size_and_mtime_are_stable_across_two_ticks(root):
    now = T0 + 100 * S
    put(root, "a.wav", b"part", mtime_ns=now - S // 2)  # written half a second ago
    t1 = tick(root, now_ns=now)
    assert (t1.runs, t1.new_partitions, t1.waiting) == ([], [], ["a.wav"])
    assert t1.cursor.files == {}
    assert t1.cursor.pending == {"a.wav": [4, now - S // 2, None]}
    # The copy goes on: size and mtime change; still waiting.
    put(root, "a.wav", b"partial!", mtime_ns=now + S // 2)
    t2 = tick(root, t1.cursor, now_ns=now + S)
    assert (t2.runs, t2.waiting) == ([], ["a.wav"])
    assert t2.cursor.pending == {"a.wav": [8, now + S // 2, None]}
    # Unchanged since the last tick (even though still younger than settle_seconds): settled.
    t3 = tick(root, t2.cursor, now_ns=now + S + S // 10)
    assert [r.rel for r in t3.runs] == ["a.wav"]
    assert t3.new_partitions == [partition_key_for("a.wav")]
    assert (t3.waiting, t3.cursor.pending) == ([], {})


def test_old_enough_file_is_settled_on_the_first_tick(root):
    put(root, "a.wav", b"done", mtime_ns=T0)
    assert tick(root, now_ns=T0 + 2 * S).runs[0].rel == "a.wav"  # exactly settle_seconds old
    assert tick(root, now_ns=T0 + 2 * S - 1).waiting == ["a.wav"]


def test_sidecar_still_being_written_holds_the_file_back(root):
    now = T0 + 100 * S
    put(root, "a.wav", b"audio", mtime_ns=T0)
    put(root, "a.json", b'{"bpm":', mtime_ns=now - S // 2)
    t1 = tick(root, now_ns=now)
    assert (t1.runs, t1.waiting) == ([], ["a.wav"])
    # The sidecar grows between ticks: the audio's (size, mtime) alone must not settle it.
    put(root, "a.json", b'{"bpm": 138}', mtime_ns=now + S // 2)
    t2 = tick(root, t1.cursor, now_ns=now + S)
    assert (t2.runs, t2.waiting) == ([], ["a.wav"])
    t3 = tick(root, t2.cursor, now_ns=now + S + S // 10)
    assert [r.content_id for r in t3.runs] == [content_id(sha(b"audio"), sha(b'{"bpm": 138}'))]


# ---- sidecars ------------------------------------------------------------------------------------


def test_sidecar_added_or_changed_reruns_the_track(root):
    put(root, "a.wav", b"audio")
    t1 = tick(root)
    assert t1.runs[0].content_id == sha(b"audio")[:16]
    put(root, "a.json", b'{"bpm": 138}', mtime_ns=T0 + 30 * S)
    t2 = tick(root, t1.cursor, now_ns=T0 + 40 * S)
    cid2 = sha(b"audio")[:16] + "-" + sha(b'{"bpm": 138}')[:8]
    assert [(r.partition_key, r.content_id, r.run_key) for r in t2.runs] == [
        (partition_key_for("a.wav"), cid2, f"{partition_key_for('a.wav')}:{cid2}:{(root / 'a.wav').stat().st_mtime_ns}")
    ]
    assert t2.cursor.files["a.wav"]["sidecar"] == [12, T0 + 30 * S]
    put(root, "a.json", b'{"bpm": 140}', mtime_ns=T0 + 50 * S)
    t3 = tick(root, t2.cursor, now_ns=T0 + 60 * S)
    assert [r.content_id for r in t3.runs] == [sha(b"audio")[:16] + "-" + sha(b'{"bpm": 140}')[:8]]
    # Touching the sidecar without changing it: no run.
    os.utime(root / "a.json", ns=(T0 + 70 * S, T0 + 70 * S))
    t4 = tick(root, t3.cursor, now_ns=T0 + 80 * S)
    assert (t4.runs, t4.unchanged) == ([], 1)
    # Removing the sidecar changes what a run would consume: run again.
    (root / "a.json").unlink()
    t5 = tick(root, t4.cursor, now_ns=T0 + 90 * S)
    assert [r.content_id for r in t5.runs] == [sha(b"audio")[:16]]


def test_content_id_format():
    assert content_id("ab" * 32, None) == "ab" * 8
    assert content_id("ab" * 32, "cd" * 32) == "ab" * 8 + "-" + "cdcdcdcd"


# ---- budget, lost cursor, restart ----------------------------------------------------------------


def test_per_tick_budget_defers_the_rest(root):
    for i in range(5):
        put(root, f"t{i}.wav", f"track {i}".encode())
    t1 = tick(root, max_new_per_tick=2)
    assert [r.rel for r in t1.runs] == ["t0.wav", "t1.wav"]
    assert t1.deferred == ["t2.wav", "t3.wav", "t4.wav"]
    assert t1.new_partitions == [partition_key_for("t0.wav"), partition_key_for("t1.wav")]
    assert sorted(t1.cursor.files) == ["t0.wav", "t1.wav"]
    t2 = tick(root, t1.cursor, max_new_per_tick=2)
    assert ([r.rel for r in t2.runs], t2.deferred, t2.unchanged) == (["t2.wav", "t3.wav"], ["t4.wav"], 2)
    t3 = tick(root, t2.cursor, max_new_per_tick=2)
    assert ([r.rel for r in t3.runs], t3.deferred, t3.unchanged) == (["t4.wav"], [], 4)
    t4 = tick(root, t3.cursor, max_new_per_tick=2)
    assert (t4.runs, t4.deferred, t4.unchanged) == ([], [], 5)


def test_lost_cursor_with_known_content_registers_the_partition_but_does_not_run(root):
    put(root, "a.wav", b"aaa")
    put(root, "b.wav", b"bbb")
    ka, kb = partition_key_for("a.wav"), partition_key_for("b.wav")
    asked = []

    def known(key):
        asked.append(key)
        return {ka: sha(b"aaa")[:16], kb: sha(b"old b")[:16]}.get(key)

    plan = tick(root, None, known_content=known)
    assert plan.new_partitions == [ka, kb]
    assert [r.partition_key for r in plan.runs] == [kb]  # b's stored content is stale
    assert plan.unchanged == 1
    assert asked == [ka, kb]
    assert sorted(plan.cursor.files) == ["a.wav", "b.wav"]


def test_known_content_is_not_consulted_for_files_in_the_cursor(root):
    put(root, "a.wav", b"v1")
    c = tick(root).cursor
    put(root, "a.wav", b"v2!", mtime_ns=T0 + 30 * S)

    def known(key):
        raise AssertionError("only new files consult the instance")

    assert [r.content_id for r in tick(root, c, now_ns=T0 + 40 * S, known_content=known).runs] == [sha(b"v2!")[:16]]


def test_cursor_json_round_trip_and_empty_cursors(root):
    put(root, "a.wav", b"aaa")
    put(root, "b.wav", b"bb", mtime_ns=T0 + 9 * S)
    plan = tick(root)  # a settled, b waiting
    text = plan.cursor.to_json()
    data = json.loads(text)
    assert data["v"] == 1 and sorted(data["files"]) == ["a.wav"] and sorted(data["pending"]) == ["b.wav"]
    restored = InboxCursor.from_json(text)
    assert restored == plan.cursor
    assert InboxCursor.from_json(None) == InboxCursor() == InboxCursor.from_json("")
    # A restart with the restored cursor: a unchanged, b settles.
    again = tick(root, restored, now_ns=T0 + 10 * S + 1)
    assert [r.rel for r in again.runs] == ["b.wav"]
    assert again.unchanged == 1


def test_file_removed_between_scan_and_hash_is_skipped(root, monkeypatch):
    put(root, "a.wav", b"aaa")

    def gone(path, *a, **k):
        raise FileNotFoundError(path)

    monkeypatch.setattr(inbox_mod, "sha256_file", gone)
    plan = tick(root)
    assert (plan.runs, plan.new_partitions, plan.cursor.files) == ([], [], {})


# ---- partition key -> file -----------------------------------------------------------------------


def test_find_inbox_file(root):
    put(root, "x/My Song.wav", b"1")
    put(root, "my song.wav", b"2")
    put(root, ".hidden.wav", b"3")
    assert find_inbox_file(root, partition_key_for("x/My Song.wav")) == root / "x/My Song.wav"
    assert find_inbox_file(root, partition_key_for("my song.wav")) == root / "my song.wav"
    assert find_inbox_file(root, partition_key_for(".hidden.wav")) is None
    assert find_inbox_file(root, "no-such-key-0123456789") is None


def test_content_reverted_to_an_earlier_version_runs_again_under_a_fresh_run_key(root):
    """A → B → A: the third state has A's content id, but Dagster skips run keys it has seen, so
    the run key must differ from the first one (it carries the observed mtime)."""
    put(root, "a.wav", b"version A", mtime_ns=T0)
    t1 = tick(root, now_ns=T0 + 10 * S)
    put(root, "a.wav", b"version B", mtime_ns=T0 + 20 * S)
    t2 = tick(root, t1.cursor, now_ns=T0 + 30 * S)
    put(root, "a.wav", b"version A", mtime_ns=T0 + 40 * S)
    t3 = tick(root, t2.cursor, now_ns=T0 + 50 * S)
    assert [r.content_id for r in (t1.runs + t2.runs + t3.runs)] == [sha(b"version A")[:16], sha(b"version B")[:16], sha(b"version A")[:16]]
    keys = [r.run_key for r in t1.runs + t2.runs + t3.runs]
    assert len(set(keys)) == 3
