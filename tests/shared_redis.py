"""The Redis the behaviour tests share (db 15), for tests that pin ``storage_uri`` to it."""

from __future__ import annotations

import os

REDIS_PORT = os.environ.get(
    "HYDRAGUARD_TEST_REDIS_PORT", "6379"
)  # another server: overlapping runs
REDIS_URL = os.environ.get("HYDRAGUARD_TEST_REDIS", f"redis://127.0.0.1:{REDIS_PORT}/15")
