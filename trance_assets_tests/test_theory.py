"""Unit tests of music.theory: key names, chord symbols, roman-numeral progressions."""

from __future__ import annotations

import re

import pytest

from trance_assets.music.theory import (
    ALL_KEYS,
    MAJOR_PROGRESSIONS,
    MINOR_PROGRESSIONS,
    Key,
    default_progression,
    parse_chord,
    parse_key,
    parse_pitch_class,
    progression_symbols,
)

# ---- pitch classes and keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pc"), [("C", 0), ("C#", 1), ("Db", 1), ("Bb", 10), ("E#", 5), ("Cb", 11), ("b", 11), ("F♯", 6)]
)
def test_parse_pitch_class(name: str, pc: int) -> None:
    assert parse_pitch_class(name) == pc


@pytest.mark.parametrize(
    ("text", "tonic", "mode"),
    [
        ("Am", 9, "minor"),
        ("C#m", 1, "minor"),
        ("Eb", 3, "major"),
        ("F# major", 6, "major"),
        ("a", 9, "minor"),  # music21 convention: a lower-case tonic alone is minor
        ("A minor", 9, "minor"),
        ("a-", 9, "minor"),
        ("Ebmaj", 3, "major"),
        ("C", 0, "major"),
        ("Bbm", 10, "minor"),
    ],
)
def test_parse_key(text: str, tonic: int, mode: str) -> None:
    assert parse_key(text) == Key(tonic, mode)


@pytest.mark.parametrize("text", ["H", "", "Am7", "C dorian", "X#m"])
def test_parse_key_rejects_non_keys_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_key(text)


def test_key_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="tonic"):
        Key(12, "minor")
    with pytest.raises(ValueError, match="dorian"):
        Key(0, "dorian")


def test_all_keys_are_the_24_major_and_minor_keys_with_round_tripping_names() -> None:
    assert len(ALL_KEYS) == 24
    assert len(set(ALL_KEYS)) == 24
    assert sorted((k.tonic, k.mode) for k in ALL_KEYS) == sorted(
        (pc, mode) for pc in range(12) for mode in ("major", "minor")
    )
    assert [k.name for k in ALL_KEYS] == [
        "Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm",
        "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B",
    ]  # fmt: skip
    for k in ALL_KEYS:
        assert parse_key(k.name) == k


def test_long_name_and_relative_minor() -> None:
    assert Key(9, "minor").long_name == "A minor"
    assert Key(3, "major").long_name == "Eb major"
    assert Key(0, "major").relative_minor_tonic == 9
    assert Key(9, "minor").relative_minor_tonic == 9


def test_scales_and_allowed_pitch_classes() -> None:
    a_minor = Key(9, "minor")
    assert a_minor.scale_pcs() == (9, 11, 0, 2, 4, 5, 7)
    assert a_minor.scale_pcs(harmonic=True) == (9, 11, 0, 2, 4, 5, 8)
    # natural ∪ harmonic minor: A B C D E F G G#
    assert a_minor.allowed_pcs() == frozenset({9, 11, 0, 2, 4, 5, 7, 8})
    assert Key(0, "major").allowed_pcs() == frozenset({0, 2, 4, 5, 7, 9, 11})
    assert Key(1, "minor").allowed_pcs() == frozenset({1, 3, 4, 6, 8, 9, 11, 0})
    for k in ALL_KEYS:
        assert len(k.allowed_pcs()) == (8 if k.mode == "minor" else 7)


# ---- chord symbols ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "root", "intervals", "pcs", "bass"),
    [
        ("Am", 9, (0, 3, 7), {9, 0, 4}, 9),
        ("F", 5, (0, 4, 7), {5, 9, 0}, 5),
        ("G7", 7, (0, 4, 7, 10), {7, 11, 2, 5}, 7),
        ("Dm7", 2, (0, 3, 7, 10), {2, 5, 9, 0}, 2),
        ("Cmaj7", 0, (0, 4, 7, 11), {0, 4, 7, 11}, 0),
        ("Bbmaj7", 10, (0, 4, 7, 11), {10, 2, 5, 9}, 10),
        ("F#m7b5", 6, (0, 3, 6, 10), {6, 9, 0, 4}, 6),
        ("Esus4", 4, (0, 5, 7), {4, 9, 11}, 4),
        ("Bdim", 11, (0, 3, 6), {11, 2, 5}, 11),
        ("Caug", 0, (0, 4, 8), {0, 4, 8}, 0),
        ("C/E", 0, (0, 4, 7), {0, 4, 7}, 4),
        ("Am/G", 9, (0, 3, 7), {9, 0, 4}, 7),
        ("Ebm", 3, (0, 3, 7), {3, 6, 10}, 3),
    ],
)
def test_parse_chord(symbol: str, root: int, intervals: tuple, pcs: set, bass: int) -> None:
    c = parse_chord(symbol)
    assert c.symbol == symbol
    assert c.root == root
    assert c.intervals == intervals
    assert c.pcs == frozenset(pcs)
    assert c.bass == bass


def test_triad_pcs_are_root_third_fifth() -> None:
    assert parse_chord("Dm7").triad_pcs == (2, 5, 9)
    assert parse_chord("E7").triad_pcs == (4, 8, 11)
    assert parse_chord("Esus4").triad_pcs == (4, 9, 11)
    assert parse_chord("C/E").triad_pcs == (0, 4, 7)


@pytest.mark.parametrize("symbol", ["H", "Am#x", "", "C/Q", "Cmaj13#11", "  ", "am"])
def test_malformed_chord_symbols_raise_naming_the_symbol(symbol: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(symbol))):
        parse_chord(symbol)


# ---- progressions ----------------------------------------------------------------------------


def test_roman_chords_in_a_minor() -> None:
    am = parse_key("Am")
    assert progression_symbols(am, (1, 6, 3, 7)) == ["Am", "F", "C", "G"]
    # V is major in minor keys (the leading tone), ii is diminished.
    assert [am.roman_chord(d).symbol for d in range(1, 8)] == ["Am", "Bdim", "C", "Dm", "E", "F", "G"]
    assert parse_key("Am").roman_chord(5).pcs == frozenset({4, 8, 11})


def test_roman_chords_in_major_keys_and_flat_spelling() -> None:
    assert progression_symbols(parse_key("C"), (1, 5, 6, 4)) == ["C", "G", "Am", "F"]
    assert progression_symbols(parse_key("Eb"), (1, 5, 6, 4)) == ["Eb", "Bb", "Cm", "Ab"]
    assert progression_symbols(parse_key("Cm"), (1, 6, 3, 7)) == ["Cm", "Ab", "Eb", "Bb"]
    assert progression_symbols(parse_key("F#m"), (1, 6, 3, 7)) == ["F#m", "D", "A", "E"]
    with pytest.raises(ValueError, match="degree"):
        parse_key("Am").roman_chord(8)


def test_default_progressions() -> None:
    assert default_progression(parse_key("Am")) == ["Am", "F", "C", "G"]
    assert default_progression(parse_key("G")) == ["G", "D", "Em", "C"]


@pytest.mark.parametrize("key", ALL_KEYS, ids=lambda k: k.name)
def test_every_stock_progression_parses_and_is_diatonic(key: Key) -> None:
    table = MINOR_PROGRESSIONS if key.mode == "minor" else MAJOR_PROGRESSIONS
    for degrees in table:
        symbols = progression_symbols(key, degrees)
        assert len(symbols) == len(degrees)
        for s in symbols:
            assert parse_chord(s).pcs <= key.allowed_pcs(), (key.name, s)
        assert parse_chord(symbols[0]).root == key.scale_pcs()[degrees[0] - 1]
