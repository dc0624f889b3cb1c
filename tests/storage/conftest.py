"""A three-node Redis Cluster and a Sentinel-watched Redis for the storage tests that run
on them (each started once a session, when a test asks for it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest
from redis_server import RedisClusterServers, RedisSentinelServers

Servers = TypeVar("Servers", RedisClusterServers, RedisSentinelServers)


def _running(servers: Servers) -> Iterator[Servers]:
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    yield from _running(RedisClusterServers(str(tmp_path_factory.mktemp("redis-cluster"))))


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    yield from _running(RedisSentinelServers(str(tmp_path_factory.mktemp("redis-sentinel"))))
