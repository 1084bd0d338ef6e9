"""The dataset card: counts, yields, rejection reasons, distributions against the reference corpus.

`pitch_class_distribution` follows EVALUATION.md's `kl_to_reference`: duration-weighted pitch-class
histogram, rotated so the key's tonic is 0 (major keys: their relative minor's tonic), ε = 1e-6
added, renormalised; `kl_bits(P, Q)` = Σ P log2(P/Q). The reference corpus is Tier 1's test split
(source examples only, no augmented copies); the training set is the train split, copies included.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..music.pianoroll import figure_png
from ..music.theory import parse_key
from .splits import SPLITS

EPS = 1e-6
PC_LABELS = ("1", "♭2", "2", "♭3", "3", "4", "♯4", "5", "♭6", "6", "♭7", "7")


def pitch_class_distribution(keys: Sequence[str], pitches: Sequence, durations: Sequence) -> np.ndarray:
    """Duration-weighted, tonic-rotated (relative minor for major keys), ε-smoothed, sums to 1."""
    h = np.zeros(12)
    for key, p, d in zip(keys, pitches, durations):
        tonic = parse_key(key).relative_minor_tonic
        pcs = (np.asarray(p, dtype=np.int64) - tonic) % 12
        h += np.bincount(pcs, weights=np.asarray(d, dtype=np.float64), minlength=12)
    total = h.sum()
    p = h / total if total > 0 else np.full(12, 1 / 12)
    p = p + EPS
    return p / p.sum()


def kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log2(p / q)))


def reference_part(table: pl.DataFrame) -> pl.DataFrame:
    """Tier 1 test split, sources only: the evaluation's reference corpus."""
    return table.filter((pl.col("tier") == 1) & (pl.col("split") == "test") & pl.col("parent").is_null())


def _pcd(df: pl.DataFrame) -> np.ndarray:
    return pitch_class_distribution(df["key"].to_list(), df["pitch"].to_list(), df["duration"].to_list())


@dataclass
class CardFigures:
    pitch_classes: bytes
    tempo: bytes
    keys: bytes
    ranges: bytes


def _figures(train: pl.DataFrame, ref: pl.DataFrame, p: np.ndarray, q: np.ndarray) -> CardFigures:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pair_hist(ax, a, b, bins, label):
        ax.hist(a, bins=bins, density=True, alpha=0.6, label=f"training ({len(a)})")
        if len(b):
            ax.hist(b, bins=bins, density=True, alpha=0.6, label=f"reference ({len(b)})")
        ax.set_xlabel(label)
        ax.legend(fontsize=7)

    fig, ax = plt.subplots(figsize=(6, 2.6))
    x = np.arange(12)
    ax.bar(x - 0.2, p, 0.4, label="training")
    ax.bar(x + 0.2, q, 0.4, label="reference")
    ax.set_xticks(x, PC_LABELS)
    ax.set_xlabel("scale degree (minor tonic = 1)")
    ax.legend(fontsize=7)
    pcs = figure_png(fig)

    fig, ax = plt.subplots(figsize=(6, 2.6))
    pair_hist(ax, train["bpm"].to_numpy(), ref["bpm"].to_numpy(), np.arange(110, 171, 2.5), "BPM")
    tempo = figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = sorted(set(train["key"].to_list()) | set(ref["key"].to_list()), key=lambda k: (parse_key(k).mode, parse_key(k).tonic))
    tc, rc = Counter(train["key"].to_list()), Counter(ref["key"].to_list())
    x = np.arange(len(names))
    ax.bar(x - 0.2, [tc[k] / max(1, len(train)) for k in names], 0.4, label="training")
    ax.bar(x + 0.2, [rc[k] / max(1, len(ref)) for k in names], 0.4, label="reference")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("share")
    ax.legend(fontsize=7)
    keys = figure_png(fig)

    def ranges(df):
        return np.array([(max(p) - min(p)) if len(p) else 0 for p in df["pitch"].to_list()])

    fig, ax = plt.subplots(figsize=(6, 2.6))
    pair_hist(ax, ranges(train), ranges(ref), np.arange(0, 40, 2), "pitch range (semitones)")
    rng = figure_png(fig)
    return CardFigures(pcs, tempo, keys, rng)


def source_yields(augmented: pl.DataFrame, accepted: pl.DataFrame) -> tuple[list[dict], list[dict]]:
    """Rows per (tier, source) — licences, sources, examples after augmentation, accepted, yield —
    and per tier (sources and examples before and after the filter)."""
    by_source = []
    for (tier, source), part in sorted(augmented.group_by(["tier", "source"]), key=lambda kv: kv[0]):
        acc = accepted.filter((pl.col("tier") == tier) & (pl.col("source") == source))
        by_source.append({
            "tier": tier, "source": source, "licence": "; ".join(sorted(set(part["licence"].to_list()))),
            "sources": part["source_id"].n_unique(), "augmented": len(part), "accepted": len(acc),
            "yield": round(len(acc) / len(part), 3) if len(part) else None,
        })
    by_tier = []
    for tier in (1, 2, 3):
        part = augmented.filter(pl.col("tier") == tier)
        acc = accepted.filter(pl.col("tier") == tier)
        if len(part):
            by_tier.append({"tier": tier, "sources": part["source_id"].n_unique(), "sources_accepted": acc["source_id"].n_unique(), "examples": len(part), "accepted": len(acc), "example_yield": round(len(acc) / len(part), 3)})
    return by_source, by_tier


@dataclass
class DatasetCard:
    markdown: str
    figures: CardFigures
    kl_train_to_reference_bits: float | None
    counts: pl.DataFrame  # tier, source, split, sources, examples


def _md_table(rows: list[dict], cols: list[str]) -> str:
    if not rows:
        return "_(none)_\n"
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("" if r.get(c) is None else (f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c])) for c in cols) + " |")
    return "\n".join(out) + "\n"


def build_card(
    splits: pl.DataFrame,
    *,
    source_counts: list[dict],
    rejections: pl.DataFrame,
    yields: list[dict],
    criteria: list[dict],
    profile: str,
    image_links: dict[str, str] | None = None,
) -> DatasetCard:
    """`splits`: accepted examples with `split` and `group`; `source_counts`: rows (tier, source,
    sources, augmented); `yields`: rows per tier; `criteria`: rows (criterion, required, actual, ok)."""
    counts = (
        splits.group_by(["tier", "source", "split"])
        .agg(pl.col("source_id").n_unique().alias("sources"), pl.len().alias("examples"))
        .sort(["tier", "source", "split"])
    )
    train = splits.filter(pl.col("split") == "train")
    ref = reference_part(splits)
    p = _pcd(train) if len(train) else None
    q = _pcd(ref) if len(ref) else None
    kl = kl_bits(p, q) if p is not None and q is not None else None
    figs = _figures(train, ref, p if p is not None else np.zeros(12), q if q is not None else np.zeros(12))
    links = image_links or {}
    split_rows = []
    for (tier, source), part in splits.group_by(["tier", "source"], maintain_order=False):
        row = {"tier": tier, "source": source}
        for s in SPLITS:
            sp = part.filter(pl.col("split") == s)
            row[f"{s} sources"] = sp["source_id"].n_unique()
            row[f"{s} examples"] = len(sp)
        split_rows.append(row)
    split_rows.sort(key=lambda r: (r["tier"], r["source"]))
    rej_top = []
    if len(rejections):
        c = Counter(zip(rejections["tier"].to_list(), rejections["rule"].to_list()))
        rej_top = [{"tier": t, "rule": r, "failed examples": k} for (t, r), k in c.most_common(10)]
    lines = [
        "# trance_assets corpus — dataset card",
        "",
        f"Profile `{profile}`. {len(splits)} accepted examples from {splits['source_id'].n_unique() if len(splits) else 0} source melodies "
        f"in {splits['group'].n_unique() if len(splits) else 0} composition groups.",
        "",
        "## Sources before and after augmentation",
        "",
        _md_table(source_counts, ["tier", "source", "licence", "sources", "augmented", "accepted", "yield"]),
        "## Yield per tier (quality filter)",
        "",
        _md_table(yields, ["tier", "sources", "sources_accepted", "examples", "accepted", "example_yield"]),
        "## Splits (80/10/10 per tier, grouped by composition)",
        "",
        _md_table(split_rows, ["tier", "source"] + [f"{s} {w}" for s in SPLITS for w in ("sources", "examples")]),
        "## Top rejection reasons",
        "",
        _md_table(rej_top, ["tier", "rule", "failed examples"]),
        "## Training set against the reference corpus",
        "",
        f"Reference corpus: Tier 1 test split, {len(ref)} source melodies. Training set: {len(train)} examples.",
        "",
        f"KL(training ‖ reference) of the tonic-rotated, duration-weighted pitch-class distribution: "
        + (f"**{kl:.4f} bits**" if kl is not None else "n/a (no reference or no training examples)"),
        "",
    ]
    for name, title in (("pitch_classes", "Pitch classes"), ("tempo", "Tempo"), ("keys", "Keys"), ("ranges", "Pitch range")):
        if name in links:
            lines += [f"### {title}", "", f"![{title}]({links[name]})", ""]
    lines += ["## Success criteria", "", _md_table(criteria, ["criterion", "required", "actual", "ok"])]
    return DatasetCard("\n".join(lines), figs, kl, counts)
