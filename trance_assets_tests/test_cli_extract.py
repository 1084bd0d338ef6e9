"""`trance-assets extract`: the Tier 2 chain without the orchestrator, on rendered trance audio and a
corrupt file: MIDI + sidecar per good file, JSON lines on stdout, a summary table on stderr, exit status."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from trance_assets.audio.synth import render_arrangement
from trance_assets.cli import main
from trance_assets.music.rules import generate
from trance_assets.music.theory import MINOR_PROGRESSIONS, parse_key, progression_symbols

SR = 44100
# stem -> (key, bpm, progression, seed)
GOOD = {"alpha": ("Am", 138, 0, 2001), "beta": ("Dm", 140, 2, 2002)}


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli_audio")
    files = {}
    for stem, (key, bpm, prog, seed) in GOOD.items():
        m = generate(key, bpm, progression_symbols(parse_key(key), MINOR_PROGRESSIONS[prog]), 8, seed=seed, density=0.5, span=20)
        files[stem] = folder / f"{stem}.wav"
        sf.write(str(files[stem]), render_arrangement(m, sr=SR, seed=seed), SR, subtype="PCM_16")
    buf = io.BytesIO()
    sf.write(buf, np.full((2 * SR, 2), 0.1, dtype=np.float32), SR, format="WAV", subtype="PCM_16")
    files["bad"] = folder / "bad.wav"
    files["bad"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated: header declares more
    return files


@pytest.fixture(scope="module")
def mixed_run(audio, tmp_path_factory):
    """One run over two good files and a corrupt one (module-scoped: extraction takes seconds; capsys
    is function-scoped, so the output is captured by hand)."""
    out = tmp_path_factory.mktemp("cli_out")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["extract", str(audio["alpha"]), str(audio["beta"]), str(audio["bad"]), "--out", str(out), "--separator", "dsp", "--json"])
    return rc, out, stdout.getvalue(), stderr.getvalue()


def table_rows(stderr: str) -> dict[str, str]:
    """Summary-table rows by file name (progress-bar output is carriage-return separated)."""
    lines = [seg for line in stderr.splitlines() for seg in line.split("\r")]
    return {line.split()[0]: line for line in lines if line.split() and line.split()[0].endswith(".wav")}


def test_one_failure_returns_1_and_writes_the_good_files(mixed_run, audio):
    rc, out, _, _ = mixed_run
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["alpha.json", "alpha.mid", "beta.json", "beta.mid"]
    for stem, (key, bpm, _, _) in GOOD.items():
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["tier"] == 2 and side["accepted"] is True and side["rejection"] == ""
        assert side["original_key"] == key
        assert abs(side["bpm"] - bpm) <= 1.0 and side["bpm_source"] == "estimated"
        assert side["source_track"] == str(audio[stem])
        assert side["source_sha256"] == hashlib.sha256(audio[stem].read_bytes()).hexdigest()
        assert side["extraction_method"]["separator"] == "dsp:hpss-band-centre"
        midi = mido.MidiFile(str(out / f"{stem}.mid"))
        notes = [msg for msg in midi if msg.type == "note_on" and msg.velocity > 0]
        assert len(notes) == side["notes"] >= 16
        assert midi.length > 5.0


def test_json_lines_on_stdout_one_per_good_file(mixed_run, audio):
    _, out, stdout, _ = mixed_run
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert [d["file"] for d in lines] == [str(audio["alpha"]), str(audio["beta"])]
    for d in lines:
        stem = Path(d["file"]).stem
        written = json.loads((out / f"{stem}.json").read_text())
        assert {k: v for k, v in d.items() if k not in ("file", "timings")} == written
        assert d["tier"] == 2 and d["accepted"] is True
        assert {"load", "separate", "transcribe", "melody"} <= set(d["timings"])


def test_summary_table_on_stderr(mixed_run, audio):
    _, out, _, stderr = mixed_run
    lines = [seg for line in stderr.splitlines() for seg in line.split("\r")]
    header = next(line for line in lines if line.startswith("file"))
    assert header.split() == ["file", "notes", "key", "bpm", "compliance", "result"]
    rows = table_rows(stderr)
    assert set(rows) == {"alpha.wav", "beta.wav", "bad.wav"}
    for stem, (key, _, _, _) in GOOD.items():
        cells = rows[f"{stem}.wav"].split()
        side = json.loads((out / f"{stem}.json").read_text())
        assert cells[1] == str(side["notes"])
        assert cells[2] == key
        assert cells[3] == f"{side['bpm']:g}" and cells[4] == "(estimated)"
        assert cells[5] == f"{side['scale_compliance']:.2f}"
        assert cells[6] == "accepted"
    bad = rows["bad.wav"]
    assert "error:" in bad
    assert f"error: {audio['bad']}: truncated" in bad
    assert "2 accepted, 0 rejected, 1 failed" in stderr


def test_only_good_files_returns_0(audio, tmp_path, capsys):
    rc = main(["extract", str(audio["alpha"]), str(audio["beta"]), "--out", str(tmp_path / "out"), "--separator", "dsp"])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # no --json: nothing on stdout
    assert set(table_rows(captured.err)) == {"alpha.wav", "beta.wav"}
    assert "2 accepted, 0 rejected, 0 failed" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.json", "alpha.mid", "beta.json", "beta.mid"]


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "trance-assets"
    out = subprocess.run([str(exe), "extract", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: trance-assets extract")
    assert "--separator {auto,demucs,dsp}" in out.stdout and "--json" in out.stdout
