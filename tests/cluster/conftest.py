"""The ``harness`` fixture: every cluster index behaviour test runs on memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cluster_harness import Harness


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = Harness(request.param)
    yield h
    await h.close()
