"""TaskRouter's clock, as its responses tell it (the ``Date`` header), not the local one.

Event windows, the 30-day retention and the sweep interval are all TaskRouter times: a host
whose clock is minutes (or days) off would otherwise ask for the wrong events. Every response
updates the reading; ``now`` adds the local monotonic time elapsed since, which no clock step
or NTP slew on this host can disturb.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime


class ServerClock:
    """The latest ``Date`` header seen, and when (monotonic) it was seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw: str | None = None
        self._date: datetime | None = None
        self._seen_at = 0.0

    def observe(self, header: str | None) -> None:
        """Record a response's ``Date`` (cheap when it repeats: parsed once per new value)."""
        if not header:
            return
        seen = time.monotonic()
        with self._lock:
            if header == self._raw:
                return
            try:
                date = parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                return  # an unreadable Date says nothing about the clock
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
            self._raw, self._date, self._seen_at = header, date.astimezone(UTC), seen

    def now(self) -> datetime | None:
        """TaskRouter's time now, or None before any response carried a ``Date``."""
        with self._lock:
            if self._date is None:
                return None
            return self._date + timedelta(seconds=time.monotonic() - self._seen_at)
