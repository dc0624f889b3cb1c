"""Account -> cluster on Redis, so every replica agrees: the memory index's semantics,
each operation one atomic server-side script (``redis_script.py``).

All keys share one hash tag (``{prefix}``), so on Redis Cluster the linking state
lives in one slot: the scripts touch keys they cannot declare up front (the
holders of a value, a root's members), which a single slot makes safe.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from ..errors import StorageError
from .config import ClusteringConfig
from .explain import Value, build_info
from .model import ClusterInfo, ClusterStats, MergeCallback, SplitCallback, size_bucket
from .redis_script import LUA

_EPSILON = 1e-9


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(raw: Any) -> Value:
    signal, _, value = _text(raw).partition("\x1f")
    return signal, value


class RedisClusterIndex:
    def __init__(
        self,
        client: Any,  # redis.asyncio.Redis or RedisCluster
        config: ClusteringConfig,
        *,
        prefix: str = "hydraguard:cluster",
        on_merge: MergeCallback | None = None,
        on_split: SplitCallback | None = None,
    ) -> None:
        self.config = config
        self._base = f"{{{prefix}}}:"
        self._script = client.register_script(LUA)
        self._on_merge = on_merge
        self._on_split = on_split
        self._threshold = config.threshold - _EPSILON
        self._weights = {name: spec.value_weight for name, spec in config.signals.items()}
        self._strong = [
            name
            for name, spec in config.signals.items()
            if spec.explicit or spec.value_weight >= self._threshold
        ]
        self._args = {
            name: (
                repr(spec.value_weight),
                str(spec.max_fanout),
                "1" if name in self._strong else "0",
                str(spec.max_values_per_account),
            )
            for name, spec in config.signals.items()
        }

    async def warm(self) -> None:
        """Load the index's script before the first request needs it."""
        await self._script.registered_client.script_load(self._script.script)

    async def _call(self, op: str, *args: str) -> Any:
        try:
            return await self._script(keys=[self._base + "seq"], args=[self._base, op, *args])
        except RedisError as exc:
            raise StorageError(f"cluster index: {op} failed: {exc}") from exc

    # -- the request path -------------------------------------------------

    async def observe(self, account: str, signals: dict[str, tuple[str, ...]], ts: float) -> str:
        """Record the account's signal values; returns its (possibly new) cluster id."""
        return (await self.observe_sized(account, signals, ts))[0]

    async def observe_sized(
        self, account: str, signals: dict[str, tuple[str, ...]], ts: float
    ) -> tuple[str, int]:
        """Like observe, and the cluster's size (for limits that grow with membership)."""
        args = [account, repr(ts), repr(self._threshold), "1" if self.config.retention else "0"]
        if self.config.enabled:
            for name, values in signals.items():
                weight, fanout, strong, cap = self._args[name]
                for value in values:
                    args += (name, value, weight, fanout, strong, cap)
        cid, merges, size = await self._call("observe", *args)
        self._report_merges(merges)
        return _text(cid), int(size)

    async def cluster_of(self, account: str) -> str:
        return _text(await self._call("find", account))

    async def sweep(self, now: float, limit: int = 100) -> list[str]:
        """Forget up to ``limit`` accounts unseen for longer than ``retention`` and never
        linked, as the memory index does; returns their names. Bounded work per call: the
        linker calls it in the background, now and then."""
        if not self.config.retention:
            return []
        cutoff = now - self.config.retention
        return [_text(a) for a in await self._call("sweep", repr(cutoff), str(limit))]

    # -- operators --------------------------------------------------------

    async def link(self, a: str, b: str, reason: str, ts: float) -> str:
        """Link two accounts by hand; lifts any never-link constraint between their clusters."""
        cid, merges = await self._call("link", a, b, reason, repr(ts))
        self._report_merges(merges)
        return _text(cid)

    async def unlink(self, a: str, b: str) -> tuple[str, str]:
        """Keep a and b in different clusters from now on, whatever the evidence."""
        cid_a, cid_b, split = await self._call("unlink", a, b, *self._strong)
        self._report_split(split)
        return _text(cid_a), _text(cid_b)

    async def detach(self, account: str) -> str:
        """Take the account out of its cluster; it never rejoins those members automatically."""
        cid, split = await self._call("detach", account, *self._strong)
        self._report_split(split)
        return _text(cid)

    def _report_merges(self, merges: list[Any]) -> None:
        if self._on_merge is not None:
            for i in range(0, len(merges), 2):
                self._on_merge([_text(merges[i])], _text(merges[i + 1]))

    def _report_split(self, split: list[Any]) -> None:
        if split and self._on_split is not None:
            self._on_split(_text(split[0]), [_text(c) for c in split[1:]])

    # -- introspection ----------------------------------------------------

    async def explain(self, cluster: str) -> ClusterInfo | None:
        """Members and the evidence of every link; None unless a cluster of 2+ accounts."""
        found = await self._call("explain", cluster)
        if not found:
            return None
        group, rows, edges, manual, saturated = found
        members = [_text(m) for m in group]
        seen = {
            name: {_field(row[i]): float(row[i + 1]) for i in range(0, len(row), 2)}
            for name, row in zip(members, rows, strict=True)
        }
        links = {}
        for a, b, record in manual:
            when, _, reason = _text(record).partition("\x1f")
            links[min(_text(a), _text(b)), max(_text(a), _text(b))] = (reason, float(when))
        return build_info(
            cluster,
            members,
            seen,
            [(float(ts), _text(a), _text(b)) for ts, a, b in edges],
            links,
            strong=set(self._strong),
            weights=self._weights,
            saturated={_field(f) for f in saturated},
            threshold=self.config.threshold,
        )

    async def stats(self) -> ClusterStats:
        accounts, sizes, links, saturated, released = await self._call("stats")
        buckets: dict[str, int] = {}
        for size in sizes:
            label = size_bucket(int(size))
            buckets[label] = buckets.get(label, 0) + 1
        return ClusterStats(
            clusters=len(sizes),
            accounts=int(accounts),
            sizes=buckets,
            links_by_signal={_text(links[i]): int(links[i + 1]) for i in range(0, len(links), 2)},
            saturated_values=int(saturated),
            released_values=int(released),
        )
