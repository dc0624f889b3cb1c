"""Stopping a `hydraguard serve` subprocess: the whole process group, uvicorn and workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def stop(process: asyncio.subprocess.Process, wait: float = 10.0) -> None:
    """SIGTERM to the whole group (uvicorn and any worker), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            async with asyncio.timeout(wait):
                await process.wait()
            return
        except TimeoutError:
            continue
