"""The gateway app: HydraGuard in front of an upstream model API (or the built-in mock),
plus ``/metrics`` and ``/healthz``, with policy hot reload on file change and SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ..errors import PolicyError
from ..middleware import HydraGuard
from ..policy.loader import default_policy_path
from .gc import tune_for_long_running_state
from .health import health_endpoint
from .mock import create_mock_app
from .proxy import UpstreamProxy

log = logging.getLogger("hydraguard.gateway")
CONFIG_ENV = "HYDRAGUARD_GATEWAY_CONFIG"
WATCH_INTERVAL = 1.0  # seconds between policy file checks


@dataclass(frozen=True)
class GatewayConfig:
    policy: str | None = None
    upstream: str | None = None
    storage: str = "memory://"
    mock_latency: float = 0.0
    mock_token_delay: float = 0.0  # built-in mock: seconds between streamed deltas
    watch_policy: bool = True
    connect_timeout: float = 10.0  # upstream: seconds to connect
    read_timeout: float = (
        600.0  # upstream: seconds between two chunks (a completion may think long)
    )


def create_gateway(config: GatewayConfig, registry: CollectorRegistry | None = None) -> Starlette:
    proxy: UpstreamProxy | None = None
    upstream: ASGIApp
    if config.upstream:
        timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=60.0,
            pool=config.connect_timeout,
        )
        # Unreachable -> 502, too slow -> 504, in the route's dialect envelope.
        proxy = UpstreamProxy(config.upstream, timeout=timeout)
        upstream = proxy
    else:
        upstream = create_mock_app(latency=config.mock_latency, token_delay=config.mock_token_delay)
    if registry is None:
        # Its own registry, not the global one: every metric the gateway serves is prefixed
        # hydraguard_ (DESIGN.md), the process metrics included, instead of process_/python_.
        registry = CollectorRegistry()
        ProcessCollector(namespace="hydraguard", registry=registry)
    guard = HydraGuard(upstream, policy=config.policy, storage=config.storage, registry=registry)
    policy_file = Path(config.policy) if config.policy else default_policy_path()

    async def metrics(request: Request) -> Response:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            collected = CollectorRegistry()
            multiprocess.MultiProcessCollector(collected)
            collected.register(guard.metrics.cluster_collector)
            return Response(generate_latest(collected), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(guard.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def reload(reason: str) -> None:
        try:
            guard.reload()
        except PolicyError:
            return  # logged and counted by reload(); the old policy keeps running
        log.warning("hydraguard: policy %s reloaded (%s)", guard.policy.source, reason)

    async def watch() -> None:
        # Polling one file's stat is all we need; a watcher library would add a dependency.
        last = _signature(policy_file)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = _signature(policy_file)
            if now != last:
                last = now
                try:
                    reload("file changed")
                except Exception:  # a bug in compiling must not stop watching for good
                    log.exception("hydraguard: policy reload crashed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, reload, "SIGHUP")
        watcher = loop.create_task(watch()) if config.watch_policy else None
        await guard.warm()  # mounted, the guard sees no lifespan of its own
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            if proxy is not None:
                await proxy.aclose()
            await guard.aclose()

    app = Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", health_endpoint(guard), methods=["GET"]),
            Mount("/", app=guard),
        ],
        lifespan=lifespan,
    )
    app.state.guard = guard
    return app


def _signature(path: Path) -> tuple[int, int, int] | None:
    """mtime, size and inode: an edit within the file system's timestamp granularity
    still changes the size, and an editor's save-by-rename changes the inode."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def config_to_env(config: GatewayConfig) -> None:
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))


def app_from_env() -> Starlette:
    """uvicorn factory for ``--workers N``: each worker builds the same gateway."""
    # The supervisor forwards SIGHUP (reload) to the workers: one that arrives before the
    # lifespan installs the reload handler must not end the worker (SIGHUP's default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    app = create_gateway(GatewayConfig(**json.loads(os.environ.get(CONFIG_ENV, "{}"))))
    tune_for_long_running_state()
    return app
