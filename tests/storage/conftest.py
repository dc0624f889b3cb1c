"""A three-node Redis Cluster for the storage tests that run on one (started once a session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisClusterServers


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(str(tmp_path_factory.mktemp("redis-cluster")))
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()
