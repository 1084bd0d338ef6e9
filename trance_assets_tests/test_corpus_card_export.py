"""corpus.card (pitch-class distribution, KL, the markdown card) and corpus.export (TFRecords of
NoteSequences, REMI parquet, per-example metadata JSON), on a small split table built the way the
`corpus/splits` asset builds it."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from upath import UPath

from trance_assets.corpus.augment import AugmentPolicy
from trance_assets.corpus.build import augment_incremental, filter_incremental, tier1_examples, tier3_examples
from trance_assets.corpus.card import EPS, build_card, kl_bits, pitch_class_distribution, reference_part
from trance_assets.corpus.examples import from_table
from trance_assets.corpus.export import REMI_NAME, TFRECORD_NAME, write_metadata, write_remi, write_tfrecords
from trance_assets.corpus.splits import SPLITS, Member, assign_splits
from trance_assets.formats.notesequence import music_pb2, notesequence_to_arrays
from trance_assets.formats.tfrecord import read_tfrecord
from trance_assets.music.melody import ChordSpan, Melody, Note
from trance_assets.music.quality import QualityThresholds

T = {t: QualityThresholds.for_tier(t) for t in (1, 2, 3)}
SMALL = AugmentPolicy(transpositions=(2,), tempo_factors=(1.05,), octave_shifts=(1,))
CODE_VERSIONS = {"augment": "1", "filter": "1", "split": "1", "export": "1"}


# ---- pitch-class distribution and KL -------------------------------------------------------------


def smooth(h: list[float]) -> np.ndarray:
    p = np.asarray(h, dtype=float) + EPS
    return p / p.sum()


def test_pitch_class_distribution_minor_key() -> None:
    # Am: A (69) for 1 beat, C (72) for 3 beats -> scale degrees 1 and b3.
    p = pitch_class_distribution(["Am"], [[69, 72]], [[1.0, 3.0]])
    h = [0.0] * 12
    h[0], h[3] = 0.25, 0.75
    assert p.shape == (12,)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(p, smooth(h), rtol=0, atol=1e-15)
    assert p[0] == pytest.approx((0.25 + EPS) / (1 + 12 * EPS), rel=1e-12)
    assert p[5] == pytest.approx(EPS / (1 + 12 * EPS), rel=1e-12)


def test_major_key_rotates_to_relative_minor_tonic() -> None:
    # C major -> A minor's tonic (A = 9): C is degree b3, E is degree 5.
    p = pitch_class_distribution(["C"], [[60, 64]], [[2.0, 2.0]])
    h = [0.0] * 12
    h[3], h[7] = 0.5, 0.5
    assert np.allclose(p, smooth(h), rtol=0, atol=1e-15)
    # The same notes in A minor give the same distribution; octave does not matter.
    assert np.allclose(p, pitch_class_distribution(["Am"], [[48, 88]], [[1.0, 1.0]]), rtol=0, atol=1e-15)


def test_pitch_class_distribution_pools_examples_in_their_keys() -> None:
    # Am: A 1 beat (degree 1). Dm: D 1 beat (degree 1), F 2 beats (degree b3). -> 0.5 / 0.5.
    p = pitch_class_distribution(["Am", "Dm"], [[69], [62, 65]], [[1.0], [1.0, 2.0]])
    h = [0.0] * 12
    h[0], h[3] = 0.5, 0.5
    assert np.allclose(p, smooth(h), rtol=0, atol=1e-15)


def test_pitch_class_distribution_empty_is_uniform() -> None:
    p = pitch_class_distribution([], [], [])
    assert np.allclose(p, np.full(12, 1 / 12))


def test_kl_identical_is_zero() -> None:
    p = pitch_class_distribution(["Am"], [[69, 72, 76]], [[1.0, 2.0, 1.0]])
    assert kl_bits(p, p) == 0.0


def test_kl_hand_computed() -> None:
    p = pitch_class_distribution(["Am"], [[69, 72]], [[1.0, 3.0]])  # 0.25 / 0.75
    q = pitch_class_distribution(["Am"], [[69, 72]], [[3.0, 1.0]])  # 0.75 / 0.25
    z = 1 + 12 * EPS
    # Bins other than 0 and 3 are equal (ratio 1). KL = p0 log2(p0/q0) + p3 log2(p3/q3)
    # = ((0.75+e) - (0.25+e))/z * log2((0.75+e)/(0.25+e)).
    want = 0.5 / z * math.log2((0.75 + EPS) / (0.25 + EPS))
    assert kl_bits(p, q) == pytest.approx(want, rel=1e-12)
    assert kl_bits(p, q) == pytest.approx(math.log2(3) / 2, abs=1e-4)  # about 0.7925 bits (ε moves it by 1e-5)
    # Not symmetric in general; here the mirror image gives the same value.
    r = pitch_class_distribution(["Am"], [[69, 72]], [[1.0, 1.0]])  # 0.5 / 0.5
    kl_pr = ((0.25 + EPS) * math.log2((0.25 + EPS) / (0.5 + EPS)) + (0.75 + EPS) * math.log2((0.75 + EPS) / (0.5 + EPS))) / z
    assert kl_bits(p, r) == pytest.approx(kl_pr, rel=1e-9)
    assert kl_bits(p, r) > 0


# ---- a small split table, built as the corpus assets build it ------------------------------------


def _melody(pitches, name, attrs, key="Am", bpm=140.0) -> Melody:
    notes = tuple(Note(i * 0.5, p, 0.5) for i, p in enumerate(pitches))
    return Melody(notes, bpm, key, (ChordSpan("Am", 0, 4), ChordSpan("F", 4, 4)), name=name, attributes=attrs)


def _gold(i: int) -> dict:
    return {"verified": True, "accepted": True, "file": f"gold/{i:02d}.mid", "licence": "CC-BY-4.0", "title": f"Gold {i}", "reference_partition": f"ref-{i}"}


def build_splits_table() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(augmented, splits, rejections): 3 Tier 1 and 3 Tier 3 sources (one of which fails)."""
    base = [69, 71, 72, 74, 76, 77, 79, 81, 76, 69, 72, 74]
    gold = {f"gold-{i:02d}": _melody(base[: 9 + i], "x", _gold(i)) for i in range(3)}
    t1, _ = tier1_examples(gold)
    synth = [
        _melody([57, 60, 64, 62, 60, 59, 57, 64, 69, 68, 69], "synthetic_00000", {"license": "CC0-1.0", "generator": "rules-1", "code_version": "rules-1"}, bpm=138.0),
        _melody([62, 65, 69, 67, 65, 64, 62, 74, 72, 73], "synthetic_00001", {"license": "CC0-1.0", "generator": "rules-1", "code_version": "rules-1"}, key="Dm", bpm=132.0),
        _melody([60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79, 81], "synthetic_00002", {"license": "CC0-1.0", "code_version": "rules-1"}, key="C", bpm=144.0),
        _melody([60, 61, 62, 63, 64, 66, 68, 70, 72], "synthetic_bad", {"license": "CC0-1.0"}, key="C"),  # chromatic: 4/9 in C (C D E C)
    ]
    t3 = tier3_examples(synth, "tier3/synthetic")
    augmented = augment_incremental(t1 + t3, SMALL).table
    out = filter_incremental(augmented, T)
    filtered = out.accepted
    # The `corpus/splits` asset:
    examples = from_table(filtered)
    sigs = {ex.source_id: ex.interval_signature() for ex in examples if ex.parent is None}
    members = [Member(ex.example_id, ex.source_id, ex.tier, ex.link, sigs.get(ex.source_id, "")) for ex in examples]
    a = assign_splits(members)
    table = filtered.with_columns(
        pl.Series("split", [a.split[m.example_id] for m in members], dtype=pl.String),
        pl.Series("group", [a.group[m.example_id] for m in members], dtype=pl.String),
    )
    return augmented, table, out.rejections


@pytest.fixture(scope="module")
def built() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return build_splits_table()


def test_fixture_table_shape(built) -> None:
    augmented, table, rejections = built
    assert len(augmented) == 7 * 4
    assert len(table) == 6 * 4  # synthetic_bad fails scale compliance (4/9 < 0.6) in all 4 versions
    assert set(rejections["rule"].to_list()) == {"scale_compliance"}
    # 3 equal groups per tier: one in each split.
    for tier in (1, 3):
        part = table.filter(pl.col("tier") == tier)
        assert sorted(part["split"].unique().to_list()) == sorted(SPLITS)
        assert part.group_by("split").len()["len"].to_list() == [4, 4, 4]


# ---- card ---------------------------------------------------------------------------------------


def test_build_card(built) -> None:
    augmented, table, rejections = built
    criteria = [
        {"criterion": "Tier 1 source melodies", "required": ">= 2", "actual": 3, "ok": True},
        {"criterion": "every example in NoteSequence TFRecords", "required": "24", "actual": 23, "ok": False},
    ]
    yields = [{"tier": 1, "sources": 3, "sources_accepted": 3, "examples": 12, "accepted": 12, "example_yield": 1.0}, {"tier": 3, "sources": 4, "sources_accepted": 3, "examples": 16, "accepted": 12, "example_yield": 0.75}]
    source_counts = [{"tier": 3, "source": "tier3/synthetic", "licence": "CC0-1.0", "sources": 4, "augmented": 16, "accepted": 12, "yield": 0.75}]
    card = build_card(table, source_counts=source_counts, rejections=rejections, yields=yields, criteria=criteria, profile="unit", image_links={"tempo": "card/tempo.png"})
    md = card.markdown
    assert "Profile `unit`. 24 accepted examples from 6 source melodies in 6 composition groups." in md
    assert "## Success criteria" in md
    assert "| criterion | required | actual | ok |" in md
    assert "| Tier 1 source melodies | >= 2 | 3 | True |" in md
    assert "| every example in NoteSequence TFRecords | 24 | 23 | False |" in md
    assert "| 3 | tier3/synthetic | CC0-1.0 | 4 | 16 | 12 | 0.75 |" in md
    assert "| 3 | 4 | 3 | 16 | 12 | 0.75 |" in md
    assert "| 3 | scale_compliance | 4 |" in md  # top rejection reasons
    assert "![Tempo](card/tempo.png)" in md and "![Keys]" not in md
    # Splits table: per tier and source, 1 source and 4 examples in each split.
    assert "| 1 | tier1/gold | 1 | 4 | 1 | 4 | 1 | 4 |" in md
    # Reference = Tier 1 test split, sources only: one melody.
    ref = reference_part(table)
    assert len(ref) == 1 and ref["parent"].to_list() == [None]
    assert "Reference corpus: Tier 1 test split, 1 source melodies. Training set: 8 examples." in md
    train = table.filter(pl.col("split") == "train")
    p = pitch_class_distribution(train["key"].to_list(), train["pitch"].to_list(), train["duration"].to_list())
    q = pitch_class_distribution(ref["key"].to_list(), ref["pitch"].to_list(), ref["duration"].to_list())
    assert card.kl_train_to_reference_bits == pytest.approx(kl_bits(p, q), rel=1e-12)
    assert f"**{kl_bits(p, q):.4f} bits**" in md
    counts = {(r["tier"], r["source"], r["split"]): (r["sources"], r["examples"]) for r in card.counts.to_dicts()}
    assert counts == {(t, s, sp): (1, 4) for t, s in ((1, "tier1/gold"), (3, "tier3/synthetic")) for sp in SPLITS}
    for png in (card.figures.pitch_classes, card.figures.tempo, card.figures.keys, card.figures.ranges):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_card_without_reference(built) -> None:
    _, table, rejections = built
    card = build_card(table.filter(pl.col("tier") == 3), source_counts=[], rejections=rejections.clear(), yields=[], criteria=[], profile="p")
    assert card.kl_train_to_reference_bits is None
    assert "n/a (no reference or no training examples)" in card.markdown
    assert "## Top rejection reasons\n\n_(none)_" in card.markdown


# ---- export -------------------------------------------------------------------------------------


def _export(root: UPath, table: pl.DataFrame) -> tuple[dict, dict, dict]:
    return write_tfrecords(root, table), write_remi(root, table, b'{"tokenizer": "test"}'), write_metadata(root, table, CODE_VERSIONS)


METADATA_FIELDS = {
    "example_id", "tier", "source", "source_file", "licence", "parent", "transforms", "split", "group",
    "original_key", "original_bpm", "augmentation", "content_hash", "code_versions",
}


def test_export_reads_back(built, tmp_path) -> None:
    _, table, _ = built
    root = UPath(tmp_path) / "corpus"
    tf_info, remi_info, meta_info = _export(root, table)
    examples = {ex.example_id: ex for ex in from_table(table)}
    split_of = dict(zip(table["example_id"].to_list(), table["split"].to_list()))
    group_of = dict(zip(table["example_id"].to_list(), table["group"].to_list()))
    assert (root / "tokenizer.json").read_bytes() == b'{"tokenizer": "test"}'
    for split in SPLITS:
        ids = table.filter(pl.col("split") == split)["example_id"].to_list()
        assert len(ids) == 8
        # TFRecords: one NoteSequence per example, id = example id, notes back in beats.
        records = list(read_tfrecord(root / split / TFRECORD_NAME))
        assert tf_info[split]["examples"] == len(records) == len(ids)
        assert tf_info[split]["bytes"] == (root / split / TFRECORD_NAME).stat().st_size
        got_ids = []
        for data in records:
            ns = music_pb2.NoteSequence.FromString(data)
            got_ids.append(ns.id)
            ex = examples[ns.id]
            arr = notesequence_to_arrays(ns)
            assert arr["pitch"].tolist() == ex.pitch.tolist()
            assert arr["velocity"].tolist() == ex.velocity.tolist()
            assert np.allclose(arr["start_beats"], ex.start) and np.allclose(arr["duration_beats"], ex.duration)
            assert arr["bpm"] == ex.bpm and arr["key"] == ex.key
            assert ns.collection_name == f"trance_assets/{split}/tier{ex.tier}"
            assert ns.filename == ex.source_file
            assert [c for c, _ in arr["chords"]] == [c[0] for c in ex.chords]
        assert got_ids == ids
        # REMI parquet: same ids, token ids from the filter.
        remi = pl.read_parquet((root / split / REMI_NAME).read_bytes())
        assert remi.columns == ["example_id", "tier", "source", "group", "key", "bpm", "ids", "n_tokens"]
        assert remi["example_id"].to_list() == ids
        want_ids = table.filter(pl.col("split") == split)["remi_ids"].to_list()
        assert remi["ids"].to_list() == want_ids
        assert remi["n_tokens"].to_list() == [len(x) for x in want_ids]
        assert remi_info[split]["examples"] == 8 and remi_info[split]["tokens"] == sum(len(x) for x in want_ids)
        # Metadata JSON per example.
        folder = root / split / "metadata"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.json" for i in ids)
        assert meta_info[split]["examples"] == 8
        for eid in ids:
            meta = json.loads((folder / f"{eid}.json").read_text())
            assert METADATA_FIELDS <= set(meta)
            ex = examples[eid]
            assert meta["example_id"] == eid and meta["split"] == split == split_of[eid] and meta["group"] == group_of[eid]
            assert meta["tier"] == ex.tier and meta["source"] == ex.source and meta["licence"] == ex.licence
            assert meta["source_file"] == ex.source_file and meta["parent"] == ex.parent
            assert meta["transforms"] == list(ex.transforms)
            assert meta["content_hash"] == ex.content_hash()
            assert meta["code_versions"]["augment"] == "1" and meta["code_versions"]["export"] == "1"
            src = examples[ex.source_id]
            assert meta["original_key"] == src.key and meta["original_bpm"] == src.bpm
            assert meta["remi_tokens"] == len(table.filter(pl.col("example_id") == eid)["remi_ids"][0])
            assert meta["files"] == {"notesequences": f"{split}/{TFRECORD_NAME}", "remi_tokens": f"{split}/{REMI_NAME}"}
    index = pl.read_parquet((root / "examples.parquet").read_bytes())
    assert sorted(index["example_id"].to_list()) == sorted(table["example_id"].to_list())


def test_metadata_of_a_copy(built, tmp_path) -> None:
    _, table, _ = built
    root = UPath(tmp_path)
    write_metadata(root, table, CODE_VERSIONS)
    row = table.filter(pl.col("example_id") == "t3-synthetic_00001~tr+2").row(0, named=True)
    meta = json.loads((root / row["split"] / "metadata" / "t3-synthetic_00001~tr+2.json").read_text())
    assert meta["key"] == "Em" and meta["original_key"] == "Dm"
    assert meta["bpm"] == 132.0 and meta["original_bpm"] == 132.0
    assert meta["parent"] == "t3-synthetic_00001"
    assert meta["transforms"] == ["transpose:+2", "velocity:±10"]
    assert meta["augmentation"] == ["transpose:+2", "velocity:±10"]
    assert meta["code_versions"] == {"source_step": "rules-1", **CODE_VERSIONS}
    assert meta["licence"] == "CC0-1.0" and meta["source_file"] == "rule engine rules-1"
    assert meta["quality"]["remi_roundtrip"] == 0 and meta["quality"]["notes"] == 10
    tempo = json.loads((root / table.filter(pl.col("example_id") == "t3-synthetic_00001~tempo1.05")["split"][0] / "metadata" / "t3-synthetic_00001~tempo1.05.json").read_text())
    assert tempo["bpm"] == 138.6 and tempo["original_bpm"] == 132.0
    # Normalisation steps are transforms but not augmentation.
    gold = json.loads((root / table.filter(pl.col("example_id") == "t1-gold-00")["split"][0] / "metadata" / "t1-gold-00.json").read_text())
    assert gold["parent"] is None and gold["augmentation"] == [] and gold["code_versions"]["source_step"] == ""


def test_export_moves_an_example_between_splits(built, tmp_path) -> None:
    _, table, _ = built
    root = UPath(tmp_path)
    _export(root, table)
    # Move the Tier 3 train group to test (as a changed split assignment would).
    g = table.filter((pl.col("tier") == 3) & (pl.col("split") == "train"))["group"][0]
    moved_ids = table.filter(pl.col("group") == g)["example_id"].to_list()
    assert len(moved_ids) == 4
    for eid in moved_ids:
        assert (root / "train" / "metadata" / f"{eid}.json").exists()
    table2 = table.with_columns(pl.when(pl.col("group") == g).then(pl.lit("test")).otherwise(pl.col("split")).alias("split"))
    _export(root, table2)
    for eid in moved_ids:
        assert not (root / "train" / "metadata" / f"{eid}.json").exists()
        meta = json.loads((root / "test" / "metadata" / f"{eid}.json").read_text())
        assert meta["split"] == "test"
    assert len(list((root / "train" / "metadata").iterdir())) == 4
    assert len(list((root / "test" / "metadata").iterdir())) == 12
    train_ids = [music_pb2.NoteSequence.FromString(d).id for d in read_tfrecord(root / "train" / TFRECORD_NAME)]
    test_ids = [music_pb2.NoteSequence.FromString(d).id for d in read_tfrecord(root / "test" / TFRECORD_NAME)]
    assert set(moved_ids).isdisjoint(train_ids) and set(moved_ids) <= set(test_ids)
    assert len(train_ids) == 4 and len(test_ids) == 12
    assert set(pl.read_parquet((root / "train" / REMI_NAME).read_bytes())["example_id"].to_list()).isdisjoint(moved_ids)
    assert pl.read_parquet((root / "test" / REMI_NAME).read_bytes()).height == 12
    # No temporary or old folders are left beside the outputs.
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(["metadata", TFRECORD_NAME, REMI_NAME])
    index = pl.read_parquet((root / "examples.parquet").read_bytes())
    assert dict(zip(index["example_id"].to_list(), index["split"].to_list()))[moved_ids[0]] == "test"


def test_export_empty_split(built, tmp_path) -> None:
    _, table, _ = built
    root = UPath(tmp_path)
    only_train = table.with_columns(pl.lit("train").alias("split"))
    tf, remi, meta = _export(root, only_train)
    assert tf["validation"]["examples"] == 0 and remi["validation"]["examples"] == 0 and meta["validation"]["examples"] == 0
    assert list(read_tfrecord(root / "validation" / TFRECORD_NAME)) == []
    assert pl.read_parquet((root / "validation" / REMI_NAME).read_bytes()).height == 0
    assert list((root / "validation" / "metadata").iterdir()) == []
    assert tf["train"]["examples"] == 24


def test_metadata_original_key_and_bpm_when_the_source_was_rejected(tmp_path) -> None:
    slow = Melody(tuple(Note(i * 0.5, p, 0.5) for i, p in enumerate([69, 71, 72, 74, 76, 77, 79, 81, 76, 69])), 118.0, "Am", name="slow")
    # Top note 110 is outside the tokenizer's pitch range (REMI fails); the -2 copy (108) passes.
    high = Melody(tuple(Note(i * 0.5, p, 0.5) for i, p in enumerate([76, 78, 79, 81, 83, 84, 86, 88, 110, 76, 79])), 140.0, "Em", name="high")
    srcs = tier3_examples([slow, high], "tier3/synthetic")
    table = augment_incremental(srcs, AugmentPolicy(transpositions=(-2,), tempo_factors=(1.05,), octave_shifts=())).table
    accepted = filter_incremental(table, T).accepted
    # Only the copies pass: the slow source fails bpm (118 < 120), the high one the REMI roundtrip.
    assert accepted["example_id"].to_list() == ["t3-slow~tempo1.05", "t3-high~tr-2"]
    splits = accepted.with_columns(pl.lit("train").alias("split"), pl.col("source_id").alias("group"))
    root = UPath(tmp_path)
    write_metadata(root, splits, CODE_VERSIONS)
    tempo = json.loads((root / "train" / "metadata" / "t3-slow~tempo1.05.json").read_text())
    tr = json.loads((root / "train" / "metadata" / "t3-high~tr-2.json").read_text())
    assert (tempo["bpm"], tr["key"]) == (123.9, "Dm")
    assert tempo["original_bpm"] == 118.0
    assert tr["original_key"] == "Em"
