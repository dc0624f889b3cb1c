"""``hydraguard serve``: run the gateway under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile

import uvicorn

from ..errors import PolicyError, StorageError
from ..policy.loader import load_policy
from ..storage.factory import storage_from_uri
from ..urls import shown
from .app import GatewayConfig, app_from_env, config_to_env
from .proxy import upstream_base
from .supervisor import Supervisor


def banner(config: GatewayConfig, host: str, port: int, workers: int) -> str:
    address = f"[{host}]" if ":" in host else host
    base = f"http://{address}:{port}"
    upstream = (
        shown(config.upstream)
        if config.upstream
        else "the BUILT-IN MOCK MODEL (a deterministic fake, not a real model)"
    )
    return "\n".join(
        [
            "",
            f"hydraguard gateway on {base} "
            f"({workers} worker{'s' if workers > 1 else ''}, storage {shown(config.storage)})",
            f"  upstream: {upstream}",
            f"  policy:   {config.policy or 'shipped default'}",
            f"  metrics:  {base}/metrics   health: {base}/healthz",
            "",
            "Try it:",
            f"  curl -si {base}/v1/chat/completions -H 'content-type: application/json' "
            "-H 'x-account-id: demo' "
            '-d \'{"model": "hydraguard-mock", "max_tokens": 32, '
            '"messages": [{"role": "user", "content": "Hello!"}]}\'',
            "",
        ]
    )


def tcp_socket(host: str, port: int) -> socket.socket:
    """The listening socket for ``--workers N``, bound here rather than by uvicorn: its own
    bind leaves proto=0, so asyncio never sets TCP_NODELAY on accepted connections and every
    keep-alive response waits ~40 ms for a delayed ACK (uvicorn issue #3149)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(args: argparse.Namespace) -> int:
    config = GatewayConfig(
        policy=args.policy,
        upstream=args.upstream,
        storage=args.storage,
        mock_latency=args.mock_latency,
        mock_token_delay=args.mock_token_delay,
        connect_timeout=getattr(args, "connect_timeout", 10.0),
        read_timeout=getattr(args, "read_timeout", 600.0),
    )
    if args.workers > 1 and config.storage.startswith("memory"):
        print(
            f"hydraguard serve: --workers {args.workers} with memory:// storage would give each "
            "worker its own counters, multiplying every limit by the worker count. Use shared "
            "storage: --storage redis://127.0.0.1:6379/0",
            file=sys.stderr,
        )
        return 2
    try:
        storage_from_uri(config.storage)  # a bad URL fails here, not in every worker forever
        if config.upstream:
            upstream_base(config.upstream)
    except (StorageError, ValueError) as exc:
        print(f"hydraguard serve: {exc}", file=sys.stderr)
        return 2
    try:
        load_policy(config.policy)  # fail here, with file:line, not inside a worker
    except PolicyError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    sockets = []
    if args.workers > 1:
        try:
            sockets.append(tcp_socket(args.host, args.port))
        except OSError as exc:  # in use, not an address of this host: uvicorn says it so too
            print(
                f"hydraguard serve: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
    config_to_env(config)
    metrics_dir = None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers share metrics through files (prometheus_client multiprocess mode), in a
        # directory of this run's own: the library wants it empty at start.
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="hydraguard-metrics-"
        )
    print(banner(config, args.host, args.port, args.workers), flush=True)
    # proxy_headers off: uvicorn's own X-Forwarded-For handling trusts 127.0.0.1 whatever the
    # policy says, and would hand HydraGuard (and the upstream's X-Forwarded-For) an address
    # the client chose; the policy's trusted_proxies decide instead (identify.py).
    try:
        if args.workers > 1:
            server_config = uvicorn.Config(
                "hydraguard.gateway.app:app_from_env",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=args.log_level,
                access_log=False,
                proxy_headers=False,
            )
            with contextlib.suppress(KeyboardInterrupt):
                Supervisor(server_config, sockets=sockets).run()
        else:
            uvicorn.run(
                app_from_env(),
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                access_log=False,
                proxy_headers=False,
            )
    except StorageError as exc:
        print(f"hydraguard serve: {exc}", file=sys.stderr)
        return 1
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
