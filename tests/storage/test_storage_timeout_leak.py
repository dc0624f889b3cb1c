"""A decision that times out after the shared storage already reserved: its concurrency
lease is returned, so the slot is not held until the lease TTL. (Redis can run the script
and answer late; the fallback then admits.)"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

import httpx
from prometheus_client import CollectorRegistry

from hydraguard.middleware import HydraGuard
from hydraguard.storage.base import Check, KeyLayout, Verdict
from hydraguard.storage.memory import MemoryStorage


class LateAnswers(MemoryStorage):
    """Shared storage that reserves at once but answers after ``delay`` seconds."""

    shared = True

    def __init__(self) -> None:
        super().__init__("memory://late")
        self.delay = 0.0

    async def acquire(
        self,
        checks: Sequence[Check],
        now: float,
        lease_id: str,
        lease_ttl: float,
        layout: KeyLayout | None = None,
    ) -> Verdict:
        verdict = self.acquire_now(checks, now, lease_id, lease_ttl)
        await asyncio.sleep(self.delay)
        return verdict


async def test_timed_out_reservation_does_not_hold_a_slot(kit: SimpleNamespace) -> None:
    storage = LateAnswers()
    policy = kit.compile_yaml(kit.base_policy(concurrency=1).replace("timeout: 5", "timeout: 0.05"))
    guard = HydraGuard(
        kit.build_upstream(kit.Upstream()),
        policy=policy,
        storage=storage,
        registry=CollectorRegistry(),
    )
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    headers = {"x-account-id": "late"}
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        storage.delay = 0.2  # the answer comes after the 0.05 s decision timeout
        assert (
            await client.post("/v1/chat/completions", json=body, headers=headers)
        ).status_code == 200
        storage.delay = 0.0
        await asyncio.sleep(0.25)
        second = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert second.status_code == 200  # the timed-out decision's lease was returned
