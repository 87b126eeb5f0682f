"""One requests-per-second budget shared by every thread of a client (TaskRouter limits per account)."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """A token bucket: ``acquire`` blocks until one request may go out.

    The bucket holds at most one second of tokens, so a burst never exceeds the limit by more
    than the rate itself; ``None`` or ``0`` disables limiting.
    """

    def __init__(self, requests_per_second: float | None) -> None:
        self.rate = float(requests_per_second or 0.0)
        self.capacity = max(1.0, self.rate)
        self._tokens = 1.0
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self) -> float:
        """Take one token; returns the seconds spent waiting for it."""
        if not self.enabled:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                shortfall = (1.0 - self._tokens) / self.rate
            time.sleep(shortfall)
            waited += shortfall
