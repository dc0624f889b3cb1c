"""The connections hydraguard's script calls travel on, used without redis-py's client layers.

``Redis.execute_command`` wraps every command in layers these calls do not use: retries
(none are configured), observability hooks, the connection pool's locks, timers and
events, and a socket timeout that sends each command from a task of its own
(``asyncio.wait_for``). Measured here (redis-py 8.1, loopback, client CPU): a PING ~72 µs
through ``execute_command``, ~21 µs written and read on a connection directly; a decision
119 -> 71 µs (benchmarks/README.md). So the script calls (decisions, settlements, merges,
flags) use a few connections of the client's own kind (same class and settings,
Sentinel's master lookup) through their public methods (``connect``, ``pack_command``,
``send_packed_command``, ``read_response``, ``disconnect``), as redis-py's own pipeline
does, and with no socket timeout: a decision's wait is bounded by its caller
(``storage.timeout`` in ResilientStorage), background calls bound themselves
(storage/redis.py). Other commands (MGET, SCAN, SCRIPT LOAD, SET) keep using the client.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from .redis_packing import fast_connection_class

IN_FLIGHT = 32  # connections, so calls at once; more wait their turn, as in a blocking pool


class DirectConnections:
    """Sends commands on connections kept for them; a reply that is a Redis error comes
    back as the exception (not raised), as in a pipeline with ``raise_on_error=False``."""

    def __init__(self, pool: Any, in_flight: int = IN_FLIGHT) -> None:
        kwargs = pool.connection_kwargs
        self._kind = fast_connection_class(pool.connection_class, kwargs.get("encoding", "utf-8"))
        self._kwargs = {**kwargs, "socket_timeout": None}
        self._most = in_flight
        self._idle: list[Any] = []
        self._made: list[Any] = []
        # Calls waiting for a connection when all are busy. (asyncio.Semaphore did this at
        # ~9% of a PING's client instructions: its `locked()` scans its waiters every time.)
        self._waiting: deque[asyncio.Future[Any]] = deque()

    async def send(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Every command in one write, then their replies in one go (one round trip)."""
        if self._idle:
            conn = self._idle.pop()
        elif len(self._made) < self._most:
            conn = self._make()
        else:
            conn = await self._turn()
        try:
            if not conn.is_connected:
                await conn.connect()  # through Sentinel: asks for the master
            elif await conn.can_read():
                # Data or EOF on an idle connection: the server closed it (a restart, an
                # idle timeout). Reopened, as the client's pool checks its connections.
                await conn.disconnect()
                await conn.connect()
            if len(commands) == 1:
                await conn.send_packed_command(conn.pack_command(*commands[0]))
            else:
                await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # the reply was read: the connection is fine
                    replies.append(exc)
            return replies
        except BaseException:
            # Cancelled (a caller's timeout) or failed while a reply may still be on its
            # way: the connection is out of step with its replies and must not be reused.
            await conn.disconnect(nowait=True)
            raise
        finally:
            self._give_back(conn)

    async def _turn(self) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed one just as it gave up
                self._give_back(waiter.result())
            raise

    def _give_back(self, conn: Any) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _make(self) -> Any:
        conn = self._kind(**self._kwargs)
        self._made.append(conn)
        return conn

    async def disconnect(self) -> None:
        """Close every connection (the next call reconnects), as the pool's ``disconnect``."""
        for conn in self._made:
            await conn.disconnect()
