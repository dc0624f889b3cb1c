"""A three-node Redis Cluster and a Sentinel-watched Redis for the storage tests that run
on them (each started once a session, when a test asks for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redis_server import RedisClusterServers, RedisSentinelServers, running


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    yield from running(RedisClusterServers(str(tmp_path_factory.mktemp("redis-cluster"))))


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    yield from running(RedisSentinelServers(str(tmp_path_factory.mktemp("redis-sentinel"))))
