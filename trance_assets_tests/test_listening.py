"""The blind A/B listening kit: clip preparation, WAV rendering and loudness, kit files and answer
key, reading answers files, and scoring."""

from __future__ import annotations

import csv
import io

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from trance_assets.evaluation.listening import (
    ANSWER_KEY,
    ANSWERS_HEADER,
    BARS,
    BPM,
    INSTRUCTIONS,
    KIT_CSV,
    PEAK_LIMIT,
    QUESTION,
    SAMPLE_RATE,
    TARGET_LUFS,
    Answer,
    AnswerKeyError,
    AnswersFileError,
    KeyRow,
    loudness_normalise,
    make_kit,
    parse_answer_key,
    parse_answers,
    prepare_for_listening,
    render_wav_bytes,
    score_listening,
)
from trance_assets.music.melody import Melody, Note


def _melody(pitch: int, bars: int = 2, bpm: float = 128.0, name: str = "m") -> Melody:
    """8th notes alternating `pitch` and pitch + 2 (so the fundamental of `pitch` dominates)."""
    notes = [Note(i * 0.5, pitch + (2 if i % 4 == 3 else 0), 0.45, 90 + (i % 3) * 10) for i in range(bars * 8)]
    return Melody(notes=tuple(notes), bpm=bpm, key="Am", bars=bars, name=name)


def _read(path) -> tuple[np.ndarray, sf._SoundFileInfo]:
    info = sf.info(str(path))
    audio, _ = sf.read(str(path), dtype="float64")
    return audio, info


def _lufs(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    return pyloudnorm.Meter(sr).integrated_loudness(audio)


def _dominant_hz(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spec) * sr / audio.size)


def _key_rows(key_dir) -> list[dict]:
    return list(csv.DictReader(io.StringIO((key_dir / ANSWER_KEY).read_text())))


# ---- clip preparation and rendering -----------------------------------------------------------


def test_constants():
    assert (BPM, BARS, SAMPLE_RATE, TARGET_LUFS) == (140, 16, 44100, -16.0)
    assert ANSWERS_HEADER == "listener,pair_id,choice,note\n" and parse_answers(ANSWERS_HEADER) == []
    assert QUESTION == "Which sounds more like a real trance melody?"


def test_prepare_for_listening_cuts_to_16_bars_at_140_bpm():
    notes = (Note(0, 69, 1), Note(62, 72, 4), Note(64, 74, 1), Note(70, 76, 2))
    mel = Melody(notes=notes, bpm=128.0, key="Am", program=30, name="long")
    clip = prepare_for_listening(mel)
    assert clip.bpm == 140 and clip.bars == 16 and clip.length_beats == 64
    assert clip.notes == (Note(0, 69, 1), Note(62, 72, 2))  # starts >= 64 dropped, 62+4 cut at 64
    assert clip.name == "long" and clip.key == "Am"
    short = prepare_for_listening(_melody(60, bars=2, bpm=150.0))
    assert short.bpm == 140 and short.bars == 2 and len(short.notes) == 16


def test_render_16_bars_44k_16bit_at_target_loudness():
    mel = _melody(69, bars=20, bpm=132.0)
    data, lufs = render_wav_bytes(mel)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (44100, 1, "PCM_16", "WAV")
    # 16 bars at 140 BPM plus the plain saw's 30 ms release, not 20 bars at 132
    assert info.frames == round((64 * 60 / 140 + 0.03) * 44100)
    audio, _ = sf.read(io.BytesIO(data), dtype="float64")
    assert lufs == TARGET_LUFS
    assert abs(_lufs(audio) - TARGET_LUFS) < 0.5
    assert np.max(np.abs(audio)) <= PEAK_LIMIT + 1e-4


def test_peak_guard_limits_and_records_actual_loudness():
    sr = SAMPLE_RATE
    audio = np.zeros(2 * sr)
    t = np.arange(int(0.004 * sr)) / sr
    for start in np.arange(0.0, 1.9, 0.5):  # 4 ms blips every 500 ms: far too peaky for -16 LUFS
        i = int(start * sr)
        audio[i : i + t.size] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    out, lufs, limited = loudness_normalise(audio, sr)
    assert limited
    assert np.max(np.abs(out)) == pytest.approx(PEAK_LIMIT)
    assert lufs < TARGET_LUFS - 0.5
    assert lufs == pytest.approx(_lufs(out), abs=0.01)
    # a plain sine is not limited: it lands on the target
    sine = 0.1 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    out, lufs, limited = loudness_normalise(sine, sr)
    assert not limited and lufs == TARGET_LUFS and abs(_lufs(out) - TARGET_LUFS) < 0.05


def test_silent_clip_has_no_loudness():
    data, lufs = render_wav_bytes(Melody(notes=(), bpm=120.0, key="Am", bars=1))
    assert lufs is None
    audio, _ = sf.read(io.BytesIO(data))
    assert not np.any(audio)


# ---- the kit ----------------------------------------------------------------------------------


def _pairs(n: int, bars: int = 2) -> list[tuple[str, Melody, Melody]]:
    """Config A plays high (MIDI 79-83), config B low (MIDI 52-56): the pitch tells them apart."""
    return [(f"prompt-{i:02d}", _melody(79 + i % 5, bars), _melody(52 + i % 5, bars)) for i in range(n)]


def test_make_kit_files_key_and_loudness(tmp_path):
    kit, key = tmp_path / "kit", tmp_path / "private" / "key"
    summary = make_kit(_pairs(4), "model", "rules", kit, key, seed=11)
    assert summary["pairs"] == 4 and summary["files"] == 8 and summary["a_first"] == 2
    assert summary["lufs_min"] == summary["lufs_max"] == TARGET_LUFS and summary["limited"] == 0

    files = sorted(p.name for p in kit.iterdir())
    assert files == sorted([INSTRUCTIONS, KIT_CSV] + [f"pair_{k:03d}_{s}.wav" for k in range(1, 5) for s in (1, 2)])
    assert not list(kit.rglob("answer_key*")) and (key / ANSWER_KEY).exists()

    kit_rows = list(csv.DictReader(io.StringIO((kit / KIT_CSV).read_text())))
    assert list(kit_rows[0]) == ["pair_id", "prompt_id", "file_1", "file_2"]
    assert [r["prompt_id"] for r in kit_rows] == [f"prompt-{i:02d}" for i in range(4)]
    assert "model" not in (kit / KIT_CSV).read_text() and "rules" not in (kit / KIT_CSV).read_text()
    text = (kit / INSTRUCTIONS).read_text()
    assert QUESTION in text and "listener,pair_id,choice" in text and "`1` or `2`" in text

    key_rows = _key_rows(key)
    assert [r["pair_id"] for r in key_rows] == [r["pair_id"] for r in kit_rows]
    for kr, row in zip(kit_rows, key_rows):
        assert {row["file_1_config"], row["file_2_config"]} == {"model", "rules"}
        hz = {}
        for slot in (1, 2):
            audio, info = _read(kit / kr[f"file_{slot}"])
            assert (info.samplerate, info.subtype, info.channels) == (44100, "PCM_16", 1)
            assert abs(_lufs(audio) - TARGET_LUFS) < 0.5
            assert float(row[f"file_{slot}_lufs"]) == TARGET_LUFS
            hz[row[f"file_{slot}_config"]] = _dominant_hz(audio)
        # the key says which file is the model (high melody) and which the rules (low melody)
        assert hz["model"] > 700 and hz["rules"] < 220, (kr, row, hz)


def test_kit_order_randomised_reproducible_and_balanced(tmp_path):
    pairs = _pairs(10, bars=1)
    make_kit(pairs, "a", "b", tmp_path / "k1", tmp_path / "key1", seed=5)
    make_kit(pairs, "a", "b", tmp_path / "k2", tmp_path / "key2", seed=5)
    make_kit(pairs, "a", "b", tmp_path / "k3", tmp_path / "key3", seed=6)
    key1 = (tmp_path / "key1" / ANSWER_KEY).read_text()
    assert key1 == (tmp_path / "key2" / ANSWER_KEY).read_text()
    assert (tmp_path / "k1" / "pair_004_1.wav").read_bytes() == (tmp_path / "k2" / "pair_004_1.wav").read_bytes()
    first1 = [r["file_1_config"] for r in _key_rows(tmp_path / "key1")]
    first3 = [r["file_1_config"] for r in _key_rows(tmp_path / "key3")]
    assert first1 != first3  # another seed, another order
    assert first1.count("a") == first3.count("a") == 5  # balanced: each config first in half the pairs
    assert first1 not in (["a"] * 5 + ["b"] * 5, ["b"] * 5 + ["a"] * 5)


def test_kit_rejects_bad_arguments_and_replaces_stale_files(tmp_path):
    kit = tmp_path / "kit"
    with pytest.raises(ValueError, match="must not be inside"):
        make_kit(_pairs(1, 1), "a", "b", kit, kit / "key", seed=0)
    with pytest.raises(ValueError, match="must not be inside"):
        make_kit(_pairs(1, 1), "a", "b", kit, kit, seed=0)
    with pytest.raises(ValueError, match="must differ"):
        make_kit(_pairs(1, 1), "a", "a", kit, tmp_path / "key", seed=0)
    with pytest.raises(ValueError, match="at least one pair"):
        make_kit([], "a", "b", kit, tmp_path / "key", seed=0)
    make_kit(_pairs(3, 1), "a", "b", kit, tmp_path / "key", seed=0)
    (kit / "notes.txt").write_text("mine")
    make_kit(_pairs(1, 1), "a", "b", kit, tmp_path / "key", seed=0)
    assert sorted(p.name for p in kit.iterdir()) == sorted([INSTRUCTIONS, KIT_CSV, "notes.txt", "pair_001_1.wav", "pair_001_2.wav"])
    assert len(_key_rows(tmp_path / "key")) == 1
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


# ---- answers files ----------------------------------------------------------------------------


def test_parse_answers_format():
    text = (
        "\ufeffListener, pair_id ,choice,note\n"
        "alice,pair_001,2,\n"
        "\n"
        'alice,2,1,"catchy, bright"\n'
        "bob,pair_1,1,\n"
        "alice,001,1,changed my mind\n"
    )
    answers = parse_answers(text, "answers_alice.csv")
    assert answers == [
        Answer("alice", "pair_001", 1, "changed my mind", 6),  # the later row wins
        Answer("alice", "pair_002", 1, "catchy, bright", 4),
        Answer("bob", "pair_001", 1, "", 5),
    ]
    # the note column is optional
    assert parse_answers("listener,pair_id,choice\ncarol,pair_003,2\n") == [Answer("carol", "pair_003", 2, "", 2)]


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("listener,pair,choice\nalice,pair_001,1\n", "f.csv:1:", "missing pair_id"),
        ("listener,pair_id\n", "f.csv:1:", "missing choice"),
        ("listener,pair_id,choice\nalice,pair_001,1\n,pair_002,1\n", "f.csv:3:", "empty listener"),
        ("listener,pair_id,choice\nalice,pair_001,1\n\nalice,pair_002,3\n", "f.csv:4:", "choice must be 1 or 2"),
        ("listener,pair_id,choice\nalice,pair_001,A\n", "f.csv:2:", "choice must be 1 or 2"),
        ("listener,pair_id,choice\nalice,pair_001,\n", "f.csv:2:", "choice must be 1 or 2"),
        ("listener,pair_id,choice\nalice,first,1\n", "f.csv:2:", "pair_id must look like"),
    ],
)
def test_parse_answers_errors_name_file_and_line(text, where, what):
    with pytest.raises(AnswersFileError) as exc:
        parse_answers(text, "f.csv")
    assert str(exc.value).startswith(where) and what in str(exc.value)


def test_parse_answer_key_errors():
    good = "pair_id,prompt_id,file_1_config,file_2_config\npair_001,p0,a,b\n"
    assert parse_answer_key(good) == [KeyRow("pair_001", "a", "b", "p0")]
    with pytest.raises(AnswerKeyError, match=r"k.csv:3: pair pair_001 appears twice"):
        parse_answer_key(good + "pair_001,p1,b,a\n", "k.csv")
    with pytest.raises(AnswerKeyError, match=r"k.csv:1:"):
        parse_answer_key("pair_id,file_1_config\n", "k.csv")


# ---- scoring ----------------------------------------------------------------------------------

KEY = [
    KeyRow("pair_001", "model", "rules"),
    KeyRow("pair_002", "rules", "model"),
    KeyRow("pair_003", "rules", "model"),
    KeyRow("pair_004", "model", "rules"),
]


def test_score_listening_hand_case():
    answers = parse_answers(
        "listener,pair_id,choice\n"
        # alice: model, model, rules, model -> 3 of 4
        "alice,pair_001,1\nalice,pair_002,2\nalice,pair_003,1\nalice,pair_004,1\n"
        # bob: model every time -> 4 of 4
        "bob,pair_001,1\nbob,pair_002,2\nbob,pair_003,2\nbob,pair_004,1\n"
        # a pair that is not in the key
        "bob,pair_009,1\n"
    )
    s = score_listening(answers, KEY, "model", "rules")
    assert (s["wins"], s["losses"], s["n"]) == (7, 1, 8)
    assert s["win_rate"] == pytest.approx(7 / 8)
    assert s["p_value"] == pytest.approx((8 + 1) / 256)  # P(X >= 7), X ~ Bin(8, 1/2)
    assert s["per_listener"] == [{"listener": "alice", "wins": 3, "n": 4, "rate": 0.75}, {"listener": "bob", "wins": 4, "n": 4, "rate": 1.0}]
    assert s["per_pair"][2] == {"pair_id": "pair_003", "wins": 1, "n": 2}
    assert (s["ignored"], s["ignored_pair_ids"], s["listeners"]) == (1, ["pair_009"], 2)
    # from the other side: rules won 1 of 8
    r = score_listening(answers, KEY, "rules", "model")
    assert r["wins"] == 1 and r["p_value"] == pytest.approx(255 / 256)


def test_score_listening_edge_cases():
    s = score_listening([], KEY, "model", "rules")
    assert s["n"] == 0 and s["win_rate"] is None and s["p_value"] is None
    with pytest.raises(ValueError, match="not 'model' with 'other'"):
        score_listening([], KEY, "model", "other")
    # key rows as plain dicts (as csv.DictReader gives them)
    dict_key = [{"pair_id": "pair_001", "file_1_config": "model", "file_2_config": "rules"}]
    assert score_listening([Answer("x", "pair_001", 2)], dict_key, "model", "rules")["wins"] == 0


def test_kit_to_score_end_to_end(tmp_path):
    """A listener who always picks the higher-pitched file: config A (the high one) wins every pair."""
    kit, key = tmp_path / "kit", tmp_path / "key"
    make_kit(_pairs(6, bars=1), "high", "low", kit, key, seed=3)
    lines = ["listener,pair_id,choice"]
    for row in csv.DictReader(io.StringIO((kit / KIT_CSV).read_text())):
        hz = [_dominant_hz(_read(kit / row[f"file_{s}"])[0]) for s in (1, 2)]
        lines.append(f"dana,{row['pair_id']},{1 if hz[0] > hz[1] else 2}")
    answers = parse_answers("\n".join(lines) + "\n", "dana.csv")
    s = score_listening(answers, parse_answer_key((key / ANSWER_KEY).read_text()), "high", "low")
    assert (s["wins"], s["n"]) == (6, 6) and s["p_value"] == pytest.approx(1 / 64)
