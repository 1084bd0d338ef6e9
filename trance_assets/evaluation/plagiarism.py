"""Plagiarism flags: generated melodies too close to a training example (EVALUATION.md: "cosine
similarity of pitch-class sequences > 0.90 to any training example is flagged").

A pitch-class *sequence* is compared as the counts of its pitch-class trigrams (three consecutive
notes' pitch classes, 12³ = 1,728 possible): the cosine of two such count vectors is 1 for the same
sequence (whatever its length or tempo), stays high when long passages are copied, and is
order-aware (a shuffled melody with the same pitch classes scores low), which a bare pitch-class
histogram is not. Transposed copies are different pitch-class sequences; the training set includes
the corpus's transposed copies, so a transposed quotation still meets its copy in the training set.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

NGRAM = 3
DIM = 12**NGRAM
THRESHOLD = 0.90


def ngram_ids(pitches: Sequence[int]) -> np.ndarray:
    """Trigram ids of the pitch-class sequence (notes in onset order)."""
    pcs = np.asarray(pitches, dtype=np.int64) % 12
    if pcs.size < NGRAM:
        return np.zeros(0, dtype=np.int64)
    return pcs[:-2] * 144 + pcs[1:-1] * 12 + pcs[2:]


def ngram_matrix(sequences: Sequence[Sequence[int]]) -> sparse.csr_matrix:
    """Rows: L2-normalised trigram counts (an all-zero row for a sequence under 3 notes)."""
    rows, cols = [], []
    for i, seq in enumerate(sequences):
        ids = ngram_ids(seq)
        rows.append(np.full(ids.size, i, dtype=np.int64))
        cols.append(ids)
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    m = sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(len(sequences), DIM))
    m.sum_duplicates()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ m


@dataclass(frozen=True)
class PlagiarismHit:
    max_similarity: float
    nearest: int | None  # index into the training sequences (None when the training set is empty)
    flagged: bool


def plagiarism_flags(generated: Sequence[Sequence[int]], training: Sequence[Sequence[int]], threshold: float = THRESHOLD, block: int = 4096) -> list[PlagiarismHit]:
    """For each generated sequence, its highest cosine similarity to any training sequence."""
    if not generated:
        return []
    if not training:
        return [PlagiarismHit(0.0, None, False) for _ in generated]
    g = ngram_matrix(generated)
    best = np.full(len(generated), -1.0)
    arg = np.zeros(len(generated), dtype=np.int64)
    for start in range(0, len(training), block):
        t = ngram_matrix(training[start : start + block])
        sims = (g @ t.T).toarray()
        i = sims.argmax(axis=1)
        v = sims[np.arange(len(generated)), i]
        better = v > best
        best[better] = v[better]
        arg[better] = i[better] + start
    return [PlagiarismHit(float(b), int(a), bool(b > threshold)) for b, a in zip(best, arg)]
