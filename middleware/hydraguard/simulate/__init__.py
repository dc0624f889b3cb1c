"""Synthetic benign and hydra-attack traffic in the traffic-log format (``hydraguard simulate``)."""

from __future__ import annotations

from hydraguard.simulate.generate import Stats, generate, labels, write
from hydraguard.simulate.scenario import Scenario

__all__ = ["Scenario", "Stats", "generate", "labels", "write"]
