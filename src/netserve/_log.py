"""The ``netserve`` logger and a rate limit for messages that a flood could repeat."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RateLimitedLog", "logger"]

logger = logging.getLogger("netserve")


class RateLimitedLog:
    """Logs each *reason* at most once per *interval* seconds, counting what it held back.

    The count of suppressed messages is appended to the next message logged for that reason,
    so nothing is lost from the log but the repetition.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def log(self, level: int, reason: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless *reason* was logged within the interval; True if logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self._interval:
                self._held_back[reason] = self._held_back.get(reason, 0) + 1
                return False
            self._last[reason] = now
            held_back = self._held_back.pop(reason, 0)
        if held_back:
            msg += " (%d similar messages suppressed)"
            args = (*args, held_back)
        logger.log(level, msg, *args)
        return True
