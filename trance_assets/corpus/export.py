"""Training formats, one folder per split under `<storage>/dataset/corpus/<split>/`:

- `notesequences.tfrecord`: note-seq NoteSequence protos, TFRecord framing (see formats.tfrecord);
- `remi_tokens.parquet`: MidiTok REMI token ids per example (the ids the filter's roundtrip
  produced with the same tokenizer), next to `../tokenizer.json`;
- `metadata/<example_id>.json`: one JSON per example (`example_metadata`).

Every folder is replaced atomically (written next to the target, then renamed), so a reader never
sees half a split and examples that moved to another split leave no stale file behind.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
from upath import UPath

from ..formats.tfrecord import write_tfrecord
from ..storage import atomic_write_bytes, atomic_write_dir, atomic_write_parquet, atomic_write_text, is_local, local_path, sha256_file
from .examples import Example, from_table
from .splits import SPLITS

EXPORT_VERSION = "1"
TFRECORD_NAME = "notesequences.tfrecord"
REMI_NAME = "remi_tokens.parquet"
METADATA_DIR = "metadata"
TOKENIZER_NAME = "tokenizer.json"


def notesequence_bytes(ex: Example, split: str) -> bytes:
    from ..formats.notesequence import notesequence_from_arrays  # imports note_seq (~1.5 s): only when exporting

    ns = notesequence_from_arrays(
        ex.start,
        ex.duration,
        ex.pitch,
        ex.velocity,
        bpm=ex.bpm,
        key=ex.key,
        chords=[(sym, s) for sym, s, _d, _inf in ex.chords],
        id=ex.example_id,
        filename=ex.source_file,
        collection_name=f"trance_assets/{split}/tier{ex.tier}",
        program=ex.program,
    )
    return ns.SerializeToString()


def write_tfrecords(root: UPath, splits: pl.DataFrame) -> dict[str, dict]:
    """One TFRecord file per split; returns {split: {examples, bytes, sha256, path}}."""
    out = {}
    for split in SPLITS:
        part = splits.filter(pl.col("split") == split)
        examples = from_table(part)
        target = root / split / TFRECORD_NAME
        n = write_tfrecord(target, (notesequence_bytes(ex, split) for ex in examples))
        info = {"examples": n, "path": str(target)}
        if target.exists():
            info["bytes"] = target.stat().st_size
            info["sha256"] = sha256_file(local_path(target)) if is_local(target) else hashlib.sha256(target.read_bytes()).hexdigest()
        out[split] = info
    return out


def write_remi(root: UPath, splits: pl.DataFrame, tokenizer_json: bytes) -> dict[str, dict]:
    """`tokenizer.json` at the corpus root and `<split>/remi_tokens.parquet` (ids as list[u16])."""
    atomic_write_bytes(root / TOKENIZER_NAME, tokenizer_json)
    out = {}
    for split in SPLITS:
        part = splits.filter(pl.col("split") == split).select(
            "example_id", "tier", "source", "group", "key", "bpm", pl.col("remi_ids").alias("ids"), pl.col("remi_ids").list.len().alias("n_tokens")
        )
        target = atomic_write_parquet(root / split / REMI_NAME, part)
        out[split] = {
            "examples": len(part),
            "tokens": int(part["n_tokens"].sum()) if len(part) else 0,
            "mean_tokens": round(float(part["n_tokens"].mean()), 1) if len(part) else 0.0,
            "path": str(target),
        }
    return out


def example_metadata(ex: Example, *, split: str, group: str, original_key: str, original_bpm: float, quality: dict, code_versions: dict, remi_tokens: int) -> dict:
    """The per-example JSON: the plan's fields (source, tier, original key, BPM, augmentation
    applied) plus licence, content hash, parent, transforms, split, group and code versions."""
    meta = ex.metadata()
    meta.update(
        {
            "split": split,
            "group": group,
            "original_key": original_key,
            "original_bpm": original_bpm,
            "augmentation": [t for t in ex.transforms if t.split(":")[0] in ("transpose", "tempo", "octave", "velocity")],
            "quality": quality,
            "remi_tokens": remi_tokens,
            "code_versions": {"source_step": ex.provenance.get("code_version") or "", **code_versions},
            "files": {
                "notesequences": f"{split}/{TFRECORD_NAME}",
                "remi_tokens": f"{split}/{REMI_NAME}",
            },
        }
    )
    return meta


def write_metadata(root: UPath, splits: pl.DataFrame, code_versions: dict) -> dict[str, dict]:
    """`<split>/metadata/<example_id>.json` for every example, plus `examples.parquet` (an index of
    every example's metadata without its notes) at the corpus root."""
    out: dict[str, dict] = {}
    index_rows = []
    for split in SPLITS:
        part = splits.filter(pl.col("split") == split)
        examples = from_table(part)
        groups = part["group"].to_list()
        quality = part["quality"].to_list()
        ntok = part["remi_ids"].list.len().to_list()
        metas = []
        for ex, g, q, nt in zip(examples, groups, quality, ntok):
            ok, ob = ex.provenance.get("source_key", ex.key), ex.provenance.get("source_bpm", ex.bpm)
            metas.append(example_metadata(ex, split=split, group=g, original_key=ok, original_bpm=ob, quality=json.loads(q), code_versions=code_versions, remi_tokens=nt))

        def fill(folder: Path, metas=metas) -> None:
            for m in metas:
                (folder / f"{m['example_id']}.json").write_text(json.dumps(m, indent=1, sort_keys=True, default=str))

        atomic_write_dir(root / split / METADATA_DIR, fill)
        out[split] = {"examples": len(metas), "path": str(root / split / METADATA_DIR)}
        for m in metas:
            index_rows.append(
                {
                    "example_id": m["example_id"],
                    "split": split,
                    "group": m["group"],
                    "tier": m["tier"],
                    "source": m["source"],
                    "source_file": m["source_file"],
                    "licence": m["licence"],
                    "parent": m["parent"],
                    "transforms": " ".join(m["transforms"]),
                    "key": m["key"],
                    "bpm": m["bpm"],
                    "content_hash": m["content_hash"],
                }
            )
    index = pl.DataFrame(index_rows, schema={"example_id": pl.String, "split": pl.String, "group": pl.String, "tier": pl.Int64, "source": pl.String, "source_file": pl.String, "licence": pl.String, "parent": pl.String, "transforms": pl.String, "key": pl.String, "bpm": pl.Float64, "content_hash": pl.String})
    atomic_write_parquet(root / "examples.parquet", index)
    return out


def write_text(root: UPath, name: str, text: str) -> UPath:
    return atomic_write_text(root / name, text)
