"""The Tier 1 folder planner (`gold_inbox.py`): partition keys, run keys, settling, the manifest.

Pure logic, no Dagster: every test builds a folder under tmp_path and calls `plan_gold` /
`read_manifest` / `find_gold_file` directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from trance_assets.gold_inbox import MANIFEST_NAME, find_gold_file, plan_gold, read_manifest, scan_gold_folder
from trance_assets.inbox import partition_key_for
from trance_assets.music.gold import MANIFEST_REQUIRED
from trance_assets.music.rules import generate

SETTLE = 2.0
HEADER = "file,title,artist,key,bpm,chords,verified_by,verified_on,licence,notes,reference_track"


def midi(seed: int) -> bytes:
    return generate("Am", 138, ["Am", "F", "C", "G"], 4, seed=seed).to_midi_bytes()


def put(root: Path, rel: str, data: bytes, age_s: float | None = 60.0) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if age_s is not None:
        t = time.time_ns() - int(age_s * 1e9)
        os.utime(p, ns=(t, t))
    return p


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plan(root: Path, cursor: str | None, rows: dict | None = None, verified: dict | None = None, known: set | None = None, now_ns: int | None = None):
    return plan_gold(
        root,
        cursor,
        row_hashes=rows or {},
        verified=verified or {},
        now_ns=time.time_ns() if now_ns is None else now_ns,
        settle_seconds=SETTLE,
        known_partitions=known or set(),
    )


def tick(root: Path, cursor: str | None, rows=None, verified=None, known=None):
    """One sensor tick: the plan and the cursor the sensor would store (JSON)."""
    p = plan(root, cursor, rows, verified, known)
    return p, json.dumps(p.cursor, sort_keys=True)


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "tier1"
    r.mkdir()
    return r


# ---- plan_gold -----------------------------------------------------------------------------------


def test_new_files_become_partitions_and_runs(root):
    a = put(root, "gold_a.mid", midi(1))
    b = put(root, "Artist/Lead B.MIDI", midi(2))
    put(root, "notes.txt", b"not midi")
    put(root, ".hidden.mid", midi(3))
    put(root, ".trash/old.mid", midi(4))
    put(root, MANIFEST_NAME, HEADER.encode() + b"\n")
    row_a = "ab" * 32
    p = plan(root, None, rows={"gold_a.mid": row_a}, verified={"gold_a.mid": True})

    ka, kb = partition_key_for("gold_a.mid"), partition_key_for("Artist/Lead B.MIDI")
    # scan order (sorted relative paths): "Artist/..." < "gold_a.mid"
    assert p.new_partitions == [kb, ka]
    assert [(r.partition_key, r.rel) for r in p.runs] == [(kb, "Artist/Lead B.MIDI"), (ka, "gold_a.mid")]
    runs = {r.rel: r for r in p.runs}
    assert runs["gold_a.mid"].run_key == f"{ka}:{sha(a)[:16]}:{row_a[:8]}"
    assert runs["Artist/Lead B.MIDI"].run_key == f"{kb}:{sha(b)[:16]}:none"
    assert runs["gold_a.mid"].verified is True and runs["Artist/Lead B.MIDI"].verified is False
    assert p.waiting == []
    assert set(p.cursor) == {"gold_a.mid", "Artist/Lead B.MIDI"}
    st = a.stat()
    assert p.cursor["gold_a.mid"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha(a), "row": row_a}
    assert p.cursor["Artist/Lead B.MIDI"]["row"] is None


def test_unchanged_files_give_no_run_on_the_next_tick(root):
    put(root, "a.mid", midi(1))
    put(root, "b.mid", midi(2))
    rows = {"a.mid": "1" * 64}
    p1, c1 = tick(root, None, rows)
    known = set(p1.new_partitions)
    assert len(p1.runs) == 2

    p2, c2 = tick(root, c1, rows, known=known)
    assert (p2.new_partitions, p2.runs, p2.waiting) == ([], [], [])
    assert json.loads(c2) == json.loads(c1)

    # Touched (new mtime, same bytes): still nothing to run; the cursor follows the new mtime.
    path = root / "a.mid"
    t = time.time_ns() - 30 * 10**9
    os.utime(path, ns=(t, t))
    p3, c3 = tick(root, c2, rows, known=known)
    assert (p3.new_partitions, p3.runs) == ([], [])
    assert json.loads(c3)["a.mid"]["mtime_ns"] == t


def test_changed_bytes_rerun_with_a_new_run_key(root):
    put(root, "a.mid", midi(1))
    put(root, "b.mid", midi(2))
    p1, c1 = tick(root, None)
    known = set(p1.new_partitions)
    first = {r.rel: r.run_key for r in p1.runs}

    changed = put(root, "a.mid", midi(5), age_s=20)
    p2, c2 = tick(root, c1, known=known)
    assert p2.new_partitions == []
    [run] = p2.runs
    assert run.rel == "a.mid" and run.partition_key == partition_key_for("a.mid")
    assert run.run_key == f"{run.partition_key}:{sha(changed)[:16]}:none"
    assert run.run_key != first["a.mid"]
    assert json.loads(c2)["a.mid"]["sha256"] == sha(changed)
    # The unchanged file keeps its state.
    assert json.loads(c2)["b.mid"] == json.loads(c1)["b.mid"]


def test_changed_manifest_row_reruns_with_a_new_run_key(root):
    put(root, "a.mid", midi(1))
    put(root, "b.mid", midi(2))
    old_row, new_row = "0123456789" * 6 + "abcd", "fedcba9876" * 6 + "4321"
    p1, c1 = tick(root, None, rows={"a.mid": old_row, "b.mid": "9" * 64})
    known = set(p1.new_partitions)
    key_a = partition_key_for("a.mid")
    assert {r.run_key for r in p1.runs if r.rel == "a.mid"} == {f"{key_a}:{sha(root / 'a.mid')[:16]}:01234567"}

    p2, c2 = tick(root, c1, rows={"a.mid": new_row, "b.mid": "9" * 64}, known=known)
    [run] = p2.runs
    assert run.rel == "a.mid" and run.run_key == f"{key_a}:{sha(root / 'a.mid')[:16]}:fedcba98"
    assert json.loads(c2)["a.mid"]["row"] == new_row

    # The row removed from the manifest (the file is now unverified): another run, row part 'none'.
    p3, _ = tick(root, c2, rows={"b.mid": "9" * 64}, verified={"b.mid": True}, known=known)
    [run] = p3.runs
    assert run.rel == "a.mid" and run.run_key.endswith(":none") and run.verified is False
    assert p3.unverified == ["a.mid"]


def test_files_still_being_written_wait(root):
    put(root, "done.mid", midi(1))
    fresh = put(root, "fresh.mid", midi(2), age_s=0.5)  # modified half a second before `now`
    now = fresh.stat().st_mtime_ns + int(0.5e9)
    p1 = plan(root, None, now_ns=now)
    assert p1.waiting == ["fresh.mid"]
    assert [r.rel for r in p1.runs] == ["done.mid"]
    assert p1.new_partitions == [partition_key_for("done.mid")]
    assert "fresh.mid" not in p1.cursor

    # Exactly at the settle boundary it is settled; one nanosecond before, it still waits.
    mtime = fresh.stat().st_mtime_ns
    assert plan(root, None, now_ns=mtime + int(SETTLE * 1e9) - 1).waiting == ["fresh.mid"]
    p2 = plan(root, json.dumps(p1.cursor), known=set(p1.new_partitions), now_ns=mtime + int(SETTLE * 1e9))
    assert p2.waiting == []
    assert [r.rel for r in p2.runs] == ["fresh.mid"]
    assert p2.new_partitions == [partition_key_for("fresh.mid")]


def test_unverified_files_are_listed(root):
    for name in ("a.mid", "b.mid", "c.mid"):
        put(root, name, midi(len(name) + ord(name[0])))
    p = plan(root, None, rows={"a.mid": "1" * 64, "b.mid": "2" * 64}, verified={"a.mid": True, "b.mid": False})
    assert p.unverified == ["b.mid", "c.mid"]
    assert {r.rel: r.verified for r in p.runs} == {"a.mid": True, "b.mid": False, "c.mid": False}
    # Listed again on every tick (not only when a run is requested).
    p2 = plan(root, json.dumps(p.cursor), rows={"a.mid": "1" * 64, "b.mid": "2" * 64}, verified={"a.mid": True}, known=set(p.new_partitions))
    assert p2.runs == [] and p2.unverified == ["b.mid", "c.mid"]


def test_a_lost_partition_is_registered_and_run_again(root):
    put(root, "a.mid", midi(1))
    p1, c1 = tick(root, None)
    # The cursor knows the file but the instance has no such partition (e.g. it was deleted).
    p2, _ = tick(root, c1, known=set())
    assert p2.new_partitions == [partition_key_for("a.mid")]
    assert [r.rel for r in p2.runs] == ["a.mid"]


def test_empty_or_missing_folder(tmp_path):
    assert scan_gold_folder(tmp_path / "nope") == []
    p = plan(tmp_path / "nope", None)
    assert (p.new_partitions, p.runs, p.waiting, p.unverified, p.cursor) == ([], [], [], [], {})


# ---- read_manifest -------------------------------------------------------------------------------


def test_read_manifest_without_a_manifest(root):
    m = read_manifest(root)
    assert len(m) == 0 and m.entries == {} and m.problems == ()
    assert m.source == str(root / MANIFEST_NAME)


def test_read_manifest_with_a_broken_header_reports_a_problem(root):
    (root / MANIFEST_NAME).write_text("file,title,artist\ngold_a.mid,A,B\n")
    m = read_manifest(root)
    assert m.entries == {}
    [problem] = m.problems
    assert problem.line == 1 and problem.file == ""
    assert "lacks required column" in problem.message
    for col in ("key", "bpm", "verified_by", "verified_on", "licence"):
        assert col in problem.message
    assert problem.source == str(root / MANIFEST_NAME)


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "empty manifest"),
        (b"\n\n", "empty manifest"),
        (b"file,file,title,artist,key,bpm,verified_by,verified_on,licence\n", "appears twice"),
        ("file,title\nx\xe9.mid,T\n".encode("latin-1"), ""),  # not UTF-8
    ],
)
def test_read_manifest_never_raises_for_unusable_files(root, content, needle):
    (root / MANIFEST_NAME).write_bytes(content)
    m = read_manifest(root)
    assert m.entries == {}
    [problem] = m.problems
    assert needle in problem.message


def test_read_manifest_good_rows_and_a_bad_row(root):
    (root / MANIFEST_NAME).write_text(
        HEADER + "\n"
        "gold_a.mid,A,Me,Am,138,Am F C G,alice,2026-01-01,CC0,,\n"
        "gold_b.mid,B,Me,Am,fast,,bob,2026-01-01,CC0,,\n"
        "gold_c.mid,C,Me,Em,140,,,,CC0,,\n"
    )
    m = read_manifest(root)
    assert set(m.entries) == {"gold_a.mid", "gold_c.mid"}
    assert m["gold_a.mid"].verified is True and m["gold_c.mid"].verified is False
    assert m["gold_a.mid"].bpm == 138.0 and m["gold_a.mid"].chords == ("Am", "F", "C", "G")
    assert len(m["gold_a.mid"].row_hash) == 64
    [problem] = m.problems
    assert (problem.line, problem.file) == (3, "gold_b.mid") and "bad bpm" in problem.message
    assert m.problem_for("gold_b.mid") is problem
    assert set(MANIFEST_REQUIRED) <= set(m.columns)


# ---- find_gold_file ------------------------------------------------------------------------------


def test_find_gold_file(root):
    put(root, "gold_a.mid", midi(1))
    put(root, "sub/Gold A.mid", midi(2))
    put(root, ".hidden/gold_a.mid", midi(3))
    put(root, "readme.md", b"# not midi")
    assert find_gold_file(root, partition_key_for("gold_a.mid")) == "gold_a.mid"
    assert find_gold_file(root, partition_key_for("sub/Gold A.mid")) == "sub/Gold A.mid"
    assert partition_key_for("gold_a.mid") != partition_key_for("sub/Gold A.mid")
    assert find_gold_file(root, partition_key_for("missing.mid")) is None
    assert find_gold_file(root, partition_key_for(".hidden/gold_a.mid")) is None
    assert find_gold_file(root, partition_key_for("readme.md")) is None
    assert find_gold_file(root / "nope", partition_key_for("gold_a.mid")) is None
    assert scan_gold_folder(root) == ["gold_a.mid", "sub/Gold A.mid"]
