"""GigaMIDI bulk source: lazy scan + filters, lead selection, loop cuts, the full pass, the hub path.

Everything runs on parquet shards written here in GigaMIDI's column schema (gigamidi_fixture.py);
nothing touches the network.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from trance_assets.bulk.gigamidi import (
    BPM_COLUMN,
    LICENCE,
    NOT_CONFIGURED,
    SOURCE,
    GigaMidiConfig,
    filter_counts,
    filter_gigamidi,
    gigamidi_melodies,
    hub_source,
    lead_candidates,
    lead_score,
    parse_loops,
    scan_gigamidi,
    style_match_expr,
    survey_tracks,
    tempo_bpm_expr,
)
from trance_assets.music.melody import Melody, MidiError

from gigamidi_fixture import (
    BASS,
    CHANNELS,
    CORRUPT_MIDI,
    DRUMS,
    LEAD,
    LOOP_ANNOTATION,
    LOOP_BARS,
    PAD,
    PIANO,
    PROGRAMS,
    band_midi,
    lead_melody,
    write_fixture,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gigamidi")
    roles = write_fixture(root)
    return root, roles


@pytest.fixture(scope="module")
def full_pass(corpus):
    root, roles = corpus
    lines: list[str] = []
    result = gigamidi_melodies(GigaMidiConfig(local_dir=str(root)), log=lines.append, batch_size=3)
    return result, roles, lines


def md5s(lf: pl.LazyFrame) -> set[str]:
    return set(lf.select("md5").collect()["md5"].to_list())


def role_set(roles: dict, *names: str) -> set[str]:
    return {roles[n] for n in names}


# ---- filters -----------------------------------------------------------------------------------------


def test_style_filter_searches_all_five_columns_case_insensitively(corpus):
    root, roles = corpus
    lf = scan_gigamidi(GigaMidiConfig(local_dir=str(root)))
    schema = lf.collect_schema()
    # default vocabulary: "Trance" only in Lastfm (band), "Electronic" capitalised in curated, a plain
    # string in the scraped column, Tagtraum, Discogs; the classical row has "Classical" / "Baroque"
    got = md5s(lf.filter(style_match_expr(schema, GigaMidiConfig().styles)))
    assert got == set(roles.values()) - {roles["classical"]}
    # a one-word vocabulary given in capitals still matches lower/upper-case labels in every column
    trance = md5s(lf.filter(style_match_expr(schema, GigaMidiConfig(styles=("TRANCE",)).styles)))
    assert trance == role_set(roles, "band", "slow", "fast", "looped", "garbled_tempo")
    # a label nobody carries matches nothing
    assert md5s(lf.filter(style_match_expr(schema, ("psytrance-goa",)))) == set()


def test_style_filter_handles_string_and_list_columns_alike():
    lf = pl.LazyFrame(
        {
            "md5": ["a", "b", "c", "d"],
            "music_styles_curated": ["['Progressive Trance']", None, "Jazz", "Rock"],  # a string column here
            "music_style_scraped": [None, None, None, None],  # all-null column (Null dtype)
            "music_style_audio_text_Lastfm": [[], ["Pop", "Electronica"], None, ["Metal"]],
            "tempo": ["140"] * 4,
        }
    )
    schema = lf.collect_schema()
    assert schema["music_styles_curated"] == pl.String and schema["music_style_scraped"] == pl.Null
    got = md5s(lf.filter(style_match_expr(schema, ("trance", "electronica"))))
    assert got == {"a", "b"}
    # no style column at all: nothing matches; no vocabulary: everything does
    bare = pl.LazyFrame({"md5": ["x"], "tempo": ["140"]})
    assert md5s(bare.filter(style_match_expr(bare.collect_schema(), ("trance",)))) == set()
    assert md5s(bare.filter(style_match_expr(bare.collect_schema(), ()))) == {"x"}


@pytest.mark.parametrize(
    "tempo, bpm",
    [
        ("Tempo(time=0, qpm=140.0, mspq=428571, ttype='Tick')", 140.0),
        ("[Tempo(time=0, qpm=138, mspq=434782, ttype='Tick'), Tempo(time=960, qpm=70, mspq=857142, ttype='Tick')]", 138.0),
        ("Tempo(time=0, mspq=500000)", 120.0),
        ("140", 140.0),
        ("142.5 bpm", 142.5),
        ("[136.0, 68.0]", 136.0),
        ("unknown", None),
        ("", None),
        (None, None),
        ("0", None),
        ("Tempo(time=0, qpm=0, mspq=0)", None),
    ],
)
def test_tempo_string_parsing(tempo, bpm):
    lf = pl.LazyFrame({"tempo": [tempo]}, schema={"tempo": pl.String})
    got = lf.select(tempo_bpm_expr(lf.collect_schema()).alias("bpm")).collect()["bpm"][0]
    assert got == (pytest.approx(bpm) if bpm is not None else None)


def test_tempo_numeric_and_missing_columns():
    num = pl.LazyFrame({"tempo": [140, None, -3]})
    assert num.select(tempo_bpm_expr(num.collect_schema())).collect().to_series().to_list() == [140.0, None, None]
    none = pl.LazyFrame({"md5": ["a", "b"]})
    assert none.select(tempo_bpm_expr(none.collect_schema())).collect().to_series().to_list() == [None]


def test_tempo_filter_bounds_are_inclusive(corpus):
    root, roles = corpus
    cfg = GigaMidiConfig(local_dir=str(root), styles=())  # tempo alone
    out = filter_gigamidi(scan_gigamidi(cfg), cfg).select("md5", BPM_COLUMN).collect()
    bpm = dict(zip(out["md5"], out[BPM_COLUMN]))
    assert set(bpm) == role_set(roles, "band", "electro", "classical", "corrupt", "looped", "no_lead")
    assert bpm[roles["electro"]] == 130.0 and bpm[roles["corrupt"]] == 150.0  # both bounds kept
    assert bpm[roles["band"]] == 138.0 and bpm[roles["looped"]] == 140.0  # first tempo of a list
    for dropped in ("slow", "fast", "just_below", "garbled_tempo"):  # 100, 150.5, 129.99, "unknown"
        assert roles[dropped] not in bpm
    narrow = GigaMidiConfig(local_dir=str(root), styles=(), min_bpm=138, max_bpm=138)
    assert md5s(filter_gigamidi(scan_gigamidi(narrow), narrow)) == {roles["band"]}


def test_filter_counts_stage_by_stage(corpus):
    root, _ = corpus
    cfg = GigaMidiConfig(local_dir=str(root))
    assert filter_counts(scan_gigamidi(cfg), cfg) == {"rows_scanned": 10, "after_style": 9, "tempo_unparseable": 1, "after_tempo": 5}
    everything = GigaMidiConfig(local_dir=str(root), styles=(), min_bpm=1, max_bpm=1000)
    assert filter_counts(scan_gigamidi(everything), everything) == {
        "rows_scanned": 10, "after_style": 10, "tempo_unparseable": 1, "after_tempo": 9,
    }  # fmt: skip


def test_filter_is_lazy_and_never_needs_the_music_column(corpus):
    root, roles = corpus
    cfg = GigaMidiConfig(local_dir=str(root))
    lf = scan_gigamidi(cfg)
    filtered = filter_gigamidi(lf, cfg)
    assert isinstance(lf, pl.LazyFrame) and isinstance(filtered, pl.LazyFrame)
    expected = role_set(roles, "band", "electro", "corrupt", "looped", "no_lead")
    # the same filter on a frame that has no music column at all
    assert md5s(filter_gigamidi(lf.drop("music"), cfg)) == expected
    # both predicates are pushed into the parquet scan (so the scan decodes `music` only for the rows
    # they keep), and selecting md5 reads md5 + tempo + the 5 style columns: 7 of 20, music not among them
    plan = filtered.explain()
    scan_part = plan[plan.index("Parquet SCAN"):]
    assert "SELECTION" in scan_part and "contains_any" in scan_part and "qpm" in scan_part
    assert "PROJECT 7/20 COLUMNS" in filtered.select("md5").explain()
    assert md5s(filtered) == expected


# ---- lead selection ---------------------------------------------------------------------------------


def test_lead_selection_picks_the_lead_not_pad_bass_or_drums():
    melody = lead_melody(31)
    survey = survey_tracks(band_midi(melody), label="band", config=GigaMidiConfig(max_melodies_per_file=0))
    assert survey.n_voices == 5
    best = survey.candidates[0]
    assert (best.track, best.channel, best.program, best.family) == (LEAD, CHANNELS[LEAD], PROGRAMS[LEAD], "synth lead")
    assert [n.pitch for n in best.melody.notes] == [n.pitch for n in melody.notes]
    assert best.melody.name == f"band-t{LEAD}" and best.melody.key == "Am" and best.melody.program == 82
    assert best.polyphony == 0.0 and best.rank == 1 and best.loop is None
    assert any("synth lead" in r for r in best.reasons) and any("rank 1 of 2" in r for r in best.reasons)
    # the monophonic piano arpeggio is eligible but ranks below; the others are rejected, with reasons
    assert [c.track for c in survey.candidates] == [LEAD, PIANO]
    assert "polyphony" in survey.rejected[PAD]
    assert "bass" in survey.rejected[BASS]
    assert "drums" in survey.rejected[DRUMS]
    # lead_candidates keeps at most max_melodies_per_file
    one = lead_candidates(band_midi(melody), label="band", config=GigaMidiConfig(max_melodies_per_file=1))
    assert [c.track for c in one] == [LEAD]


def test_ranking_prefers_higher_register_within_a_family_and_respects_thresholds():
    low, high = lead_melody(41), lead_melody(42)
    mid = _two_leads(low, high, shift_low=-24)
    cands = lead_candidates(mid, label="x", config=GigaMidiConfig(max_melodies_per_file=0))
    assert [c.track for c in cands] == [1, 0]  # the octave-up line first
    assert cands[0].median_pitch > cands[1].median_pitch
    # thresholds are enforced: demanding more notes than any track has leaves nothing
    assert lead_candidates(mid, label="x", config=GigaMidiConfig(min_notes=10_000)) == []
    narrow = survey_tracks(mid, label="x", config=GigaMidiConfig(min_range_semitones=0, max_range_semitones=3))
    assert narrow.candidates == [] and all("range" in why for why in narrow.rejected.values())


def _two_leads(a: Melody, b: Melody, shift_low: int) -> bytes:
    import io

    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    for ch, (m, shift) in enumerate(((a, shift_low), (b, 0))):
        trk = mido.MidiTrack([mido.Message("program_change", program=80, channel=ch, time=0)])
        events = []
        for n in m.notes:
            events.append((round(n.start * 480), 1, mido.Message("note_on", note=n.pitch + shift, velocity=90, channel=ch)))
            events.append((round(n.end * 480), 0, mido.Message("note_off", note=n.pitch + shift, velocity=0, channel=ch)))
        now = 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            trk.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(trk)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def test_type0_file_is_split_by_channel():
    melody = lead_melody(33)
    cands = lead_candidates(band_midi(melody, type0=True), label="t0", config=GigaMidiConfig())
    assert cands and cands[0].channel == CHANNELS[LEAD] and cands[0].program == PROGRAMS[LEAD]
    assert cands[0].midi_track == 0
    assert [n.pitch for n in cands[0].melody.notes] == [n.pitch for n in melody.notes]


def test_loop_window_cut_and_loop_preference():
    melody = lead_melody(35)
    data = band_midi(melody)
    cands = lead_candidates(data, label="loop", loop_info=LOOP_ANNOTATION, config=GigaMidiConfig(max_melodies_per_file=0))
    best = cands[0]
    assert best.track == LEAD and best.loop is not None
    start, end = LOOP_BARS[0] * 4.0, LOOP_BARS[1] * 4.0
    expected = [
        (n.start - start, n.pitch, min(n.end, end) - n.start) for n in melody.notes if start <= n.start < end
    ]
    got = [(n.start, n.pitch, n.duration) for n in best.melody.notes]
    assert got == pytest.approx(expected) and len(got) >= 16
    assert best.melody.bars == LOOP_BARS[1] - LOOP_BARS[0]
    assert best.loop["start_tick"] == LOOP_BARS[0] * 4 * 480 and best.loop["end_tick"] == LOOP_BARS[1] * 4 * 480
    assert best.loop["start_beat"] == start and best.loop["instrument_type"] == "Synth Lead"
    assert any("cut to loop window" in r for r in best.reasons)
    # a loop on the piano track makes it the preferred track, ahead of the synth lead
    piano_loop = [{"loop_track_idx": PIANO, "loop_start": 0, "loop_end": 8 * 4 * 480}]
    ranked = lead_candidates(data, label="loop", loop_info=piano_loop, config=GigaMidiConfig(max_melodies_per_file=0))
    assert [c.track for c in ranked] == [PIANO, LEAD]
    assert ranked[0].loop is not None and ranked[1].loop is None
    # a loop window with too few notes keeps the whole track (and says so)
    sparse = [{"loop_track_idx": LEAD, "loop_start": 0, "loop_end": 240}]
    whole = lead_candidates(data, label="loop", loop_info=sparse, config=GigaMidiConfig())[0]
    assert whole.loop is None and len(whole.melody.notes) == len(melody.notes)
    assert any("full track kept" in r for r in whole.reasons)


def test_parse_loops_skips_malformed_entries():
    loops = parse_loops(
        {
            "loop_track_idx": [0, 1, None, 3],
            "loop_start": [0, 960, 0, 500],
            "loop_end": [1920, 960, 100, 400],  # second and fourth have end <= start
            "loop_duration_beats": [4.0, 0.0, 1.0, 1.0],
        }
    )
    assert [(lp.track, lp.start_tick, lp.end_tick, lp.duration_beats) for lp in loops] == [(0, 0, 1920, 4.0)]
    assert parse_loops(None) == [] and parse_loops({"loop_track_idx": None}) == []


def test_corrupt_bytes_raise_midi_error_naming_the_label():
    with pytest.raises(MidiError, match="broken-file"):
        lead_candidates(CORRUPT_MIDI, label="broken-file", config=GigaMidiConfig())
    with pytest.raises(MidiError, match="broken-file"):
        lead_candidates(b"not a midi file at all", label="broken-file", config=GigaMidiConfig())


def test_lead_score_excludes_bass_and_percussion():
    assert lead_score(81) == lead_score(88) == 4
    assert lead_score(57) == 3 and lead_score(90) == 2 and lead_score(1) == 1
    assert all(lead_score(p) == 0 for p in (33, 40, 48, 113, 128))


# ---- the full pass ------------------------------------------------------------------------------------


def test_full_pass_report(full_pass):
    result, roles, lines = full_pass
    r = result.report
    assert r["configured"] is True and r["source"].startswith("local GigaMIDI parquet folder")
    assert (r["rows_scanned"], r["after_style"], r["after_tempo"], r["tempo_unparseable"]) == (10, 9, 5, 1)
    assert (r["files_read"], r["files_with_leads"], r["melodies"]) == (4, 3, 5)
    assert r["melodies"] == len(result.melodies) and r["seconds"] >= 0
    rejected = {x["md5"]: x["reason"] for x in r["rejections"]}
    assert set(rejected) == role_set(roles, "corrupt", "no_lead")
    assert "unreadable MIDI" in rejected[roles["corrupt"]]
    assert "no lead-like track" in rejected[roles["no_lead"]]
    assert r["rejections_total"] == 2
    json.dumps(r)  # the report is JSON-able
    assert lines and "5 melodies" in lines[-1]


def test_full_pass_melodies_and_provenance(full_pass, corpus):
    result, roles, _ = full_pass
    root, _ = corpus
    by_role = {v: k for k, v in roles.items()}
    names = [m.name for m in result.melodies]
    assert len(names) == len(set(names))
    for m in result.melodies:
        a = m.attributes
        assert a["source"] == SOURCE == "tier3/gigamidi" and a["licence"] == LICENCE == "CC BY-NC 4.0"
        assert a["tempo_meaningful"] is True and a["source_location"] == f"local GigaMIDI parquet folder {root}"
        assert m.name == f"gigamidi-{a['md5'][:12]}-t{a['track']}"
        assert m.bpm == a["tempo"] and m.program == a["program"]
        json.dumps(m.to_dict())
    got = {(by_role[m.attributes["md5"]], m.attributes["track"]) for m in result.melodies}
    assert got == {("band", LEAD), ("band", PIANO), ("electro", 0), ("looped", LEAD), ("looped", PIANO)}
    band_lead = next(m for m in result.melodies if m.name == f"gigamidi-{roles['band'][:12]}-t{LEAD}")
    a = band_lead.attributes
    assert band_lead.bpm == 138.0 and band_lead.key == "Am" and a["key_source"] == "key_signature"
    assert a["program"] == 82 and a["styles_matched"] == ["trance"]
    assert a["style_labels"] == {"music_style_audio_text_Lastfm": ["Trance"]}
    assert a["title"] == "Aurora" and a["artist"] == "Fixture Artist" and a["loop"] is None
    electro = next(m for m in result.melodies if m.attributes["md5"] == roles["electro"])
    assert electro.attributes["styles_matched"] == ["electronic"] and electro.bpm == 130.0
    assert "title" not in electro.attributes
    looped = next(m for m in result.melodies if m.attributes["md5"] == roles["looped"] and m.attributes["track"] == LEAD)
    assert looped.attributes["loop"]["start_tick"] == LOOP_BARS[0] * 4 * 480 and looped.bars == 4
    assert looped.attributes["key_source"] == "estimated" and looped.bpm == 140.0
    assert set(looped.attributes["styles_matched"]) == {"trance", "electronic"}


def test_limits_max_files_and_melodies_per_file(corpus):
    root, _ = corpus
    res = gigamidi_melodies(GigaMidiConfig(local_dir=str(root), max_files=2, max_melodies_per_file=1), log=lambda s: None)
    assert res.report["files_read"] + len(res.report["rejections"]) <= 2
    per_file = {}
    for m in res.melodies:
        per_file[m.attributes["md5"]] = per_file.get(m.attributes["md5"], 0) + 1
    assert per_file and max(per_file.values()) == 1


def test_missing_optional_columns_and_duplicates(tmp_path):
    lead = lead_melody(51).to_midi_bytes()
    df = pl.DataFrame({"music": [lead, lead], "tempo": ["140", "140"], "music_style_scraped": ["Trance", "Trance"]})
    df.write_parquet(tmp_path / "only.parquet")
    res = gigamidi_melodies(GigaMidiConfig(local_dir=str(tmp_path)), log=lambda s: None)
    assert len(res.melodies) == 1 and res.report["duplicates"] == 1  # md5 computed from the bytes
    m = res.melodies[0]
    assert len(m.attributes["md5"]) == 32 and m.attributes["loop"] is None and "artist" not in m.attributes
    assert any("style columns absent" in n for n in res.report["notes"])


# ---- configuration, sources ----------------------------------------------------------------------------


def test_unconfigured_source_gives_nothing_and_says_why():
    lines: list[str] = []
    res = gigamidi_melodies(GigaMidiConfig(), log=lines.append)
    assert res.melodies == [] and res.report["melodies"] == 0
    assert res.report["configured"] is False
    assert res.report["message"] == NOT_CONFIGURED == "no GigaMIDI source configured (set local_dir or hf_config + token)"
    assert NOT_CONFIGURED in lines[0]
    assert scan_gigamidi(GigaMidiConfig()) is None
    # a hub config without a token is not configured either
    assert GigaMidiConfig(hf_config="v1.1.0").configured is False
    assert scan_gigamidi(GigaMidiConfig(hf_config="v1.1.0")) is None


def test_hub_path_and_storage_options_without_network():
    cfg = GigaMidiConfig(hf_config="v1.1.0", token="hf_secret_token")
    assert cfg.configured and hub_source(cfg) == (
        "hf://datasets/Metacreation/GigaMIDI/v1.1.0/train/*.parquet",
        {"token": "hf_secret_token"},
    )
    url, _ = hub_source(GigaMidiConfig(hf_config="v1.0.0", hf_split="validation", token="t"))
    assert url == "hf://datasets/Metacreation/GigaMIDI/v1.0.0/validation.parquet"
    url, _ = hub_source(GigaMidiConfig(hf_config="v2.0.0", hf_pattern="v2.0.0/train/part-*.parquet", token="t"))
    assert url == "hf://datasets/Metacreation/GigaMIDI/v2.0.0/train/part-*.parquet"
    assert "hf_secret_token" not in cfg.describe() and "v1.1.0/train" in cfg.describe()
    with pytest.raises(ValueError, match="hf_config"):
        hub_source(GigaMidiConfig())
    # a local folder wins over the hub
    both = GigaMidiConfig(local_dir="/data/gigamidi", hf_config="v1.1.0", token="t")
    assert both.uses_local and not both.uses_hub and both.describe() == "local GigaMIDI parquet folder /data/gigamidi"


def test_local_folder_without_parquet_is_an_error_naming_it(tmp_path):
    (tmp_path / "readme.txt").write_text("no shards here")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        scan_gigamidi(GigaMidiConfig(local_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_gigamidi(GigaMidiConfig(local_dir=str(tmp_path / "nowhere")))


def test_config_normalises_styles_and_validates():
    cfg = GigaMidiConfig(styles=["Trance", " TRANCE ", "Uplifting"])
    assert cfg.styles == ("trance", "uplifting")
    with pytest.raises(ValueError, match="min_bpm"):
        GigaMidiConfig(min_bpm=150, max_bpm=130)
    with pytest.raises(ValueError, match="max_polyphony"):
        GigaMidiConfig(max_polyphony=1.5)
