"""corpus.examples: source examples from melodies, normalisation to the 16th grid, content hashes,
interval signatures and the polars table form, on small melodies worked out by hand."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from trance_assets.corpus.examples import (
    TABLE_SCHEMA,
    Example,
    concat_tables,
    example_from_melody,
    from_table,
    normalise,
    safe_id,
    to_table,
)
from trance_assets.music.melody import ChordSpan, Melody, Note


def mel(notes, *, key="Am", bpm=140.0, chords=(), name="Gold 01: Aurora", program=81) -> Melody:
    return Melody(notes=tuple(notes), bpm=bpm, key=key, chords=tuple(chords), name=name, program=program)


def ex_of(notes, source="tier3/synthetic", **kw) -> Example:
    m = mel(notes, **{k: v for k, v in kw.items() if k in ("key", "bpm", "chords", "name", "program")})
    rest = {k: v for k, v in kw.items() if k not in ("key", "bpm", "chords", "name", "program")}
    return example_from_melody(m, source=source, licence=rest.pop("licence", "CC0"), source_file=rest.pop("source_file", "file.mid"), **rest)


def assert_same_example(a: Example, b: Example) -> None:
    for f in dataclasses.fields(Example):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray), f.name
            assert x.dtype == y.dtype, (f.name, x.dtype, y.dtype)
            assert np.array_equal(x, y), (f.name, x, y)
        else:
            assert x == y, (f.name, x, y)
            assert type(x) is type(y), (f.name, type(x), type(y))


# ---- example_from_melody ---------------------------------------------------------------------


def test_safe_id_lowercases_and_collapses_runs() -> None:
    assert safe_id("Gold 01: Aurora") == "gold-01-aurora"
    assert safe_id("  A  B  ") == "a-b"
    assert safe_id("A__B") == "a__b"  # '_' is allowed
    assert safe_id("x+1~tr.mid") == "x+1~tr.mid"
    assert safe_id("###") == "x"


def test_example_from_melody_ids_and_fields() -> None:
    notes = [Note(0.0, 69, 1.0, 90), Note(1.0, 72, 0.5, 100)]
    m = mel(notes, chords=[ChordSpan("Am", 0, 4), ChordSpan("F", 4, 4, True)])
    ex = example_from_melody(m, source="tier1/gold", licence="CC-BY", source_file="gold/01.mid", link="track:ref-01", provenance={"a": 1})
    assert ex.example_id == "t1-gold-01-aurora"
    assert ex.source_id == ex.example_id
    assert ex.tier == 1
    assert ex.parent is None
    assert ex.transforms == ()
    assert ex.key == "Am" and ex.bpm == 140.0 and ex.program == 81
    assert ex.start.dtype == np.float64 and ex.duration.dtype == np.float64
    assert ex.pitch.dtype == np.int16 and ex.velocity.dtype == np.int16
    assert ex.start.tolist() == [0.0, 1.0]
    assert ex.duration.tolist() == [1.0, 0.5]
    assert ex.pitch.tolist() == [69, 72]
    assert ex.velocity.tolist() == [90, 100]
    assert ex.chords == (("Am", 0.0, 4.0, False), ("F", 4.0, 4.0, True))
    assert ex.licence == "CC-BY" and ex.source_file == "gold/01.mid" and ex.link == "track:ref-01"
    assert ex.title == "Gold 01: Aurora"  # defaults to the melody's name
    assert ex.provenance == {"a": 1, "source_key": "Am", "source_bpm": 140.0}
    assert ex.n_notes == 2 and ex.end_beats == 1.5 and ex.bars == 1


@pytest.mark.parametrize(
    "source,tier",
    [
        ("tier1/gold", 1),
        ("tier2/audio_extraction", 2),
        ("tier3/gigamidi", 3),
        ("tier3/public_domain", 3),
        ("tier3/synthetic", 3),
    ],
)
def test_tier_follows_the_source(source: str, tier: int) -> None:
    ex = example_from_melody(mel([Note(0, 60, 1)], name="Song"), source=source, licence="", source_file="")
    assert ex.tier == tier
    assert ex.example_id == f"t{tier}-song"


def test_explicit_name_overrides_melody_name() -> None:
    ex = example_from_melody(mel([Note(0, 60, 1)], name="ignored"), source="tier2/audio_extraction", licence="", source_file="", name="Track 07 (Live)")
    assert ex.example_id == ex.source_id == "t2-track-07-live"


def test_unknown_source_raises() -> None:
    with pytest.raises(ValueError, match="tier4/elsewhere"):
        example_from_melody(mel([Note(0, 60, 1)]), source="tier4/elsewhere", licence="", source_file="")


# ---- normalise -------------------------------------------------------------------------------


def test_normalise_quantises_to_sixteenths() -> None:
    ex = ex_of([Note(0.3, 69, 0.5), Note(1.0, 72, 0.05), Note(2.0, 74, 1.0)])
    out = normalise(ex)
    # 0.3 -> 0.25; end 0.8 -> 0.75, so the duration stays 0.5.
    # 1.0-1.05 would round to an empty note: it keeps one step (0.25).
    assert out.start.tolist() == [0.25, 1.0, 2.0]
    assert out.duration.tolist() == [0.5, 0.25, 1.0]
    assert out.pitch.tolist() == [69, 72, 74]
    assert out.transforms == ("quantise:1/16",)
    # The input is untouched.
    assert ex.start.tolist() == [0.3, 1.0, 2.0]


def test_normalise_end_rounding_sets_duration() -> None:
    # start 0.5, end 0.5+0.62=1.12 -> 1.0 (duration 0.5); start 1.1 -> 1.0, end 1.6 -> 1.5.
    out = normalise(ex_of([Note(0.5, 69, 0.62), Note(1.1, 71, 0.5)]))
    assert out.start.tolist() == [0.5, 1.0]
    assert out.duration.tolist() == [0.5, 0.5]


def test_normalise_records_nothing_when_on_grid() -> None:
    ex = ex_of([Note(0.0, 69, 0.25), Note(0.25, 72, 0.75), Note(1.0, 74, 3.0)])
    out = normalise(ex)
    assert out.transforms == ()
    assert out.start.tolist() == [0.0, 0.25, 1.0]
    assert out.duration.tolist() == [0.25, 0.75, 3.0]
    assert out.content_hash() == ex.content_hash()


def test_normalise_keeps_earlier_transforms() -> None:
    ex = replace(ex_of([Note(0.1, 60, 1.0)]), transforms=("earlier",))
    assert normalise(ex).transforms == ("earlier", "quantise:1/16")


def test_normalise_sorts_notes_with_their_attributes() -> None:
    # Built directly (a Melody would sort the notes itself).
    base = ex_of([Note(0, 60, 1)])
    ex = replace(
        base,
        start=np.array([2.0, 0.0, 1.0]),
        duration=np.array([1.0, 0.5, 0.25]),
        pitch=np.array([64, 60, 62], dtype=np.int16),
        velocity=np.array([30, 10, 20], dtype=np.int16),
    )
    out = normalise(ex)
    assert out.start.tolist() == [0.0, 1.0, 2.0]
    assert out.duration.tolist() == [0.5, 0.25, 1.0]
    assert out.pitch.tolist() == [60, 62, 64]
    assert out.velocity.tolist() == [10, 20, 30]
    assert out.transforms == ()


def test_normalise_trims_leading_empty_bars() -> None:
    notes = [Note(8.5, 69, 1.0), Note(10.0, 72, 2.0)]
    chords = [ChordSpan("Am", 0, 8), ChordSpan("F", 6, 4), ChordSpan("C", 10, 4, True)]
    out = normalise(ex_of(notes, chords=chords))
    # First onset 8.5 lies in bar 3 (bars 0-based 2): two empty bars, shift by 8 beats.
    assert out.transforms == ("trim:2bars",)
    assert out.start.tolist() == [0.5, 2.0]
    assert out.duration.tolist() == [1.0, 2.0]
    # Am (0-8) ends at the cut: dropped. F (6-10) -> 0-2. C (10-14) -> 2-6.
    assert out.chords == (("F", 0.0, 2.0, False), ("C", 2.0, 4.0, True))


def test_normalise_quantise_then_trim_both_recorded() -> None:
    out = normalise(ex_of([Note(4.1, 69, 1.0), Note(5.0, 71, 1.0)]))
    assert out.transforms == ("quantise:1/16", "trim:1bars")
    assert out.start.tolist() == [0.0, 1.0]


def test_normalise_no_trim_within_first_bar() -> None:
    out = normalise(ex_of([Note(3.75, 69, 1.0)]))
    assert out.transforms == ()
    assert out.start.tolist() == [3.75]


def test_normalise_empty_example() -> None:
    ex = ex_of([])
    out = normalise(ex)
    assert out.n_notes == 0 and out.transforms == ()


# ---- content hash and interval signature -----------------------------------------------------


NOTES = [Note(0, 69, 1), Note(1, 72, 0.5), Note(1.5, 76, 0.5), Note(2, 74, 2)]


def test_content_hash_is_stable() -> None:
    a = ex_of(NOTES, chords=[ChordSpan("Am", 0, 4)])
    b = ex_of(NOTES, chords=[ChordSpan("Am", 0, 4)])
    assert a.content_hash() == b.content_hash() == a.content_hash()
    assert len(a.content_hash()) == 64
    other = ex_of(NOTES[:3], name="other")
    back, _ = from_table(to_table([a, other]))
    assert back.content_hash() == a.content_hash()


def test_content_hash_changes_with_content() -> None:
    a = ex_of(NOTES, chords=[ChordSpan("Am", 0, 4)])
    pitch = a.pitch.copy()
    pitch[2] += 1
    changed = [
        replace(a, pitch=pitch),
        replace(a, start=a.start + 0.25),
        replace(a, duration=a.duration * 2),
        replace(a, velocity=a.velocity - 1),
        replace(a, key="C"),
        replace(a, bpm=141.0),
        replace(a, program=82),
        replace(a, chords=(("F", 0.0, 4.0, False),)),
    ]
    hashes = {c.content_hash() for c in changed}
    assert a.content_hash() not in hashes
    assert len(hashes) == len(changed)


def test_content_hash_ignores_identity_and_provenance() -> None:
    a = ex_of(NOTES, provenance={"x": 1})
    b = replace(
        a,
        example_id="t3-other~tr+1",
        source_id="t3-other",
        parent="t3-other",
        transforms=("transpose:+1",),
        licence="other",
        source_file="elsewhere.mid",
        link="track:z",
        title="Another",
        provenance={"y": 2},
        tier=1,
        source="tier1/gold",
    )
    assert a.content_hash() == b.content_hash()


def test_interval_signature_transposition_invariant() -> None:
    a = ex_of(NOTES)
    up = replace(a, pitch=(a.pitch + 5).astype(np.int16), key="Dm", bpm=128.0)
    assert a.interval_signature() == up.interval_signature()


def test_interval_signature_changes_with_an_interval() -> None:
    a = ex_of(NOTES)
    p = a.pitch.copy()
    p[1] += 1  # 69 72 76 74 -> 69 73 76 74: intervals (3,4,-2) -> (4,3,-2)
    assert a.interval_signature() != replace(a, pitch=p).interval_signature()


def test_interval_signature_uses_time_order() -> None:
    a = ex_of(NOTES)
    # Same notes in a different array order: the signature follows onsets, not array order.
    order = np.array([3, 1, 0, 2])
    shuffled = replace(a, start=a.start[order], duration=a.duration[order], pitch=a.pitch[order], velocity=a.velocity[order])
    assert a.interval_signature() == shuffled.interval_signature()
    # Reversed pitches over the same onsets are a different tune.
    rev = replace(a, pitch=a.pitch[::-1].copy())
    assert a.interval_signature() != rev.interval_signature()


# ---- tables ----------------------------------------------------------------------------------


def _table_examples() -> list[Example]:
    a = ex_of(
        NOTES,
        source="tier1/gold",
        chords=[ChordSpan("Am", 0, 4), ChordSpan("C/E", 4, 4, True)],
        link="track:ref-01",
        provenance={"partition": "p1", "nested": {"k": [1, 2]}},
        tempo_meaningful=True,
        title="Aurora",
    )
    copy = replace(a, example_id=a.example_id + "~tr+3", parent=a.example_id, transforms=("quantise:1/16", "transpose:+3"), pitch=(a.pitch + 3).astype(np.int16), key="Cm")
    empty = ex_of([], source="tier3/public_domain", name="empty one", tempo_meaningful=False, provenance={})
    no_chords = ex_of([Note(0.25, 60, 0.25, 1), Note(0.5, 127, 0.75, 127)], source="tier2/audio_extraction", name="no chords", program=1)
    return [a, empty, copy, no_chords]


def test_table_roundtrip_is_exact() -> None:
    exs = _table_examples()
    df = to_table(exs)
    assert df.schema == pl.Schema(TABLE_SCHEMA)
    assert len(df) == 4
    assert df["content_hash"].to_list() == [e.content_hash() for e in exs]
    back = from_table(df)
    assert len(back) == 4
    for a, b in zip(exs, back):
        assert_same_example(a, b)
        assert a.provenance == b.provenance
    assert back[1].n_notes == 0 and back[1].chords == ()
    assert back[3].chords == ()
    assert back[2].parent == exs[0].example_id


def test_table_roundtrip_no_rows() -> None:
    df = to_table([])
    assert len(df) == 0
    assert df.schema == pl.Schema(TABLE_SCHEMA)
    assert from_table(df) == []


# polars builds a fixed-size Array column from equal-length numpy arrays; to_table must still give
# List columns (a single source's copies all have the same note count).


@pytest.mark.parametrize("case", ["one example", "equal note counts", "all empty"])
def test_table_roundtrip_equal_note_counts(case: str) -> None:
    if case == "one example":
        exs = [ex_of(NOTES)]
    elif case == "equal note counts":
        exs = [ex_of(NOTES, name="a"), ex_of([Note(n.start, n.pitch + 2, n.duration) for n in NOTES], name="b")]
    else:
        exs = [ex_of([], name="a"), ex_of([], name="b")]
    df = to_table(exs)
    back = from_table(df)
    for a, b in zip(exs, back, strict=True):
        assert_same_example(a, b)
    assert df.schema == pl.Schema(TABLE_SCHEMA)


def test_table_extra_columns_and_concat() -> None:
    exs = _table_examples()
    df = to_table(exs[:2], {"augment_key": ["k1", "k2"]})
    assert df["augment_key"].to_list() == ["k1", "k2"]
    both = concat_tables([df, to_table(exs[2:])])
    assert len(both) == 4
    assert both["augment_key"].to_list() == ["k1", "k2", None, None]
    for a, b in zip(exs, from_table(both)):  # extra columns are ignored
        assert_same_example(a, b)
    assert len(concat_tables([])) == 0


def test_to_melody() -> None:
    a = _table_examples()[0]
    m = a.to_melody()
    assert m.name == a.example_id
    assert m.key == "Am" and m.bpm == 140.0 and m.program == 81
    assert [(n.start, n.pitch, n.duration, n.velocity) for n in m.notes] == [(0.0, 69, 1.0, 100), (1.0, 72, 0.5, 100), (1.5, 76, 0.5, 100), (2.0, 74, 2.0, 100)]
    assert [(c.symbol, c.start, c.duration, c.inferred) for c in m.chords] == [("Am", 0.0, 4.0, False), ("C/E", 4.0, 4.0, True)]
    assert m.attributes["example_id"] == a.example_id
    assert m.attributes["content_hash"] == a.content_hash()
    assert m.attributes["link"] == "track:ref-01"
    assert m.attributes["notes"] == 4 and m.attributes["bars"] == 1
    # Back through example_from_melody: same notes, same content hash.
    again = example_from_melody(m, source="tier1/gold", licence="", source_file="")
    assert again.content_hash() == a.content_hash()
