"""corpus.splits: composition groups (copies, cross-tier links, identical interval sequences), the
80/10/10 per-tier assignment, and the leakage check."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from trance_assets.corpus.splits import SPLITS, Member, assign_splits, composition_groups, leakage


def src(sid: str, tier: int = 3, link: str = "", sig: str | None = None, copies: int = 0) -> list[Member]:
    """A source and `copies` augmented copies (copies carry the source's link and signature)."""
    sig = f"sig-{sid}" if sig is None else sig
    out = [Member(sid, sid, tier, link, sig)]
    out += [Member(f"{sid}~c{i}", sid, tier, link, sig) for i in range(copies)]
    return out


# ---- composition groups ------------------------------------------------------------------------


def test_copies_share_the_source_group() -> None:
    members = src("t3-a", copies=3) + src("t3-b", copies=2)
    g = composition_groups(members)
    assert g == {
        "t3-a": "t3-a", "t3-a~c0": "t3-a", "t3-a~c1": "t3-a", "t3-a~c2": "t3-a",
        "t3-b": "t3-b", "t3-b~c0": "t3-b", "t3-b~c1": "t3-b",
    }


def test_tier1_and_tier2_with_the_same_link_share_a_group() -> None:
    members = src("t2-track-x", tier=2, link="track:x", copies=1) + src("t1-gold-x", tier=1, link="track:x", copies=1) + src("t1-gold-y", tier=1, link="track:y")
    g = composition_groups(members)
    # The group id is the smallest source id: 't1-gold-x' < 't2-track-x'.
    assert {g[m.example_id] for m in members if "-x" in m.source_id} == {"t1-gold-x"}
    assert g["t1-gold-y"] == "t1-gold-y"


def test_empty_link_and_empty_signature_do_not_join() -> None:
    members = src("a", link="", sig="") + src("b", link="", sig="")
    assert composition_groups(members) == {"a": "a", "b": "b"}


def test_same_interval_signature_shares_a_group() -> None:
    members = src("t3-pd-tune", sig="S") + src("t3-gm-tune", sig="S", copies=1) + src("t3-other", sig="T")
    g = composition_groups(members)
    assert g["t3-pd-tune"] == g["t3-gm-tune"] == g["t3-gm-tune~c0"] == "t3-gm-tune"
    assert g["t3-other"] == "t3-other"


def test_groups_chain_through_links_and_signatures() -> None:
    # c --sig--> b --link--> a: all three in one group named after the smallest id.
    members = src("c", sig="S") + src("b", sig="S", link="L") + src("a", link="L") + src("d")
    g = composition_groups(members)
    assert {g["a"], g["b"], g["c"]} == {"a"}
    assert g["d"] == "d"


def test_group_ids_do_not_depend_on_input_order() -> None:
    members = (
        src("m", sig="S", copies=2) + src("k", sig="S") + src("z", link="L") + src("b", link="L", copies=1)
        + src("q", link="L2") + src("p", sig="S2") + src("e", link="L2", sig="S2") + src("solo")
    )
    want = composition_groups(members)
    assert want["m"] == want["k"] == "k"
    assert want["z"] == want["b~c0"] == "b"
    assert want["q"] == want["p"] == want["e"] == "e"
    assert want["solo"] == "solo"
    rng = random.Random(3)
    for _ in range(10):
        shuffled = list(members)
        rng.shuffle(shuffled)
        assert composition_groups(shuffled) == want


# ---- assign_splits -----------------------------------------------------------------------------


def test_hundred_equal_groups_split_exactly_80_10_10() -> None:
    members = [m for i in range(100) for m in src(f"s{i:03d}", copies=2)]
    a = assign_splits(members)
    groups = Counter(a.group_split.values())
    assert groups == {"train": 80, "validation": 10, "test": 10}
    assert Counter(a.split.values()) == {"train": 240, "validation": 30, "test": 30}


def test_shares_per_tier() -> None:
    members = [m for i in range(50) for m in src(f"t1-{i:03d}", tier=1)] + [m for i in range(20) for m in src(f"t3-{i:03d}", tier=3, copies=4)]
    a = assign_splits(members, seed=7)
    by_tier = {1: Counter(), 3: Counter()}
    for m in members:
        by_tier[m.tier][a.split[m.example_id]] += 1
    assert by_tier[1] == {"train": 40, "validation": 5, "test": 5}
    assert by_tier[3] == {"train": 80, "validation": 10, "test": 10}


def test_three_groups_one_per_split() -> None:
    members = src("a", copies=3) + src("b", copies=3) + src("c", copies=3)
    a = assign_splits(members)
    assert sorted(a.group_split.values()) == sorted(SPLITS)


def test_unequal_groups_close_to_fractions() -> None:
    rng = random.Random(0)
    members = [m for i in range(60) for m in src(f"g{i:02d}", copies=rng.randint(0, 5))]
    a = assign_splits(members, seed=1)
    n = Counter(a.split.values())
    total = len(members)
    # Greedy by relative deficit: every split ends within one group (at most 6 examples) of its share.
    for s, f in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(n[s] - f * total) <= 6, (s, n[s], f * total)


def test_every_member_of_a_group_in_one_split() -> None:
    rng = random.Random(1)
    members = []
    for i in range(40):
        members += src(f"t3-{i:02d}", copies=rng.randint(0, 4), sig="dup" if i % 10 == 0 else None, link=f"L{i % 7}" if i % 3 == 0 else "")
    a = assign_splits(members)
    per_group: dict[str, set[str]] = {}
    for m in members:
        per_group.setdefault(a.group[m.example_id], set()).add(a.split[m.example_id])
        assert a.split[m.example_id] == a.group_split[a.group[m.example_id]]
    assert all(len(s) == 1 for s in per_group.values())
    # The members sharing 'dup' are one group.
    assert len({a.group[m.example_id] for m in members if m.interval_signature == "dup"}) == 1


def test_assignment_is_deterministic_and_order_independent() -> None:
    members = [m for i in range(30) for m in src(f"s{i:02d}", copies=i % 3)]
    a = assign_splits(members, seed=4)
    b = assign_splits(list(reversed(members)), seed=4)
    assert a.split == b.split and a.group == b.group and a.group_split == b.group_split
    assert assign_splits(members, seed=4).split == a.split


def test_seed_changes_the_assignment() -> None:
    members = [m for i in range(30) for m in src(f"s{i:02d}")]
    a = assign_splits(members, seed=0).split
    b = assign_splits(members, seed=1).split
    assert a != b
    assert Counter(a.values()) == Counter(b.values()) == {"train": 24, "validation": 3, "test": 3}


def test_tier1_tier2_group_takes_the_lowest_tier() -> None:
    members = src("t2-track-x", tier=2, link="track:x", copies=2) + src("t1-gold-x", tier=1, link="track:x") + src("t2-track-y", tier=2)
    a = assign_splits(members)
    assert a.group_tier == {"t1-gold-x": 1, "t2-track-y": 2}
    assert a.split["t2-track-x~c1"] == a.split["t1-gold-x"]
    # Each tier is split on its own: one group per tier goes to train first.
    assert a.group_split == {"t1-gold-x": "train", "t2-track-y": "train"}


def test_custom_fractions() -> None:
    members = [m for i in range(20) for m in src(f"s{i:02d}")]
    a = assign_splits(members, fractions=(0.5, 0.25, 0.25))
    assert Counter(a.split.values()) == {"train": 10, "validation": 5, "test": 5}


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.8, 0.1, 0.2), (1.0, 0.0, 0.0), (0.9, 0.2, -0.1), (0.7, 0.1, 0.1, 0.1)])
def test_invalid_fractions_raise(fractions) -> None:
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(src("a"), fractions=fractions)


def test_no_members() -> None:
    a = assign_splits([])
    assert a.split == {} and a.group_split == {}


# ---- leakage ----------------------------------------------------------------------------------


def test_leakage_clean() -> None:
    rows = [("train", "g1", "s1"), ("train", "g1", "s1"), ("test", "g2", "s2"), ("validation", "g3", ""), ("test", "g4", "")]
    leak = leakage(rows)
    assert leak.clean
    assert leak.groups_in_several_splits == [] and leak.intervals_in_several_splits == []


def test_leakage_detects_a_group_in_two_splits() -> None:
    leak = leakage([("train", "g1", "s1"), ("test", "g1", "s2"), ("test", "g2", "s3")])
    assert not leak.clean
    assert leak.groups_in_several_splits == ["g1"]
    assert leak.intervals_in_several_splits == []


def test_leakage_detects_an_interval_sequence_in_two_splits() -> None:
    leak = leakage([("train", "g1", "S"), ("validation", "g2", "S"), ("test", "g3", "T"), ("test", "g4", "")])
    assert not leak.clean
    assert leak.groups_in_several_splits == []
    assert leak.intervals_in_several_splits == ["S"]


def test_assignment_has_no_leakage() -> None:
    members = []
    for i in range(30):
        members += src(f"s{i:02d}", copies=2, sig="dup" if i in (3, 17, 25) else None, link="L" if i in (5, 9) else "")
    a = assign_splits(members)
    rows = [(a.split[m.example_id], a.group[m.example_id], m.interval_signature) for m in members]
    assert leakage(rows).clean
