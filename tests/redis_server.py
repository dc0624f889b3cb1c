"""Throwaway redis-servers on spare loopback ports: one that tests can stop and restart,
a three-node Redis Cluster and a Sentinel-watched Redis."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Protocol, TypeVar

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below 65536."""
    for _ in range(200):
        port = random.randint(20_000, 50_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisServer:
    def __init__(self, *extra: str, workdir: str | None = None, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.extra = extra
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",
        ]
        self._launch([self.binary, *options, *self.extra])

    def start_sentinel(self, config: str) -> None:
        """``redis-server CONFIG --sentinel`` (the port is in the config file)."""
        self._launch([self.binary, config, "--sentinel"])

    def _launch(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class RedisClusterServers:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, workdir: str) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{i}.conf",
                workdir=workdir,
                port=free_cluster_port(),
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                client = redis.Redis(port=node.port)
                states.append(client.cluster("INFO").get("cluster_state"))
                client.close()
            if states == ["ok"] * len(self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def flush(self) -> None:
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            client.flushall()
            client.script_flush()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelServers:
    """A master watched by one Sentinel (quorum 1): the ``redis+sentinel://`` form; with
    ``replica``, also a replica the Sentinel promotes when the master goes away."""

    def __init__(self, workdir: str, *, replica: bool = False) -> None:
        self.master = RedisServer()
        self.replica = (
            RedisServer("--replicaof", "127.0.0.1", str(self.master.port)) if replica else None
        )
        self.workdir = workdir
        self.sentinel: RedisServer | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/hydraguard-test"

    def start(self) -> None:
        self.master.start()
        if self.replica is not None:
            self.replica.start()
        config = f"{self.workdir}/sentinel.conf"
        port = free_port()
        with open(config, "w", encoding="utf-8") as out:
            out.write(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor hydraguard-test 127.0.0.1 {self.master.port} 1\n"
                "sentinel down-after-milliseconds hydraguard-test 500\n"
                "sentinel failover-timeout hydraguard-test 2000\n"
            )
        self.sentinel = RedisServer(workdir=self.workdir, port=port)
        self.sentinel.start_sentinel(config)

    def flush(self) -> None:
        client = redis.Redis(port=self.master.port)
        client.flushall()
        client.script_flush()
        client.close()

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.stop()


class Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


Servers = TypeVar("Servers", bound=Startable)


def running(servers: Servers) -> Iterator[Servers]:
    """For fixtures: ``yield from running(RedisServer())`` starts it, and stops it after."""
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()
