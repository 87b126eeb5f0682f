"""One requests-per-second budget shared by every thread of a client (TaskRouter limits per account)."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    """Spaces requests evenly, and slows down by itself when the server answers 429.

    ``acquire`` reserves the next free slot and sleeps until it: each call takes the slot
    ``1 / rate`` seconds after the previous one (or now, if that has passed), so no burst builds
    up while the sync is busy elsewhere (upserting, listing) and any one-second window holds at
    most ``rate + 1`` requests. Waiting threads are served in the order they asked, and a slot
    is never lost. ``None`` or ``0`` configures no limit.

    A 429 (``slow_down``) means the account's limit is lower than what the client sends, whatever
    was configured: the rate drops to half of what the client actually achieved over its last
    requests (one cut per second: the 429s of requests already in flight answer the same
    overload), then climbs back by a tenth per second without a 429, up to the configured rate,
    or without bound when none was configured (limiting switches itself off again past
    ``UNLIMITED_ABOVE``). Without this, retries that all wait out the same ``Retry-After`` come
    back together and meet 429 again until their attempts run out (measured with the emulator at
    10 requests/s and eight readers: 32 of 40 workers failed).
    """

    MIN_RATE = 0.5  # requests/second: never slower than this, however many 429s
    RECOVERY = 0.1  # the rate grows by this fraction per second without a 429 (at least +1/s)
    UNLIMITED_ABOVE = 1000.0  # an adaptive rate past this, with none configured, stops limiting
    _RECENT = 32  # the requests whose spacing tells the achieved rate

    def __init__(self, requests_per_second: float | None) -> None:
        self.configured = float(requests_per_second or 0.0)
        self.rate = self.configured
        self.interval = 1.0 / self.rate if self.rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=self._RECENT)  # append is atomic: no lock
        self._last_cut = -1e9
        self._grown_at = 0.0
        self.slowdowns = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def adapting(self) -> bool:
        """Below the configured rate (or limiting with none configured) because of 429s."""
        return self.enabled and (self.configured <= 0 or self.rate < self.configured)

    def acquire(self) -> float:
        """Take one slot; returns the seconds spent waiting for it."""
        if not self.enabled:
            self._recent.append(time.monotonic())
            return 0.0
        with self._lock:
            now = time.monotonic()
            if self.adapting:
                self._grow(now)
            slot = max(now, self._next)
            self._next = slot + self.interval
        self._recent.append(slot)
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
        return wait

    def slow_down(self) -> None:
        """The server answered 429: halve the rate actually achieved (at most once a second)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_cut < 1.0:
                return
            achieved = self._achieved(now)
            current = self.rate if self.rate > 0 else achieved
            base = min(current, achieved) if achieved > 0 else current
            self._set_rate(max(self.MIN_RATE, (base or self.MIN_RATE * 2) / 2))
            self._last_cut = self._grown_at = now
            self._next = max(self._next, now)
            self.slowdowns += 1

    def _achieved(self, now: float) -> float:
        stamps = list(self._recent)
        if len(stamps) < 2:
            return 0.0
        span = max(now, stamps[-1]) - stamps[0]
        return (len(stamps) - 1) / span if span > 0 else 0.0

    def _grow(self, now: float) -> None:  # with the lock held
        seconds = now - self._grown_at
        if seconds < 1.0:
            return
        grown = self.rate + max(1.0, self.rate * self.RECOVERY) * seconds
        self._grown_at = now
        if self.configured > 0:
            self._set_rate(min(self.configured, grown))
        elif grown > self.UNLIMITED_ABOVE:
            self._set_rate(0.0)
        else:
            self._set_rate(grown)

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        self.interval = 1.0 / rate if rate > 0 else 0.0


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
