"""The cluster indexes behind one async API, so the same behaviour test runs on memory
and on Redis (the ``harness`` fixture in conftest.py)."""

from __future__ import annotations

import gc
import os
import tracemalloc
import uuid
from typing import Any

from hydraguard.cluster.config import ClusteringConfig
from hydraguard.cluster.index import ClusterIndex
from hydraguard.cluster.model import ClusterInfo, ClusterStats

REDIS_URL = os.environ.get(
    "HYDRAGUARD_TEST_REDIS",
    f"redis://127.0.0.1:{os.environ.get('HYDRAGUARD_TEST_REDIS_PORT', '6379')}/0",
)
PAY = "payment"
T0 = 1_764_230_400.0
Merges = list[tuple[list[str], str]]
Splits = list[tuple[str, list[str]]]


class MemoryBackend:
    """The memory index behind the Redis index's async API, so one test runs on both."""

    def __init__(self, config: ClusteringConfig, merges: Merges, splits: Splits) -> None:
        self.index = ClusterIndex(
            config,
            on_merge=lambda old, new: merges.append((old, new)),
            on_split=lambda old, new: splits.append((old, new)),
        )

    async def observe(self, account: str, signals: dict[str, tuple[str, ...]], ts: float) -> str:
        return self.index.observe(account, signals, ts)

    async def cluster_of(self, account: str) -> str:
        return self.index.cluster_of(account)

    async def sweep(self, now: float, limit: int = 100) -> list[str]:
        return self.index.sweep(now, limit)

    async def link(self, a: str, b: str, reason: str, ts: float) -> str:
        return self.index.link(a, b, reason, ts)

    async def unlink(self, a: str, b: str) -> tuple[str, str]:
        return self.index.unlink(a, b)

    async def detach(self, account: str) -> str:
        return self.index.detach(account)

    async def explain(self, cluster: str) -> ClusterInfo | None:
        return self.index.explain(cluster)

    async def stats(self) -> ClusterStats:
        return self.index.stats()


class Harness:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.merges: Merges = []
        self.splits: Splits = []
        self._closers: list[Any] = []
        self._keys: dict[int, tuple[Any, str]] = {}  # Redis index -> (client, key prefix)

    async def make(self, config: ClusteringConfig | None = None, **raw: Any) -> Any:
        config = config or (ClusteringConfig.model_validate(raw) if raw else ClusteringConfig())
        if self.kind == "memory":
            return MemoryBackend(config, self.merges, self.splits)
        from redis.asyncio import Redis

        from hydraguard.cluster.redis_index import RedisClusterIndex

        client = Redis.from_url(REDIS_URL)
        prefix = f"hg-test-{uuid.uuid4().hex}"
        self._closers.append((client, prefix))
        index = RedisClusterIndex(
            client,
            config,
            prefix=prefix,
            on_merge=lambda old, new: self.merges.append((old, new)),
            on_split=lambda old, new: self.splits.append((old, new)),
        )
        self._keys[id(index)] = (client, f"{{{prefix}}}:")
        return index

    async def footprint(self) -> tuple[int, dict[str, int]]:
        """Bytes the index holds, and (Redis) its keys with their number of fields.

        Memory: bytes traced by tracemalloc (the caller starts it) in the whole process.
        Redis: the sum of MEMORY USAGE over the index's keys."""
        if self.kind == "memory":
            gc.collect()
            return tracemalloc.get_traced_memory()[0], {}
        client, prefix = self._closers[-1]
        fields: dict[str, int] = {}
        used = 0
        async for raw in client.scan_iter(match=f"{{{prefix}}}*", count=1000):
            key = raw.decode()
            kind = (await client.type(key)).decode()
            count = {"hash": client.hlen, "set": client.scard, "zset": client.zcard}.get(kind)
            fields[key.removeprefix(f"{{{prefix}}}:")] = await count(key) if count else 1
            used += await client.memory_usage(key)
        return used, fields

    async def held(self, index: Any, account: str) -> list[tuple[str, str]]:
        """The (signal, value) pairs in the account's seen record, sorted: memory its
        record list, Redis the fields of its ``seen:A`` hash."""
        if self.kind == "memory":
            memory: ClusterIndex = index.index
            vids = [int(v) for v in memory.seen[memory._accounts[account]][0::2]]
            return sorted(
                (memory.signal_names[memory.value_signal[v]], memory.value_text[v]) for v in vids
            )
        client, base = self._keys[id(index)]
        fields = await client.hkeys(f"{base}seen:{account}")
        return sorted((s, v) for s, _, v in (f.decode().partition("\x1f") for f in fields))

    async def evidence(self, index: Any) -> dict[tuple[str, str], float]:
        """Pending weak evidence, by pair of account names (the smaller name first)."""
        if self.kind == "memory":
            memory: ClusterIndex = index.index
            names = memory.account_names
            pairs = {(names[k >> 32], names[k & 0xFFFFFFFF]): w for k, w in memory.evidence.items()}
        else:
            client, base = self._keys[id(index)]
            raw = await client.hgetall(f"{base}ev")
            pairs = {tuple(k.decode().split("\x1f")): float(w) for k, w in raw.items()}
        return {(min(p), max(p)): round(w, 9) for p, w in pairs.items()}

    async def redis_calls(self, command: str) -> int:
        """How many times Redis ran ``command`` so far (scripts' calls included)."""
        client, _ = self._closers[-1]
        stats = await client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    async def close(self) -> None:
        for client, prefix in self._closers:
            keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
