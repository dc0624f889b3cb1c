"""hydraguard: rate limiting against capability extraction, as pure ASGI middleware."""

from __future__ import annotations

from .errors import PolicyError, StorageError
from .middleware import HydraGuard
from .policy.loader import load_policy

__all__ = ["HydraGuard", "PolicyError", "StorageError", "load_policy"]
__version__ = "0.1.0"
