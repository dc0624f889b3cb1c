"""Shared state: one protocol, a memory and a Redis implementation."""

from __future__ import annotations

from .base import Charge, Check, Lease, Storage, Verdict
from .factory import storage_from_uri

__all__ = ["Charge", "Check", "Lease", "Storage", "Verdict", "storage_from_uri"]
