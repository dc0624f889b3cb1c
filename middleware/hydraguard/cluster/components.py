"""Union-find over account numbers, with "never link" constraints and splitting.

Hand-written because no maintained library offers an incremental union-find
that also keeps member lists, refuses constrained unions and can split a set:
networkx/scipy recompute components from scratch, which would put an
O(accounts) pass on the request path.

Union-find cannot split, so a split (an operator's unlink) resets the members
of one component and lets the caller replay the links it still holds
(``split(root, relink)``). Components stay small by construction (every
automatic link needs a value shared by at most ``max_fanout`` accounts), so a
replay touches a few hundred accounts, not the index.
"""

from __future__ import annotations

from collections.abc import Callable

Union = Callable[[int, int], "tuple[int, int] | None"]


def pair_key(a: int, b: int) -> int:
    """One int per unordered pair of account numbers (both < 2**32)."""
    return (a << 32) | b if a < b else (b << 32) | a


class Components:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: dict[int, list[int]] = {}  # root -> members, only for components of 2+
        self._forbidden: dict[int, set[int]] = {}

    def add(self) -> int:
        index = len(self.parent)
        self.parent.append(index)
        self.size.append(1)
        return index

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def members_of(self, root: int) -> list[int]:
        return self.members.get(root) or [root]

    def union(self, a: int, b: int) -> tuple[int, int] | None:
        """Join a's and b's components: ``(absorbed root, kept root)``, or None if the
        two already share one or a never-link constraint stands between them."""
        keep, gone = self.find(a), self.find(b)
        if keep == gone or (self._forbidden and not self.allowed(keep, gone)):
            return None
        size = self.size
        # Union by size; on a tie the earlier account stays root, as in the Redis index.
        if size[keep] < size[gone] or (size[keep] == size[gone] and gone < keep):
            keep, gone = gone, keep
        self.parent[gone] = keep
        size[keep] += size[gone]
        kept = self.members.get(keep) or [keep]
        kept.extend(self.members.pop(gone, [gone]))
        self.members[keep] = kept
        return gone, keep

    def allowed(self, root_a: int, root_b: int) -> bool:
        # Constraints are stored both ways, so scanning the smaller side is enough.
        small, other = root_a, root_b
        if self.size[small] > self.size[other]:
            small, other = other, small
        forbidden = self._forbidden
        for x in self.members_of(small):
            for y in forbidden.get(x, ()):
                if self.find(y) == other:
                    return False
        return True

    def constrained(self, x: int) -> bool:
        return bool(self._forbidden.get(x))

    def forbid(self, a: int, b: int) -> None:
        self._forbidden.setdefault(a, set()).add(b)
        self._forbidden.setdefault(b, set()).add(a)

    def lift(self, a: int, b: int) -> None:
        """Drop every constraint between a's component and b's (an operator links them)."""
        side_b = set(self.members_of(self.find(b)))
        for x in self.members_of(self.find(a)):
            held = self._forbidden.get(x)
            if not held:
                continue
            for y in held & side_b:
                held.discard(y)
                self._forbidden[y].discard(x)

    def forbidden_pairs(self) -> int:
        return sum(len(v) for v in self._forbidden.values()) // 2

    def split(self, root: int, relink: Callable[[set[int], Union], None]) -> list[int]:
        """Reset root's component, let ``relink`` replay its links; returns the new roots.

        The part holding the old root keeps it as root, so its cluster id survives.
        """
        group = self.members.pop(root, [root])
        for x in group:
            self.parent[x] = x
            self.size[x] = 1
        relink(set(group), self.union)
        new_root = self.find(root)
        if new_root != root:
            moved = self.members.pop(new_root)
            for x in moved:
                self.parent[x] = root
            self.size[root] = len(moved)
            self.members[root] = moved
        return sorted({self.find(x) for x in group})
