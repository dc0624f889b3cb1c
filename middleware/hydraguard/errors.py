"""The two errors hydraguard raises on purpose; anything else is a bug."""

from __future__ import annotations


class HydraGuardError(Exception):
    """Base class for hydraguard's own errors."""


class PolicyError(HydraGuardError):
    """A policy file is invalid. ``problems`` holds one ``file:line: key: message`` per error."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(HydraGuardError):
    """The shared state (memory or Redis) could not answer in time or answered an error."""
