"""Blind A/B listening tests (docs/EVALUATION.md, "Statistics"): build a kit, read answers, score.

The question: **"Which sounds more like a real trance melody?"** - forced choice, one pair at a time.

Every clip is made the same way, so only the notes differ: the melody is set to 140 BPM and cut to
its first 16 bars (`prepare_for_listening`), rendered with the project's plain saw (`render_saw`: one
PolyBLEP saw per note, no filter, no effects - the melody's GM program is ignored), at 44.1 kHz mono,
loudness-normalised to -16 LUFS (ITU-R BS.1770 integrated loudness, pyloudnorm) and written as 16-bit
PCM WAV. Peak guard: when reaching -16 LUFS would push the sample peak above -1 dBFS, the clip is
scaled down to a -1 dBFS peak instead and its actual (lower) loudness is recorded.

Kit (`make_kit`), handed to listeners as one folder:

    kit_dir/pair_001_1.wav, pair_001_2.wav, pair_002_1.wav, ...
    kit_dir/kit.csv            pair_id,prompt_id,file_1,file_2
    kit_dir/INSTRUCTIONS.md    the question and how to fill in the answers file

The answer key - which configuration is file 1 and which file 2 of every pair - is written to a
separate folder that listeners never see (`make_kit` refuses a key folder inside the kit folder):

    key_dir/answer_key.csv     pair_id,prompt_id,file_1_config,file_2_config,file_1_lufs,file_2_lufs

Order: within each pair, which configuration plays as file 1 is randomised with
`random.Random(seed)` - balanced, i.e. a shuffled list in which each configuration comes first in
half of the pairs (one extra coin flip for an odd count), so position bias cannot favour either side.
The same seed and inputs give the same kit.

Answers file (CSV, UTF-8, header required; one row per listener and pair; column order free):

    listener,pair_id,choice,note
    alice,pair_001,2,
    alice,pair_002,1,brighter hook
    bob,pair_001,1,

* `listener` - any non-empty name, the same spelling for all of one person's rows.
* `pair_id`  - as in kit.csv (`pair_001`); `1`, `001` and `pair_1` are accepted for the same pair.
* `choice`   - `1` or `2`: the number of the file that sounds more like a real trance melody.
  No ties: a listener who cannot decide picks one anyway (forced choice).
* `note`     - optional free text.

Blank lines are skipped. If the same listener answers the same pair twice, the later row wins (a
correction). Any malformed row raises `AnswersFileError` naming the file and line.

Scoring (`score_listening`): each answer is mapped through the key to the configuration chosen;
the win rate of `config_a` over all answers is tested against 0.5 with a one-sided binomial test
(H1: `config_a` preferred). Answers are treated as independent trials even when one listener gives
several - the per-listener breakdown shows whether one person drives the result. Answers for pair
ids not in the key are ignored and reported.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as _replace

import numpy as np
import pyloudnorm
import soundfile as sf
from upath import UPath

from ..audio.synth import render_saw
from ..music.melody import BEATS_PER_BAR, ChordSpan, Melody, Note
from ..storage import as_upath, atomic_write_bytes, atomic_write_text
from .stats import binomial_one_sided

BPM = 140
BARS = 16
SAMPLE_RATE = 44100
TARGET_LUFS = -16.0
PEAK_LIMIT_DBFS = -1.0
PEAK_LIMIT = 10 ** (PEAK_LIMIT_DBFS / 20)
QUESTION = "Which sounds more like a real trance melody?"

KIT_COLUMNS = ("pair_id", "prompt_id", "file_1", "file_2")
KEY_COLUMNS = ("pair_id", "prompt_id", "file_1_config", "file_2_config", "file_1_lufs", "file_2_lufs")
ANSWER_COLUMNS = ("listener", "pair_id", "choice", "note")
REQUIRED_ANSWER_COLUMNS = ("listener", "pair_id", "choice")
ANSWERS_HEADER = ",".join(ANSWER_COLUMNS) + "\n"  # an empty answers file
REQUIRED_KEY_COLUMNS = ("pair_id", "file_1_config", "file_2_config")
KIT_CSV = "kit.csv"
INSTRUCTIONS = "INSTRUCTIONS.md"
ANSWER_KEY = "answer_key.csv"

_MIN_SECONDS = 0.5  # pyloudnorm needs at least one 400 ms gating block
_PAIR_RE = re.compile(r"^(?:pair[_\- ]?)?0*(\d+)$", re.IGNORECASE)
_WAV_RE = re.compile(r"^pair_\d+_[12]\.wav$")


class ListeningFileError(ValueError):
    """A listening-test CSV has a malformed row; the message names the file, the line and the cause."""


class AnswersFileError(ListeningFileError):
    """The answers file has a malformed row or header."""


class AnswerKeyError(ListeningFileError):
    """The answer key has a malformed row or header."""


@dataclass(frozen=True)
class Answer:
    listener: str
    pair_id: str  # canonical form, "pair_001"
    choice: int  # 1 or 2
    note: str = ""
    line: int = 0  # line in the answers file


@dataclass(frozen=True)
class KeyRow:
    pair_id: str  # canonical form, "pair_001"
    file_1_config: str
    file_2_config: str
    prompt_id: str = ""


# ---- audio ------------------------------------------------------------------------------------


def prepare_for_listening(melody: Melody) -> Melody:
    """The melody as every listener hears it: 140 BPM, its first 16 bars only.

    Notes starting at or after beat 64 are dropped, notes running past it are cut at 64 (chord spans
    likewise). The nominal length is the melody's own bar count capped at 16, so a shorter melody
    keeps its trailing rest but is not padded. Key, name and program are kept (the program does not
    matter: clips are rendered with the plain saw).
    """
    limit = float(BARS * BEATS_PER_BAR)
    notes = [Note(n.start, n.pitch, min(n.end, limit) - n.start, n.velocity) for n in melody.notes if n.start < limit]
    chords = [ChordSpan(c.symbol, c.start, min(c.end, limit) - c.start, c.inferred) for c in melody.chords if c.start < limit]
    bars = min(BARS, melody.n_bars) if melody.bars is not None or notes else None
    return _replace(melody, notes=tuple(notes), chords=tuple(chords), bpm=float(BPM), bars=bars)


def loudness_normalise(audio: np.ndarray, sr: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS) -> tuple[np.ndarray, float | None, bool]:
    """Scale mono float audio to `target_lufs`, with the -1 dBFS peak guard: (audio, lufs, limited).

    `lufs` is the integrated loudness of the returned audio (the target, or lower when `limited`:
    the peak guard scaled it down to a -1 dBFS peak). Silent audio comes back unchanged with lufs
    None. Audio shorter than 0.5 s is padded with trailing silence (loudness needs a 400 ms block).
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.size < int(_MIN_SECONDS * sr):
        x = np.concatenate([x, np.zeros(int(_MIN_SECONDS * sr) - x.size)])
    meter = pyloudnorm.Meter(sr)
    if not np.any(x):
        return x, None, False
    measured = meter.integrated_loudness(x)
    if not np.isfinite(measured):  # all blocks below the -70 LUFS absolute gate
        return x, None, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible clipped samples": handled by the peak guard below
        y = pyloudnorm.normalize.loudness(x, measured, target_lufs)
    peak = float(np.max(np.abs(y)))
    limited = peak > PEAK_LIMIT
    if limited:
        y = y * (PEAK_LIMIT / peak)
        lufs = float(meter.integrated_loudness(y))
    else:
        lufs = float(target_lufs)
    return y, lufs, limited


def _render(melody: Melody) -> tuple[bytes, float | None, bool]:
    clip = prepare_for_listening(melody)
    audio = render_saw(clip, sr=SAMPLE_RATE)
    y, lufs, limited = loudness_normalise(audio, SAMPLE_RATE)
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue(), lufs, limited


def render_wav_bytes(melody: Melody) -> tuple[bytes, float | None]:
    """The listening clip of `melody` as a 16-bit PCM mono WAV at 44.1 kHz: (wav bytes, lufs).

    `prepare_for_listening`, then the plain saw (dry), then `loudness_normalise`. `lufs` is -16.0,
    or the lower loudness actually reached when the peak guard stepped in; None for a silent clip.
    """
    data, lufs, _ = _render(melody)
    return data, lufs


# ---- the kit ----------------------------------------------------------------------------------


def pair_id(number: int) -> str:
    """Canonical pair id of pair `number` (1-based): pair_001, ..., pair_999, pair_1000."""
    return f"pair_{int(number):03d}"


def canonical_pair_id(text: str) -> str | None:
    """`pair_001`, `pair_1`, `001`, `1` (any case) -> "pair_001"; None when it is not a pair id."""
    m = _PAIR_RE.match((text or "").strip())
    if not m or int(m.group(1)) < 1:
        return None
    return pair_id(int(m.group(1)))


def _within(inner: UPath, outer: UPath) -> bool:
    if inner.protocol != outer.protocol:
        return False
    a, b = str(inner.path).rstrip("/"), str(outer.path).rstrip("/")
    return a == b or a.startswith(b + "/")


def _balanced_order(n: int, rng: random.Random) -> list[bool]:
    """n flags, True = config_a plays as file 1; half True, half False (odd n: the extra by a coin)."""
    flags = [i < n // 2 for i in range(n)]
    if n % 2:
        flags[-1] = rng.random() < 0.5
    rng.shuffle(flags)
    return flags


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _fmt_lufs(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def instructions_text(n_pairs: int) -> str:
    """The INSTRUCTIONS.md of a kit of `n_pairs` pairs."""
    return f"""# Listening test

{n_pairs} pairs of short melodies, `pair_001_1.wav` / `pair_001_2.wav` and so on (the list is in
`kit.csv`). All clips use the same plain synth sound, the same tempo (140 BPM) and the same loudness;
only the notes differ. You do not know, and should not try to find out, where a clip comes from.

## The question

For every pair: **{QUESTION}**

1. Listen to file 1 and file 2 of the pair, each to the end (replay as often as you like), at a
   comfortable, fixed volume. Headphones or decent speakers, please.
2. Pick the one that sounds more like a real trance melody. There is no "equal" - if you cannot
   decide, go with your first impression.
3. Judge each pair on its own; please do not look at waveforms or spectrograms.

## Your answers

Write a CSV file (for example `answers_<yourname>.csv`, UTF-8) with this header and one row per pair:

```
listener,pair_id,choice,note
alice,pair_001,2,
alice,pair_002,1,catchier hook
```

* `listener` - your name, spelled the same in every row.
* `pair_id`  - the pair as in `kit.csv` (`pair_001`; `1` or `001` also work).
* `choice`   - `1` or `2`: the number of the file you prefer.
* `note`     - optional comment (quote it if it contains a comma).

If you change your mind, add another row for the same pair: the later row counts. Send the file back
to the person who gave you this kit. Thank you!
"""


def make_kit(
    pairs: Sequence[tuple[str, Melody, Melody]],
    config_a: str,
    config_b: str,
    kit_dir: str | os.PathLike | UPath,
    key_dir: str | os.PathLike | UPath,
    seed: int,
) -> dict:
    """Write a blind A/B kit for `pairs` [(prompt_id, melody of config_a, melody of config_b), ...].

    Pair k (1-based, input order) becomes `kit_dir/pair_<kkk>_1.wav` and `_2.wav`, which of the two
    configurations is file 1 drawn from `random.Random(seed)` (balanced across pairs); plus
    `kit.csv`, `INSTRUCTIONS.md`, and `key_dir/answer_key.csv`. Every file is written atomically;
    WAVs of an earlier kit in the same folder that are not part of this one are removed. The key is
    written after all WAVs and before kit.csv, so a kit index never exists without its key.

    Raises ValueError for no pairs, config_a == config_b, or a key folder inside (or equal to) the
    kit folder. Returns a summary: pairs, files, kit_dir, answer_key, config_a, config_b, seed,
    a_first (pairs where config_a is file 1), lufs_min, lufs_max, limited (clips the peak guard
    turned down), silent (clips with no sound).
    """
    if not pairs:
        raise ValueError("make_kit needs at least one pair")
    if config_a == config_b:
        raise ValueError(f"config_a and config_b must differ, both are {config_a!r}")
    kit = kit_dir if isinstance(kit_dir, UPath) else as_upath(kit_dir)
    key = key_dir if isinstance(key_dir, UPath) else as_upath(key_dir)
    if _within(key, kit):
        raise ValueError(f"the answer key folder {key} must not be inside the kit folder {kit}")

    rng = random.Random(seed)
    a_first = _balanced_order(len(pairs), rng)
    kit_rows, key_rows, lufs_all = [], [], []
    limited = 0
    written: set[str] = set()
    for k, ((prompt_id, mel_a, mel_b), a_is_1) in enumerate(zip(pairs, a_first), start=1):
        pid = pair_id(k)
        order = [(config_a, mel_a), (config_b, mel_b)] if a_is_1 else [(config_b, mel_b), (config_a, mel_a)]
        names, lufs = [], []
        for slot, (_config, mel) in enumerate(order, start=1):
            try:
                data, loud, lim = _render(mel)
            except Exception as exc:
                raise ValueError(f"pair {pid} (prompt {prompt_id!r}, {_config}): could not render: {exc}") from exc
            name = f"{pid}_{slot}.wav"
            atomic_write_bytes(kit / name, data)
            written.add(name)
            names.append(name)
            lufs.append(loud)
            limited += int(lim)
        lufs_all.extend(lufs)
        kit_rows.append({"pair_id": pid, "prompt_id": prompt_id, "file_1": names[0], "file_2": names[1]})
        key_rows.append(
            {
                "pair_id": pid,
                "prompt_id": prompt_id,
                "file_1_config": order[0][0],
                "file_2_config": order[1][0],
                "file_1_lufs": _fmt_lufs(lufs[0]),
                "file_2_lufs": _fmt_lufs(lufs[1]),
            }
        )
    key_path = atomic_write_text(key / ANSWER_KEY, _csv_text(KEY_COLUMNS, key_rows))
    atomic_write_text(kit / INSTRUCTIONS, instructions_text(len(pairs)))
    atomic_write_text(kit / KIT_CSV, _csv_text(KIT_COLUMNS, kit_rows))
    for p in kit.iterdir():
        if _WAV_RE.match(p.name) and p.name not in written:
            p.unlink()
    sounding = [v for v in lufs_all if v is not None]
    return {
        "pairs": len(pairs),
        "files": len(written),
        "kit_dir": str(kit),
        "answer_key": str(key_path),
        "config_a": config_a,
        "config_b": config_b,
        "seed": seed,
        "a_first": sum(a_first),
        "lufs_min": min(sounding) if sounding else None,
        "lufs_max": max(sounding) if sounding else None,
        "limited": limited,
        "silent": len(lufs_all) - len(sounding),
    }


# ---- reading CSVs -----------------------------------------------------------------------------


def _reader(text: str, source: str, required: Sequence[str], error: type[ListeningFileError]) -> csv.DictReader:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    fields = [(f or "").strip().lower() for f in (reader.fieldnames or [])]
    missing = [c for c in required if c not in fields]
    if missing:
        raise error(f"{source}:1: header must include {', '.join(required)}; missing {', '.join(missing)}")
    reader.fieldnames = fields
    return reader


def _cell(row: Mapping, name: str) -> str:
    v = row.get(name)
    return v.strip() if isinstance(v, str) else ""


def parse_answers(text: str, source: str = "answers.csv") -> list[Answer]:
    """The answers of an answers CSV (format in the module docstring), in order of first appearance.

    A repeated listener + pair replaces the earlier answer (the later row wins). Raises
    AnswersFileError naming `source:line` for a missing header column, an empty listener, a pair id
    that is not one, or a choice other than 1 or 2.
    """
    reader = _reader(text, source, REQUIRED_ANSWER_COLUMNS, AnswersFileError)
    out: dict[tuple[str, str], Answer] = {}
    for row in reader:
        line = reader.line_num
        if not any(_cell(row, f) for f in reader.fieldnames):
            continue
        listener = _cell(row, "listener")
        raw_pair = _cell(row, "pair_id")
        raw_choice = _cell(row, "choice")
        if not listener:
            raise AnswersFileError(f"{source}:{line}: empty listener")
        pid = canonical_pair_id(raw_pair)
        if pid is None:
            raise AnswersFileError(f"{source}:{line}: pair_id must look like pair_001 (or 1), got {raw_pair!r}")
        if raw_choice not in ("1", "2"):
            raise AnswersFileError(f"{source}:{line}: choice must be 1 or 2 (the file preferred), got {raw_choice!r}")
        out[(listener, pid)] = Answer(listener, pid, int(raw_choice), _cell(row, "note"), line)
    return list(out.values())


def parse_answer_key(text: str, source: str = ANSWER_KEY) -> list[KeyRow]:
    """The rows of an answer_key.csv. Raises AnswerKeyError naming `source:line` for a bad row."""
    reader = _reader(text, source, REQUIRED_KEY_COLUMNS, AnswerKeyError)
    out: list[KeyRow] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(_cell(row, f) for f in reader.fieldnames):
            continue
        pid = canonical_pair_id(_cell(row, "pair_id"))
        if pid is None:
            raise AnswerKeyError(f"{source}:{line}: bad pair_id {_cell(row, 'pair_id')!r}")
        if pid in seen:
            raise AnswerKeyError(f"{source}:{line}: pair {pid} appears twice")
        c1, c2 = _cell(row, "file_1_config"), _cell(row, "file_2_config")
        if not c1 or not c2:
            raise AnswerKeyError(f"{source}:{line}: empty file_1_config or file_2_config")
        seen.add(pid)
        out.append(KeyRow(pid, c1, c2, _cell(row, "prompt_id")))
    return out


# ---- scoring ----------------------------------------------------------------------------------


def _key_row(r: KeyRow | Mapping) -> KeyRow:
    if isinstance(r, KeyRow):
        return r
    pid = canonical_pair_id(str(r["pair_id"]))
    if pid is None:
        raise ValueError(f"bad pair_id in the answer key: {r['pair_id']!r}")
    return KeyRow(pid, str(r["file_1_config"]).strip(), str(r["file_2_config"]).strip(), str(r.get("prompt_id", "") or ""))


def score_listening(answers: Iterable[Answer], key_rows: Iterable[KeyRow | Mapping], config_a: str, config_b: str) -> dict:
    """Win rate of `config_a` over `config_b` with a one-sided binomial test against 0.5.

    `key_rows`: `KeyRow`s (`parse_answer_key`) or mappings with pair_id, file_1_config,
    file_2_config. Each answer's chosen file is mapped to its configuration. Answers for pair ids not
    in the key are ignored and reported (ignored, ignored_pair_ids). Raises ValueError when a key row
    does not pair config_a with config_b.

    Returns: config_a, config_b, wins (answers preferring config_a), losses, n, win_rate (None when
    n = 0), p_value (P(X >= wins) under Binomial(n, 0.5), None when n = 0), listeners,
    per_listener [{listener, wins, n, rate}] (a table, sorted by name), per_pair
    [{pair_id, wins, n}] (sorted by pair), ignored, ignored_pair_ids.
    """
    key: dict[str, KeyRow] = {}
    for raw in key_rows:
        r = _key_row(raw)
        if {r.file_1_config, r.file_2_config} != {config_a, config_b}:
            raise ValueError(
                f"answer key pair {r.pair_id} compares {r.file_1_config!r} with {r.file_2_config!r}, "
                f"not {config_a!r} with {config_b!r}"
            )
        key[r.pair_id] = r
    wins = n = ignored = 0
    ignored_ids: set[str] = set()
    per_listener: dict[str, dict] = {}
    per_pair: dict[str, dict] = {}
    for ans in answers:
        pid = canonical_pair_id(ans.pair_id) or ans.pair_id
        row = key.get(pid)
        if row is None:
            ignored += 1
            ignored_ids.add(pid)
            continue
        if ans.choice not in (1, 2):
            raise ValueError(f"answer of {ans.listener!r} for {pid}: choice must be 1 or 2, got {ans.choice!r}")
        chosen = row.file_1_config if ans.choice == 1 else row.file_2_config
        win = int(chosen == config_a)
        wins += win
        n += 1
        pl = per_listener.setdefault(ans.listener, {"listener": ans.listener, "wins": 0, "n": 0})
        pl["wins"] += win
        pl["n"] += 1
        pp = per_pair.setdefault(pid, {"pair_id": pid, "wins": 0, "n": 0})
        pp["wins"] += win
        pp["n"] += 1
    for v in per_listener.values():
        v["rate"] = v["wins"] / v["n"]
    return {
        "config_a": config_a,
        "config_b": config_b,
        "wins": wins,
        "losses": n - wins,
        "n": n,
        "win_rate": wins / n if n else None,
        "p_value": binomial_one_sided(wins, n, 0.5) if n else None,
        "listeners": len(per_listener),
        "per_listener": [per_listener[k] for k in sorted(per_listener)],
        "per_pair": [per_pair[k] for k in sorted(per_pair)],
        "ignored": ignored,
        "ignored_pair_ids": sorted(ignored_ids),
    }
