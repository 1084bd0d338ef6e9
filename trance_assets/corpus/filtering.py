"""The corpus quality filter of EVALUATION.md over `Example`s, fast enough for tens of thousands.

Rules (thresholds per tier from the profile, see `thresholds_for`):

| rule              | value                                                    |
|-------------------|----------------------------------------------------------|
| `notes`           | note count (>= min_notes)                                |
| `range_octaves`   | (max - min pitch) / 12 (within the range bounds)         |
| `bpm`             | tempo, only where the source's tempo is meaningful       |
| `polyphony`       | share of onsets that overlap a still-sounding note       |
| `scale_compliance`| share of notes in the key (minor: natural ∪ harmonic)    |
| `remi_roundtrip`  | differences after MidiTok REMI: notes lost + notes that appeared (0 = exact; a changed note counts 2) |

The REMI rule encodes the example with the project's tokenizer (`formats.remi`) and decodes it:
every note's pitch, onset and duration must come back exactly at the tokenizer's resolution (16th
notes; corpus examples are on that grid after `normalise`). The encoding's token ids are kept, so
tokenisation happens once. Rule values match `music.quality.check_melody` (tested against it); this
module computes them on arrays instead of Note objects.

`filter_examples` runs in parallel processes when asked (`workers > 1`), in deterministic order.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..music.quality import QualityThresholds
from ..music.theory import parse_key
from .examples import POSITIONS_PER_BEAT, Example

FILTER_VERSION = "1"
TICKS_PER_BEAT = 480
RULES = ("notes", "range_octaves", "bpm", "polyphony", "scale_compliance", "remi_roundtrip")


@dataclass(frozen=True)
class Verdict:
    example_id: str
    passed: bool
    values: dict  # rule -> measured value (None when not applicable)
    failures: tuple[tuple[str, object, str], ...]  # (rule, value, requirement)
    remi_ids: np.ndarray  # uint16 token ids (empty when encoding failed)
    remi_detail: str = ""  # first mismatches of a failed roundtrip, in words


def thresholds_key(t: QualityThresholds) -> str:
    return hashlib.sha1(json.dumps(asdict(t), sort_keys=True).encode()).hexdigest()[:12]


def verdict_key(ex: Example, t: QualityThresholds) -> str:
    """What a verdict depends on: the example's content, its tier's thresholds, the filter's code."""
    return f"{ex.content_hash()[:24]}:{int(ex.tempo_meaningful)}:{thresholds_key(t)}:{FILTER_VERSION}"


@lru_cache(maxsize=48)
def _allowed_lookup(key: str) -> np.ndarray:
    table = np.zeros(12, dtype=bool)
    table[list(parse_key(key).allowed_pcs())] = True
    return table


def polyphony(start: np.ndarray, duration: np.ndarray, eps: float = 1e-6) -> float | None:
    """Share of onsets (sorted) that fall before the latest end of the notes started before them."""
    n = start.size
    if n == 0:
        return None
    order = np.lexsort((duration, start))
    s, e = start[order], (start + duration)[order]
    prev_max_end = np.maximum.accumulate(e)[:-1]
    overlapping = int(np.count_nonzero(s[1:] < prev_max_end - eps))
    return overlapping / n


def rule_values(ex: Example) -> dict:
    n = ex.n_notes
    values = {"notes": n, "range_octaves": None, "bpm": ex.bpm if ex.tempo_meaningful else None, "polyphony": None, "scale_compliance": None}
    if n:
        values["range_octaves"] = (int(ex.pitch.max()) - int(ex.pitch.min())) / 12
        values["polyphony"] = polyphony(ex.start, ex.duration)
        values["scale_compliance"] = float(_allowed_lookup(ex.key)[ex.pitch % 12].mean())
    return values


def rule_failures(values: dict, t: QualityThresholds, tempo_meaningful: bool) -> list[tuple[str, object, str]]:
    fails = []
    if values["notes"] < t.min_notes:
        fails.append(("notes", values["notes"], f">= {t.min_notes}"))
    r = values["range_octaves"]
    if r is None or not t.min_range_octaves <= r <= t.max_range_octaves:
        fails.append(("range_octaves", r, f"{t.min_range_octaves:g}-{t.max_range_octaves:g} octaves"))
    if tempo_meaningful and not t.min_bpm <= values["bpm"] <= t.max_bpm:
        fails.append(("bpm", values["bpm"], f"{t.min_bpm:g}-{t.max_bpm:g} BPM"))
    p = values["polyphony"]
    if p is None or p > t.max_polyphony:
        fails.append(("polyphony", p, f"<= {t.max_polyphony:g}"))
    c = values["scale_compliance"]
    if c is None or c < t.min_scale_compliance:
        fails.append(("scale_compliance", c, f">= {t.min_scale_compliance:g}"))
    return fails


# ---- REMI -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _tokenizer():
    from ..formats.remi import remi_tokenizer

    return remi_tokenizer()


def example_score(ex: Example):
    """A symusic Score of the example: one track, its tempo, 4/4, ticks at TICKS_PER_BEAT."""
    import symusic

    score = symusic.Score(TICKS_PER_BEAT)
    track = symusic.Track(program=max(0, ex.program - 1), is_drum=False)
    if ex.n_notes:
        track.notes = symusic.Note.from_numpy(
            np.round(ex.start * TICKS_PER_BEAT).astype(np.int32),
            np.round(ex.duration * TICKS_PER_BEAT).astype(np.int32),
            ex.pitch.astype(np.int8),
            ex.velocity.astype(np.int8),
        )
    score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, float(ex.bpm)))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    return score


def remi_roundtrip_arrays(ex: Example) -> tuple[int, np.ndarray, str]:
    """(notes that did not come back exactly, token ids, a description of the first differences).

    Compared on the 16th grid as integers: onset step, duration in steps, pitch; an example whose
    notes are not on the grid counts those notes as lost.
    """
    tok = _tokenizer()
    seqs = tok.encode(example_score(ex))
    seq = seqs[0] if isinstance(seqs, list) else seqs
    ids = np.asarray(seq.ids, dtype=np.uint16)
    decoded = tok.decode(seqs)
    tpq = decoded.ticks_per_quarter
    if decoded.tracks and len(decoded.tracks[0].notes):
        d = decoded.tracks[0].notes.numpy()
        got = np.stack(
            [d["time"].astype(np.int64) * POSITIONS_PER_BEAT, d["duration"].astype(np.int64) * POSITIONS_PER_BEAT, d["pitch"].astype(np.int64)], axis=1
        )
        exact = (got[:, 0] % tpq == 0) & (got[:, 1] % tpq == 0)
        got = np.stack([got[:, 0] // tpq, got[:, 1] // tpq, got[:, 2]], axis=1)[exact]
    else:
        got = np.zeros((0, 3), dtype=np.int64)
    want_f = np.stack([ex.start * POSITIONS_PER_BEAT, ex.duration * POSITIONS_PER_BEAT, ex.pitch.astype(np.float64)], axis=1)
    on_grid = np.all(want_f == np.round(want_f), axis=1)
    want = np.round(want_f).astype(np.int64)
    ca, cb = Counter(map(tuple, want[on_grid])), Counter(map(tuple, got))
    lost = (ca - cb)
    lost_n = sum(lost.values()) + int((~on_grid).sum())
    new_n = sum((cb - ca).values())
    bad = lost_n + new_n
    detail = ""
    if bad:
        parts = [f"{lost_n} note(s) did not come back, {new_n} appeared"]
        for (st, du, p) in sorted(lost.elements())[:3]:
            parts.append(f"lost pitch {p} at beat {st / POSITIONS_PER_BEAT:g} for {du / POSITIONS_PER_BEAT:g} beats")
        if (~on_grid).any():
            parts.append(f"{int((~on_grid).sum())} note(s) off the 16th grid")
        detail = "; ".join(parts)
    return bad, ids, detail


# ---- the filter ---------------------------------------------------------------------------------


def check_example(ex: Example, t: QualityThresholds) -> Verdict:
    values = rule_values(ex)
    fails = rule_failures(values, t, ex.tempo_meaningful)
    try:
        bad, ids, detail = remi_roundtrip_arrays(ex)
    except Exception as exc:  # the tokenizer can raise on exotic input: a rejection, not a crash
        bad, ids, detail = None, np.zeros(0, dtype=np.uint16), f"REMI encode/decode failed: {type(exc).__name__}: {exc}"
    values["remi_roundtrip"] = bad
    if bad is None or bad > 0:
        fails.append(("remi_roundtrip", bad, "0 notes lost (exact roundtrip)"))
    return Verdict(ex.example_id, not fails, values, tuple(fails), ids, detail)


def _check_chunk(args: tuple[list[Example], dict[int, QualityThresholds]]) -> list[Verdict]:
    examples, by_tier = args
    return [check_example(ex, by_tier[ex.tier]) for ex in examples]


def filter_examples(
    examples: Sequence[Example],
    thresholds_by_tier: dict[int, QualityThresholds],
    *,
    workers: int = 1,
    chunk_size: int = 500,
    min_parallel: int = 1500,
    progress=None,
) -> list[Verdict]:
    """A Verdict per example, in input order. Parallel (spawned processes) when `workers` > 1 and
    there are at least `min_parallel` examples; `progress(done, total)` is called per chunk."""
    examples = list(examples)
    chunks = [examples[i : i + chunk_size] for i in range(0, len(examples), chunk_size)]
    out: list[Verdict] = []
    if workers > 1 and len(examples) >= min_parallel:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for res in pool.map(_check_chunk, [(c, thresholds_by_tier) for c in chunks]):
                out.extend(res)
                if progress:
                    progress(len(out), len(examples))
    else:
        for c in chunks:
            out.extend(_check_chunk((c, thresholds_by_tier)))
            if progress:
                progress(len(out), len(examples))
    return out
