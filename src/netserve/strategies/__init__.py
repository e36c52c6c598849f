"""Concurrency strategies: how an accepted request runs. See ``ConcurrencyStrategy``."""

from ._base import ConcurrencyStrategy
from .forks import ForkPerRequest
from .pool import Overflow, ThreadPool
from .threads import ThreadPerRequest

__all__ = ["ConcurrencyStrategy", "ForkPerRequest", "Overflow", "ThreadPerRequest", "ThreadPool"]
