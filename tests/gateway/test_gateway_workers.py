"""``hydraguard serve --workers 2`` on one Redis: a limit of 50 admits exactly 50 of 200
concurrent requests spread over both workers, and ``/metrics`` (prometheus_client
multiprocess mode) adds up the decisions of both."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from serve_process import stop

# A db of its own, flushed before and after. Another run flushing it mid-test would reset
# the counters and admit more than the limit (seen when other suites were pointed at it).
REDIS_URL = f"redis://127.0.0.1:{os.environ.get('HYDRAGUARD_TEST_REDIS_PORT', '6379')}/12"
STARTUP = 60  # seconds: only bounds a hang when the workers cannot start
LIMIT, SENT = 50, 200

POLICY = f"""
name: workers
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
tiers:
  default:
    requests: "{LIMIT}/minute"
    tokens: "100000000/minute"
    concurrency: 1000
    max_output_tokens: 100
storage:
  # A slow answer must not turn into an admission (on_error: open) and skew the count:
  # wait long enough, and fail closed (503, visible below) if Redis still does not answer.
  timeout: 5
  on_error: closed
"""

CHAT = {
    "model": "hydraguard-mock",
    "max_tokens": 4,
    "messages": [{"role": "user", "content": "hi"}],
}


def flush() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def decisions_per_worker(metrics_dir: Path) -> list[float]:
    """Decisions each worker wrote to its own counter file (one file per process)."""
    per_worker = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        families = MultiProcessCollector.merge([str(path)], accumulate=True)
        per_worker.append(
            sum(
                sample.value
                for family in families
                for sample in family.samples
                if sample.name == "hydraguard_decisions_total"
            )
        )
    return per_worker


@pytest.mark.redis
@pytest.mark.slow  # two spawned workers take several seconds to start
async def test_two_workers_share_one_exact_quota_on_redis(tmp_path: Path) -> None:
    flush()
    account = f"shared-{uuid.uuid4().hex}"  # no key left over from any earlier run
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stderr = tmp_path / "serve.err"
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    command = [
        *(sys.executable, "-m", "hydraguard.cli", "serve"),
        *("--workers", "2", "--storage", REDIS_URL, "--policy", str(policy), "--port", str(port)),
        *("--mock-latency", "0.05"),  # keeps requests in flight together across both workers
    ]
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env, start_new_session=True
        )
    try:
        async with asyncio.timeout(STARTUP):  # both workers up, so both can take connections
            while stderr.read_text().count("Application startup complete.") < 2:
                assert process.returncode is None, stderr.read_text()
                await asyncio.sleep(0.05)

        limits = httpx.Limits(max_connections=SENT, max_keepalive_connections=SENT)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

            async def one() -> int:
                response = await http.post(
                    "/v1/chat/completions", json=CHAT, headers={"x-account-id": account}
                )
                return response.status_code

            statuses = Counter(await asyncio.gather(*(one() for _ in range(SENT))))
            metrics = await http.get("/metrics")
    finally:
        await stop(process, wait=15)  # the uvicorn parent and its spawned workers
        flush()

    assert statuses == {200: LIMIT, 429: SENT - LIMIT}, stderr.read_text()[-2000:]
    assert metrics.status_code == 200
    by_decision: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics.text):
        for sample in family.samples:
            if sample.name == "hydraguard_decisions_total":
                by_decision[sample.labels["decision"]] += int(sample.value)
    assert by_decision == {"allow": LIMIT, "deny": SENT - LIMIT}
    # Both workers decided part of the 200, and the scrape added their files together.
    per_worker = decisions_per_worker(metrics_dir)
    assert len(per_worker) == 2 and all(count > 0 for count in per_worker), per_worker
    assert sum(per_worker) == SENT
    promtool = await asyncio.create_subprocess_exec(
        *("promtool", "check", "metrics"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await promtool.communicate(metrics.content)
    assert promtool.returncode == 0, output.decode()
