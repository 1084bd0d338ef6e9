"""The reference-audio inbox: partition keys for files, and what a sensor tick should do.

Pure logic (no Dagster): `plan_inbox` compares what is in the folder with the cursor of the last
tick and returns partitions to add, runs to request and the next cursor. The cursor records observed
file state (size, mtime, content hash), never wall-clock time, so a restarted daemon picks up where
it left off.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .audio.io import AUDIO_EXTENSIONS, sha256_file, sidecar_path

KEY_SLUG_MAX = 48
KEY_DIGEST_LEN = 10
KEY_MAX_LEN = KEY_SLUG_MAX + 1 + KEY_DIGEST_LEN


def partition_key_for(relative_path: str) -> str:
    """A partition key for a file at `relative_path` (POSIX, relative to the inbox).

    `<slug>-<digest>`: the slug is the path without its extension, transliterated to ASCII,
    lower-cased, every run of other characters turned into one '-', cut to 48 characters (readable);
    the digest is 10 hex digits of SHA-1 of the exact NFC-normalised path (unique: names that differ
    only by case, punctuation or extension get different keys). Only [a-z0-9-] appear, so keys never
    contain separators, '..', or the characters Dagster reserves; at most 59 characters.
    """
    rel = unicodedata.normalize("NFC", relative_path)
    stem = str(PurePosixPath(rel).with_suffix("")) if PurePosixPath(rel).suffix else rel
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:KEY_SLUG_MAX].strip("-") or "track"
    # surrogatepass: a str may hold lone surrogates (e.g. from a non-UTF-8 file name); never raise.
    digest = hashlib.sha1(rel.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_DIGEST_LEN]
    return f"{slug}-{digest}"


def content_id(audio_sha256: str, sidecar_sha256: str | None) -> str:
    """Identity of what a run of a partition consumed: the audio bytes and its sidecar, if any."""
    return audio_sha256[:16] + (f"-{sidecar_sha256[:8]}" if sidecar_sha256 else "")


@dataclass(frozen=True)
class FileState:
    rel: str
    size: int
    mtime_ns: int
    sidecar: tuple[int, int] | None  # (size, mtime_ns) of `<name>.json`, if present


def scan_inbox(root: Path, unusable: list[str] | None = None) -> list[FileState]:
    """Audio files below `root` (recursive), skipping hidden files and folders; sorted by path.

    Names that are not valid UTF-8 are skipped (Dagster cannot store them in tags or metadata);
    their paths, with the bad bytes escaped, are appended to `unusable` when it is given.
    """
    out = []
    if not root.is_dir():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        try:
            rel.as_posix().encode("utf-8")
        except UnicodeEncodeError:
            if unusable is not None:
                unusable.append(rel.as_posix().encode("utf-8", "backslashreplace").decode("utf-8"))
            continue
        try:
            st = p.stat()
            if not p.is_file():
                continue
            side = sidecar_path(p)
            sst = side.stat() if side.is_file() else None
        except FileNotFoundError:  # removed while scanning
            continue
        out.append(
            FileState(rel.as_posix(), st.st_size, st.st_mtime_ns, (sst.st_size, sst.st_mtime_ns) if sst else None)
        )
    return out


@dataclass
class InboxCursor:
    # rel path -> {"key", "size", "mtime_ns", "sha256", "sidecar", "sidecar_sha256", "missing"}
    files: dict[str, dict] = field(default_factory=dict)
    # rel path -> [size, mtime_ns] seen on the previous tick but not yet settled
    pending: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"v": 1, "files": self.files, "pending": self.pending}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "InboxCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(files=dict(data.get("files", {})), pending=dict(data.get("pending", {})))


@dataclass(frozen=True)
class RunPlan:
    partition_key: str
    rel: str
    sha256: str
    content_id: str
    mtime_ns: int

    @property
    def run_key(self) -> str:
        """`<partition>:<content id>:<mtime_ns>`: re-ticks over the same observation never duplicate a
        run, while a file that goes A → B → A still re-runs (Dagster skips any run key used before)."""
        return f"{self.partition_key}:{self.content_id}:{self.mtime_ns}"


@dataclass(frozen=True)
class InboxPlan:
    new_partitions: list[str]
    runs: list[RunPlan]
    waiting: list[str]  # files still being written (size or mtime not settled)
    deferred: list[str]  # settled files left for the next tick (per-tick hashing budget)
    unchanged: int
    missing: list[str]  # files registered earlier that are gone (partition, history, data kept)
    cursor: InboxCursor
    unusable: list[str] = field(default_factory=list)  # audio files skipped: name not valid UTF-8


def plan_inbox(
    root: Path,
    cursor: InboxCursor,
    *,
    now_ns: int,
    settle_seconds: float = 2.0,
    max_new_per_tick: int = 200,
    known_content: Callable[[str], str | None] = lambda key: None,
) -> InboxPlan:
    """Decide one sensor tick.

    A file is *settled* when its mtime and its sidecar's are at least `settle_seconds` old, or when
    its (size, mtime) and its sidecar's equal what the previous tick saw; unsettled files wait (a
    copy in progress is never picked up).
    A settled file whose (size, mtime) and sidecar match the cursor is unchanged and costs no read.
    Otherwise its content is hashed: new content requests a run with run key
    `<partition>:<content id>:<mtime_ns>`; same content (a touch, or a file removed and put back) only updates
    the cursor. `known_content(key)` returns the content id of the partition's latest
    materialization, so a cursor that was lost (or runs made headless) never re-triggers work.
    """
    files = {k: dict(v) for k, v in cursor.files.items()}
    pending: dict[str, list] = {}
    new_partitions, runs, waiting, deferred = [], [], [], []
    unchanged = 0
    seen = set()
    budget = max_new_per_tick
    unusable: list[str] = []
    for st in scan_inbox(root, unusable):
        seen.add(st.rel)
        prev = files.get(st.rel)
        sidecar = list(st.sidecar) if st.sidecar else None
        if prev and prev["size"] == st.size and prev["mtime_ns"] == st.mtime_ns and prev.get("sidecar") == sidecar:
            if prev.get("missing"):
                prev["missing"] = False
            unchanged += 1
            continue
        observed = [st.size, st.mtime_ns, sidecar]  # a sidecar still being written is not settled either
        newest = max(st.mtime_ns, st.sidecar[1]) if st.sidecar else st.mtime_ns
        settled = (now_ns - newest) >= settle_seconds * 1e9 or cursor.pending.get(st.rel) == observed
        if not settled:
            pending[st.rel] = observed
            waiting.append(st.rel)
            continue
        if budget <= 0:
            deferred.append(st.rel)
            continue
        budget -= 1
        path = root / st.rel
        try:
            sha = sha256_file(path)
            side = sidecar_path(path)
            side_sha = sha256_file(side) if st.sidecar else None
        except FileNotFoundError:
            continue
        cid = content_id(sha, side_sha)
        key = prev["key"] if prev else partition_key_for(st.rel)
        entry = {"key": key, "size": st.size, "mtime_ns": st.mtime_ns, "sha256": sha, "sidecar": sidecar,
                 "sidecar_sha256": side_sha, "missing": False}
        files[st.rel] = entry
        if prev and content_id(prev["sha256"], prev.get("sidecar_sha256")) == cid:
            unchanged += 1
            continue
        if not prev:
            new_partitions.append(key)
            if known_content(key) == cid:
                unchanged += 1
                continue
        runs.append(RunPlan(key, st.rel, sha, cid, st.mtime_ns))
    missing = []
    for rel, entry in files.items():
        if rel not in seen:
            entry["missing"] = True
            missing.append(rel)
    return InboxPlan(new_partitions, runs, waiting, deferred, unchanged, missing, InboxCursor(files, pending), unusable)


def find_inbox_file(root: Path, partition_key: str) -> Path | None:
    """The inbox file whose partition key is `partition_key` (names only: nothing is read)."""
    for st in scan_inbox(root):
        if partition_key_for(st.rel) == partition_key:
            return root / st.rel
    return None
