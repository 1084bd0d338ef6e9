"""The listening spot-check rules (pure): which tracks are queued, how the reviews file is read,
when a batch is pending / approved / rejected, and which melodies stay corpus-eligible."""

from __future__ import annotations

import pytest

from trance_assets.review import (
    MAX_FLAGGED_SHARE,
    REVIEW_COLUMNS,
    REVIEW_EVERY,
    BatchStatus,
    Review,
    ReviewFileError,
    Track,
    batch_statuses,
    corpus_eligible,
    parse_reviews,
    reviews_template,
    select_for_review,
)

HEADER = "partition_key,verdict,reviewer,reviewed_on,note\n"


def _batch(batch: str, n: int, rejected: set[int] = frozenset(), prefix: str = "t") -> list[Track]:
    return [Track(f"{prefix}{i:02d}", batch, i not in rejected) for i in range(n)]


def _reviews(**verdicts: str) -> dict[str, Review]:
    return {k: Review(k, v, "alice", "2026-11-24") for k, v in verdicts.items()}


# ---- select_for_review ----------------------------------------------------------------------


def test_constants():
    assert REVIEW_EVERY == 5 and MAX_FLAGGED_SHARE == 0.30
    assert reviews_template() == HEADER
    assert REVIEW_COLUMNS == tuple(HEADER.strip().split(","))


def test_every_fifth_accepted_track_per_batch_starting_with_the_first():
    # Batch A: 12 tracks, 00-11; 01 and 07 rejected -> accepted 00,02,03,04,05,06,08,09,10,11:
    # the 1st, 6th (06) and 11th (none) accepted ones are queued.
    a = _batch("2026-11-01", 12, rejected={1, 7}, prefix="a")
    # Batch B: 11 accepted tracks -> 1st, 6th, 11th.
    b = _batch("2026-11-02", 11, prefix="b")
    # Batch C: only rejected tracks -> nothing.
    c = _batch("2026-11-03", 3, rejected={0, 1, 2}, prefix="c")
    tracks = [*reversed(a), *c, *b]  # input order does not matter: partition-key order does
    assert select_for_review(tracks) == {"a00", "a06", "b00", "b05", "b10"}


def test_selection_is_per_batch_and_sorted_by_partition_key():
    tracks = [Track("zz", "x", True), Track("mm", "x", True), Track("aa", "y", True), Track("bb", "x", True)]
    assert select_for_review(tracks) == {"bb", "aa"}
    assert select_for_review(tracks, every=1) == {"zz", "mm", "aa", "bb"}
    assert select_for_review(tracks, every=2) == {"bb", "zz", "aa"}
    assert select_for_review([]) == set()


# ---- parse_reviews --------------------------------------------------------------------------


def test_parse_reviews_later_rows_override_and_verdicts_ignore_case():
    text = HEADER + (
        "t00,pass,alice,2026-11-24,clean\n"
        "t05,FLAG,alice,2026-11-24,octave errors in bar 3\n"
        "t00, Flag ,bob,2026-11-25,re-review: wrong key\n"
        ",,,,\n"  # an empty row is skipped
        "t10,Pass,bob,2026-11-25,\n"
    )
    out = parse_reviews(text)
    assert out == {
        "t00": Review("t00", "flag", "bob", "2026-11-25", "re-review: wrong key"),
        "t05": Review("t05", "flag", "alice", "2026-11-24", "octave errors in bar 3"),
        "t10": Review("t10", "pass", "bob", "2026-11-25", ""),
    }


def test_parse_reviews_only_needs_key_and_verdict_columns():
    assert parse_reviews("verdict,partition_key\npass,t01\n") == {"t01": Review("t01", "pass", "", "", "")}
    assert parse_reviews(HEADER) == {}


@pytest.mark.parametrize("bad", ["maybe", "", "passed"])
def test_bad_verdict_names_file_and_line(bad):
    text = HEADER + "t00,pass,alice,2026-11-24,\n" + f"t05,{bad},alice,2026-11-24,\n"
    with pytest.raises(ReviewFileError) as err:
        parse_reviews(text, source="storage/reviews/reviews.csv")
    assert str(err.value).startswith("storage/reviews/reviews.csv:3: ")
    assert repr(bad) in str(err.value)


def test_error_line_counts_blank_lines_of_the_file():
    text = HEADER + "t00,pass,alice,2026-11-24,\n\n\nt05,nope,alice,2026-11-24,\n"
    with pytest.raises(ReviewFileError, match=r"^reviews\.csv:5: verdict must be 'pass' or 'flag', got 'nope'$"):
        parse_reviews(text)


def test_missing_partition_key_value_raises():
    with pytest.raises(ReviewFileError, match=r"^r\.csv:2: empty partition_key$"):
        parse_reviews(HEADER + ",pass,alice,,\n", source="r.csv")


@pytest.mark.parametrize(
    "header, missing",
    [
        ("partition_key,reviewer,reviewed_on,note\n", "['verdict']"),
        ("key,verdict\n", "['partition_key']"),
        ("", "['partition_key', 'verdict']"),
    ],
)
def test_missing_header_column_raises(header, missing):
    with pytest.raises(ReviewFileError) as err:
        parse_reviews(header + "t00,pass\n", source="my/reviews.csv")
    msg = str(err.value)
    assert msg.startswith("my/reviews.csv: header must include partition_key, verdict, reviewer, reviewed_on, note")
    assert msg.endswith(f"missing {missing}")


# ---- batch_statuses -------------------------------------------------------------------------


def test_one_of_three_flagged_rejects_the_batch():
    tracks = _batch("b", 15)  # queued: t00, t05, t10
    queued = select_for_review(tracks)
    st = batch_statuses(tracks, queued, _reviews(t00="pass", t05="flag", t10="pass"))["b"]
    assert st == BatchStatus("b", tracks=15, accepted=15, queued=3, reviewed=3, flagged=1, status="rejected")
    assert st.flagged_share == pytest.approx(1 / 3)


def test_three_of_ten_flagged_is_not_more_than_thirty_percent():
    tracks = _batch("b", 50)  # 10 queued: t00, t05, ..., t45
    queued = select_for_review(tracks)
    assert len(queued) == 10
    verdicts = {f"t{i:02d}": ("flag" if i in (0, 5, 10) else "pass") for i in range(0, 50, 5)}
    st = batch_statuses(tracks, queued, _reviews(**verdicts))["b"]
    assert (st.reviewed, st.flagged, st.status) == (10, 3, "approved")
    assert st.flagged_share == 0.3
    # One more flag: 4 of 10 > 0.30.
    verdicts["t15"] = "flag"
    assert batch_statuses(tracks, queued, _reviews(**verdicts))["b"].status == "rejected"


def test_pending_until_every_queued_track_has_a_verdict():
    tracks = _batch("b", 11)  # queued: t00, t05, t10
    queued = select_for_review(tracks)
    assert batch_statuses(tracks, queued, {})["b"] == BatchStatus("b", 11, 11, 3, 0, 0, "pending")
    assert batch_statuses(tracks, queued, {})["b"].flagged_share is None
    st = batch_statuses(tracks, queued, _reviews(t00="pass", t05="pass"))["b"]
    assert (st.reviewed, st.status) == (2, "pending")
    # Reviews of tracks that are not queued (or unknown) do not count.
    st = batch_statuses(tracks, queued, _reviews(t00="pass", t05="pass", t01="flag", zz="flag"))["b"]
    assert (st.reviewed, st.flagged, st.status) == (2, 0, "pending")
    st = batch_statuses(tracks, queued, _reviews(t00="pass", t05="pass", t10="pass"))["b"]
    assert st.status == "approved"
    # A partially reviewed batch already over the threshold is rejected, not pending.
    st = batch_statuses(tracks, queued, _reviews(t00="flag"))["b"]
    assert (st.reviewed, st.flagged, st.status) == (1, 1, "rejected")


def test_statuses_per_batch_and_custom_threshold():
    a = _batch("2026-11-01", 6, rejected={2}, prefix="a")  # accepted a00,a01,a03,a04,a05 -> a00 queued
    b = _batch("2026-11-02", 6, prefix="b")  # b00, b05 queued
    c = _batch("2026-11-03", 2, rejected={0, 1}, prefix="c")  # nothing queued: approved (nothing to review)
    tracks = a + b + c
    queued = select_for_review(tracks)
    assert queued == {"a00", "b00", "b05"}
    reviews = _reviews(a00="pass", b00="flag", b05="pass")
    st = batch_statuses(tracks, queued, reviews)
    assert st == {
        "2026-11-01": BatchStatus("2026-11-01", 6, 5, 1, 1, 0, "approved"),
        "2026-11-02": BatchStatus("2026-11-02", 6, 6, 2, 2, 1, "rejected"),
        "2026-11-03": BatchStatus("2026-11-03", 2, 0, 0, 0, 0, "approved"),
    }
    assert batch_statuses(tracks, queued, reviews, max_flagged=0.5)["2026-11-02"].status == "approved"


# ---- corpus_eligible ------------------------------------------------------------------------


def test_corpus_eligible():
    statuses = {
        "ok": BatchStatus("ok", 5, 5, 1, 1, 0, "approved"),
        "wait": BatchStatus("wait", 5, 5, 1, 0, 0, "pending"),
        "bad": BatchStatus("bad", 5, 5, 1, 1, 1, "rejected"),
    }
    assert corpus_eligible(Track("a", "ok", True), statuses) is True
    assert corpus_eligible(Track("b", "wait", True), statuses) is True  # review is a sample: pending does not block
    assert corpus_eligible(Track("c", "bad", True), statuses) is False
    assert corpus_eligible(Track("d", "ok", False), statuses) is False
    assert corpus_eligible(Track("e", "wait", False), statuses) is False


def test_rejected_batch_becomes_eligible_after_re_review():
    tracks = _batch("b", 6)
    queued = select_for_review(tracks)  # t00, t05
    first = parse_reviews(HEADER + "t00,flag,alice,2026-11-24,\nt05,pass,alice,2026-11-24,\n")
    st = batch_statuses(tracks, queued, first)
    assert st["b"].status == "rejected"
    assert not any(corpus_eligible(t, st) for t in tracks)
    again = parse_reviews(HEADER + "t00,flag,alice,2026-11-24,\nt05,pass,alice,2026-11-24,\nt00,pass,bob,2026-11-26,fixed\n")
    st = batch_statuses(tracks, queued, again)
    assert st["b"].status == "approved"
    assert all(corpus_eligible(t, st) for t in tracks)
