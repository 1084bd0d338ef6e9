"""The Tier 1 folder (`storage/dataset/tier1/`): partition keys for gold MIDI files and what a sensor
tick should do. Pure logic (no Dagster), like `inbox.py` for reference audio.

A file is (re)run when its bytes change or when its manifest row changes (a corrected key or BPM, a
new `verified_by`): the run key is `<partition>:<sha256[:16]>:<manifest row hash[:8] or 'none'>`.
Files still being written (modified less than `settle_seconds` ago) wait for the next tick. The
cursor records file state (size, mtime, sha256, row hash), never wall-clock time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .inbox import partition_key_for
from .music.gold import Manifest, ManifestError, ManifestProblem, parse_manifest

MIDI_EXTENSIONS = (".mid", ".midi")
MANIFEST_NAME = "manifest.csv"


def read_manifest(root: Path) -> Manifest:
    """`root/manifest.csv` parsed. No manifest, or one whose header is unusable, gives a Manifest
    without entries (every file unverified); an unusable header is reported as a problem."""
    path = root / MANIFEST_NAME
    if not path.exists():
        return Manifest(str(path), {}, ())
    try:
        return parse_manifest(path.read_text(encoding="utf-8-sig"), str(path))
    except (ManifestError, UnicodeDecodeError) as exc:
        return Manifest(str(path), {}, (ManifestProblem(1, "", str(exc), str(path)),))


def scan_gold_folder(root: Path) -> list[str]:
    """Relative POSIX paths of the MIDI files below `root` (hidden files and folders skipped); sorted."""
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in MIDI_EXTENSIONS or not p.is_file():
            continue
        out.append(rel.as_posix())
    return out


def find_gold_file(root: Path, partition_key: str) -> str | None:
    for rel in scan_gold_folder(root):
        if partition_key_for(rel) == partition_key:
            return rel
    return None


@dataclass(frozen=True)
class GoldRun:
    partition_key: str
    rel: str
    run_key: str
    verified: bool


@dataclass
class GoldPlan:
    new_partitions: list[str] = field(default_factory=list)
    runs: list[GoldRun] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)


def plan_gold(root: Path, cursor: str | None, row_hashes: dict[str, str | None], verified: dict[str, bool], *, now_ns: int, settle_seconds: float, known_partitions: set[str]) -> GoldPlan:
    """Compare the folder with the cursor. `row_hashes`/`verified`: manifest facts per relative path
    (missing = no manifest entry). Returns partitions to add, runs to request and the next cursor."""
    prev = json.loads(cursor) if cursor else {}
    plan = GoldPlan(cursor=dict(prev))
    for rel in scan_gold_folder(root):
        p = root / rel
        st = p.stat()
        if now_ns - st.st_mtime_ns < settle_seconds * 1e9:
            plan.waiting.append(rel)
            continue
        row = row_hashes.get(rel)
        old = prev.get(rel)
        if old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
            sha = old["sha256"]
        else:
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
        pk = partition_key_for(rel)
        if pk not in known_partitions and pk not in plan.new_partitions:
            plan.new_partitions.append(pk)
        state = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha, "row": row}
        if not verified.get(rel, False):
            plan.unverified.append(rel)
        if old is None or old.get("sha256") != sha or old.get("row") != row or pk in plan.new_partitions:
            run_key = f"{pk}:{sha[:16]}:{(row or 'none')[:8]}"
            plan.runs.append(GoldRun(pk, rel, run_key, verified.get(rel, False)))
        plan.cursor[rel] = state
    return plan
