"""The four apps every benchmark compares, built the same way for direct ASGI calls and uvicorn.

- ``bare``: a Starlette app with one POST /v1/chat/completions JSON endpoint.
- ``slowapi``: the same app under slowapi's documented setup (SlowAPIMiddleware,
  one default limit keyed by the x-account-id header).
- ``limits``: the same app under a tiny pure-ASGI middleware checking two
  ``limits`` sliding-window-counter limits (async strategies), keyed by account.
- ``hydraguard``: the same app under HydraGuard with the shipped default policy,
  global limits raised so that only per-account limits can refuse (see README).

Every limited variant enforces 60/minute per account. The benchmark traffic
(``traffic()``) looks like many light, benign users: a random account per request
and a different prompt every time, so no per-account limit is reached and the
default policy's anomaly detectors (template repetition, timing regularity) have
nothing to flag, while every limiter still does its full work on each request.
For uvicorn: ``uvicorn variants:<name>_app --factory --app-dir benchmarks``;
the storage comes from ``BENCH_STORAGE`` (default ``memory://``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from limits import parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from prometheus_client import CollectorRegistry
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hydraguard import HydraGuard
from hydraguard.gateway.gc import tune_for_long_running_state
from hydraguard.policy.compiled import CompiledPolicy, compile_policy
from hydraguard.policy.loader import default_policy_path, parse_policy

PATH = "/v1/chat/completions"
ACCOUNT_HEADER = "x-account-id"
PER_ACCOUNT = "60/minute"  # the default tier's tightest request limit, used by every peer
HUGE = 10**12
PROMPT_CHARS = 96  # every benchmark body has the same length, so one content-length fits all
WORDS = (
    "apple river window garden music paper orange winter summer bridge planet forest "
    "ocean silver yellow market station engine candle mirror pocket ladder rabbit tiger "
    "kitchen button cotton desert island jacket kettle lemon marble needle pencil pillow "
    "rocket saddle tomato tunnel violin wallet basket beacon canyon dragon feather glacier "
    "harbor insect jungle lantern meadow nectar orchard parrot quarry ribbon spider temple"
).split()

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1764230400,
    "model": "bench",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
}
VARIANTS = ("bare", "slowapi", "limits", "hydraguard")


async def chat(request: Request) -> Response:
    await request.json()
    return JSONResponse(COMPLETION)


def body_for(prompt: str) -> bytes:
    content = prompt[:PROMPT_CHARS].ljust(PROMPT_CHARS)
    message = {"role": "user", "content": content}
    return json.dumps({"model": "bench", "messages": [message], "max_tokens": 16}).encode()


BODY = body_for("Say hello in one word.")  # the probe's body; traffic() varies the words


def traffic(
    bodies: int, calls: int, accounts: int, seed: int = 2024
) -> tuple[list[bytes], list[int]]:
    """``bodies`` distinct request bodies (random words: no shared template) and, for
    ``calls`` requests, the account index of each (random: no fixed rhythm per account)."""
    rng = random.Random(seed)
    pool = [body_for(" ".join(rng.choice(WORDS) for _ in range(14))) for _ in range(bodies)]
    return pool, [rng.randrange(accounts) for _ in range(calls)]


def bench_policy() -> CompiledPolicy:
    """The shipped default policy with its global limits raised so they never refuse.

    Per-account limits stay as shipped (4 window limits + concurrency for the default
    tier); the 2 global limits are still checked and charged on every request.
    """
    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data["global"]["requests"] = f"{HUGE}/minute"
    data["global"]["tokens"] = f"{HUGE}/minute"
    if os.environ.get("BENCH_STORAGE_TIMEOUT"):  # bench_http's Redis rows (see README)
        data["storage"]["timeout"] = float(os.environ["BENCH_STORAGE_TIMEOUT"])
    return compile_policy(
        parse_policy(yaml.safe_dump(data), "bench-default.yaml"), source="bench-default.yaml"
    )


def account_of(scope: Scope) -> str:
    """The x-account-id header of an ASGI scope, as a pure-ASGI limiter reads it."""
    for name, value in scope["headers"]:
        if name == b"x-account-id":
            return str(value.decode("latin-1"))
    return "anonymous"


def _account_key(request: Request) -> str:
    return request.headers.get(ACCOUNT_HEADER, "anonymous")


class LimitsMiddleware:
    """Two ``limits`` checks per request; ``limits`` ships no ASGI middleware, so this is the
    smallest correct one (hit each limit, 429 on the first refusal)."""

    def __init__(
        self, app: ASGIApp, *, storage: str = "memory://", limits: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        options: dict[str, Any] = (
            {} if storage.startswith("memory") else {"implementation": "redispy"}
        )
        self.limiter = SlidingWindowCounterRateLimiter(
            storage_from_string("async+" + storage, **options)
        )
        self.items = [parse(text) for text in limits]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        account = account_of(scope)
        for item in self.items:
            if not await self.limiter.hit(item, account):
                await JSONResponse({"error": {"message": "rate limited"}}, status_code=429)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def build(
    variant: str, storage: str = "memory://", registry: CollectorRegistry | None = None
) -> Starlette:
    """One variant of the app; ``registry`` receives HydraGuard's metrics (fresh one if None)."""
    middleware: list[Middleware] = []
    limiter: Limiter | None = None
    if variant == "slowapi":
        limiter = Limiter(key_func=_account_key, default_limits=[PER_ACCOUNT], storage_uri=storage)
        middleware.append(Middleware(SlowAPIMiddleware))
    elif variant == "limits":
        middleware.append(
            Middleware(LimitsMiddleware, storage=storage, limits=(PER_ACCOUNT, "3000/day"))
        )
    elif variant == "hydraguard":
        registry = registry if registry is not None else CollectorRegistry()
        middleware.append(
            Middleware(HydraGuard, policy=bench_policy(), storage=storage, registry=registry)
        )
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    app = Starlette(
        routes=[Route(PATH, chat, methods=["POST"])],
        middleware=middleware,
        lifespan=_stats_lifespan(variant, registry),
    )
    if limiter is not None:
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def decision_counts(registry: CollectorRegistry) -> dict[str, float]:
    """HydraGuard decisions by outcome (allow, deny, storage_open, ...) from its metrics."""
    counts: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "hydraguard_decisions_total" and sample.value:
                decision = sample.labels["decision"]
                counts[decision] = counts.get(decision, 0.0) + sample.value
    return counts


def _stats_lifespan(variant: str, registry: CollectorRegistry | None) -> Callable[[Starlette], Any]:
    """Under uvicorn, write HydraGuard's decision counts on shutdown so the HTTP benchmark
    can prove every request was a real, storage-backed allow (BENCH_STATS_DIR)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        folder = os.environ.get("BENCH_STATS_DIR")
        if folder and registry is not None:
            out = Path(folder) / f"{variant}-{os.getpid()}.json"
            out.write_text(json.dumps(decision_counts(registry)), encoding="utf-8")

    return lifespan


def _factory(variant: str) -> Callable[[], Starlette]:
    def make() -> Starlette:
        app = build(variant, os.environ.get("BENCH_STORAGE", "memory://"))
        # Every variant runs with the GC settings `hydraguard serve` uses (fair to all).
        tune_for_long_running_state()
        return app

    make.__name__ = f"{variant}_app"
    return make


bare_app = _factory("bare")
slowapi_app = _factory("slowapi")
limits_app = _factory("limits")
hydraguard_app = _factory("hydraguard")
