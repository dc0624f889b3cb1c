"""What the cluster indexes answer with: ids, explanations, statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

# on_merge(old_ids, new_id): the clusters in old_ids were absorbed into new_id
# (old_ids never holds new_id); their window usage belongs to new_id from now on.
MergeCallback = Callable[[list[str], str], None]
# on_split(old_id, new_ids): an unlink/detach split old_id; new_ids lists every
# resulting cluster, including old_id itself when a part kept it.
SplitCallback = Callable[[str, list[str]], None]

MANUAL = "manual"
SIZE_BUCKETS = ((2, "2"), (5, "3-5"), (10, "6-10"), (50, "11-50"), (200, "51-200"))
SIZE_OVERFLOW = "201+"


def cluster_id(root_account: str) -> str:
    """Stable and opaque: the same root gives the same id in every process and replica."""
    # sha1 because Redis' Lua has it (redis.sha1hex): both indexes name clusters alike.
    return "c-" + hashlib.sha1(root_account.encode()).hexdigest()[:16]


def size_bucket(size: int) -> str:
    for bound, label in SIZE_BUCKETS:
        if size <= bound:
            return label
    return SIZE_OVERFLOW


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason two accounts are linked: a shared signal value, or an operator's link.

    For a shared value ``first_seen`` is when the pair came to share it; for an
    operator link (``signal == "manual"``) ``value`` holds the reason.
    ``saturated``: the value has since become too common to create new links.
    """

    signal: str
    value: str
    weight: float
    first_seen: float
    saturated: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    a: str
    b: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    cluster_id: str
    members: tuple[str, ...]
    links: tuple[Link, ...]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class ClusterStats:
    clusters: int  # clusters of two or more accounts
    accounts: int  # accounts known to the index
    sizes: dict[str, int] = field(default_factory=dict)  # size bucket -> clusters
    links_by_signal: dict[str, int] = field(default_factory=dict)  # links made, per signal
    saturated_values: int = 0
    released_values: int = 0  # values accounts let go of at max_values_per_account, ever
