"""On a real three-node Redis Cluster: a decision costs one script call per hash tag, stays
all or nothing across slots, and two gateway replicas share one quota and one clustering
(limits, the linking index and risk sharing all on the cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from hydraguard import load_policy
from hydraguard.admit.plan import Planner
from hydraguard.storage.base import Charge, Check, Lease
from hydraguard.storage.redis import RedisStorage
from redis_server import RedisClusterServers

pytestmark = pytest.mark.redis

T0 = 6_000_000.0
CARD = "x-payment-fingerprint"


@pytest.fixture
def storage_uri(redis_cluster: RedisClusterServers) -> str:
    """The ``guarded`` fixture (and these tests) on the session's cluster, flushed."""
    redis_cluster.flush()
    return redis_cluster.url


async def test_a_default_decision_costs_one_script_call_per_hash_tag(
    storage_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = RedisStorage(storage_uri, timeout=5.0)
    calls: list[list[str]] = []
    run = storage._run

    async def counted(script: Any, command: Sequence[Any], send: Any) -> Any:
        calls.append(list(command[3 : 3 + command[2]]))  # EVALSHA sha numkeys keys... args...
        return await run(script, command, send)

    monkeypatch.setattr(storage, "_run", counted)
    plan = Planner(load_policy()).plan("acct-1", "default", 100, "c-1")
    verdict = await storage.acquire(plan.checks, T0 + 5, "lease-1", 600)
    assert verdict.admitted
    # The README's figure: account, cluster and global each a slot, one call each.
    assert calls == [["hg:{a:acct-1}:s"], ["hg:{c:c-1}:s"], ["hg:{g}:s"]]
    assert await storage.usage(plan.checks, T0 + 5) == verdict.usage
    await storage.aclose()


async def test_a_refusal_in_a_later_slot_undoes_the_earlier_ones(storage_uri: str) -> None:
    storage = RedisStorage(storage_uri, timeout=5.0)
    account = Check("hg:{a:x}:r60", 10, 60, 1)
    slots = Check("hg:{a:x}:c", 5, 0, 1)
    cluster = Check("hg:{c:x}:r60", 10, 60, 1)
    everyone = Check("hg:{g}:r60", 1, 60, 1)
    checks = [account, slots, cluster, everyone]
    assert (await storage.acquire(checks, T0 + 1, "l1", 30)).admitted
    storage.settle([], [Lease(slots.key, "l1")], T0 + 1)
    await storage.drain()
    refused = await storage.acquire(checks, T0 + 2, "l2", 30)  # the global slot is full
    assert not refused.admitted and refused.refusing == [3]
    # The account's and the cluster's slots had reserved first; that was undone.
    assert await storage.usage(checks, T0 + 2) == [1.0, 0.0, 1.0, 1.0]
    await storage.aclose()


async def test_a_refusal_reports_every_slots_usage_and_wait(storage_uri: str) -> None:
    # The slots after the refusing one are asked what they would answer, reserving nothing:
    # they reported no usage and no wait, so Retry-After could name a time at which a later
    # slot still refused (a single script reports every check).
    storage = RedisStorage(storage_uri, timeout=5.0)
    account, cluster = Check("hg:{a:r}:r60", 1, 60, 1), Check("hg:{c:r}:r60", 3, 60, 1)
    assert (
        await storage.acquire([account, Check(cluster.key, 3, 60, 3)], T0 + 1, "l1", 30)
    ).admitted
    refused = await storage.acquire([account, cluster], T0 + 2, "l2", 30)
    assert not refused.admitted and refused.refusing == [0, 1]
    assert refused.usage == [1.0, 3.0]
    assert refused.retry_after[1] == pytest.approx(58 + 60 * (1 - 2 / 3))
    assert refused.window_ids == [int(T0 // 60)] * 2
    assert await storage.usage([account, cluster], T0 + 2) == [1.0, 3.0]
    await storage.aclose()


async def test_a_shadow_refusal_in_one_slot_undoes_the_shadow_charges_of_the_others(
    storage_uri: str,
) -> None:
    # A decision charges shadow checks only when every check fits; by slot, a slot where
    # all fitted kept its shadow charges (and its shadow lease, which Gate.settle then never
    # released) while another slot's shadow check refused.
    storage = RedisStorage(storage_uri, timeout=5.0)
    account = Check("hg:{a:s}:r60", 10, 60, 1, shadow=True)
    slots = Check("hg:{a:s}:c", 10, 0, 1, shadow=True)
    cluster = Check("hg:{c:s}:r60", 1, 60, 2, shadow=True)  # more than its limit: refuses
    verdict = await storage.acquire([account, slots, cluster], T0 + 1, "l1", 30)
    assert verdict.admitted and verdict.refusing == [2]
    assert verdict.usage == [0.0, 0.0, 0.0]
    assert await storage.usage([account, slots, cluster], T0 + 1) == [0.0, 0.0, 0.0]
    await storage.aclose()


async def test_undoing_a_refusal_refunds_only_what_was_charged(storage_uri: str) -> None:
    # In a slot where a shadow check refused, its other shadow checks were not charged:
    # undoing the decision refunded them too, taking another request off their count.
    storage = RedisStorage(storage_uri, timeout=5.0)
    counted = Check("hg:{a:u}:r60", 10, 60, 1, shadow=True)
    tight = Check("hg:{a:u}:t60", 1, 60, 2, shadow=True)  # refuses, in shadow
    everyone = Check("hg:{g}:r60", 1, 60, 1)
    assert (await storage.acquire([Check(counted.key, 10, 60, 1)], T0 + 1, "l0", 30)).admitted
    assert (await storage.acquire([everyone], T0 + 1, "l1", 30)).admitted  # global now full
    refused = await storage.acquire([counted, tight, everyone], T0 + 2, "l2", 30)
    assert not refused.admitted and refused.refusing == [1, 2]
    assert refused.usage == [1.0, 0.0, 1.0]
    assert await storage.usage([counted, tight], T0 + 2) == [1.0, 0.0]
    await storage.aclose()


async def test_a_batch_of_settlements_over_many_slots_settles_every_one(
    storage_uri: str,
) -> None:
    storage = RedisStorage(storage_uri, timeout=5.0)
    plans = [Planner(load_policy()).plan(f"acct-{i}", "default", 100, f"c-{i}") for i in range(50)]
    verdicts = await asyncio.gather(
        *(storage.acquire(plan.checks, T0 + 1, f"l{i}", 600) for i, plan in enumerate(plans))
    )
    assert all(v.admitted for v in verdicts)
    for i, (plan, verdict) in enumerate(zip(plans, verdicts, strict=True)):
        storage.settle(  # the 50 responses end in one loop turn: one batch, ~100 slots
            [
                Charge(plan.checks[t].key, plan.checks[t].window, verdict.window_ids[t], -70)
                for t in plan.token_checks
            ],
            [Lease(plan.checks[c].key, f"l{i}") for c in plan.lease_checks],
            T0 + 2,
        )
    await storage.drain()
    for plan in plans:
        usage = await storage.usage(plan.checks, T0 + 2)
        for t in plan.token_checks:
            # Each account's and cluster's token windows hold 30; the global one all 50 x 30.
            assert usage[t] == (1500.0 if plan.checks[t].key.startswith("hg:{g}") else 30.0)
        assert [usage[c] for c in plan.lease_checks] == [0.0, 0.0]
    await storage.aclose()


def replica_policy() -> str:
    return yaml.safe_dump(
        {
            "name": "cluster-e2e",
            "identity": {"account": [{"header": "x-account-id"}]},
            "routes": [{"path": "/v1/chat/completions", "dialect": "openai-chat"}],
            "tiers": {
                "default": {
                    "requests": "1000/minute",
                    "tokens": "10000000/minute",
                    "concurrency": 500,
                    "max_output_tokens": 100,
                }
            },
            "clustering": {
                "threshold": 1.0,
                "signals": {"payment": {"header": CARD, "weight": 1.0, "max_fanout": 1000}},
            },
            "clusters": {"requests": "50/minute"},
            "storage": {"timeout": 5},
        },
        sort_keys=False,
    )


async def test_two_replicas_on_a_cluster_share_one_cluster_quota_under_load(
    guarded: Any, kit: SimpleNamespace
) -> None:
    upstream = kit.build_upstream(kit.Upstream())
    clock = kit.Clock()
    first = await guarded(upstream, replica_policy(), clock=clock)
    second = await guarded(upstream, replica_policy(), clock=clock)

    async def chat(replica: Any, account: str) -> int:
        response = await replica.client.post(
            "/v1/chat/completions",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-account-id": account, CARD: "card-shared"},
        )
        return int(response.status_code)

    # Link the two accounts (one per replica) through their shared card first.
    assert await chat(first, "ring-a") == 200
    await first.guard.drain()
    assert await chat(second, "ring-b") == 200
    await second.guard.drain()
    # 200 concurrent requests over both replicas: the cluster's 50/minute is one quota.
    statuses = await asyncio.gather(
        *(chat(first if i % 2 else second, "ring-a" if i % 2 else "ring-b") for i in range(200))
    )
    assert statuses.count(200) == 48 and statuses.count(429) == 152
    for replica in (first, second):
        await replica.guard.drain()
        text = generate_latest(replica.registry).decode()
        errors = [
            line
            for line in text.splitlines()
            if line.startswith("hydraguard_storage_errors_total{") and not line.endswith(" 0.0")
        ]
        assert errors == []
