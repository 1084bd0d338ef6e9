"""The corpus in midi-model tokens: ``<corpus>/<split>/midi_model_tokens.parquet`` per split and
``<corpus>/midi_model_tokenizer.json`` (the tokenizer block of a midi-model config.json).

One row per example: ``example_id, tier, source, group, key, bpm, n_events, tokens`` where
``tokens`` is the example's token matrix [n_events, 8] flattened row by row (uint16; bos first,
eos last). Every melody carries its real key signature (the upstream optimiser would rewrite A minor
as C major; ours keeps it) and nothing is skipped for being small or monophonic: the corpus is
monophonic leads.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from upath import UPath

from ..formats.midi_tokenizer import MidiTokenizer
from ..storage import atomic_write_parquet, atomic_write_text
from .examples import from_table
from .splits import SPLITS

TOKENS_NAME = "midi_model_tokens.parquet"
TOKENIZER_NAME = "midi_model_tokenizer.json"
ROW = 8


@dataclass(frozen=True)
class TokenExample:
    example_id: str
    tier: int
    tokens: np.ndarray  # [n_events, 8] int64


def write_midi_model_tokens(root: UPath, splits: pl.DataFrame, tokenizer: MidiTokenizer) -> dict[str, dict]:
    """Tokenize every example of every split; returns {split: {examples, events, mean_events, path}}."""
    atomic_write_text(root / TOKENIZER_NAME, json.dumps(tokenizer.to_config(), indent=1, sort_keys=True))
    out = {}
    for split in SPLITS:
        part = splits.filter(pl.col("split") == split)
        rows = []
        for ex, group in zip(from_table(part), part["group"].to_list() if "group" in part.columns else [None] * len(part)):
            tokens = tokenizer.melody_to_tokens(ex.to_melody())
            rows.append({"example_id": ex.example_id, "tier": ex.tier, "source": ex.source, "group": group or "",
                         "key": ex.key, "bpm": float(ex.bpm), "n_events": int(len(tokens)),
                         "tokens": tokens.astype(np.uint16).reshape(-1).tolist()})
        schema = {"example_id": pl.Utf8, "tier": pl.Int8, "source": pl.Utf8, "group": pl.Utf8, "key": pl.Utf8,
                  "bpm": pl.Float64, "n_events": pl.Int32, "tokens": pl.List(pl.UInt16)}
        df = pl.DataFrame(rows, schema=schema)
        target = atomic_write_parquet(root / split / TOKENS_NAME, df)
        n = int(df["n_events"].sum()) if len(df) else 0
        out[split] = {"examples": len(df), "events": n, "mean_events": round(n / len(df), 1) if len(df) else 0.0, "path": str(target)}
    return out


def read_midi_model_tokens(corpus_dir: str | os.PathLike, split: str, tiers: Sequence[int] | None = None) -> list[TokenExample]:
    """The token matrices of one split (restricted to `tiers`; None: all). FileNotFoundError names
    the missing file."""
    path = Path(corpus_dir) / split / TOKENS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no midi-model tokens at {path} (materialize corpus/midi_model_tokens first)")
    df = pl.read_parquet(path)
    if tiers is not None:
        df = df.filter(pl.col("tier").is_in([int(t) for t in tiers]))
    return [TokenExample(i, int(t), np.asarray(tok, dtype=np.int64).reshape(-1, ROW))
            for i, t, tok in zip(df["example_id"].to_list(), df["tier"].to_list(), df["tokens"].to_list())]


def read_tokenizer(corpus_dir: str | os.PathLike) -> MidiTokenizer:
    path = Path(corpus_dir) / TOKENIZER_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no midi-model tokenizer config at {path} (materialize corpus/midi_model_tokens first)")
    return MidiTokenizer.from_config(json.loads(path.read_text()))
