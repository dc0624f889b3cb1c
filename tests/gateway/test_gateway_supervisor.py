"""``hydraguard serve --workers 2``, the supervisor: SIGHUP reloads the policy in every worker
in place (an invalid policy keeps both on the old one, counted), and ``/metrics`` forgets
workers that are gone (a worker killed with a request in flight no longer counts it) and
shows the cluster gauges."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from serve_process import stop
from test_gateway_serve import samples
from test_gateway_workers import POLICY as WORKERS_POLICY
from test_gateway_workers import REDIS_URL, flush, free_port

STARTUP = 60  # seconds: only bounds a hang when the workers cannot start
WAIT = 30  # seconds: only bounds a hang when what is awaited never happens
TOKEN = "supervisor-test-token"

# The workers test's policy, with clustering by org and the admin API on.
POLICY = (
    WORKERS_POLICY
    + f"""
clustering:
  enabled: true
  signals:
    org: {{header: x-org-id, explicit: true}}
admin:
  token: {TOKEN}
"""
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]  # two spawned workers take seconds to start


def workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    found = set()
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.add(int(child))
    return found


@asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[tuple[int, str, Path, set[int]]]:
    """``serve --workers 2`` on Redis with POLICY in tmp_path/policy.yaml:
    (supervisor pid, base URL, stderr file, worker pids)."""
    flush()
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    stderr = tmp_path / "serve.err"
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    command = [
        *(sys.executable, "-m", "hydraguard.cli", "serve", "--workers", "2"),
        *("--storage", REDIS_URL, "--policy", str(policy), "--port", str(port)),
        *("--mock-token-delay", "0.2"),  # streams stay in flight for seconds
    ]
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env, start_new_session=True
        )
    try:
        async with asyncio.timeout(STARTUP):
            while stderr.read_text().count("Application startup complete.") < 2:
                assert process.returncode is None, stderr.read_text()
                await asyncio.sleep(0.05)
        yield process.pid, f"http://127.0.0.1:{port}", stderr, workers(process.pid)
    finally:
        await stop(process, wait=15)
        flush()


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT):
        while not await check():  # noqa: ASYNC110 - polling other processes, no event to await
            await asyncio.sleep(0.1)


def metric_is(
    http: httpx.AsyncClient, name: str, wanted: dict[tuple[tuple[str, str], ...], float]
) -> Callable[[], Awaitable[bool]]:
    """A check for ``until``: the scraped samples of ``name`` include ``wanted``."""

    async def check() -> bool:
        found = samples((await http.get("/metrics")).text, name)
        return all(found.get(labels) == value for labels, value in wanted.items())

    return check


async def test_sighup_reloads_every_worker_in_place_and_an_invalid_policy_keeps_both(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as (supervisor, base, stderr, before):
        assert len(before) == 2
        # A new connection per call, so that both workers answer.
        async with httpx.AsyncClient(
            base_url=base, limits=httpx.Limits(max_keepalive_connections=0)
        ) as http:

            def reloads(result: str, wanted: float) -> Callable[[], Awaitable[bool]]:
                return metric_is(
                    http, "hydraguard_policy_reloads_total", {(("result", result),): wanted}
                )

            async def names() -> set[str]:
                headers = {"authorization": f"Bearer {TOKEN}"}
                answers = [
                    await http.get("/_hydraguard/policy", headers=headers) for _ in range(20)
                ]
                return {answer.json()["name"] for answer in answers}

            os.kill(supervisor, signal.SIGHUP)
            await until(reloads("ok", 2))  # both workers reloaded

            (tmp_path / "policy.yaml").write_text(
                "name: broken\nbogus: 1\n"
            )  # the watcher tries it: 2 errors
            await until(reloads("error", 2))  # both workers refused the file
            os.kill(supervisor, signal.SIGHUP)
            await until(reloads("error", 4))  # and refused it again on SIGHUP
            assert await names() == {"workers"}
            assert workers(supervisor) == before  # reloaded in place, not restarted
            assert "Traceback" not in stderr.read_text()


async def test_metrics_forget_a_killed_worker_and_report_the_shared_clusters(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as (supervisor, base, _, before):
        body = {
            "model": "hydraguard-mock",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # Two accounts linked by their org: the cluster gauges have something to show.
            for account in ("m-a", "m-b"):
                chat = {**body, "stream": False, "max_tokens": 2}
                headers = {"x-account-id": account, "x-org-id": "org-1"}
                assert (
                    await http.post("/v1/chat/completions", json=chat, headers=headers)
                ).is_success

            await until(
                metric_is(http, "hydraguard_clusters", {(): 1.0})
            )  # read from the shared index by whichever worker answers
            async with http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"x-account-id": "m-c"}
            ) as streaming:
                lines = streaming.aiter_lines()
                await anext(lines)  # in flight on one of the workers
                for pid in before:  # whichever worker holds it dies
                    os.kill(pid, signal.SIGKILL)
                with pytest.raises(httpx.HTTPError):
                    async for _ in lines:
                        pass

        async def replaced() -> bool:
            now = workers(supervisor)
            return len(now) == 2 and not now & before

        await until(replaced)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            text = (await http.get("/metrics")).text
    assert samples(text, "hydraguard_requests_in_flight") == {(("policy", "workers"),): 0.0}
    assert samples(text, "hydraguard_storage_breaker_open") == {(): 0.0}  # one series, no pid
