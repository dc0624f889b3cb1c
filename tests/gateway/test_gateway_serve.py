"""``/metrics`` (checked by promtool), ``/healthz``, and ``hydraguard serve`` run as the
user runs it: a subprocess on a free port, its banner, its curl line and its refusals."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from serve_process import stop
from starlette.types import ASGIApp

from hydraguard.gateway import app as gateway_app
from hydraguard.gateway.app import GatewayConfig, create_gateway
from hydraguard.policy.loader import default_policy_path

Serve = Callable[[ASGIApp], Awaitable[str]]
HYDRAGUARD = [sys.executable, "-m", "hydraguard.cli"]
STARTUP = 30  # seconds: only bounds a hang when the server cannot start

POLICY = """
name: metrics-test
identity:
  account:
    - header: x-account-id
routes:
  - path: /v1/chat/completions
    dialect: openai-chat
  - path: /v1/messages
    dialect: anthropic-messages
tiers:
  default:
    requests: "2/minute"
    tokens: "100000/minute"
    concurrency: 10
    max_output_tokens: 100
storage:
  timeout: 5
"""

CHAT = {
    "model": "hydraguard-mock",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "hi"}],
}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_metrics_pass_promtool_and_healthz_answers(serve: Serve, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    app = create_gateway(GatewayConfig(policy=str(policy), watch_policy=False), CollectorRegistry())
    base = await serve(app)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        statuses = [
            (
                await http.post("/v1/chat/completions", json=CHAT, headers={"x-account-id": "a"})
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        health = await http.get("/healthz")
        metrics = await http.get("/metrics")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "policy": "metrics-test", "storage": "ok"}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names and all(name.startswith("hydraguard_") for name in names)
    decisions = samples(text, "hydraguard_decisions_total")
    by_decision = {"allow": 0.0, "deny": 0.0}
    for labels, value in decisions.items():
        by_decision[dict(labels)["decision"]] += value
    assert by_decision == {"allow": 2.0, "deny": 1.0}
    await promtool_check(text)


async def test_healthz_reports_unreachable_storage(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    config = GatewayConfig(
        policy=str(policy), storage="redis://127.0.0.1:1/0", watch_policy=False
    )  # nothing listens on port 1: connections are refused
    app = create_gateway(config, CollectorRegistry())
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            health = await http.get("/healthz")
    finally:
        await app.state.guard.aclose()
    assert health.status_code == 200  # on_error: open (the default) still serves
    assert health.json() == {
        "status": "degraded",
        "policy": "metrics-test",
        "storage": "down",
        "fallback": "open",
    }


# --- hydraguard serve as a subprocess -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: asyncio.subprocess.Process
    base: str
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text()

    def err(self) -> str:
        return self.stderr.read_text()


@asynccontextmanager
async def hydraguard_serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Served]:
    """``hydraguard serve`` on a free port, ready once uvicorn has started; its process
    group is terminated (then killed) at the end, whatever happened."""
    port = free_port()
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *HYDRAGUARD, "serve", "--port", str(port), *args,
            stdout=out, stderr=err, env=env, start_new_session=True,
        )  # fmt: skip
    served = Served(process, f"http://127.0.0.1:{port}", stdout, stderr)
    try:
        async with asyncio.timeout(STARTUP):
            while "Application startup complete." not in served.err():
                if process.returncode is not None:
                    raise AssertionError(f"serve exited {process.returncode}:\n{served.err()}")
                await asyncio.sleep(0.05)
        yield served
    finally:
        await stop(process)


async def promtool_check(text: str) -> None:
    """``promtool check metrics`` (Debian package prometheus) must accept the exposition."""
    promtool = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        output, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, f"promtool exit {promtool.returncode}:\n{output.decode()}"


def curl_request(line: str) -> httpx.Request:
    """The request a ``curl URL -H ... -d BODY`` line sends (POST, as curl does with -d)."""
    words = shlex.split(line)
    assert words[0] == "curl"
    url, headers, body = None, [], None
    rest = iter(words[1:])
    for word in rest:
        if word == "-H":
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif word == "-d":
            body = next(rest)
        elif not word.startswith("-"):
            url = word
    assert url is not None and body is not None
    return httpx.Request("POST", url, headers=headers, content=body.encode())


async def run_serve(*args: str) -> tuple[int, str]:
    """Run ``hydraguard serve`` expecting it to refuse at once: (exit code, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *HYDRAGUARD, "serve", "--port", str(free_port()), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(STARTUP):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:  # it started serving after all: stop it
            await stop(process)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def burst(http: httpx.AsyncClient, request: httpx.Request, n: int) -> list[httpx.Response]:
    return [await http.send(request) for _ in range(n)]


def admitted_then_refused(responses: list[httpx.Response]) -> int:
    """A run of 200s, then only 429s in OpenAI's envelope: returns how many were admitted."""
    statuses = [response.status_code for response in responses]
    admitted = statuses.index(429) if 429 in statuses else len(statuses)
    assert statuses == [200] * admitted + [429] * (len(statuses) - admitted)
    for refused in responses[admitted:]:
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
    return admitted


def assert_default_quota_refusal(refused: httpx.Response) -> None:
    """The 429 of the default tier's 60/minute: names its rule, Retry-After about a minute.

    Sliding window: 60 requests sent in this fixed window are still 59 of the 60 a second
    into the next one, so the wait is the rest of this window plus 60 x (1 - 59/60) = 1 s:
    61 s when the burst began right at a window's start (a time-dependent flake before)."""
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    error = refused.json()["error"]
    assert error["rule"] == "tier.default.requests.60/minute"
    assert error["rule"] in error["message"]


async def test_serve_defaults_mock_banner_curl_line_metrics(tmp_path: Path) -> None:
    async with hydraguard_serve(tmp_path) as served:
        banner = served.out()
        assert "MOCK" in banner
        assert f"hydraguard gateway on {served.base}" in banner
        curl = next(
            line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")
        )
        request = curl_request(curl)
        assert str(request.url).startswith(served.base)
        async with httpx.AsyncClient(timeout=10) as http:
            first = await http.send(request)
            assert first.status_code == 200, first.text
            assert first.json()["model"] == "hydraguard-mock"
            usage = first.json()["usage"]
            assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
            responses = [first, *await burst(http, request, 60)]
            health = await http.get(f"{served.base}/healthz")
            metrics = await http.get(f"{served.base}/metrics")
    assert health.status_code == 200 and health.json()["policy"] == "default"
    assert metrics.status_code == 200
    await promtool_check(metrics.text)
    names = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert "hydraguard_process_cpu_seconds" in names  # the process metrics, under the prefix
    assert all(name.startswith("hydraguard_") for name in names), sorted(names)
    admitted = admitted_then_refused(responses)
    assert admitted <= 60  # never more than the default tier's 60/minute
    if admitted == 60:
        assert_default_quota_refusal(responses[60])
    else:
        # A tight loop of one identical prompt is bot-like, as the README says: the default's
        # anomaly rules may throttle (the quota then binds at a fraction of 60) or block first.
        error = responses[admitted].json()["error"]
        assert error["reason"] in ("quota", "risk")
        anomaly_rules = {
            rule["name"]
            for rule in yaml.safe_load(default_policy_path().read_text())["anomaly"]["rules"]
        }
        assert error["rule"] == "tier.default.requests.60/minute" or error["rule"] in anomaly_rules


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_try_it() -> tuple[str, list[str]]:
    """The README's "Try it" curl line (one line, port 8000) and the header names of the
    200 it shows."""
    text = README.read_text().split("## Try it", 1)[1]
    blocks = text.split("```")
    curl = " ".join(line.strip().rstrip("\\").strip() for line in blocks[1].splitlines()[1:])
    shown = blocks[3].strip().split("\n\n", 1)[0].splitlines()
    assert shown[0] == "HTTP/1.1 200 OK"
    return curl.strip(), [line.split(":", 1)[0] for line in shown[1:]]


async def test_readme_curl_line_is_the_banners_and_shows_what_the_readme_shows(
    tmp_path: Path,
) -> None:
    curl, names = readme_try_it()
    async with hydraguard_serve(tmp_path) as served:
        port = served.base.rsplit(":", 1)[1]
        banner_curl = next(
            line.strip() for line in served.out().splitlines() if line.strip().startswith("curl ")
        )
        assert banner_curl == curl.replace(":8000/", f":{port}/")
        process = await asyncio.create_subprocess_exec(
            *shlex.split(banner_curl), stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
    head, _, body = output.decode().replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"  # run as written, it shows the status and headers
    assert [line.split(":", 1)[0].lower() for line in lines[1:]] == names
    assert json.loads(body)["model"] == "hydraguard-mock"


async def test_serve_default_quota_refuses_the_61st(tmp_path: Path) -> None:
    # The shipped default with its anomaly rules off: the quota alone decides.
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["anomaly"]["enabled"] = False
    path = tmp_path / "default-quota.yaml"
    path.write_text(yaml.safe_dump(policy))
    async with hydraguard_serve(tmp_path, "--policy", str(path)) as served:
        request = httpx.Request(
            "POST",
            f"{served.base}/v1/chat/completions",
            json={**CHAT, "max_tokens": 32},
            headers={"x-account-id": "demo"},
        )
        async with httpx.AsyncClient(timeout=10) as http:
            responses = await burst(http, request, 61)
    assert admitted_then_refused(responses) == 60
    assert_default_quota_refusal(responses[60])


async def test_serve_refuses_several_workers_on_memory_storage() -> None:
    code, stderr = await run_serve("--workers", "2")
    assert code != 0
    assert "redis://" in stderr
    assert "Application startup" not in stderr


async def test_serve_rejects_an_invalid_policy_with_file_and_line(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yaml"
    policy.write_text("name: broken\ntiers:\n  default:\n    requestz: 5/minute\n")
    code, stderr = await run_serve("--policy", str(policy))
    assert code == 1
    assert f"{policy}:4: tiers.default.requestz: unknown key" in stderr
    assert "Application startup" not in stderr


async def test_sighup_reloads_a_running_serve(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    named = textwrap.dedent(POLICY).replace("name: metrics-test", "name: {name}")
    named += "admin:\n  token_env: HYDRAGUARD_TEST_ADMIN_TOKEN\n"
    policy.write_text(named.format(name="alpha"))
    env = {**os.environ, "HYDRAGUARD_TEST_ADMIN_TOKEN": "hup-token"}
    async with hydraguard_serve(tmp_path, "--policy", str(policy), env=env) as served:
        admin = {"authorization": "Bearer hup-token"}
        async with httpx.AsyncClient(base_url=served.base, headers=admin, timeout=10) as http:

            async def name() -> str:
                answer = await http.get("/_hydraguard/policy")
                assert answer.status_code == 200, answer.text
                return str(answer.json()["name"])

            assert await name() == "alpha"
            # Same size and the old mtime put back: the file watcher sees no change,
            # so only the signal can make this reload.
            before = policy.stat()
            policy.write_text(named.format(name="bravo"))
            os.utime(policy, ns=(before.st_atime_ns, before.st_mtime_ns))
            assert policy.stat().st_size == before.st_size
            await asyncio.sleep(gateway_app.WATCH_INTERVAL * 1.5)
            assert await name() == "alpha"

            served.process.send_signal(signal.SIGHUP)
            async with asyncio.timeout(5):
                while await name() != "bravo":  # noqa: ASYNC110 - polling the server
                    await asyncio.sleep(0.05)
            metrics = (await http.get("/metrics")).text
            assert served.process.returncode is None
    assert 'hydraguard_policy_reloads_total{result="ok"} 1.0' in metrics
    assert "reloaded (SIGHUP)" in served.err()


async def test_serve_believes_x_forwarded_for_only_from_the_policys_proxies(
    serve: Serve, tmp_path: Path
) -> None:
    # The policy trusts no proxy: a client on the loopback cannot pick its address (and so
    # its account) with X-Forwarded-For, and the upstream learns the real peer. uvicorn's
    # own proxy-headers handling, on by default and trusting 127.0.0.1, did both.
    forwarded: list[str] = []

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        forwarded.append(dict(scope["headers"]).get(b"x-forwarded-for", b"").decode())
        body = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    base = await serve(upstream)
    policy = yaml.safe_load(default_policy_path().read_text())
    policy["identity"]["trusted_proxies"] = []
    policy["anomaly"]["enabled"] = False
    path = tmp_path / "no-proxies.yaml"
    path.write_text(yaml.safe_dump(policy))
    env = {**os.environ, "HYDRAGUARD_ADMIN_TOKEN": "t0ken"}
    async with hydraguard_serve(
        tmp_path, "--policy", str(path), "--upstream", base, env=env
    ) as served:
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
            response = await http.post(
                "/v1/chat/completions",
                json={**CHAT, "max_tokens": 8},
                headers={"x-forwarded-for": "203.0.113.9"},
            )
            assert response.status_code == 200, response.text
            admin = {"authorization": "Bearer t0ken"}
            real = (await http.get("/_hydraguard/accounts/ip-127.0.0.1", headers=admin)).json()
            spoofed = (await http.get("/_hydraguard/accounts/ip-203.0.113.9", headers=admin)).json()
    assert forwarded == ["203.0.113.9, 127.0.0.1"]

    def requests(view: dict[str, Any]) -> float:
        return next(v["usage"] for v in view["limits"] if v["rule"].endswith("requests.60/minute"))

    assert (requests(real), requests(spoofed)) == (1, 0)
