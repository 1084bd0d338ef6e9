"""Tier 3 public-domain melodies from music21's bundled ABC corpus (trance_assets.bulk.public_domain).

The tiny ABC tunes below were worked out by hand (L:1/8 means an eighth note is half a beat; `c` is
C5 = 72, `A` is A4 = 69). The end-to-end tests parse the real corpus (offline: it ships with
music21) with a cold cache once per module (a few seconds) and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from trance_assets.bulk import public_domain as pd
from trance_assets.music.melody import Melody
from trance_assets.music.theory import parse_chord, parse_key

REEL = """%abc-2.1
X:1
T:Test Reel
M:4/4
L:1/8
Q:1/4=120
K:Am
"Am"A2 B2- B2 z2 | (3cde "G7"d2 "D.C."c4 | {g}A2 [Ac]2 "_mf"E4 | "Bbmaj7"A8 |]

X:2
T:Jig
M:6/8
L:1/8
K:G
GAB cde | d3 B3 | GAB cde | d3 B3 |]
"""

PICKUPS = """X:7
T:Two Strains
M:4/4
L:1/8
K:G
G | A4 B4 | c8 | d4 e3 || f | g8 | a4 b4 | g8 |]
"""

# Essen style: the key field gives the tonic and the accidentals are written out (a G minor tune).
MINOR_IN_G = """X:4
T:Moll
M:2/4
L:1/8
K:G
G2 _B2 | A2 G2 | d2 c2 | _B2 A2 | G2 ^F2 | G4 |]
"""

CHORDS = """X:5
T:Chords
M:4/4
L:1/4
K:C
"C13"C D "G7#9"E F | "Cadd11"G A "N.C."B c | "Dm7b5"d c "E/G#"B A | "F#m7/C#"G F E D |]
"""

MIXED = """X:1
T:Fine
M:4/4
L:1/8
K:G
GABc dedc | B2 G2 G4 |

X:2
T:Broken
K:G
(((( [[ ]] zzz

X:3
T:Poly
M:4/4
L:1/4
K:C
[CEG] [DFA] [EGB] [FAc] | [GBd] [Ace] [Bdf] [ceg] | C D E F |]

X:4
T:Short
M:2/2
L:1/4
K:D
D F A d |]
"""


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


# ---- one file --------------------------------------------------------------------------------------


def test_reel_parses_to_exact_beats_pitches_chords_and_key(tmp_path):
    recs = pd.parse_source_file(_write(tmp_path, "reel.abc", REEL), "test")
    assert [r["tune_index"] for r in recs] == [0, 1]
    r = recs[0]
    assert r["skip_reason"] is None and r["skip_category"] is None
    assert (r["title"], r["number"], r["corpus_path"], r["collection"]) == ("Test Reel", 1, "reel.abc", "test")
    assert (r["time_signature"], r["key"], r["key_notated"], r["key_source"]) == ("4/4", "Am", "A minor", "notated")
    assert r["tempo"] == 120.0
    third = 1 / 3
    expected = [
        (0.0, 69, 1.0),  # A
        (1.0, 71, 2.0),  # B2-B2: the tie merged; the rest (beats 3-4) dropped
        (4.0, 72, third),  # (3cde: a triplet of eighths
        (4.0 + third, 74, third),
        (4.0 + 2 * third, 76, third),
        (5.0, 74, 1.0),
        (6.0, 72, 2.0),
        (8.0, 69, 1.0),  # {g}A2: the grace note dropped
        (9.0, 72, 1.0),  # [Ac]2: the top note of the double stop
        (10.0, 64, 2.0),
        (12.0, 69, 4.0),
    ]
    assert len(r["notes"]) == len(expected)
    for (s, p, d, v), (es, ep, ed) in zip(r["notes"], expected):
        assert (p, v) == (ep, 100)
        assert s == pytest.approx(es, abs=1e-9) and d == pytest.approx(ed, abs=1e-9)
        assert isinstance(s, float) and isinstance(d, float)
    # "D.C." and "_mf" are annotations, not chords; "Bbmaj7" comes back from music21's B-maj7
    assert r["chords"] == [["Am", 0.0], ["G7", 5.0], ["Bbmaj7", 12.0]]
    assert r["chords_dropped"] == 0
    assert (r["grace_notes_dropped"], r["chord_events"], r["end_beats"]) == (1, 1, 16.0)
    assert json.loads(json.dumps(recs)) == recs  # plain JSON, cacheable


def test_jig_is_skipped_with_the_reason(tmp_path):
    jig = pd.parse_source_file(_write(tmp_path, "reel.abc", REEL), "test")[1]
    assert jig["title"] == "Jig" and jig["tune_index"] == 1 and jig["number"] == 2
    assert jig["skip_reason"] == "time signature 6/8 (only 4/4, 2/4 and 2/2 kept: trance is 4/4)"
    assert jig["skip_category"] == "time signature 6/8"
    assert jig["notes"] == []


def test_anacrusis_and_strain_pickup_are_rebarred_onto_4_4_bar_lines():
    (r,) = pd.parse_abc_text(PICKUPS, "test")
    assert r["skip_reason"] is None and r["anacrusis_beats"] == 0.5
    # The opening pickup ends on beat 4; "d4 e3" is an incomplete bar (3.5 beats) that the
    # second strain's pickup "f" completes, so g8 starts bar 5 on beat 16.
    assert r["notes"] == [
        [3.5, 67, 0.5, 100],
        [4.0, 69, 2.0, 100],
        [6.0, 71, 2.0, 100],
        [8.0, 72, 4.0, 100],
        [12.0, 74, 2.0, 100],
        [14.0, 76, 1.5, 100],
        [15.5, 78, 0.5, 100],
        [16.0, 79, 4.0, 100],
        [20.0, 81, 2.0, 100],
        [22.0, 83, 2.0, 100],
        [24.0, 79, 4.0, 100],
    ]
    assert r["end_beats"] == 28.0


def test_key_takes_the_notated_tonic_and_the_mode_the_notes_use():
    (r,) = pd.parse_abc_text(MINOR_IN_G, "essen")
    assert r["skip_reason"] is None and r["time_signature"] == "2/4"
    assert (r["key"], r["key_notated"], r["key_source"]) == ("Gm", "G major", "notated tonic, mode from notes")
    assert parse_key(r["key"]).mode == "minor"
    assert [n[1] for n in r["notes"]] == [67, 70, 69, 67, 74, 72, 70, 69, 67, 66, 67]


def test_chord_symbols_convert_or_are_dropped_and_counted():
    (r,) = pd.parse_abc_text(CHORDS, "test")
    assert r["chords"] == [["Dm7b5", 8.0], ["E/G#", 10.0], ["F#m7/C#", 12.0]]
    assert r["no_chord"] == [6.0]
    assert (r["chords_dropped"], r["dropped_chord_symbols"]) == (3, ["C13", "G7#9", "Cadd11"])
    for sym, _t in r["chords"]:
        parse_chord(sym)
    m = pd.record_to_melody(r, bpm=140.0, file_sha256="0" * 64, name="chords")
    assert [(c.symbol, c.start, c.duration, c.inferred) for c in m.chords] == [
        ("Dm7b5", 8.0, 2.0, False),
        ("E/G#", 10.0, 2.0, False),
        ("F#m7/C#", 12.0, 4.0, False),  # runs to the tune's end
    ]
    assert pd.convert_chord_symbol("B-maj7") == "Bbmaj7" and pd.convert_chord_symbol("E-/B-") == "Eb/Bb"
    assert pd.convert_chord_symbol("Co7") == "Cdim7" and pd.convert_chord_symbol("C13") is None


def test_broken_tune_polyphony_and_short_tunes_are_skip_records_not_errors(tmp_path):
    recs = pd.parse_source_file(_write(tmp_path, "mixed.abc", MIXED), "test")
    assert [r["tune_index"] for r in recs] == [0, 1, 2, 3]
    assert recs[0]["skip_reason"] is None and len(recs[0]["notes"]) == 11
    assert recs[1]["skip_category"] == "parse error"
    assert recs[1]["skip_reason"].startswith("parse error in mixed.abc tune 1: ABCHandlerException")
    assert recs[2]["skip_reason"] == "polyphonic (8 of 12 events are chords)"
    assert recs[3]["skip_reason"] == "fewer than 8 notes (4)" and recs[3]["time_signature"] == "2/2"


def test_garbage_or_missing_file_gives_one_record_naming_file_and_exception(tmp_path):
    (g,) = pd.parse_source_file(_write(tmp_path, "garbage.abc", b"\x00\xff\xfe\x89PNG not music at all"), "test")
    assert g["skip_category"] == "file error" and g["tune_index"] is None
    assert g["skip_reason"] == "cannot parse garbage.abc: ValueError: no ABC tune found (no K: field)"
    (m,) = pd.parse_source_file(tmp_path / "missing.abc", "test")
    assert m["skip_reason"].startswith("cannot parse missing.abc: FileNotFoundError")
    with pytest.raises(ValueError, match="not usable"):
        pd.record_to_melody(g, bpm=138.0, file_sha256="")


# ---- the bundled corpus ----------------------------------------------------------------------------


def test_list_source_files_finds_all_three_collections():
    files = pd.list_source_files()
    by = {c: [f for f in files if f.collection == c] for c in pd.COLLECTIONS}
    assert len(by["essen"]) >= 25 and len(by["ryans_mammoth"]) >= 1000 and len(by["oneills"]) >= 35
    assert files == sorted(files, key=lambda f: (f.collection, f.corpus_path))
    assert all(f.corpus_path.startswith(pd.COLLECTIONS[f.collection] + "/") and f.corpus_path.endswith(".abc") for f in files)
    f = by["oneills"][0]
    assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest() and f.size == f.path.stat().st_size
    assert [x.collection for x in pd.list_source_files(["oneills"])] == ["oneills"] * len(by["oneills"])
    with pytest.raises(ValueError, match="unknown public-domain collection"):
        pd.list_source_files(["nottingham"])


@pytest.mark.parametrize(
    "collection,stem", [("essen", "erk5"), ("ryans_mammoth", "AcaciaReel"), ("oneills", "0626-0635")]
)
def test_a_real_file_from_each_collection_parses(collection, stem):
    (sf,) = [f for f in pd.list_source_files([collection]) if Path(f.corpus_path).stem == stem]
    recs = pd.parse_source_file(sf.path, collection)
    n_x = len(re.findall(r"^X:", sf.path.read_text(encoding="utf-8", errors="replace"), flags=re.M))
    assert len(recs) == n_x > 0
    assert [r["tune_index"] for r in recs] == list(range(n_x))
    assert all(r["corpus_path"] == sf.corpus_path and r["collection"] == collection for r in recs)
    usable = [r for r in recs if r["skip_reason"] is None]
    assert usable, [r["skip_reason"] for r in recs]
    assert not [r for r in recs if r["skip_category"] in ("parse error", "file error")]
    for r in usable:
        m = pd.record_to_melody(r, bpm=138.0, file_sha256=sf.sha256)
        assert len(m.notes) >= pd.MIN_NOTES and parse_key(m.key)
        assert all(a.end <= b.start + 1e-9 for a, b in zip(m.notes, m.notes[1:]))  # one line


# ---- public_domain_melodies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pd-cache")
    logs: list[str] = []
    res = pd.public_domain_melodies(12, workers=2, cache_dir=cache, log=logs.append)
    return cache, res, logs


def test_melodies_have_the_attributes_and_are_retimed(cold):
    cache, res, logs = cold
    ms = res.melodies
    assert len(ms) == 12 and all(isinstance(m, Melody) for m in ms)
    names = [m.name for m in ms]
    assert len(set(names)) == 12
    assert all(re.fullmatch(r"pd-(essen|ryans-mammoth|oneills)-[a-z0-9-]+-\d+", n) for n in names)
    # round-robin across the collections: 4 from each, in turn
    assert [m.attributes["collection"] for m in ms] == ["essen", "ryans_mammoth", "oneills"] * 4
    root = pd.corpus_root()
    for m in ms:
        a = m.attributes
        assert m.bpm == 138.0 and m.program == 81
        assert a["source"] == "tier3/public_domain" and a["licence"] == pd.COLLECTION_LICENCES[a["collection"]]
        assert a["tempo_meaningful"] is True and a["retimed"] is True
        assert a["original_tempo"] is None or isinstance(a["original_tempo"], float)
        assert a["time_signature"] in ("4/4", "2/4", "2/2")
        assert isinstance(a["title"], str) and isinstance(a["tune_index"], int)
        assert a["file_sha256"] == hashlib.sha256((root / a["corpus_path"]).read_bytes()).hexdigest()
        assert m.name.endswith(f"-{a['tune_index']}")
        assert parse_key(m.key) and len(m.notes) >= 8 and m.notes[0].start >= 0
        assert all(n.velocity == 100 for n in m.notes)
        assert Melody.from_json(m.to_json()) == m
    r = res.report
    assert r["tunes_kept"] == 12 and r["shortfall"] == 0 and r["cache_hits"] == 0 and r["files_parsed"] > 0
    assert r["tunes_seen"] == r["tunes_kept"] + sum(r["skipped"].values())
    assert {c: v["kept"] for c, v in r["per_collection"].items()} == {"essen": 4, "ryans_mammoth": 4, "oneills": 4}
    assert r["tunes_per_second"] > 0 and r["seconds"] > 0
    assert any("tunes/s" in line for line in logs)
    assert sorted(p.name for p in cache.glob("*.json")) and not list(cache.glob("*.tmp-*"))


def test_second_call_is_identical_and_served_from_the_cache(cold):
    cache, res, _ = cold
    again = pd.public_domain_melodies(12, workers=2, cache_dir=cache, log=lambda _s: None)
    assert [m.to_dict() for m in again.melodies] == [m.to_dict() for m in res.melodies]
    assert again.report["cache_hits"] > 0 and again.report["files_parsed"] == 0
    assert again.report["tunes_parsed"] == 0


def test_corrupt_cache_is_ignored_and_rewritten_and_in_process_parse_agrees(cold, tmp_path):
    cache, res, _ = cold
    bad = tmp_path / "cache"
    shutil.copytree(cache, bad)
    # the cache files of the first essen and the first Ryan's Mammoth melody (files the walk reads)
    files = [bad / f"{m.attributes['file_sha256']}.json" for m in res.melodies[:2]]
    assert files[0] != files[-1] and all(f.exists() for f in files)
    files[0].write_text("{ truncated")
    stale = json.loads(files[-1].read_text())
    files[-1].write_text(json.dumps(dict(stale, parser_version="0")))
    logs: list[str] = []
    out = pd.public_domain_melodies(12, workers=1, cache_dir=bad, log=logs.append)
    assert [m.to_dict() for m in out.melodies] == [m.to_dict() for m in res.melodies]
    assert any("ignoring unreadable cache file" in line and files[0].name in line for line in logs)
    assert any("ignoring stale or malformed cache file" in line and files[-1].name in line for line in logs)
    assert out.report["files_parsed"] >= 1
    for f in (files[0], files[-1]):
        d = json.loads(f.read_text())
        assert d["parser_version"] == pd.PARSER_VERSION and d["sha256"] == f.stem and d["n_tunes"] == len(d["records"])


def test_seed_changes_the_sample_and_count_zero_is_empty():
    a = pd.public_domain_melodies(3, collections=("ryans_mammoth",), workers=1, seed=0, log=lambda _s: None)
    b = pd.public_domain_melodies(3, collections=("ryans_mammoth",), workers=1, seed=1, log=lambda _s: None)
    assert len(a.melodies) == len(b.melodies) == 3
    assert [m.name for m in a.melodies] != [m.name for m in b.melodies]
    assert all(m.attributes["collection"] == "ryans_mammoth" for m in a.melodies + b.melodies)
    empty = pd.public_domain_melodies(0, workers=1, log=lambda _s: None)
    assert empty.melodies == [] and empty.report["tunes_seen"] == 0
    with pytest.raises(ValueError, match="unknown public-domain collection"):
        pd.public_domain_melodies(1, collections=("bach",))
