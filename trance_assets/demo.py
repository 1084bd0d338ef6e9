"""Demo data: rule-engine trance tracks for the inbox, their ground truth, and demo Tier 1 files.

Everything is deterministic. The audio is a full arrangement (supersaw lead, pad, off-beat bass,
kick, hats, ducking) synthesised with numpy; the lead's MIDI, key, tempo and chords are kept as
ground truth outside the inbox so extraction accuracy can be measured. The Tier 1 files are labelled
`verified_by: demo-generator`: generated, not human-verified.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio.synth import render_arrangement
from .music.melody import Melody
from .music.rules import generate
from .music.theory import MINOR_PROGRESSIONS, parse_key, progression_symbols
from .storage import atomic_write_bytes, atomic_write_text, as_upath

SAMPLE_RATE = 44100
DEMO_BARS = 20
DEMO_VERIFIER = "demo-generator"
MANIFEST_COLUMNS = ("file", "title", "artist", "key", "bpm", "chords", "verified_by", "verified_on", "licence", "notes", "reference_track")

# (title, key, bpm, progression index): 12 minor keys, 130-145 BPM; 20 bars = 33-37 s.
DEMO_TRACKS = (
    ("Aurora", "Am", 138, 0),
    ("Nightfall", "Em", 132, 1),
    ("Solace", "Dm", 140, 2),
    ("Horizon Line", "Bm", 136, 3),
    ("Zenith", "F#m", 145, 4),
    ("Eternity", "Cm", 130, 5),
    ("Skyward", "Gm", 134, 6),
    ("Mirage", "C#m", 142, 7),
    ("Nebula", "Fm", 137, 8),
    ("Afterglow", "Ebm", 139, 9),
    ("Starlight", "G#m", 133, 0),
    ("Departure", "Bbm", 144, 1),
)


@dataclass(frozen=True)
class DemoTrack:
    index: int
    title: str
    melody: Melody
    declares_bpm: bool

    @property
    def filename(self) -> str:
        return f"Demo {self.index:02d} - {self.title}.wav"

    @property
    def stem(self) -> str:
        return f"demo_{self.index:02d}_{self.title.lower().replace(' ', '_')}"


def demo_tracks(count: int = len(DEMO_TRACKS)) -> list[DemoTrack]:
    out = []
    for i, (title, key, bpm, prog) in enumerate(DEMO_TRACKS[:count], start=1):
        chords = progression_symbols(parse_key(key), MINOR_PROGRESSIONS[prog])
        m = generate(key, bpm, chords, DEMO_BARS, seed=1000 + i, density=0.45 + 0.03 * (i % 5), span=20)
        m = Melody(m.notes, m.bpm, m.key, m.chords, m.bars, m.program, f"demo_{i:02d}", m.attributes)
        # Every other track declares its tempo in a sidecar; the rest leave BPM to be estimated.
        out.append(DemoTrack(i, title, m, declares_bpm=i % 2 == 1))
    return out


def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_demo_data(storage_root: str | Path, *, tracks: int = len(DEMO_TRACKS), tier1_extra: int = 8, inbox: str | Path | None = None, log=print) -> dict:
    """Write demo inbox audio, ground truth and demo Tier 1 files under `storage_root`.

    Returns a summary dict of what was written where.
    """
    root = as_upath(storage_root)
    inbox_dir = as_upath(inbox) if inbox else root / "inbox" / "reference_audio"
    truth_dir = root / "demo" / "ground_truth"
    tier1_dir = root / "dataset" / "tier1"
    manifest_rows = []
    written = []
    for t in demo_tracks(tracks):
        audio = render_arrangement(t.melody, sr=SAMPLE_RATE, seed=t.index)
        atomic_write_bytes(truth_dir / f"{t.stem}.mid", t.melody.to_midi_bytes())
        truth = {
            "audio_file": t.filename,
            "title": t.title,
            "key": t.melody.key,
            "bpm": t.melody.bpm,
            "bars": t.melody.bars,
            "chords": [c.symbol for c in t.melody.chords],
            "lead_midi": f"{t.stem}.mid",
            "melody": t.melody.to_dict(),
            "sample_rate": SAMPLE_RATE,
            "duration_s": round(len(audio) / SAMPLE_RATE, 3),
        }
        atomic_write_text(truth_dir / f"{t.stem}.json", json.dumps(truth, indent=1))
        if t.declares_bpm:
            side = {"bpm": t.melody.bpm, "title": t.title, "artist": "trance_assets demo"}
            atomic_write_text(inbox_dir / t.filename.replace(".wav", ".json"), json.dumps(side, indent=1))
        # The audio goes last: the sensor must never see a track before its sidecar.
        atomic_write_bytes(inbox_dir / t.filename, _wav_bytes(audio))
        gold = f"gold_{t.index:02d}_{t.title.lower().replace(' ', '_')}.mid"
        atomic_write_bytes(tier1_dir / gold, t.melody.to_midi_bytes())
        manifest_rows.append(_manifest_row(gold, t.title, t.melody, reference_track=t.filename))
        written.append(t.filename)
        log(f"  demo track {t.index:2d}/{tracks}: {t.filename} ({t.melody.key}, {t.melody.bpm:g} BPM, {truth['duration_s']:.1f} s)")
    for j in range(tier1_extra):
        key = ("Am", "Em", "Dm", "Gm", "Cm", "F#m", "Bm", "Fm")[j % 8]
        chords = progression_symbols(parse_key(key), MINOR_PROGRESSIONS[(j + 3) % len(MINOR_PROGRESSIONS)])
        m = generate(key, 136 + j, chords, 16, seed=5000 + j)
        gold = f"gold_extra_{j + 1:02d}.mid"
        atomic_write_bytes(tier1_dir / gold, m.to_midi_bytes())
        manifest_rows.append(_manifest_row(gold, f"Extra {j + 1:02d}", m, reference_track=""))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(manifest_rows)
    atomic_write_text(tier1_dir / "manifest.csv", buf.getvalue())
    return {
        "inbox": str(inbox_dir),
        "tracks": written,
        "ground_truth": str(truth_dir),
        "tier1": str(tier1_dir),
        "tier1_files": len(manifest_rows),
    }


def _manifest_row(file: str, title: str, m: Melody, reference_track: str) -> dict:
    return {
        "file": file,
        "title": title,
        "artist": "trance_assets demo",
        "key": m.key,
        "bpm": m.bpm,
        "chords": " ".join(c.symbol for c in m.chords[:4]),
        "verified_by": DEMO_VERIFIER,
        "verified_on": "",
        "licence": "CC0-1.0 (generated demo data)",
        "notes": "generated by the rule engine; NOT human-verified",
        "reference_track": reference_track,
    }


def inbox_has_audio(inbox: Path) -> bool:
    from .inbox import scan_inbox

    return bool(scan_inbox(Path(inbox)))
