"""`trance-assets generate` and `trance-assets score`: through `cli.main` (stdout / stderr captured)
and once through the installed console script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from trance_assets.cli import main
from trance_assets.evaluation.metrics import METRICS
from trance_assets.evaluation.sets import reference_stats
from trance_assets.music.melody import ChordSpan, Melody, Note, melody_from_midi
from trance_assets.music.rules import generate

SCRIPT = Path(sys.executable).parent / "trance-assets"
GEN_ARGS = ["generate", "--backend", "rules", "--key", "Am", "--bpm", "140", "--chords", "Am F C G", "--bars", "16", "--seed", "1"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def tiny(chords: tuple[ChordSpan, ...] = ()) -> Melody:
    """A4 C5 E5 G5, one beat each, in A minor: metrics computable by hand."""
    return Melody(tuple(Note(float(i), p, 1.0, 100) for i, p in enumerate((69, 72, 76, 79))), 140.0, "Am", chords)


# ---- generate ---------------------------------------------------------------------------------


def test_generate_writes_the_midi_it_was_asked_for(tmp_path, capsys):
    out_file = tmp_path / "x.mid"
    rc, out, err = run(capsys, *GEN_ARGS, "--out", str(out_file))
    assert rc == 0, err
    m = melody_from_midi(out_file)
    assert (m.key, m.bpm, m.n_bars) == ("Am", 140.0, 16)
    assert [c.symbol for c in m.chords] == ["Am", "F", "C", "G"] * 4
    assert [c.start for c in m.chords] == [4.0 * b for b in range(16)]
    [line] = json_lines(out)
    assert line["out"] == str(out_file)
    assert line["generator"] == {
        "name": "rules",
        "version": "rules-1.0",
        "checkpoint": None,
        "description": "trance_assets rule engine (chord-tone anchoring, motifs, cadences)",
        "options": {},
    }
    assert (line["key"], line["bpm"], line["bars"], line["seed"]) == ("Am", 140.0, 16, 1)
    assert line["notes"] == len(m.notes)
    assert line["chords"] == ["Am", "F", "C", "G"] * 4
    # What the engine makes for this prompt, note for note.
    expected = generate("Am", 140.0, ["Am", "F", "C", "G"], 16, 1)
    assert [(n.start, n.pitch, n.duration) for n in m.notes] == [(n.start, n.pitch, n.duration) for n in expected.notes]


def test_generate_is_deterministic_and_the_seed_matters(tmp_path, capsys):
    a, b, c = tmp_path / "a.mid", tmp_path / "b.mid", tmp_path / "c.mid"
    assert run(capsys, *GEN_ARGS, "--out", str(a))[0] == 0
    assert run(capsys, *GEN_ARGS, "--out", str(b))[0] == 0
    assert run(capsys, *[x if x != "1" else "2" for x in GEN_ARGS], "--out", str(c))[0] == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_generate_with_options(tmp_path, capsys):
    out_file = tmp_path / "dense.mid"
    rc, out, err = run(capsys, *GEN_ARGS, "--option", "density=0.8", "--option", "span=18", "--out", str(out_file))
    assert rc == 0, err
    [line] = json_lines(out)
    assert line["generator"]["options"] == {"density": 0.8, "span": 18}
    m = melody_from_midi(out_file)
    expected = generate("Am", 140.0, ["Am", "F", "C", "G"], 16, 1, density=0.8, span=18)
    assert [(n.start, n.pitch) for n in m.notes] == [(n.start, n.pitch) for n in expected.notes]
    plain = generate("Am", 140.0, ["Am", "F", "C", "G"], 16, 1)
    assert [(n.start, n.pitch) for n in m.notes] != [(n.start, n.pitch) for n in plain.notes]


def test_generate_defaults_to_the_keys_progression(tmp_path, capsys):
    rc, out, _ = run(capsys, "generate", "--key", "Em", "--bars", "4", "--out", str(tmp_path / "e.mid"))
    assert rc == 0
    # i-VI-III-VII in E minor
    assert json_lines(out)[0]["chords"] == ["Em", "C", "G", "D"]


def test_generate_unknown_backend_exits_2_with_a_message(tmp_path, capsys):
    target = tmp_path / "y.mid"
    rc, out, err = run(capsys, "generate", "--backend", "nope", "--out", str(target))
    assert rc == 2
    assert out == ""
    assert "trance-assets generate: unknown generator backend 'nope'; registered: hybrid, melody_rnn, midi_model, musicvae, rules" in err
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--option", "tempo_feel=1"], "unknown rule-engine option(s) ['tempo_feel']"),
        (["--option", "span=1.5"], "span=1.5 is invalid"),
        (["--key", "H#"], "not a key: 'H#'"),
        (["--chords", "Am Xq"], "malformed chord symbol 'Xq'"),
        (["--bars", "0"], "bars must be a positive integer"),
    ],
)
def test_generate_bad_input_exits_2(tmp_path, capsys, args, message):
    target = tmp_path / "bad.mid"
    rc, out, err = run(capsys, "generate", *args, "--out", str(target))
    assert rc == 2
    assert message in err and err.startswith("trance-assets generate: ")
    assert not target.exists()


def test_generate_non_numeric_option_value_exits_2(tmp_path, capsys):
    rc, out, err = run(capsys, "generate", "--option", "density=high", "--out", str(tmp_path / "z.mid"))
    assert rc == 2
    assert "density" in err


# ---- score: one file ------------------------------------------------------------------------


def test_score_one_file(tmp_path, capsys):
    f = tmp_path / "x.mid"
    assert run(capsys, *GEN_ARGS, "--out", str(f))[0] == 0
    rc, out, err = run(capsys, "score", str(f))
    assert rc == 0, err
    [row] = json_lines(out)
    for metric in METRICS:
        assert metric in row, metric
    assert isinstance(row["composite"], float) and 0.0 < row["composite"] <= 1.0
    assert row["file"] == str(f)
    assert (row["key"], row["key_source"], row["chords_source"]) == ("Am", "file", "file")
    assert row["kl_to_reference"] is None
    assert row["self_similarity_16"] is None  # 16 bars: undefined
    assert row["chords_inferred"] is False and row["bars"] == 16
    # stderr: the summary table, header and one row
    lines = err.strip().splitlines()
    assert lines[0].split() == ["file", "key", "pitch_entropy", "chord_tone_ratio", "self_similarity_8", "kl_to_reference", "composite"]
    assert len(lines) == 2 and lines[1].split()[:2] == ["x.mid", "Am"]
    assert lines[1].split()[5] == "n/a"  # kl_to_reference without --reference
    assert lines[1].split()[6] == f"{row['composite']:.3f}"


def test_score_hand_computed_metrics(tmp_path, capsys):
    f = tmp_path / "tiny.mid"
    f.write_bytes(tiny().to_midi_bytes())
    rc, out, _ = run(capsys, "score", "--chords", "Am", str(f))
    assert rc == 0
    [row] = json_lines(out)
    assert (row["key_source"], row["chords_source"]) == ("file", "given")
    assert row["pitch_entropy"] == pytest.approx(2.0)  # four pitches, one note each
    assert row["pitch_range"] == pytest.approx(10 / 12)  # 69 .. 79
    assert row["chord_tone_ratio"] == pytest.approx(0.75)  # A C E in Am, G not
    assert row["stepwise_ratio"] == pytest.approx(0.0)  # intervals 3, 4, 3
    assert row["npvi"] == pytest.approx(0.0)  # equal inter-onset intervals
    assert row["n_notes"] == 4


def test_score_chords_source(tmp_path, capsys):
    plain, marked = tmp_path / "plain.mid", tmp_path / "marked.mid"
    plain.write_bytes(tiny().to_midi_bytes())  # no chord markers
    marked.write_bytes(tiny((ChordSpan("Am", 0.0, 2.0), ChordSpan("C", 2.0, 2.0))).to_midi_bytes())

    [row] = json_lines(run(capsys, "score", str(plain))[1])
    assert row["chords_source"] == "inferred" and row["chords_inferred"] is True

    [row] = json_lines(run(capsys, "score", str(marked))[1])
    assert row["chords_source"] == "file" and row["chords_inferred"] is False
    # Am over A C, C over E G: E and G are tones of C; A, C of Am -> 4/4
    assert row["chord_tone_ratio"] == pytest.approx(1.0)

    [row] = json_lines(run(capsys, "score", "--chords", "Dm", str(marked))[1])
    assert row["chords_source"] == "given"
    assert row["chord_tone_ratio"] == pytest.approx(0.25)  # only A is a tone of Dm (D F A)


def test_score_given_chords_agree_with_the_files_markers(tmp_path, capsys):
    f = tmp_path / "x.mid"
    assert run(capsys, *GEN_ARGS, "--out", str(f))[0] == 0
    [from_file] = json_lines(run(capsys, "score", str(f))[1])
    [given] = json_lines(run(capsys, "score", "--chords", "Am F C G", str(f))[1])
    [other] = json_lines(run(capsys, "score", "--chords", "Dm", str(f))[1])
    assert given["chords_source"] == "given" and from_file["chords_source"] == "file"
    assert given["chord_tone_ratio"] == pytest.approx(from_file["chord_tone_ratio"])
    assert other["chord_tone_ratio"] != pytest.approx(from_file["chord_tone_ratio"])


def test_score_key_source(tmp_path, capsys):
    f = tmp_path / "tiny.mid"
    f.write_bytes(tiny().to_midi_bytes())
    [row] = json_lines(run(capsys, "score", "--key", "C", str(f))[1])
    assert (row["key"], row["key_source"]) == ("C", "given")
    # A MIDI without a key signature: the key is estimated.
    import mido

    mid = tiny().to_midi()
    for track in mid.tracks:
        for i, msg in enumerate(track):
            if msg.type == "key_signature":
                track[i] = mido.MetaMessage("text", text="no key", time=msg.time)
    bare = tmp_path / "bare.mid"
    mid.save(str(bare))
    [row] = json_lines(run(capsys, "score", str(bare))[1])
    assert row["key_source"] == "estimated"


def test_score_invalid_key_or_chords_exits_2(tmp_path, capsys):
    f = tmp_path / "tiny.mid"
    f.write_bytes(tiny().to_midi_bytes())
    rc, out, err = run(capsys, "score", "--key", "Xq", str(f))
    assert rc == 2 and out == ""
    assert "trance-assets score: not a key: 'Xq'" in err
    rc, out, err = run(capsys, "score", "--chords", "Am Qq", str(f))
    assert rc == 2 and out == "" and "Qq" in err


def test_score_no_midi_files_exits_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    rc, out, err = run(capsys, "score", str(tmp_path))
    assert rc == 2 and out == "" and "no MIDI files found" in err


# ---- score: folders, references, errors ------------------------------------------------------


def write_set(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (key, prog) in enumerate((("Am", ["Am", "F", "C", "G"]), ("Em", ["Em", "C", "G", "D"]), ("Dm", ["Dm", "Bb", "F", "C"]))):
        p = folder / f"m{i}.mid"
        p.write_bytes(generate(key, 140, prog, 8, seed=i).to_midi_bytes())
        files.append(p)
    (folder / "readme.txt").write_text("not a MIDI file")
    return files


def test_score_a_folder(tmp_path, capsys):
    files = write_set(tmp_path / "set")
    sub = tmp_path / "set" / "deeper"
    sub.mkdir()
    (sub / "m9.MIDI").write_bytes(generate("Gm", 140, ["Gm", "Eb", "Bb", "F"], 8, seed=9).to_midi_bytes())
    rc, out, err = run(capsys, "score", str(tmp_path / "set"))
    assert rc == 0, err
    rows = json_lines(out)
    assert [Path(r["file"]).name for r in rows] == ["m9.MIDI", "m0.mid", "m1.mid", "m2.mid"]
    assert [r["key"] for r in rows] == ["Gm", "Am", "Em", "Dm"]
    assert all(r["composite"] is not None for r in rows)
    table = err.strip().splitlines()
    assert table[0].startswith("file") and len(table) == 1 + 4
    assert [line.split()[0] for line in table[1:]] == ["m9.MIDI", "m0.mid", "m1.mid", "m2.mid"]
    assert len(files) == 3


def test_score_with_a_reference(tmp_path, capsys):
    f = tmp_path / "tiny.mid"
    f.write_bytes(tiny().to_midi_bytes())
    ref_file = tmp_path / "reference_stats.json"
    ref_file.write_text(json.dumps(reference_stats([], np.full(12, 1 / 12))))
    rc, out, err = run(capsys, "score", "--reference", str(ref_file), str(f))
    assert rc == 0
    [row] = json_lines(out)
    # P: 1/4 on four pitch classes (ε-smoothed), Q uniform: KL = log2(12) - H(P) = log2(12) - 2
    assert row["kl_to_reference"] == pytest.approx(math.log2(12) - 2.0, abs=1e-3)
    assert err.strip().splitlines()[1].split()[5] == f"{row['kl_to_reference']:.3f}"

    # A reference equal to the melody's own histogram: KL 0.
    own = np.array([0.25 if i in (0, 3, 7, 10) else 0.0 for i in range(12)])  # A C E G relative to A
    ref_file.write_text(json.dumps(reference_stats([], own)))
    [row] = json_lines(run(capsys, "score", "--reference", str(ref_file), str(f))[1])
    assert row["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)

    # Without --reference it stays null.
    [row] = json_lines(run(capsys, "score", str(f))[1])
    assert row["kl_to_reference"] is None


def test_score_reference_without_a_histogram_exits_2(tmp_path, capsys):
    f = tmp_path / "tiny.mid"
    f.write_bytes(tiny().to_midi_bytes())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {}}))
    rc, out, err = run(capsys, "score", "--reference", str(bad), str(f))
    assert rc == 2 and out == "" and "pitch_class_histogram" in err


def test_score_a_corrupt_file_is_reported_and_the_others_scored(tmp_path, capsys):
    write_set(tmp_path / "set")
    (tmp_path / "set" / "broken.mid").write_bytes(b"MThd\x00\x00garbage")
    empty = replace(tiny(), notes=())
    (tmp_path / "set" / "empty.mid").write_bytes(empty.to_midi_bytes())
    rc, out, err = run(capsys, "score", str(tmp_path / "set"))
    assert rc == 1
    rows = json_lines(out)
    assert [Path(r["file"]).name for r in rows] == ["broken.mid", "empty.mid", "m0.mid", "m1.mid", "m2.mid"]
    broken, no_notes = rows[0], rows[1]
    assert set(broken) == {"file", "error"} and "not a readable MIDI file" in broken["error"]
    assert set(no_notes) == {"file", "error"} and "no notes" in no_notes["error"]
    assert all("composite" in r and r["composite"] is not None for r in rows[2:])
    table = {line.split()[0]: line.split() for line in err.strip().splitlines()[1:]}
    assert table["broken.mid"][-1] == "error" and table["empty.mid"][-1] == "error"
    assert table["m0.mid"][1] == "Am"


# ---- the console script -----------------------------------------------------------------------


def test_console_script_generate_then_score(tmp_path):
    target = tmp_path / "smoke.mid"
    gen = subprocess.run([str(SCRIPT), *GEN_ARGS, "--out", str(target)], capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["generator"]["name"] == "rules"
    score = subprocess.run([str(SCRIPT), "score", str(target)], capture_output=True, text=True, timeout=120)
    assert score.returncode == 0, score.stderr
    row = json.loads(score.stdout)
    assert row["key"] == "Am" and row["chords_source"] == "file" and row["composite"] > 0
    assert "composite" in score.stderr.splitlines()[0]
    bad = subprocess.run([str(SCRIPT), "generate", "--backend", "nope", "--out", str(tmp_path / "n.mid")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown generator backend 'nope'" in bad.stderr
