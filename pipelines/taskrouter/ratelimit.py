"""One requests-per-second budget shared by every thread of a client (TaskRouter limits per account)."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Spaces requests evenly: ``acquire`` reserves the next free slot and sleeps until it.

    Each call takes the slot ``1 / rate`` seconds after the previous one (or now, if that has
    passed), so no burst builds up while the sync is busy elsewhere (upserting, listing) and any
    one-second window holds at most ``rate + 1`` requests. Waiting threads are served in the
    order they asked, and a slot is never lost. ``None`` or ``0`` disables limiting.
    """

    def __init__(self, requests_per_second: float | None) -> None:
        self.rate = float(requests_per_second or 0.0)
        self.interval = 1.0 / self.rate if self.rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self) -> float:
        """Take one slot; returns the seconds spent waiting for it."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
        return wait


class TokenBucket:
    """A server-style limiter: ``try_acquire`` says whether a request fits, without waiting.

    The emulator uses it to answer 429 the way an API gateway would: up to ``burst`` requests
    at once, refilled at ``rate`` per second.
    """

    def __init__(self, requests_per_second: float | None, burst: float | None = None) -> None:
        self.rate = float(requests_per_second or 0.0)
        self.capacity = max(1.0, float(burst) if burst else 1.0)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def try_acquire(self) -> bool:
        if not self.enabled:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
