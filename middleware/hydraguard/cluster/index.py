"""Account -> cluster, in memory: incremental linking over weighted shared signals.

Hand-written (see ``components.py`` for why); the memory layout is what lets one
process link a million accounts: accounts and values are interned to ints, the
holders of a value are one int until a second account shares it, and pairwise
evidence is only kept for pairs sharing a live "weak" value.

* A "strong" value (explicit signal, or weight >= threshold) links its holders
  outright; no pairwise evidence is kept for it.
* A "weak" value adds its weight to every pair of its holders; a pair whose
  summed weight reaches the threshold becomes an edge and is joined.
* When a value gets more than ``max_fanout`` holders it saturates: a weak value
  withdraws the evidence it gave to pairs not yet linked and forgets its holders;
  neither kind links anyone new. Links it already made are NOT undone: cluster ids
  and quotas stay stable, an actor cannot dissolve its cluster by flooding a
  shared value with accounts, and the damage is bounded by ``max_fanout``
  (an operator can ``unlink``).
* An account holds at most ``max_values_per_account`` values of a signal: before it
  records one more, its oldest goes (``release.py``), so one account's record, and the
  cost of every edge it forms, stays bounded however many values it rotates through.
* ``unlink``/``detach`` record "never link" constraints, which later automatic
  evidence (explicit signals included) respects, and split the component by
  replaying its remaining links.
"""

from __future__ import annotations

from collections import Counter

from .components import Components, Union, pair_key
from .config import ClusteringConfig
from .explain import explain_memory
from .model import (
    MANUAL,
    ClusterInfo,
    ClusterStats,
    MergeCallback,
    SplitCallback,
    cluster_id,
    size_bucket,
)
from .release import EPSILON, make_room, withdraw
from .retention import FORGOTTEN, IdleQueue, forgettable, release_values

# Idle accounts examined per observation: more than the one a new account adds, so the
# queue of accounts to forget never falls behind, and a bounded cost per request.
_SWEEP_PER_OBSERVE = 2


class ClusterIndex:
    def __init__(
        self,
        config: ClusteringConfig,
        *,
        on_merge: MergeCallback | None = None,
        on_split: SplitCallback | None = None,
    ) -> None:
        self.config = config
        self._on_merge = on_merge
        self._on_split = on_split
        self._threshold = config.threshold - EPSILON
        specs = list(config.signals.items())
        self.signal_names = [name for name, _ in specs]
        self._signal_ids = {name: i for i, name in enumerate(self.signal_names)}
        self.weights = [spec.value_weight for _, spec in specs]
        self._fanout = [spec.max_fanout for _, spec in specs]
        self.caps = [spec.max_values_per_account for _, spec in specs]
        # The length of a seen record from which it may hold a signal's cap of values:
        # below it, recording a value needs no count (the common case).
        self._full = [2 * cap for cap in self.caps]
        self.released = 0  # values let go of at the cap
        self.strong = [spec.explicit or spec.value_weight >= self._threshold for _, spec in specs]
        # values, interned per signal: value -> vid
        self._values: list[dict[str, int]] = [{} for _ in specs]
        self.value_signal: list[int] = []
        self.value_text: list[str] = []
        # vid -> holders: one account, a set of them, or None once a weak value saturated
        self.holders: list[int | set[int] | None] = []
        self._free_values: list[int] = []  # numbers of values nobody holds any more
        self.saturated: set[int] = set()
        self.first: dict[int, int] = {}  # strong vid -> its first holder, whom newcomers join
        # accounts, interned: name -> index
        self._accounts: dict[str, int] = {}
        self.account_names: list[str] = []
        self.seen: list[list[float]] = []  # account -> [vid, first_seen, vid, first_seen, ...]
        self.uf = Components()
        self.evidence: dict[int, float] = {}  # pair -> summed weight of live shared weak values
        self.edges: dict[int, float] = {}  # pair -> when it linked (weak evidence or operator)
        self.manual: dict[int, tuple[str, float]] = {}  # pair -> (reason, when)
        self.adjacent: dict[int, list[int]] = {}
        self._roots: dict[str, int] = {}  # cluster id -> root, clusters of 2+
        self._links = Counter[str]()
        self.merges = 0
        self._cids: dict[int, str] = {}
        self._idle = IdleQueue(config.retention) if config.retention > 0 else None

    # -- the request path -------------------------------------------------

    def observe(self, account: str, signals: dict[str, tuple[str, ...]], ts: float) -> str:
        """Record the account's signal values; returns its (possibly new) cluster id."""
        a = self._intern(account)
        if self._idle is not None:
            self._active(a, ts)
        if self.config.enabled:
            for name, values in signals.items():
                s = self._signal_ids[name]
                for value in values:
                    self._observe_value(a, s, value, ts)
        return self._cid(self.uf.find(a))

    def observe_sized(
        self, account: str, signals: dict[str, tuple[str, ...]], ts: float
    ) -> tuple[str, int]:
        """Like observe, and the cluster's size (for limits that grow with membership)."""
        self.observe(account, signals, ts)
        return self.cluster_and_size(account)

    def cluster_and_size(self, account: str) -> tuple[str, int]:
        a = self._accounts.get(account)
        if a is None:
            return cluster_id(account), 1
        root = self.uf.find(a)
        return self._cid(root), self.uf.size[root]

    def cluster_of(self, account: str) -> str:
        a = self._accounts.get(account)
        return cluster_id(account) if a is None else self._cid(self.uf.find(a))

    def _observe_value(self, a: int, s: int, value: str, ts: float) -> None:
        table = self._values[s]
        vid = table.get(value)
        if vid is None:
            if len(self.seen[a]) >= self._full[s]:
                make_room(self, a, s)
            table[value] = vid = self._new_value(s, value, a)
            self.seen[a] += (vid, ts)
            return
        holders = self.holders[vid]
        if holders is None:
            return
        if type(holders) is int:
            if holders == a:
                return
            if self._fanout[s] < 2:
                self._saturate(vid, s, {holders})
                return
            others: list[int] | set[int] = [holders]
            self.holders[vid] = {holders, a}
            if self.strong[s]:
                self.first[vid] = holders
        else:
            assert isinstance(holders, set)
            if a in holders:
                return
            # A saturated strong value keeps its holders, fewer once some let go of it:
            # it still links nobody new.
            if len(holders) >= self._fanout[s] or vid in self.saturated:
                self._saturate(vid, s, holders)
                return
            others = holders
        if len(self.seen[a]) >= self._full[s]:
            make_room(self, a, s)
        self.seen[a] += (vid, ts)
        if self.strong[s]:
            self._links[self.signal_names[s]] += 1
            self._union(a, self.first[vid])
        else:
            weight, evidence, threshold = self.weights[s], self.evidence, self._threshold
            # In arrival order, so unions (and so cluster ids) come out as in the Redis index.
            for b in sorted(others):
                key = pair_key(a, b)
                total = evidence.get(key, 0.0) + weight
                evidence[key] = total
                if total >= threshold and key not in self.edges:
                    self._add_edge(key, a, b, ts)
        if others is holders:
            holders.add(a)

    def _new_value(self, s: int, value: str, holder: int) -> int:
        if self._free_values:
            vid = self._free_values.pop()
            self.value_signal[vid], self.value_text[vid], self.holders[vid] = s, value, holder
            return vid
        self.value_signal.append(s)
        self.value_text.append(value)
        self.holders.append(holder)
        return len(self.holders) - 1

    def _saturate(self, vid: int, s: int, holders: set[int]) -> None:
        if vid in self.saturated:
            return
        self.saturated.add(vid)
        if self.strong[s]:
            return  # its holders stay: they are the links a split replays
        weight, evidence = self.weights[s], self.evidence
        ordered = sorted(holders)
        for i, x in enumerate(ordered):
            for y in ordered[i + 1 :]:
                withdraw(evidence, (x << 32) | y, weight)
        self.holders[vid] = None

    def _add_edge(self, key: int, a: int, b: int, ts: float) -> None:
        self.edges[key] = ts
        self.adjacent.setdefault(a, []).append(b)
        self.adjacent.setdefault(b, []).append(a)
        shared = set(self.seen[a][0::2]) & set(self.seen[b][0::2])
        for name in {self.signal_names[self.value_signal[int(v)]] for v in shared}:
            self._links[name] += 1
        self._union(a, b)

    def _union(self, a: int, b: int) -> None:
        joined = self.uf.union(a, b)
        if joined is None:
            return
        gone, kept = joined
        self.merges += 1
        old, new = self._cid(gone), self._cid(kept)
        self._roots.pop(old, None)
        self._roots[new] = kept
        if self._on_merge is not None:
            self._on_merge([old], new)

    # -- retention ---------------------------------------------------------

    def touch(self, account: str, ts: float) -> bool:
        """The account was seen again with nothing new to link: it is not idle. False when
        the index does not know it (never seen, or forgotten): observe it instead."""
        a = self._accounts.get(account)
        if a is None:
            return False
        if self._idle is not None:
            self._active(a, ts)
        return True

    def _active(self, a: int, ts: float) -> None:
        idle = self._idle
        assert idle is not None
        idle.touch(a, ts)
        if ts > idle.next_due:
            self.sweep(ts, _SWEEP_PER_OBSERVE)

    def sweep(self, now: float, limit: int = 100) -> list[str]:
        """Forget up to ``limit`` accounts unseen for longer than ``retention`` and never
        linked (see ``retention.py``); returns their names. A linked account found idle
        only leaves the queue (it is kept for good) and rejoins it when seen again."""
        if self._idle is None:
            return []
        gone = []
        for a in self._idle.pop_idle(now, limit):
            if forgettable(self, a):
                release_values(self, a)
                name = self.account_names[a]
                del self._accounts[name]
                self._cids.pop(a, None)
                self.account_names[a] = ""
                self.seen[a] = FORGOTTEN
                gone.append(name)
        return gone

    def drop_value(self, vid: int) -> None:
        """Nobody holds the value any more: it goes, and its number is reused."""
        del self._values[self.value_signal[vid]][self.value_text[vid]]
        self.value_text[vid] = ""
        self.holders[vid] = None
        self.first.pop(vid, None)
        self.saturated.discard(vid)
        self._free_values.append(vid)

    # -- operators --------------------------------------------------------

    def link(self, a: str, b: str, reason: str, ts: float) -> str:
        """Link two accounts by hand; lifts any never-link constraint between their clusters."""
        ia, ib = self._intern(a), self._intern(b)
        if ia == ib:
            return self.cluster_of(a)
        key = pair_key(ia, ib)
        self.uf.lift(ia, ib)
        self.manual[key] = (reason, ts)
        if key not in self.edges:
            self.edges[key] = ts
            self.adjacent.setdefault(ia, []).append(ib)
            self.adjacent.setdefault(ib, []).append(ia)
        self._links[MANUAL] += 1
        self._union(ia, ib)
        return self.cluster_of(a)

    def unlink(self, a: str, b: str) -> tuple[str, str]:
        """Keep a and b in different clusters from now on, whatever the evidence."""
        ia, ib = self._intern(a), self._intern(b)
        if ia != ib:
            self.manual.pop(pair_key(ia, ib), None)
            self.uf.forbid(ia, ib)
            if self.uf.find(ia) == self.uf.find(ib):
                self._split(self.uf.find(ia))
        return self.cluster_of(a), self.cluster_of(b)

    def detach(self, account: str) -> str:
        """Take the account out of its cluster; it never rejoins those members automatically."""
        a = self._intern(account)
        root = self.uf.find(a)
        for m in self.uf.members_of(root):
            if m != a:
                self.manual.pop(pair_key(a, m), None)
                self.uf.forbid(a, m)
        if len(self.uf.members_of(root)) > 1:
            self._split(root)
        return self.cluster_of(account)

    def _split(self, root: int) -> None:
        old = self._cid(root)
        new_roots = self.uf.split(root, self._relink)
        self._roots.pop(old, None)
        new_ids = []
        for r in new_roots:
            cid = self._cid(r)
            new_ids.append(cid)
            if self.uf.size[r] > 1:
                self._roots[cid] = r
        if self._on_split is not None:
            self._on_split(old, new_ids)

    def _relink(self, group: set[int], union: Union) -> None:
        # Strong values first, each a hyperedge over its holders in the group; sorted
        # as the Redis index sorts them, so both split a cluster alike.
        strong = {
            int(v)
            for x in group
            for v in self.seen[x][0::2]
            if self.strong[self.value_signal[int(v)]]
        }
        for vid in sorted(strong, key=self._value_key):
            holders = self.holders[vid]
            held = sorted(group & holders) if isinstance(holders, set) else []
            for y in held[1:]:
                union(held[0], y)
        # Then pair edges (weak evidence and operator links) in the order they formed.
        pairs = sorted(
            (self.edges[pair_key(x, y)], x, y)
            for x in group
            for y in self.adjacent.get(x, ())
            if x < y and y in group
        )
        for _, x, y in pairs:
            union(x, y)

    # -- introspection ----------------------------------------------------

    def explain(self, cluster: str) -> ClusterInfo | None:
        """Members and the evidence of every link; None unless a cluster of 2+ accounts."""
        root = self._roots.get(cluster)
        return None if root is None else explain_memory(self, cluster, self.uf.members_of(root))

    def explain_account(self, account: str) -> ClusterInfo:
        a = self._accounts.get(account)
        if a is None:
            return ClusterInfo(cluster_id(account), (account,), ())
        root = self.uf.find(a)
        return explain_memory(self, self._cid(root), self.uf.members_of(root))

    def stats(self) -> ClusterStats:
        sizes = Counter(size_bucket(len(m)) for m in self.uf.members.values())
        return ClusterStats(
            clusters=len(self.uf.members),
            accounts=len(self._accounts),
            sizes=dict(sizes),
            links_by_signal=dict(self._links),
            saturated_values=len(self.saturated),
            released_values=self.released,
        )

    def _intern(self, account: str) -> int:
        a = self._accounts.get(account)
        if a is None:
            a = self._accounts[account] = self.uf.add()
            self.account_names.append(account)
            self.seen.append([])
        return a

    def _value_key(self, vid: int) -> str:
        return f"{self.signal_names[self.value_signal[vid]]}\x1f{self.value_text[vid]}"

    def _cid(self, root: int) -> str:
        # A root's id is asked for on every request: hash its name once.
        cid = self._cids.get(root)
        if cid is None:
            cid = self._cids[root] = cluster_id(self.account_names[root])
        return cid
