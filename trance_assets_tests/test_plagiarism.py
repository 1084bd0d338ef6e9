"""Plagiarism flags: cosine similarity of pitch-class trigram counts, hand-computed on tiny cases."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from trance_assets.evaluation.plagiarism import DIM, THRESHOLD, PlagiarismHit, ngram_ids, ngram_matrix, plagiarism_flags
from trance_assets.music.rules import generate

SCALE = [60, 62, 64, 65, 67, 69, 71, 72]  # C D E F G A B C


def sim(a, b) -> float:
    [hit] = plagiarism_flags([a], [b])
    return hit.max_similarity


def test_ngram_ids_by_hand():
    assert DIM == 1728 and THRESHOLD == 0.90
    assert ngram_ids([60, 61, 62]).tolist() == [0 * 144 + 1 * 12 + 2]
    assert ngram_ids([11, 23, 35, 0]).tolist() == [1727, 11 * 144 + 11 * 12 + 0]
    assert ngram_ids([60, 62]).tolist() == []
    assert ngram_ids([]).tolist() == []


def test_ngram_matrix_rows_are_unit_or_zero():
    m = ngram_matrix([[0, 1, 2, 0, 1, 2], [5, 7], [0, 1, 2]]).toarray()
    assert m.shape == (3, DIM)
    # 012, 120, 201, 012: counts 2, 1, 1 over a norm of sqrt(6)
    assert m[0, 0 * 144 + 1 * 12 + 2] == pytest.approx(2 / math.sqrt(6))
    assert m[0, 1 * 144 + 2 * 12 + 0] == pytest.approx(1 / math.sqrt(6))
    assert np.linalg.norm(m[0]) == pytest.approx(1.0)
    assert not m[1].any()
    assert np.linalg.norm(m[2]) == pytest.approx(1.0)


def test_identical_sequences_are_flagged():
    [hit] = plagiarism_flags([SCALE], [[40, 41, 42], SCALE])
    assert hit.max_similarity == pytest.approx(1.0)
    assert hit.flagged is True and hit.nearest == 1
    assert isinstance(hit, PlagiarismHit)


def test_pitch_classes_not_pitches_are_compared():
    # the same line an octave up is the same pitch-class sequence
    assert sim([p + 12 for p in SCALE], SCALE) == pytest.approx(1.0)
    # A passage played twice against the passage once: C D E F G A B has 5 trigrams; twice, each
    # counts 2 and the seam adds (A B C) and (B C D): 10 / (sqrt(22) * sqrt(5)) stays high.
    assert sim(SCALE[:-1] * 2, SCALE[:-1]) == pytest.approx(10 / math.sqrt(110))
    assert plagiarism_flags([SCALE[:-1] * 2], [SCALE[:-1]])[0].flagged


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # {012, 123} vs {321, 210}: no trigram in common
        ([0, 1, 2, 3], [3, 2, 1, 0], 0.0),
        # {012, 123} vs {012, 124}: one of two in common, norms sqrt(2): 1/2
        ([0, 1, 2, 3], [0, 1, 2, 4], 0.5),
        # 012 x2, 123, 230, 301 (norm sqrt 7) vs 012: 2/sqrt(7)
        ([0, 1, 2, 3, 0, 1, 2], [0, 1, 2], 2 / math.sqrt(7)),
        # 012 x2, 120, 201 (norm sqrt 6) vs 012: 2/sqrt(6)
        ([0, 1, 2, 0, 1, 2], [0, 1, 2], 2 / math.sqrt(6)),
    ],
)
def test_cosine_by_hand(a, b, expected):
    assert sim(a, b) == pytest.approx(expected)
    assert sim(b, a) == pytest.approx(expected)  # symmetric


def test_a_shuffled_melody_with_the_same_pitch_classes_scores_lower():
    original = [n.pitch for n in generate("Am", 140, ["Am", "F", "C", "G"], 8, seed=3).notes]
    shuffled = list(original)
    random.Random(0).shuffle(shuffled)
    assert sorted(p % 12 for p in shuffled) == sorted(p % 12 for p in original)
    [same, other] = plagiarism_flags([original, shuffled], [original])
    assert same.max_similarity == pytest.approx(1.0) and same.flagged
    assert other.max_similarity < 0.5 and not other.flagged


def test_a_transposed_copy_meets_its_transposed_training_copy():
    up2 = [p + 2 for p in SCALE]
    # pcs 0 2 4 5 7 9 11 0 vs 2 4 6 7 9 11 1 2: six trigrams each, only (7, 9, 11) shared -> 1/6
    assert sim(up2, SCALE) == pytest.approx(1 / 6)
    [hit] = plagiarism_flags([up2], [SCALE])
    assert not hit.flagged
    training = [SCALE, [p - 3 for p in SCALE], [p + 2 for p in SCALE]]  # the corpus's transposed copies
    [hit] = plagiarism_flags([up2], training)
    assert hit.max_similarity == pytest.approx(1.0) and hit.flagged and hit.nearest == 2


def test_sequences_under_three_notes_have_similarity_zero():
    hits = plagiarism_flags([[60], [60, 62], []], [[60, 62, 64], [60, 62]])
    assert [h.max_similarity for h in hits] == [0.0, 0.0, 0.0]
    assert not any(h.flagged for h in hits)
    # a short training sequence cannot be matched either
    [hit] = plagiarism_flags([[60, 62, 64]], [[60, 62], [61]])
    assert hit.max_similarity == 0.0 and not hit.flagged


def test_empty_training_set_flags_nothing():
    hits = plagiarism_flags([SCALE, SCALE[:2]], [])
    assert hits == [PlagiarismHit(0.0, None, False), PlagiarismHit(0.0, None, False)]
    assert plagiarism_flags([], [SCALE]) == []


def test_threshold_is_strict_and_configurable():
    a, b = [0, 1, 2, 3], [0, 1, 2, 4]  # similarity 1/2
    [hit] = plagiarism_flags([a], [b], threshold=0.5)
    assert not hit.flagged  # > threshold, not >=
    [hit] = plagiarism_flags([a], [b], threshold=0.49)
    assert hit.flagged
    [hit] = plagiarism_flags([a], [b])
    assert not hit.flagged  # the default 0.90


def test_nearest_across_blocks():
    training = [
        [0, 1, 2, 3],  # 0
        [5, 6, 7, 8, 9],  # 1
        [0, 2, 4, 5, 7],  # 2
        [11, 10, 9, 8],  # 3
        [3, 5, 7, 3, 5, 7],  # 4  (last block, alone)
    ]
    generated = [
        [11, 10, 9, 8],  # = 3, second block
        [3, 5, 7, 3, 5, 7],  # = 4, third block
        [0, 1, 2, 3],  # = 0, first block
        [0, 2, 4, 5, 8],  # {024, 245, 458} vs 2 {024, 245, 457}: 2/3 -> nearest 2
        [7, 9, 11, 1],  # shares nothing with anyone
    ]
    expected = [(1.0, 3), (1.0, 4), (1.0, 0), (2 / 3, 2)]
    for block in (1, 2, 3, 4096):
        hits = plagiarism_flags(generated, training, block=block)
        for hit, (s, i) in zip(hits, expected):
            assert (hit.max_similarity, hit.nearest) == (pytest.approx(s), i), block
        assert [h.flagged for h in hits] == [True, True, True, False, False]
        assert hits[4].max_similarity == 0.0


def test_ties_go_to_the_first_training_sequence_even_across_blocks():
    training = [[9, 9, 9], [0, 1, 2, 3], [4, 4, 4], [0, 1, 2, 3]]
    for block in (1, 2, 4096):
        [hit] = plagiarism_flags([[0, 1, 2, 3]], training, block=block)
        assert (hit.max_similarity, hit.nearest) == (pytest.approx(1.0), 1), block
