"""Work that runs after the caller moved on: settlements, linking, risk sharing.

asyncio holds only weak references to tasks, so a fire-and-forget task must be kept
somewhere until it is done; ``drain`` waits for everything spawned so far (and for what
that spawns), for tests and graceful shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
