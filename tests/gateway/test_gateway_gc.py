"""The gateway process freezes its start-up objects and makes full collections rare."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hydraguard.gateway.gc import FULL_COLLECTION_EVERY, tune_for_long_running_state


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tuning_freezes_startup_objects_and_spaces_full_collections() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    young, middle, _ = gc.get_threshold()
    tune_for_long_running_state()
    assert gc.get_freeze_count() > 1000  # the imported modules, the app, the policy
    assert gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY)
