"""Storage failure is a policy decision: open, closed, local; bounded waits; a breaker; recovery.

Runs a real redis-server on a spare port and stops and restarts it under load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hydraguard import HydraGuard
from hydraguard.policy.compiled import compile_policy
from hydraguard.policy.loader import parse_policy
from redis_server import RedisSentinelServers, RedisServer, running

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def chat(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 5}})


UPSTREAM = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def policy(
    on_error: str,
    *,
    requests: str = "1000/minute",
    replicas: int = 1,
    timeout: float = 0.05,
    clustering: bool = False,
):
    text = f"""
clustering:
  enabled: {str(clustering).lower()}
clusters:
  requests: "{requests}"
tiers:
  default:
    requests: "{requests}"
    tokens: "1000000/minute"
    concurrency: 100
storage:
  on_error: {on_error}
  timeout: {timeout}
  replicas: {replicas}
  breaker_failures: 3
  breaker_reset: 0.5
"""
    return compile_policy(parse_policy(text, "failover.yaml"))


@pytest.fixture
async def guards() -> AsyncIterator[list[HydraGuard]]:
    """Every HydraGuard a test makes is closed, even when the test fails."""
    made: list[HydraGuard] = []
    yield made
    for guard in made:
        await guard.aclose()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    yield from running(RedisServer())


async def post(client: httpx.AsyncClient, account: str = "a1") -> httpx.Response:
    return await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        headers={"x-account-id": account},
    )


def guard_on(
    server: RedisServer, guards: list[HydraGuard], **options: Any
) -> tuple[HydraGuard, CollectorRegistry]:
    """A HydraGuard on ``server`` with ``policy("open", **options)`` and its registry."""
    registry = CollectorRegistry()
    guard = HydraGuard(
        UPSTREAM, policy=policy("open", **options), storage=server.url, registry=registry
    )
    guards.append(guard)
    return guard, registry


@asynccontextmanager
async def stalled(server: RedisServer, seconds: float) -> AsyncIterator[None]:
    """Redis asleep (DEBUG SLEEP) from 50 ms after entering; leaving waits for it to wake."""
    import redis.asyncio as aredis

    blocker = aredis.Redis(port=server.port)
    try:
        sleeper = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", str(seconds)))
        await asyncio.sleep(0.05)
        yield
        await sleeper
    finally:
        await blocker.aclose()


def fell_open(registry: CollectorRegistry) -> float | None:
    """How many decisions were admitted without storage (on_error: open)."""
    labels = {"policy": "default", "route": "/v1/chat/completions", "decision": "storage_open"}
    return registry.get_sample_value("hydraguard_decisions_total", {**labels, "rule": "none"})


def client_for(guard: HydraGuard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")


@pytest.mark.parametrize(("mode", "status"), [("open", 200), ("closed", 503)])
async def test_down_redis_open_admits_closed_refuses(
    guards: list[HydraGuard], server: RedisServer, mode: str, status: int
) -> None:
    registry = CollectorRegistry()
    guard = HydraGuard(UPSTREAM, policy=policy(mode), storage=server.url, registry=registry)
    guards.append(guard)
    async with client_for(guard) as client:
        assert (await post(client)).status_code == 200
        server.stop()
        started = time.monotonic()
        responses = [await post(client) for _ in range(10)]
        elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [status] * 10
    if mode == "closed":
        body = responses[0].json()
        assert body["error"]["code"] == "rate_limiter_unavailable"
        assert body["error"]["reason"] == "storage"
    # Ten decisions against a dead server: bounded by the timeout, then the breaker.
    assert elapsed < 2.0
    assert (
        registry.get_sample_value("hydraguard_storage_errors_total", {"operation": "acquire"}) >= 3
    )
    assert registry.get_sample_value("hydraguard_storage_breaker_open") == 1
    decision = "storage_open" if mode == "open" else "storage_closed"
    assert (
        registry.get_sample_value(
            "hydraguard_decisions_total",
            {
                "policy": "default",
                "route": "/v1/chat/completions",
                "decision": decision,
                "rule": "none" if mode == "open" else "storage",
            },
        )
        == 10
    )


async def test_a_reload_changes_the_failure_mode_in_force(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    """storage.on_error and the breaker follow a reloaded policy (they were fixed at start)."""
    guard = HydraGuard(UPSTREAM, policy=policy("open"), storage=server.url)
    guards.append(guard)
    async with client_for(guard) as client:
        assert (await post(client)).status_code == 200
        server.stop()
        assert [(await post(client)).status_code for _ in range(3)] == [200] * 3
        guard.reload(policy("closed"))
        assert guard.storage.settings.on_error == "closed"
        assert [(await post(client)).status_code for _ in range(3)] == [503] * 3


async def test_local_mode_scales_limits_and_pushes_usage_back(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    registry = CollectorRegistry()
    # The decisions' clock stands still inside one minute: with the wall clock a run that
    # crossed a minute's end weighed the earlier requests by the sliding window (5.98, not 6).
    now = (time.time() // 60 + 1) * 60 + 1
    guard = HydraGuard(
        UPSTREAM,
        policy=policy("local", requests="20/minute", replicas=4),
        storage=server.url,
        registry=registry,
        clock=lambda: now,
    )
    guards.append(guard)
    async with client_for(guard) as client:
        server.stop()
        statuses = [(await post(client)).status_code for _ in range(8)]
        # 20/minute over 4 replicas: this process alone admits 5 while Redis is away.
        assert statuses == [200] * 5 + [429] * 3
        server.start()
        await asyncio.sleep(0.6)  # breaker_reset: the next decision probes Redis again
        first_back = await post(client)
        assert first_back.status_code == 200
        await asyncio.sleep(0.2)  # the local counters are pushed to Redis in the background
        plan = guard.guard.gate.planner.plan("a1", "default", 0)
        usage = await guard.storage.primary.usage(plan.checks, now)
    # 5 admitted locally + 1 on Redis: nothing admitted during the outage was lost.
    requests_index = next(
        i for i, limit in enumerate(plan.limits) if limit.rule.endswith("20/minute")
    )
    assert usage[requests_index] == pytest.approx(6, abs=0.01)
    assert registry.get_sample_value("hydraguard_storage_breaker_open") == 0


async def test_slow_redis_is_bounded_by_the_timeout(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    guard, _ = guard_on(server, guards, timeout=0.05)
    async with client_for(guard) as client:
        assert (await post(client)).status_code == 200
        async with stalled(server, 1):
            started = time.monotonic()
            response = await post(client)
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 0.5  # not the second the server is asleep


async def test_concurrent_decisions_on_a_slow_redis_time_out_together_then_recover(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    """Concurrent decisions travel together (one pipeline): when Redis stalls they all fall
    back within the timeout, none is left hanging, and the batch answering late breaks
    nothing (no exception left unretrieved); afterwards decisions are counted again."""
    problems: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: problems.append(context))
    guard, registry = guard_on(server, guards, timeout=0.05)
    async with client_for(guard) as client:
        assert (await post(client)).status_code == 200
        async with stalled(server, 0.5):
            started = time.monotonic()
            stalled_responses = await asyncio.gather(
                *(post(client, f"slow-{i}") for i in range(40))
            )
            elapsed = time.monotonic() - started
        await guard.drain()
        await asyncio.sleep(0.6)  # the breaker (reset 0.5 s) lets a probe through again
        after = await asyncio.gather(*(post(client, f"after-{i}") for i in range(40)))
        # Decisions are counted on Redis again once a probe has closed the breaker (on a
        # loaded machine a probe can itself miss the 50 ms timeout: allow a few seconds).
        deadline = time.monotonic() + 5
        while True:
            final = await post(client, "final")
            await guard.drain()
            plan = guard.guard.gate.planner.plan("final", "default", 0)
            if (await guard.storage.primary.usage(plan.checks, time.time()))[1] >= 1:
                break
            assert time.monotonic() < deadline, "decisions never went back to Redis"
            await asyncio.sleep(0.1)
    assert {r.status_code for r in stalled_responses} == {200}
    assert elapsed < 0.45  # the server sleeps 0.5 s: nobody waited for it
    assert {r.status_code for r in [*after, final]} == {200}
    fallbacks = fell_open(registry)
    assert fallbacks is not None and fallbacks >= 40
    assert problems == []


async def test_a_request_cancelled_while_its_decision_waits_on_redis_returns_its_lease(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    """Found by tests/test_fuzz_cancellation.py on Redis: a request cancelled (its client
    gone, an outer timeout) while the admission script was on its way kept the concurrency
    lease the script took, until the lease expired (600 s): no request owned it to release
    it. Returned like the lease of an answer that timed out."""
    guard, _ = guard_on(server, guards, timeout=5.0)
    async with client_for(guard) as client:
        assert (await post(client, "gone")).status_code == 200  # connected, scripts loaded
        async with stalled(server, 0.4):
            request = asyncio.create_task(post(client, "gone"))
            await asyncio.sleep(0.1)  # its script waits behind the sleeping server
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
    await guard.drain()
    plan = guard.guard.gate.planner.plan("gone", "default", 0)
    values = await guard.storage.primary.usage(plan.checks, time.time())
    usage = {limit.rule: value for limit, value in zip(plan.limits, values, strict=True)}
    assert usage["tier.default.concurrency"] == 0
    assert usage["tier.default.requests.1000/minute"] == 2  # the script ran: counted


async def test_a_new_account_does_not_wait_on_a_hung_redis_for_its_link(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    """A new account is linked before its first decision; on a hung Redis that wait is
    bounded by storage.timeout too (it used to wait out the hang), and counted."""
    guard, registry = guard_on(server, guards, timeout=0.05, clustering=True)
    async with client_for(guard) as client:
        assert (await post(client, "known")).status_code == 200
        async with stalled(server, 1):
            started = time.monotonic()
            response = await post(client, "newcomer")
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 0.5  # linking and deciding: two bounded waits, not the second asleep
    errors = registry.get_sample_value("hydraguard_storage_errors_total", {"operation": "link"})
    assert errors is not None and errors >= 1


async def test_storing_a_block_or_carrying_a_merge_waits_no_longer_than_the_timeout(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    """The other storage writes a decision may make on its path (an anomaly block, the
    usage of clusters that merged) are bounded by storage.timeout as well, and counted."""
    from hydraguard.assess.effects import Effects
    from hydraguard.identify import Identity

    guard, registry = guard_on(server, guards, timeout=0.05, clustering=True)
    async with client_for(guard) as client:
        assert (await post(client, "a")).status_code == 200
    async with stalled(server, 1):
        started = time.monotonic()
        await guard.guard._apply(Identity("a", "default", None, {}), None, Effects(block=60.0), 0)
        blocked_in = time.monotonic() - started
        started = time.monotonic()
        await guard.guard._carry_merges([(["c-old"], "c-new")], "default", time.time())
        carried_in = time.monotonic() - started
    assert blocked_in < 0.5 and carried_in < 0.5
    for operation in ("block", "merge"):
        assert registry.get_sample_value(
            "hydraguard_storage_errors_total", {"operation": operation}
        ) == pytest.approx(1.0)


async def test_recovery_under_load_is_automatic(
    guards: list[HydraGuard], server: RedisServer
) -> None:
    registry = CollectorRegistry()
    guard = HydraGuard(UPSTREAM, policy=policy("open"), storage=server.url, registry=registry)
    guards.append(guard)
    async with client_for(guard) as client:

        async def load(seconds: float) -> list[int]:
            out: list[int] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                batch = await asyncio.gather(*(post(client, f"acct-{i}") for i in range(10)))
                out += [r.status_code for r in batch]
            return out

        before = await load(0.3)
        server.stop()
        during = await load(0.5)
        server.start()
        # The breaker probes on its own and closes; how soon depends on the machine's load
        # (a probe that times out keeps it open), so wait for it, under load, up to 10 s.
        after: list[int] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after += await load(0.2)
            if registry.get_sample_value("hydraguard_storage_breaker_open") == 0:
                break
        assert registry.get_sample_value("hydraguard_storage_breaker_open") == 0
        after += await load(0.3)
    assert set(before) == set(during) == set(after) == {200}
    plan = guard.guard.gate.planner.plan("acct-0", "default", 0)
    usage = await guard.storage.primary.usage(plan.checks, time.time())
    assert usage[1] >= 1  # decisions after recovery are counted on Redis again


async def test_a_sentinel_failover_is_followed_without_a_restart(
    guards: list[HydraGuard], tmp_path: Any
) -> None:
    """The master dies; the Sentinel promotes its replica; decisions fall back meanwhile
    (on_error: open) and then go to the new master, in the same process."""
    servers = RedisSentinelServers(str(tmp_path), replica=True)
    servers.start()
    try:
        registry = CollectorRegistry()
        guard = HydraGuard(
            UPSTREAM,
            policy=policy("open", timeout=0.2),
            storage=servers.url,
            registry=registry,
        )
        guards.append(guard)
        async with client_for(guard) as client:
            assert (await post(client, "before")).status_code == 200
            servers.master.stop()
            statuses: list[int] = []
            deadline = time.monotonic() + 20
            while True:
                statuses.append((await post(client, "during")).status_code)
                await guard.drain()
                assert servers.replica is not None
                promoted = redis.Redis(port=servers.replica.port)
                role = promoted.role()[0]
                usage = promoted.exists("hg:{a:during}:s")
                promoted.close()
                if role == b"master" and usage:
                    break
                assert time.monotonic() < deadline, "no decision reached the promoted replica"
                await asyncio.sleep(0.1)
        assert set(statuses) == {200}  # nobody refused while there was no master
        fallbacks = fell_open(registry)
        assert fallbacks is not None and fallbacks >= 1
    finally:
        servers.stop()
