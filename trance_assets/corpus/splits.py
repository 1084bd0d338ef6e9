"""80/10/10 splits per tier, deterministic, grouped by composition so nothing leaks.

Groups (union-find over source examples):

- an example and all its augmented copies share their `source_id`;
- sources with the same non-empty `link` join (the Tier 1 file and the Tier 2 extraction of one
  reference track, when the Tier 1 manifest names the track);
- sources with the same pitch-interval sequence join (duplicates and transpositions of one tune
  that arrived through different sources or files).

A group's tier is the lowest tier among its members (a Tier 1 ↔ Tier 2 group follows Tier 1, whose
test part is the evaluation's reference corpus). Within a tier, groups are ordered by a seeded hash
of the group id and each goes to the split furthest below its share of the tier's examples
(relative deficit; ties go to train, then validation, then test). The same set of groups always
gives the same assignment, whatever the input order. The shares stay close to 80/10/10 even for a
tier of a few groups; the price is that adding groups to a tier can move groups that come later in
the hash order to another split (a model trained on an earlier corpus should be evaluated on the
test split of that same corpus version).

`leakage` is the independent proof the asset check runs: no group and no interval sequence in two
splits.

No Dagster imports: this module is part of the domain core.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_VERSION = "1"


@dataclass(frozen=True)
class Member:
    """What the splitter needs to know about one example."""

    example_id: str
    source_id: str
    tier: int
    link: str
    interval_signature: str


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller id becomes the root: the group id does not depend on input order.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def composition_groups(members: Sequence[Member]) -> dict[str, str]:
    """example_id -> group id (the smallest source id of the group)."""
    uf = _UnionFind()
    first_by_link: dict[str, str] = {}
    first_by_sig: dict[str, str] = {}
    for m in members:
        uf.find(m.source_id)
        if m.link:
            uf.union(first_by_link.setdefault(m.link, m.source_id), m.source_id)
        if m.interval_signature:
            uf.union(first_by_sig.setdefault(m.interval_signature, m.source_id), m.source_id)
    return {m.example_id: uf.find(m.source_id) for m in members}


@dataclass(frozen=True)
class SplitAssignment:
    split: dict[str, str]  # example_id -> split
    group: dict[str, str]  # example_id -> group id
    group_tier: dict[str, int]
    group_split: dict[str, str]


def assign_splits(members: Sequence[Member], *, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> SplitAssignment:
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {tuple(fractions)}")
    group = composition_groups(members)
    size: dict[str, int] = defaultdict(int)
    tier: dict[str, int] = {}
    for m in members:
        g = group[m.example_id]
        size[g] += 1
        tier[g] = min(tier.get(g, m.tier), m.tier)
    group_split: dict[str, str] = {}
    for t in sorted(set(tier.values())):
        gs = sorted((g for g in size if tier[g] == t), key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
        total = sum(size[g] for g in gs)
        have = [0, 0, 0]
        for g in gs:
            deficits = [(fractions[i] * total - have[i]) / (fractions[i] * total) for i in range(3)]
            best = max(range(3), key=lambda i: (deficits[i], -i))
            group_split[g] = SPLITS[best]
            have[best] += size[g]
    return SplitAssignment(
        split={eid: group_split[g] for eid, g in group.items()},
        group=group,
        group_tier=tier,
        group_split=group_split,
    )


@dataclass(frozen=True)
class Leakage:
    groups_in_several_splits: list[str]
    intervals_in_several_splits: list[str]

    @property
    def clean(self) -> bool:
        return not self.groups_in_several_splits and not self.intervals_in_several_splits


def leakage(rows: Sequence[tuple[str, str, str]]) -> Leakage:
    """rows: (split, group, interval_signature) per example. Lists what appears in more than one split."""
    by_group: dict[str, set[str]] = defaultdict(set)
    by_sig: dict[str, set[str]] = defaultdict(set)
    for split, group, sig in rows:
        by_group[group].add(split)
        if sig:
            by_sig[sig].add(split)
    return Leakage(
        sorted(g for g, s in by_group.items() if len(s) > 1),
        sorted(k for k, s in by_sig.items() if len(s) > 1),
    )
