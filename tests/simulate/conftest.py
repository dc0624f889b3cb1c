from __future__ import annotations

import pytest
from simulate_helpers import SMALL, Traffic

from hydraguard.simulate.generate import generate
from hydraguard.simulate.population import build


@pytest.fixture(scope="session")
def small() -> Traffic:
    records, labels = generate(SMALL)
    return Traffic(SMALL, list(records), labels, build(SMALL))
