"""Keeps redis-py's asyncio Redis Cluster client within what it handles reliably.

Measured here with redis-py 8.1 against a three-node cluster (tests/storage): a cold client
given a few dozen concurrent commands failed some of them inside redis-py (``'NoneType'
object has no attribute 'writelines'`` while connections were being set up), and more
than 100 concurrent commands to one node failed with ``MaxConnectionsError`` (the per-node
default). A gateway under load issues exactly that, and every such failure would count as
a storage outage (``on_error``). So the client is warmed up once before use (topology and
one connection per primary, under a lock) and the commands in flight are bounded by a
semaphore: beyond the bound they wait their turn, as on a single node, where
storage/redis.py uses redis-py's blocking connection pool for the same reason. No library
setting does this: redis-py's cluster client has no blocking pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

IN_FLIGHT = 32  # commands at once per client; stays well under the per-node connection cap


def guard_cluster_client(client: Any, in_flight: int = IN_FLIGHT) -> Any:
    """Wrap ``client.execute_command`` (every command, scripts and ``mget_nonatomic``'s
    parts included, goes through it) with the warm-up and the bound; returns the client."""
    send: Callable[..., Awaitable[Any]] = client.execute_command
    gate = asyncio.Semaphore(in_flight)
    warm = asyncio.Lock()
    ready = False

    async def warm_up() -> None:
        nonlocal ready
        async with warm:
            if not ready:
                await client.initialize()
                await send("PING", target_nodes=client.PRIMARIES)
                ready = True

    async def execute_command(*args: Any, **kwargs: Any) -> Any:
        if not ready:
            await warm_up()
        async with gate:
            return await send(*args, **kwargs)

    client.execute_command = execute_command
    return client
